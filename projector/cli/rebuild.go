package cli

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v3"

	"github.com/projector-run/projector/store"
)

func (a *app) rebuildCommand() *cli.Command {
	return &cli.Command{
		Name:  "rebuild",
		Usage: "recompute every projection (or one) from workflow_events alone (no broker needed), in one transaction",
		Description: "Every stored event is decoded again by this binary's rules. workflow_runs is compared\n" +
			"run by run with the projection of its events: the rows that differ are written and the\n" +
			"rows of runs without events deleted. Every other projection forgets everything and is\n" +
			"given every stored event again. All in one transaction: dashboards see the old tables\n" +
			"until it commits, never half-built ones. Workers wait for it (their batches lock the\n" +
			"stored offsets, which it holds).",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "projection", Usage: "only this projection (workflow_runs, workflow_steps, or one of yours)", DefaultText: "every projection", Sources: cli.EnvVars("REBUILD_PROJECTION")},
			dryRunFlag("report how many rows of workflow_runs would change and show a few differences, and change nothing"),
			&cli.BoolFlag{Name: "keep-pruned-runs", Usage: "rebuild every run but those whose events before the retention horizon were pruned, and keep their rows as they are (without it, such runs make rebuild fail)", Sources: cli.EnvVars("REBUILD_KEEP_PRUNED_RUNS")},
		},
		Action: a.rebuild,
	}
}

func (a *app) rebuild(ctx context.Context, cmd *cli.Command) error {
	if err := noArgs(cmd); err != nil {
		return err
	}
	dryRun := cmd.Bool("dry-run")
	st, err := a.openReady(ctx, cmd)
	if err != nil {
		return err
	}
	defer st.Close()

	start := time.Now()
	var bar *Bar
	only := cmd.String("projection")
	res, err := st.Rebuild(ctx, store.RebuildOptions{Projection: only, DryRun: dryRun, Samples: 5, KeepPrunedRuns: cmd.Bool("keep-pruned-runs"), Progress: func(done, total int64) {
		if bar == nil {
			bar = NewBar(a.log.Out, "rebuild", "events", total, a.logProgress("rebuild progress"))
		}
		bar.Set(done, total)
	}})
	if bar != nil {
		bar.Finish()
	}
	if errors.Is(err, store.ErrUnknownProjection) {
		return usageError{err}
	}
	if errors.Is(err, store.ErrPrunedHistory) {
		return fmt.Errorf("%w; --keep-pruned-runs rebuilds the other runs and keeps their rows as they are", err)
	}
	if err != nil {
		return err
	}
	elapsed := time.Since(start).Round(time.Millisecond)
	w := a.stdout
	runs := slices.Contains(res.Projections, "workflow_runs")
	if dryRun && !runs {
		fmt.Fprintf(w, "dry run: %s would be rebuilt from %s; a projection of yours cannot say what would change without running it; nothing was changed\n",
			strings.Join(res.Projections, ", "), plural(res.Events, "event"))
		return nil
	}
	if dryRun {
		fmt.Fprintf(w, "dry run: %d of %s would change (%d updated, %d inserted, %d deleted); nothing was changed\n",
			res.Changed(), plural(res.Recomputed+res.Deleted, "run"), res.Updated, res.Inserted, res.Deleted)
		if others := len(res.Projections) - 1; others > 0 {
			fmt.Fprintf(w, "  (%s would be rebuilt from the same events too; a dry run can say what changes in workflow_runs only)\n",
				strings.Join(res.Projections[1:], ", "))
		}
		for _, d := range res.Samples {
			fmt.Fprintf(w, "  %s\n", clip(d.String(), 160))
		}
		if n := res.Changed() - int64(len(res.Samples)); n > 0 {
			fmt.Fprintf(w, "  ... and %d more\n", n)
		}
		return nil
	}
	if runs {
		fmt.Fprintf(w, "rebuilt workflow_runs from %s of %s in %s: %d updated, %d inserted, %d deleted, %d unchanged\n",
			plural(res.Events, "event"), plural(res.Recomputed, "run"), elapsed, res.Updated, res.Inserted, res.Deleted, res.Unchanged)
	}
	for _, name := range res.Projections {
		if name != "workflow_runs" {
			fmt.Fprintf(w, "rebuilt %s from %s in %s\n", name, plural(res.Events, "event"), elapsed)
		}
	}
	return nil
}

// logProgress returns the line function of a Bar that logs msg
// at info with the counts.
func (a *app) logProgress(msg string) func(done, total int64) {
	return func(done, total int64) {
		a.log.WithFields(logrus.Fields{"events": done, "total": total,
			"percent": fmt.Sprintf("%.0f", 100*float64(done)/float64(max(total, 1)))}).Info(msg)
	}
}
