package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/projector-run/projector/store"
)

func (a *app) projectionsCommand() *cli.Command {
	return &cli.Command{
		Name:  "projections",
		Usage: "list the projections, check those in SQL, or make the database forget one",
		Commands: []*cli.Command{
			{
				Name:  "list",
				Usage: "every projection the database has or this binary loads: kind, state, last build, events applied",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "output", Value: "table", Usage: "table, or json for machines", Sources: cli.EnvVars("OUTPUT_FORMAT")},
				},
				Action: a.projectionsList,
			},
			{
				Name: "check",
				Usage: "check the projections of --projections-dir against the database, changing nothing: each file parses, " +
					"and its Setup, Apply and Forget run in a transaction that is rolled back (exit 0, or 2 naming the file)",
				Action: a.projectionsCheck,
			},
			{
				Name:      "drop",
				Usage:     "forget a projection for good (its tables are yours to drop), so that binaries without it may run",
				ArgsUsage: "NAME",
				Action:    a.projectionsDrop,
			},
		},
	}
}

// projectionRow is one row of projections list.
type projectionRow struct {
	Name          string     `json:"name"`
	Kind          string     `json:"kind"`
	File          string     `json:"file,omitempty"`
	State         string     `json:"state"`
	Loaded        bool       `json:"loaded"`
	SetUpAt       *time.Time `json:"set_up_at"`
	BuiltAt       *time.Time `json:"built_at"`
	EventsApplied int64      `json:"events_applied"`
}

func (a *app) projectionsList(ctx context.Context, cmd *cli.Command) error {
	if err := noArgs(cmd); err != nil {
		return err
	}
	output := cmd.String("output")
	if output != "table" && output != "json" {
		return usagef("--output: %q is not table or json", output)
	}
	st, err := a.openReady(ctx, cmd)
	if err != nil {
		return err
	}
	defer st.Close()
	status, err := st.ProjectionStatus(ctx)
	if err != nil {
		return err
	}
	loaded := map[string]store.Projection{}
	for _, p := range st.Projections() {
		loaded[p.Name()] = p
	}
	var rows []projectionRow
	for _, s := range status {
		r := projectionRow{Name: s.Name, Kind: s.Kind, State: s.State, SetUpAt: &s.SetUpAt.Time, EventsApplied: s.EventsApplied}
		r.SetUpAt = ptrTime(s.SetUpAt.Time.UTC())
		if s.BuiltAt.Valid {
			r.BuiltAt = ptrTime(s.BuiltAt.Time.UTC())
		}
		var p store.Projection
		p, r.Loaded = loaded[s.Name]
		r.File = fileOf(p)
		delete(loaded, s.Name)
		rows = append(rows, r)
	}
	for _, p := range st.Projections() {
		if _, ok := loaded[p.Name()]; ok {
			rows = append(rows, projectionRow{Name: p.Name(), Kind: store.KindOf(p), File: fileOf(p), State: "new", Loaded: true})
		}
	}
	if output == "json" {
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKIND\tSTATE\tLOADED\tBUILT AT\tEVENTS APPLIED")
	for _, r := range rows {
		built := "-"
		if r.BuiltAt != nil {
			built = r.BuiltAt.Format(time.RFC3339)
		}
		loaded := "no: runs, resets, rebuilds and replays refuse"
		if r.Loaded {
			loaded = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\n", r.Name, r.Kind, r.State, loaded, built, r.EventsApplied)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range rows {
		if r.State == "new" {
			fmt.Fprintln(a.stdout, "new: the next `projector run` builds it from the stored events before it applies a batch")
			break
		}
	}
	return nil
}

func ptrTime(t time.Time) *time.Time { return &t }

func (a *app) projectionsDrop(ctx context.Context, cmd *cli.Command) error {
	if cmd.Args().Len() != 1 {
		return usagef("projections drop takes one NAME, the projection to forget")
	}
	name := cmd.Args().First()
	if store.IsBuiltin(name) {
		return usagef("%s is a built-in projection: it cannot be dropped", name)
	}
	st, err := a.openReady(ctx, cmd)
	if err != nil {
		return err
	}
	defer st.Close()
	ok, err := st.DropProjection(ctx, name)
	if err != nil {
		return err
	}
	if !ok {
		return usagef("the database has no projection %q (see projector projections list)", name)
	}
	fmt.Fprintf(a.stdout, "the database forgot projection %s; its tables are left as they are, yours to drop\n", name)
	return nil
}

// fileOf is the file a projection in SQL was loaded from, "" for others.
func fileOf(p store.Projection) string {
	if f, ok := p.(interface{ File() string }); ok {
		return f.File()
	}
	return ""
}

// projectionsCheck checks the files of --projections-dir: Before parsed
// them, openReady runs them in a transaction that is rolled back.
func (a *app) projectionsCheck(ctx context.Context, cmd *cli.Command) error {
	if err := noArgs(cmd); err != nil {
		return err
	}
	if a.sqlDir == "" {
		return usagef("projections check needs --projections-dir (or PROJECTIONS_DIR): the directory of the projections in SQL")
	}
	st, err := a.openReady(ctx, cmd)
	if err != nil {
		return err
	}
	st.Close()
	fmt.Fprintf(a.stdout, "%s: %s, each parsed, its Setup, Apply and Forget accepted by PostgreSQL (rolled back)\n",
		a.sqlDir, plural(int64(a.sqlLoaded), "file"))
	return nil
}
