package cli

import (
	"context"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/urfave/cli/v3"

	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store"
)

func reasonFlag() cli.Flag {
	return &cli.StringFlag{Name: "reason", Usage: "only dead letters of this reason (" + strings.Join(model.Reasons, ", ") + ")", Sources: cli.EnvVars("DLQ_REASON")}
}

func (a *app) dlqCommand() *cli.Command {
	return &cli.Command{
		Name:  "dlq",
		Usage: "look at dead letters, and replay them after an upgrade",
		Commands: []*cli.Command{
			{
				Name:  "list",
				Usage: "list dead letters by topic, partition and offset",
				Flags: []cli.Flag{
					reasonFlag(),
					&cli.IntFlag{Name: "limit", Value: 50, Usage: "most dead letters listed", Sources: cli.EnvVars("DLQ_LIMIT")},
				},
				Action: a.dlqList,
			},
			{
				Name:      "show",
				Usage:     "show one dead letter: its key, value and headers as received, reason and error",
				ArgsUsage: "TOPIC/PARTITION/OFFSET",
				Action:    a.dlqShow,
			},
			{
				Name:      "replay",
				Usage:     "validate dead letters again; apply those now valid and remove them, in one transaction",
				ArgsUsage: "[TOPIC/PARTITION/OFFSET...]",
				Description: "Each dead letter's exact bytes are validated by this binary's rules. One now valid is\n" +
					"applied as if just consumed, at its own topic, partition and offset, and its dead letter\n" +
					"removed in the same transaction, so replaying again applies nothing more. One still\n" +
					"invalid stays, with today's reason and error. Without positions, every dead letter\n" +
					"(of --reason) is replayed.",
				Flags: []cli.Flag{
					reasonFlag(),
					dryRunFlag("report what replaying would do, and change nothing"),
				},
				Action: a.dlqReplay,
			},
		},
	}
}

func reasonOf(cmd *cli.Command) (string, error) {
	r := cmd.String("reason")
	if r != "" && !slices.Contains(model.Reasons, r) {
		return "", usagef("--reason: %q is not one of %s", r, strings.Join(model.Reasons, ", "))
	}
	return r, nil
}

func (a *app) dlqList(ctx context.Context, cmd *cli.Command) error {
	if err := noArgs(cmd); err != nil {
		return err
	}
	reason, err := reasonOf(cmd)
	if err != nil {
		return err
	}
	limit := cmd.Int("limit")
	if limit < 1 {
		return usagef("--limit: must be positive, got %d", limit)
	}
	st, err := a.openReady(ctx, cmd)
	if err != nil {
		return err
	}
	defer st.Close()
	rows, total, err := st.ListDeadLetters(ctx, reason, limit)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POSITION\tREASON\tBYTES\tRECEIVED AT\tERROR")
	for _, d := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", d.Position, d.Reason, len(d.Value), d.ReceivedAt.Format(time.RFC3339), clip(d.Error, 70))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	what := "dead letters"
	if reason != "" {
		what += " of reason " + reason
	}
	fmt.Fprintf(a.stdout, "%d of %d %s\n", len(rows), total, what)
	return nil
}

// onePosition reads the single TOPIC/PARTITION/OFFSET argument.
func onePosition(cmd *cli.Command) (store.Position, error) {
	if cmd.Args().Len() != 1 {
		return store.Position{}, usagef("expected one TOPIC/PARTITION/OFFSET argument, got %d", cmd.Args().Len())
	}
	p, err := store.ParsePosition(cmd.Args().First())
	if err != nil {
		return store.Position{}, usageError{err}
	}
	return p, nil
}

func (a *app) dlqShow(ctx context.Context, cmd *cli.Command) error {
	pos, err := onePosition(cmd)
	if err != nil {
		return err
	}
	st, err := a.openReady(ctx, cmd)
	if err != nil {
		return err
	}
	defer st.Close()
	d, err := st.GetDeadLetter(ctx, pos)
	if err != nil {
		return notFound(err)
	}
	w := a.stdout
	fmt.Fprintf(w, "position     %s\n", d.Position)
	fmt.Fprintf(w, "received at  %s\n", d.ReceivedAt.Format(time.RFC3339Nano))
	fmt.Fprintf(w, "reason       %s\n", d.Reason)
	fmt.Fprintf(w, "error        %s\n", d.Error)
	if _, err := model.Decode(d.Value); err == nil {
		fmt.Fprintf(w, "today        valid: `projector dlq replay %s` applies it\n", d.Position)
	} else {
		fmt.Fprintf(w, "today        still invalid: %s\n", err)
	}
	fmt.Fprintf(w, "headers      %s\n", d.Headers)
	fmt.Fprintf(w, "key          %s\n", showBytes(d.Key, true))
	fmt.Fprintf(w, "value        %s\n", showBytes(d.Value, false))
	return nil
}

// showBytes renders message bytes: as text when they are UTF-8 without
// control characters other than whitespace, else as a hex dump.
func showBytes(b []byte, short bool) string {
	switch {
	case b == nil:
		return "(none)"
	case len(b) == 0:
		return "(empty)"
	case printable(b):
		if short {
			return fmt.Sprintf("%s (%d bytes, text)", strconv.Quote(string(b)), len(b))
		}
		return fmt.Sprintf("%d bytes, text:\n%s", len(b), b)
	}
	return fmt.Sprintf("%d bytes, not text, hex:\n%s", len(b), strings.TrimRight(hex.Dump(b), "\n"))
}

func printable(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if r < 0x20 && r != '\n' && r != '\r' && r != '\t' || r == 0x7f {
			return false
		}
	}
	return true
}

func (a *app) dlqReplay(ctx context.Context, cmd *cli.Command) error {
	reason, err := reasonOf(cmd)
	if err != nil {
		return err
	}
	var positions []store.Position
	for _, arg := range cmd.Args().Slice() {
		p, err := store.ParsePosition(arg)
		if err != nil {
			return usageError{err}
		}
		positions = append(positions, p)
	}
	if len(positions) > 0 && reason != "" {
		return usagef("--reason: give either positions or a reason, not both")
	}
	dryRun := cmd.Bool("dry-run")
	st, err := a.openReady(ctx, cmd)
	if err != nil {
		return err
	}
	defer st.Close()
	samples := 10
	if len(positions) > 0 {
		samples = len(positions)
	}
	res, err := st.ReplayDeadLetters(ctx, store.ReplayOptions{Reason: reason, Positions: positions, DryRun: dryRun, Samples: samples})
	if err != nil {
		return notFound(err)
	}
	w := a.stdout
	if dryRun {
		fmt.Fprintf(w, "dry run: of %s, %d would be applied, %d are duplicates of stored events (would be removed), %d are still invalid (would stay); nothing was changed\n",
			plural(int64(res.Checked), "dead letter"), res.Applied, res.Duplicates, res.Invalid)
	} else {
		fmt.Fprintf(w, "replayed %s: %d applied, %d duplicates of stored events removed, %d still invalid (kept, with today's reason and error)\n",
			plural(int64(res.Checked), "dead letter"), res.Applied, res.Duplicates, res.Invalid)
	}
	for _, o := range res.Outcomes {
		switch {
		case o.Result != store.ReplayInvalid:
			result := o.Result
			if dryRun {
				result = "would be " + map[string]string{store.ReplayApplied: "applied", store.ReplayDuplicate: "removed, a duplicate"}[o.Result]
			}
			fmt.Fprintf(w, "  %s  %s: event %s (was %s)\n", o.Position, result, o.EventID, o.OldReason)
		case o.Updated:
			fmt.Fprintf(w, "  %s  still invalid, error updated: %s: %s (was %s)\n", o.Position, o.Reason, clip(o.Error, 120), o.OldReason)
		default:
			fmt.Fprintf(w, "  %s  still invalid: %s: %s\n", o.Position, o.Reason, clip(o.Error, 120))
		}
	}
	return nil
}
