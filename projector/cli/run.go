package cli

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v3"
	"golang.org/x/sync/errgroup"

	"github.com/projector-run/projector/projector/consumer"
	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/projector/retrypolicy"
	"github.com/projector-run/projector/store"
)

func (a *app) runCommand() *cli.Command {
	def := consumer.DefaultConfig()
	return &cli.Command{
		Name:  "run",
		Usage: "consume the topics and apply every event exactly once, until SIGINT or SIGTERM",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "until-caught-up", Usage: "exit 0 once every partition's stored offset reaches its high watermark", Sources: cli.EnvVars("UNTIL_CAUGHT_UP")},
			&cli.IntFlag{Name: "batch-size", Value: def.BatchSize, Usage: "most messages of one partition applied in one transaction", Sources: cli.EnvVars("BATCH_SIZE")},
			&cli.DurationFlag{Name: "batch-wait", Value: def.BatchWait, Usage: "how long a partition's batch waits for more messages before it is applied", Sources: cli.EnvVars("BATCH_WAIT")},
			&cli.StringFlag{Name: "kafka-version", Value: def.KafkaVersion, Usage: "Kafka protocol version to speak", Sources: cli.EnvVars("KAFKA_VERSION")},
			&cli.StringFlag{Name: "cpu-profile", Usage: "write a pprof CPU profile of the run to this file", Sources: cli.EnvVars("CPU_PROFILE")},
			&cli.IntFlag{Name: "parallelism", Value: store.DefaultParallelism, Usage: "most batch transactions in flight at once, across partitions, each on a connection of its own", Sources: cli.EnvVars("PARALLELISM")},
			&cli.IntFlag{Name: "db-max-conns", Usage: "PostgreSQL connections in all: the batches' and a few for lease checks and lag (0: --parallelism + 4)", Sources: cli.EnvVars("DB_MAX_CONNS")},
			&cli.StringFlag{Name: "http-addr", Usage: "serve /metrics, /healthz and /readyz on this host:port (like :8080); empty: no HTTP server", Sources: cli.EnvVars("HTTP_ADDR")},
			&cli.StringFlag{Name: "group-instance-id", Usage: "a stable ID of this worker (e.g. the pod name) to be a static group member: a restart takes its partitions back without rebalancing the others (Kafka 2.3+)", Sources: cli.EnvVars("KAFKA_GROUP_INSTANCE_ID")},
			&cli.BoolFlag{Name: "mirror-offsets", Usage: "also commit each stored offset to Kafka after the database commit, for lag tools (never used to position)", Sources: cli.EnvVars("MIRROR_OFFSETS")},
		},
		Action: a.run,
	}
}

func (a *app) run(ctx context.Context, cmd *cli.Command) error {
	if cmd.Args().Len() > 0 {
		return usagef("unexpected argument %q", cmd.Args().First())
	}
	cfg := consumer.DefaultConfig()
	cfg.Brokers = splitList(cmd.String("brokers"))
	cfg.Topics = splitList(cmd.String("topics"))
	cfg.Group = cmd.String("group")
	cfg.KafkaVersion = cmd.String("kafka-version")
	cfg.BatchSize = cmd.Int("batch-size")
	cfg.BatchWait = cmd.Duration("batch-wait")
	cfg.UntilCaughtUp = cmd.Bool("until-caught-up")
	cfg.MirrorOffsets = cmd.Bool("mirror-offsets")
	cfg.InstanceID = cmd.String("group-instance-id")
	if err := a.kafkaSecurity(cmd, &cfg); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return usageError{err}
	}
	par, maxConns, err := connections(cmd.Int("parallelism"), cmd.Int("db-max-conns"), cmd.IsSet("parallelism"))
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	st, err := a.openStore(ctx, cmd, store.Config{MaxConns: int32(maxConns), Parallelism: par})
	if err != nil {
		return err
	}
	defer st.Close()
	a.log.WithFields(logrus.Fields{
		"database": store.RedactURL(cmd.String("database-url")), "brokers": cfg.Brokers,
		"topics": cfg.Topics, "group": cfg.Group,
	}).WithFields(kafkaFields(cfg)).Info("starting")

	// The HTTP endpoint serves from the start, also while PostgreSQL is
	// awaited, and stops when the worker does.
	var ln net.Listener
	if addr := cmd.String("http-addr"); addr != "" {
		if ln, err = listenHTTP(addr); err != nil {
			return err
		}
		defer ln.Close()
	}
	metrics := consumer.NewMetrics()
	im := newIndexMemory(a.log, st.IndexMemory)
	cfg.Observer = metrics
	cfg.Middleware = append(cfg.Middleware, metrics.Measure)
	w, err := consumer.NewWorker(cfg, st, a.log)
	if err != nil {
		return usageError{err}
	}
	g, gctx := errgroup.WithContext(ctx)
	serveCtx, stopServing := context.WithCancel(gctx)
	defer stopServing()
	if ln != nil {
		probe, err := a.openStore(ctx, cmd, store.Config{MaxConns: 1})
		if err != nil {
			return err
		}
		defer probe.Close()
		h := newHTTPHandler(newRegistry(metrics, im.indexes, im.sharedBuffers), []readyCheck{
			databaseCheck(probe),
			kafkaCheck(cfg),
			workerCheck(w, readyRetryLimit),
		})
		g.Go(func() error { return serveHTTP(serveCtx, ln, h, a.log) })
	}
	g.Go(func() error {
		defer stopServing()
		return a.runWorker(gctx, cmd, st, w, metrics, im, cfg)
	})
	return g.Wait()
}

// runWorker waits for the database, then runs the worker until ctx ends (or
// it has caught up, with --until-caught-up) and logs what it did.
func (a *app) runWorker(ctx context.Context, cmd *cli.Command, st *store.Store, w *consumer.Worker, m *consumer.Metrics, im *indexMemory, cfg consumer.Config) error {
	// What is wrong in the database or the files is said at once, before
	// a broker that may be down is waited for. A SIGINT or SIGTERM during
	// any step ends the worker with exit code 0, whatever the step says of
	// its cancelled context.
	for _, step := range []func() error{
		func() error { return a.checkSchema(ctx, cmd, st) },
		func() error { im.check(ctx); return nil },
		func() error { return a.checkSQLProjections(ctx, st) },
		func() error { return a.checkKafka(ctx, cfg) },
		func() error { return a.setupProjections(ctx, st) },
		func() error { return a.buildProjections(ctx, st) },
	} {
		if err := step(); err != nil || ctx.Err() != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
	if path := cmd.String("cpu-profile"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return usagef("--cpu-profile: %v", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("start cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	start := time.Now()
	watchCtx, stopWatching := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		im.watch(watchCtx, indexMemoryEvery)
	}()
	err := w.Run(ctx)
	stopWatching()
	<-watched
	if errors.Is(err, model.ErrProjectionNotLoaded) {
		err = usageError{err}
	}
	s := w.Stats()
	a.log.WithFields(logrus.Fields{
		"events": s.Events.Load(), "duplicates": s.Duplicates.Load(), "dead_letters": s.DeadLetters.Load(),
		"messages": s.Messages.Load(), "elapsed": time.Since(start).Round(time.Millisecond).String(),
		"batches": s.Batches.Load(), "copied_batches": s.CopiedBatches.Load(), "copy_conflicts": s.CopyConflicts.Load(), "step_conflicts": s.StepConflicts.Load(),
		"batch_p50_ms": ms(m.BatchQuantile(0.5)), "batch_p99_ms": ms(m.BatchQuantile(0.99)),
	}).Info("stopped")
	return err
}

// indexMemoryEvery is how often a running worker compares the indexes
// with shared_buffers again. A test that is not parallel shortens it:
// read only when a worker starts, it is not read while that test runs.
var indexMemoryEvery = 10 * time.Minute

// indexMemory warns when the indexes that every batch writes have
// outgrown shared_buffers, the point from which throughput falls as the
// history grows: at start, and then once each time a check finds them
// grown past it (a history grows under a worker that runs for months).
// It never stops the worker: a check the server cannot answer, or not
// within indexMemoryTimeout (a table locked by an ALTER or a VACUUM
// FULL), is said at debug level only and changes nothing.
type indexMemory struct {
	log      logrus.FieldLogger
	read     func(context.Context) (store.IndexMemory, error) // Store.IndexMemory
	outgrown bool                                             // at the last check that was answered
	// What the last answered check read, on /metrics, for alerts: NaN
	// until one was.
	indexes, sharedBuffers prometheus.Gauge
}

func newIndexMemory(log logrus.FieldLogger, read func(context.Context) (store.IndexMemory, error)) *indexMemory {
	im := &indexMemory{
		log: log, read: read,
		indexes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "projector_index_bytes",
			Help: "Size of the indexes of workflow_events, workflow_runs and workflow_steps, as of the last check (every 10 minutes)."}),
		sharedBuffers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "projector_shared_buffers_bytes",
			Help: "PostgreSQL's shared_buffers, as of the last check: batches slow down as the history grows once projector_index_bytes is larger."}),
	}
	im.indexes.Set(math.NaN())
	im.sharedBuffers.Set(math.NaN())
	return im
}

// indexMemoryTimeout bounds one check.
const indexMemoryTimeout = 10 * time.Second

func (im *indexMemory) check(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, indexMemoryTimeout)
	defer cancel()
	m, err := im.read(cctx)
	if err != nil {
		if ctx.Err() == nil {
			im.log.WithError(err).Debug("could not compare the indexes with shared_buffers")
		}
		return
	}
	im.indexes.Set(float64(m.Indexes))
	im.sharedBuffers.Set(float64(m.SharedBuffers))
	fields := logrus.Fields{"indexes_mb": mib(m.Indexes), "shared_buffers_mb": mib(m.SharedBuffers)}
	im.log.WithFields(fields).Debug("compared the indexes with shared_buffers")
	if m.Outgrown() && !im.outgrown {
		im.log.WithFields(fields).Warn("the indexes of workflow_events, workflow_runs and workflow_steps outgrow shared_buffers: " +
			"batches read index pages from outside PostgreSQL's cache and throughput falls as the history grows; " +
			"raise shared_buffers to hold them, or prune the history and then REINDEX CONCURRENTLY (README: PostgreSQL server settings, Retention)")
	}
	im.outgrown = m.Outgrown()
}

// mib is n bytes in MiB, rounded up, so that indexes just past
// shared_buffers do not read as equal to it.
func mib(n int64) int64 { return (n + 1<<20 - 1) >> 20 }

// watch checks every interval until ctx ends.
func (im *indexMemory) watch(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			im.check(ctx)
		}
	}
}

// checkSchema waits for PostgreSQL (retrying, it may be starting) and
// fails when the database lacks this binary's migrations or refuses the
// connection for a reason only a change of configuration mends (a wrong
// password, a role or database that does not exist, a certificate).
func (a *app) checkSchema(ctx context.Context, cmd *cli.Command, st *store.Store) error {
	m, err := st.NewMigrator()
	if err != nil {
		return err
	}
	defer m.Close()
	_, err = backoff.Retry(ctx, func() (struct{}, error) {
		err := m.CheckCurrent(ctx)
		if store.IsNotMigrated(err) || errors.Is(err, store.ErrSQLRelations) {
			return struct{}{}, backoff.Permanent(usageError{err})
		}
		if store.IsConfigError(err) {
			return struct{}{}, backoff.Permanent(databaseRefused(cmd.String("database-url"), err))
		}
		return struct{}{}, err
	}, backoff.WithBackOff(retrypolicy.NewBackOff(200*time.Millisecond, 10*time.Second)), backoff.WithMaxElapsedTime(0),
		backoff.WithNotify(func(err error, next time.Duration) {
			a.log.WithError(err).WithField("retry_in", next.Round(time.Millisecond).String()).Warn("database not reachable; retrying")
		}))
	if ctx.Err() != nil {
		return nil // stopped (SIGINT, SIGTERM) while checking: exit 0
	}
	return err
}

// sideConns are the connections beside the batch transactions: idle
// claims' lease checks, high watermarks, the caught-up check, the
// indexes' size against shared_buffers.
const sideConns = 4

// connections reads --parallelism and --db-max-conns. Either one set
// alone sizes the other: the pool is the batches' connections plus
// sideConns, and a pool given alone leaves one connection beside the
// batches (a pool of one serializes everything, and still works).
func connections(par, maxConns int, parSet bool) (int, int, error) {
	if par < 1 || par > 256 {
		return 0, 0, usagef("--parallelism: must be from 1 to 256, got %d", par)
	}
	if maxConns < 0 || maxConns > 1000 {
		return 0, 0, usagef("--db-max-conns: must be from 1 to 1000 (0: --parallelism + %d), got %d", sideConns, maxConns)
	}
	switch {
	case maxConns == 0:
		maxConns = par + sideConns
	case !parSet:
		par = max(1, min(par, maxConns-1))
	case par > maxConns:
		return 0, 0, usagef("--db-max-conns (%d) must be at least --parallelism (%d): each batch in flight needs a connection", maxConns, par)
	}
	return par, maxConns, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// buildProjections refuses to go on when the database has a projection
// this process lacks (exit code 2), and builds from the stored events
// each loaded projection that is new to the database, with its progress
// shown, before the worker applies any batch.
func (a *app) buildProjections(ctx context.Context, st *store.Store) error {
	if err := st.CheckProjections(ctx); err != nil {
		if errors.Is(err, model.ErrProjectionNotLoaded) {
			return usageError{err}
		}
		return err
	}
	bars := map[string]*Bar{}
	built, err := st.BuildProjections(ctx, store.BuildOptions{
		Progress: func(name string, done, total int64) {
			bar := bars[name]
			if bar == nil {
				bar = NewBar(a.log.Out, "build "+name, "events", total, func(done, total int64) {
					a.log.WithFields(logrus.Fields{"projection": name, "events": done, "total": total,
						"percent": fmt.Sprintf("%.0f", 100*float64(done)/float64(max(total, 1)))}).Info("building projection from the stored events")
				})
				bars[name] = bar
			}
			bar.Set(done, total)
		},
		Retried: func(name string, err error, next time.Duration) {
			a.log.WithError(err).WithFields(logrus.Fields{"projection": name, "retry_in": next.Round(time.Millisecond).String()}).
				Error("building projection from the stored events failed; retrying until it succeeds")
		},
	})
	for _, bar := range bars {
		bar.Finish()
	}
	for _, name := range built {
		a.log.WithField("projection", name).Info("projection built from the stored events; batches keep it from here on")
	}
	if ctx.Err() != nil {
		return nil // stopped (SIGINT, SIGTERM) during the build: it resumes at the next start
	}
	return err
}
