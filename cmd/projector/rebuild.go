package main

import (
	"context"
	"fmt"
	"time"

	"github.com/projector-run/projector/cmd/internal/progress"
	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v3"

	"github.com/projector-run/projector/store"
)

func (a *app) rebuildCommand() *cli.Command {
	return &cli.Command{
		Name:  "rebuild",
		Usage: "recompute workflow_runs from workflow_events alone (no broker needed), in one transaction",
		Description: "Every run is projected again from its stored events, decoded by this binary's rules;\n" +
			"the rows that differ are written and the rows of runs without events deleted, in one\n" +
			"transaction: dashboards see the old table until it commits, never a half-built one.\n" +
			"Workers wait for it (their batches lock the stored offsets, which it holds).",
		Flags: []cli.Flag{
			dryRunFlag("report how many rows would change and show a few differences, and change nothing"),
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
	var bar *progress.Bar
	res, err := st.Rebuild(ctx, store.RebuildOptions{DryRun: dryRun, Samples: 5, Progress: func(done, total int64) {
		if bar == nil {
			bar = progress.New(a.log.Out, "rebuild", "events", total, a.logProgress("rebuild progress"))
		}
		bar.Set(done, total)
	}})
	if bar != nil {
		bar.Finish()
	}
	if err != nil {
		return err
	}
	elapsed := time.Since(start).Round(time.Millisecond)
	w := a.stdout
	if dryRun {
		fmt.Fprintf(w, "dry run: %d of %s would change (%d updated, %d inserted, %d deleted); nothing was changed\n",
			res.Changed(), plural(res.Recomputed+res.Deleted, "run"), res.Updated, res.Inserted, res.Deleted)
		for _, d := range res.Samples {
			fmt.Fprintf(w, "  %s\n", clip(d.String(), 160))
		}
		if n := res.Changed() - int64(len(res.Samples)); n > 0 {
			fmt.Fprintf(w, "  ... and %d more\n", n)
		}
		return nil
	}
	fmt.Fprintf(w, "rebuilt workflow_runs from %s of %s in %s: %d updated, %d inserted, %d deleted, %d unchanged\n",
		plural(res.Events, "event"), plural(res.Recomputed, "run"), elapsed, res.Updated, res.Inserted, res.Deleted, res.Unchanged)
	return nil
}

// logProgress returns the line function of a progress.Bar that logs msg
// at info with the counts.
func (a *app) logProgress(msg string) func(done, total int64) {
	return func(done, total int64) {
		a.log.WithFields(logrus.Fields{"events": done, "total": total,
			"percent": fmt.Sprintf("%.0f", 100*float64(done)/float64(max(total, 1)))}).Info(msg)
	}
}
