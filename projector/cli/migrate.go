package cli

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/projector-run/projector/store"
)

func (a *app) migrateCommand() *cli.Command {
	return &cli.Command{
		Name:  "migrate",
		Usage: "apply, roll back or list the database migrations embedded in this binary",
		Commands: []*cli.Command{
			{Name: "up", Usage: "apply every pending migration", Action: a.migrate(func(ctx context.Context, st *store.Store, m *store.Migrator) error {
				res, err := m.Up(ctx)
				for _, r := range res {
					fmt.Fprintf(a.stdout, "applied %s (%s)\n", r.Source.Path, r.Duration.Round(time.Millisecond))
				}
				if err == nil && len(res) == 0 {
					fmt.Fprintln(a.stdout, "database is up to date")
				}
				if err != nil {
					return err
				}
				if err := a.checkSQLProjections(ctx, st); err != nil {
					return err
				}
				return a.setupProjections(ctx, st)
			})},
			{Name: "down", Usage: "roll back the latest applied migration", Action: a.migrate(func(ctx context.Context, st *store.Store, m *store.Migrator) error {
				r, err := m.Down(ctx)
				if r != nil && r.Source != nil {
					fmt.Fprintf(a.stdout, "rolled back %s (%s)\n", r.Source.Path, r.Duration.Round(time.Millisecond))
				}
				return err
			})},
			{Name: "status", Usage: "list every migration and whether it is applied", Action: a.migrate(func(ctx context.Context, st *store.Store, m *store.Migrator) error {
				status, err := m.Status(ctx)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "VERSION\tMIGRATION\tSTATE\tAPPLIED AT")
				for _, s := range status {
					at := ""
					if !s.AppliedAt.IsZero() {
						at = s.AppliedAt.UTC().Format(time.RFC3339)
					}
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", s.Source.Version, s.Source.Path, s.State, at)
				}
				return tw.Flush()
			})},
		},
	}
}

func (a *app) migrate(fn func(context.Context, *store.Store, *store.Migrator) error) cli.ActionFunc {
	return func(ctx context.Context, cmd *cli.Command) error {
		if cmd.Args().Len() > 0 {
			return usagef("unexpected argument %q", cmd.Args().First())
		}
		st, err := a.openStore(ctx, cmd, store.Config{MaxConns: 2})
		if err != nil {
			return err
		}
		defer st.Close()
		m, err := st.NewMigrator()
		if err != nil {
			return err
		}
		defer m.Close()
		if err := fn(ctx, st, m); err != nil {
			return fmt.Errorf("migrate %s on %s: %w", cmd.Name, store.RedactURL(cmd.String("database-url")), err)
		}
		return nil
	}
}
