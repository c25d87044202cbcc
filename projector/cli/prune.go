package cli

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v3"

	"github.com/projector-run/projector/store"
)

func (a *app) pruneCommand() *cli.Command {
	return &cli.Command{
		Name:  "prune",
		Usage: "bound the stored history: delete the events that occurred before a horizon, and the dead letters received before it, online",
		Description: "The horizon is recorded in retention_horizon first; from then on, an event before it whose\n" +
			"event_id is not stored (it may be the duplicate of a pruned one) becomes a dead letter of\n" +
			"reason before_horizon instead of being applied. Then the events are deleted a chunk at a\n" +
			"time while workers run, and the tables vacuumed so that the space is reused. Every\n" +
			"projection's rows stay as they are; offsets reset and rebuild refuse to recompute a run\n" +
			"whose history was pruned in part. The horizon never moves back.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "before", Usage: "the horizon, an RFC 3339 time like 2026-05-01T00:00:00Z", Sources: cli.EnvVars("PRUNE_BEFORE")},
			&cli.StringFlag{Name: "older-than", Usage: "the horizon as an age: a duration like 720h, or days like 90d", Sources: cli.EnvVars("PRUNE_OLDER_THAN")},
			&cli.BoolFlag{Name: "no-vacuum", Usage: "leave the deleted rows' space to autovacuum (VACUUM needs the tables' owner)", Sources: cli.EnvVars("PRUNE_NO_VACUUM")},
			dryRunFlag("count what would be deleted, and change nothing"),
		},
		Action: a.prune,
	}
}

// parseAge parses a duration of Go's form (720h) or whole days (90d).
func parseAge(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("%q is not a number of days", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q is not a duration like 720h or 90d", s)
	}
	return d, nil
}

// horizonOf reads --before or --older-than (exactly one).
func horizonOf(cmd *cli.Command, now time.Time) (time.Time, error) {
	before, age := cmd.String("before"), cmd.String("older-than")
	switch {
	case before != "" && age != "":
		return time.Time{}, usagef("give --before or --older-than, not both")
	case before != "":
		t, err := time.Parse(time.RFC3339Nano, before)
		if err != nil {
			return time.Time{}, usagef("--before: %q is not an RFC 3339 time like 2026-05-01T00:00:00Z", before)
		}
		return t, nil
	case age != "":
		d, err := parseAge(age)
		if err != nil {
			return time.Time{}, usagef("--older-than: %v", err)
		}
		return now.Add(-d), nil
	}
	return time.Time{}, usagef("give the horizon: --before TIME or --older-than DURATION")
}

func (a *app) prune(ctx context.Context, cmd *cli.Command) error {
	if err := noArgs(cmd); err != nil {
		return err
	}
	now := time.Now()
	horizon, err := horizonOf(cmd, now)
	if err != nil {
		return err
	}
	if horizon.After(now) {
		// It would delete every event, hold back every new one, and never
		// move back.
		return usagef("the horizon %s is in the future", horizon.UTC().Format(time.RFC3339Nano))
	}
	dryRun := cmd.Bool("dry-run")
	st, err := a.openReady(ctx, cmd)
	if err != nil {
		return err
	}
	defer st.Close()

	start := time.Now()
	var bar *Bar
	res, err := st.Prune(ctx, store.PruneOptions{Before: horizon, DryRun: dryRun, Progress: func(done, total int64) {
		if bar == nil {
			bar = NewBar(a.log.Out, "prune", "blocks", total, func(done, total int64) {
				a.log.WithFields(logrus.Fields{"blocks": done, "total": total,
					"percent": fmt.Sprintf("%.0f", 100*float64(done)/float64(max(total, 1)))}).Info("prune progress")
			})
		}
		bar.Set(done, total)
	}})
	if bar != nil {
		bar.Finish()
	}
	if err != nil {
		return err
	}
	w := a.stdout
	at := res.Horizon.Format(time.RFC3339Nano)
	if dryRun {
		fmt.Fprintf(w, "dry run: the horizon would be %s; %s and %s would be deleted; nothing was changed\n",
			at, plural(res.Events, "event"), plural(res.DeadLetters, "dead letter"))
		return nil
	}
	if res.Horizon.After(horizon.UTC()) {
		fmt.Fprintf(w, "the stored horizon %s is later than the one asked for, and stays: a horizon never moves back\n", at)
	}
	fmt.Fprintf(w, "pruned %s and %s before %s in %s\n", plural(res.Events, "event"), plural(res.DeadLetters, "dead letter"),
		at, time.Since(start).Round(time.Millisecond))
	if cmd.Bool("no-vacuum") {
		return nil
	}
	if err := st.Vacuum(ctx); err != nil {
		a.log.WithError(err).Warn("vacuum after prune failed; autovacuum will reclaim the space later")
	}
	return nil
}
