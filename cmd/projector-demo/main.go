// Command projector-demo runs the whole pipeline on one machine with no
// Kafka installed: an in-process Kafka-protocol broker (kfake), a
// generator of realistic workflow events, the projector worker, and a
// summary read back from the SQL tables. `make demo` runs it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/projector-run/projector/projector/cli"

	"github.com/sirupsen/logrus"

	"github.com/projector-run/projector/projector/consumer"
	"github.com/projector-run/projector/projector/eventgen"
	"github.com/projector-run/projector/projector/kafkatest"
	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/projector/sqlprojections"
	"github.com/projector-run/projector/store"
)

const topic = "workflow-events"

type options struct {
	databaseURL string
	runs        int
	partitions  int
	seed        uint64
	batchSize   int
	// projectionsDir holds projections in SQL; "" loads the examples
	// shipped with the binary (projector/sqlprojections/examples).
	projectionsDir string
}

func main() {
	opts := options{}
	fs := flag.NewFlagSet("projector-demo", flag.ContinueOnError)
	def := os.Getenv("DATABASE_URL")
	if def == "" {
		def = store.LocalURL
	}
	fs.StringVar(&opts.databaseURL, "database-url", def, "PostgreSQL server; the demo (re)creates a database named projector_demo on it [DATABASE_URL]")
	fs.IntVar(&opts.runs, "runs", 20000, "workflow runs to generate (about 17 messages each)")
	fs.IntVar(&opts.partitions, "partitions", 8, "partitions of the topic")
	fs.Uint64Var(&opts.seed, "seed", 1, "seed of the event generator")
	fs.IntVar(&opts.batchSize, "batch-size", consumer.DefaultConfig().BatchSize, "most messages per transaction")
	fs.StringVar(&opts.projectionsDir, "projections-dir", os.Getenv("PROJECTIONS_DIR"), "projections in SQL to load (default: the three examples of the README) [PROJECTIONS_DIR]")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if opts.runs < 1 || opts.partitions < 1 || opts.partitions > 1000 {
		fmt.Fprintln(os.Stderr, "projector-demo: --runs must be positive and --partitions from 1 to 1000")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := demo(ctx, os.Stdout, opts); err != nil {
		fmt.Fprintf(os.Stderr, "projector-demo: %v\n", err)
		os.Exit(1)
	}
}

func demo(ctx context.Context, out io.Writer, opts options) error {
	dbURL, err := store.RecreateDatabase(ctx, opts.databaseURL, "projector_demo")
	if err != nil {
		return fmt.Errorf("--database-url: %w (is PostgreSQL running? see README)", err)
	}
	fmt.Fprintf(out, "database  %s (created fresh)\n", store.RedactURL(dbURL))
	sqlps, from, err := loadSQL(opts.projectionsDir)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "sql       projections in SQL %s, from %s\n", names(sqlps), from)
	st, err := store.Open(ctx, store.Config{URL: dbURL, MaxConns: int32(opts.partitions + 2), Projections: sqlps})
	if err != nil {
		return err
	}
	defer st.Close()
	m, err := st.NewMigrator()
	if err != nil {
		return err
	}
	if _, err := m.Up(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	_ = m.Close()

	cluster, err := kafkatest.Start(topic, int32(opts.partitions))
	if err != nil {
		return err
	}
	defer cluster.Close()
	fmt.Fprintf(out, "broker    in-process Kafka protocol at %s, topic %s with %d partitions\n",
		strings.Join(cluster.ListenAddrs(), ","), topic, opts.partitions)

	wl := eventgen.Generate(eventgen.Config{
		Seed: opts.seed, Runs: opts.runs, DuplicateRate: 0.05, ShuffleRate: 0.15,
		MalformedRate: 0.01, RetryRate: 0.1, UnkeyedRate: 0.02,
	})
	start := time.Now()
	if err := produce(ctx, out, cluster.ListenAddrs(), wl.Messages); err != nil {
		return err
	}
	fmt.Fprintf(out, "produced  %d messages (%d distinct valid events, %d duplicates, %d malformed) in %s\n",
		len(wl.Messages), wl.Valid, len(wl.Messages)-wl.Valid-wl.Invalid, wl.Invalid, time.Since(start).Round(time.Millisecond))

	cfg := consumer.DefaultConfig()
	cfg.Brokers = cluster.ListenAddrs()
	cfg.Topics = []string{topic}
	cfg.Group = "projector-demo"
	cfg.BatchSize = opts.batchSize
	cfg.UntilCaughtUp = true
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	log.SetOutput(os.Stderr)
	// As `projector run` does: the files checked, the projections set up
	// and registered (built from the stored events: none yet) before the
	// first batch.
	if err := st.CheckSQLProjections(ctx); err != nil {
		return err
	}
	if err := st.SetupProjections(ctx); err != nil {
		return err
	}
	if _, err := st.BuildProjections(ctx, store.BuildOptions{}); err != nil {
		return err
	}
	w, err := consumer.NewWorker(cfg, st, log)
	if err != nil {
		return err
	}
	start = time.Now()
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	s := w.Stats()
	counts := func() string {
		return fmt.Sprintf("%d events  %d duplicates  %d dead letters", s.Events.Load(), s.Duplicates.Load(), s.DeadLetters.Load())
	}
	pr := cli.NewBar(out, "consume", "messages", int64(len(wl.Messages)), func(done, total int64) {
		fmt.Fprintf(out, "consume   %d/%d messages  %s  %.0f msg/s\n", done, total, counts(), float64(done)/time.Since(start).Seconds())
	})
	for running := true; running; {
		select {
		case err = <-done:
			running = false
		case <-tick.C:
		}
		pr.Describe("consume  " + counts())
		pr.Set(s.Messages.Load(), int64(len(wl.Messages)))
	}
	pr.Finish()
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		return errors.New("interrupted")
	}
	elapsed := time.Since(start)
	fmt.Fprintf(out, "caught up in %s: %.0f events/s applied, %.0f messages/s consumed\n",
		elapsed.Round(time.Millisecond), float64(s.Events.Load())/elapsed.Seconds(), float64(s.Messages.Load())/elapsed.Seconds())
	fmt.Fprintf(out, "batches: %d, %d of them by COPY; %d COPYs met an event_id already stored and were applied again skipping it; %d plain inserts of steps met a stored step and were merged again\n\n",
		s.Batches.Load(), s.CopiedBatches.Load(), s.CopyConflicts.Load(), s.StepConflicts.Load())
	return summary(ctx, out, st, wl)
}

// loadSQL loads the projections in SQL of dir, or the examples.
func loadSQL(dir string) ([]store.Projection, string, error) {
	if dir != "" {
		ps, err := store.LoadSQLProjections(dir)
		return ps, dir, err
	}
	ps, err := sqlprojections.Load()
	return ps, "the examples (projector/sqlprojections/examples)", err
}

func names(ps []store.Projection) string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name())
	}
	return strings.Join(out, ", ")
}

func produce(ctx context.Context, out io.Writer, brokers []string, msgs []model.Message) error {
	p, err := kafkatest.NewProducer(brokers, topic)
	if err != nil {
		return err
	}
	defer p.Close()
	const chunk = 5000
	pr := cli.NewBar(out, "produce", "messages", int64(len(msgs)), func(done, total int64) {
		fmt.Fprintf(out, "produce   %d/%d messages\n", done, total)
	})
	for i := 0; i < len(msgs); i += chunk {
		if err := p.Produce(ctx, msgs[i:min(i+chunk, len(msgs))]); err != nil {
			return err
		}
		pr.Set(int64(min(i+chunk, len(msgs))), int64(len(msgs)))
	}
	pr.Finish()
	return nil
}

// summary prints what SQL users now see.
func summary(ctx context.Context, out io.Writer, st *store.Store, wl eventgen.Workload) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	pool := st.Pool()
	section := func(title, q string) error {
		rows, err := pool.Query(ctx, q)
		if err != nil {
			return fmt.Errorf("%s: %w", title, err)
		}
		defer rows.Close()
		fmt.Fprintln(out, title)
		for _, f := range rows.FieldDescriptions() {
			fmt.Fprintf(tw, "%s\t", f.Name)
		}
		fmt.Fprintln(tw)
		for rows.Next() {
			vals, err := rows.Values()
			if err != nil {
				return err
			}
			for _, v := range vals {
				if v == nil {
					v = ""
				}
				fmt.Fprintf(tw, "%v\t", v)
			}
			fmt.Fprintln(tw)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(out)
		return rows.Err()
	}
	for _, s := range []struct{ title, q string }{
		{"runs by status (workflow_runs)", `SELECT status, count(*) AS runs, round(avg(duration_ms))::bigint AS avg_duration_ms, sum(steps_failed)::bigint AS failed_steps FROM workflow_runs GROUP BY status ORDER BY runs DESC`},
		{"runs by source", `SELECT source, count(*) AS runs, count(*) FILTER (WHERE attempt > 1) AS rerun, count(*) FILTER (WHERE status = 'failed') AS failed FROM workflow_runs GROUP BY source ORDER BY runs DESC`},
		{"slowest steps (workflow_steps, the step_durations view over all time)", `SELECT workflow_id, step_id, finished, failed, p50_duration_ms, p95_duration_ms FROM step_durations_between('-infinity') ORDER BY p95_duration_ms DESC NULLS LAST LIMIT 5`},
		{"busiest hours (events_per_type_hour, a projection in SQL)", `SELECT to_char(hour AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:00') AS hour_utc, sum(events)::bigint AS events, max(runs) FILTER (WHERE event_type = 'run.queued') AS runs_queued, max(runs) FILTER (WHERE event_type = 'step.failed') AS runs_with_failed_steps FROM events_per_type_hour GROUP BY hour ORDER BY events DESC LIMIT 5`},
		{"latest run per workflow (latest_run_per_workflow, a projection in SQL)", `SELECT status, count(*) AS workflows, max(changed_at) AS last_change FROM latest_run_per_workflow GROUP BY status ORDER BY workflows DESC`},
		{"dead letters by reason (dead_letters)", `SELECT reason, count(*) AS messages, min(error) AS example_error FROM dead_letters GROUP BY reason ORDER BY messages DESC`},
		{"stored offsets (consumer_offsets)", `SELECT topic, partition, next_offset FROM consumer_offsets ORDER BY topic, partition`},
		{"totals", `SELECT (SELECT count(*) FROM workflow_events) AS events, (SELECT count(*) FROM workflow_runs) AS runs, (SELECT count(*) FROM dead_letters) AS dead_letters, (SELECT sum(event_count)::bigint FROM workflow_runs) AS sum_event_count`},
	} {
		if err := section(s.title, s.q); err != nil {
			return err
		}
	}
	var events, dead int
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM workflow_events), (SELECT count(*) FROM dead_letters)`).Scan(&events, &dead); err != nil {
		return err
	}
	if events != wl.Valid || dead != wl.Invalid {
		return fmt.Errorf("check failed: %d events stored (generated %d distinct), %d dead letters (generated %d malformed)",
			events, wl.Valid, dead, wl.Invalid)
	}
	fmt.Fprintf(out, "check: %d distinct events stored once each, %d malformed messages stored as dead letters: exactly once.\n", events, dead)
	return nil
}
