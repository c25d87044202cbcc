// Package cli is the projector command line: flags and environment, the
// wiring of the consumer and the store, one file per subcommand. Run is its
// entry; cmd/projector and projector.Main call it.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v3"

	"github.com/projector-run/projector/projector/consumer"
	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError is bad input or configuration: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// Run executes the command line, with the user's projections added to the
// built-in ones, and returns the process exit code. projector.Main calls
// it with the process's arguments and exits with its result.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer, projections ...store.Projection) int {
	app := newApp(stdout, stderr, projections)
	err := app.Run(ctx, args)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "projector: %s\n", oneLine(err))
	var ue usageError
	var kafkaRefused *consumer.ConfigError
	if errors.As(err, &ue) || errors.Is(err, model.ErrProjectionNotLoaded) || errors.Is(err, store.ErrBuilding) ||
		errors.Is(err, store.ErrPrunedHistory) || errors.As(err, &kafkaRefused) || store.IsConfigError(err) {
		return exitUsage
	}
	return exitFailure
}

// oneLine joins a multi-line error (errors.Join) into one line.
func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}

// app holds what the subcommands share, filled in by the root's Before.
type app struct {
	log    *logrus.Logger
	stdout io.Writer
	// projections are the user's, applied after the built-in ones: the
	// binary's, then those of --projections-dir.
	projections []store.Projection
	// sqlDir is --projections-dir, sqlLoaded how many projections it has.
	sqlDir    string
	sqlLoaded int
}

func newApp(stdout, stderr io.Writer, projections []store.Projection) *cli.Command {
	a := &app{log: logrus.New(), stdout: stdout, projections: projections}
	a.log.SetOutput(stderr)
	def := consumer.DefaultConfig()
	root := &cli.Command{
		Name:  "projector",
		Usage: "apply workflow events from Kafka to a run-state projection in PostgreSQL, exactly once",
		Description: "Each transaction that applies events also stores the partition offsets in PostgreSQL;\n" +
			"Kafka's committed offsets are never used. Every flag can also be set by the environment\n" +
			"variable shown in brackets; a flag wins over its variable.",
		Writer:    stdout,
		ErrWriter: stderr,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "brokers", Value: strings.Join(def.Brokers, ","), Usage: "Kafka bootstrap brokers, comma-separated", Sources: cli.EnvVars("KAFKA_BROKERS")},
			&cli.StringFlag{Name: "topics", Value: strings.Join(def.Topics, ","), Usage: "topics to consume, comma-separated", Sources: cli.EnvVars("KAFKA_TOPICS")},
			&cli.StringFlag{Name: "group", Value: def.Group, Usage: "Kafka consumer group; also keys the stored offsets", Sources: cli.EnvVars("KAFKA_GROUP_ID")},
			&cli.StringFlag{Name: "database-url", Value: store.DefaultURL, Usage: "PostgreSQL connection URL (or DATABASE_URL_FILE: a file that holds it)", Sources: cli.EnvVars("DATABASE_URL")},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error", Sources: cli.EnvVars("LOG_LEVEL")},
			&cli.StringFlag{Name: "log-format", Value: "text", Usage: "text, or json for machines", Sources: cli.EnvVars("LOG_FORMAT")},
			&cli.StringFlag{Name: "projections-dir", Usage: "load every NAME.sql of this directory as the projection NAME (projections in SQL)", Sources: cli.EnvVars("PROJECTIONS_DIR")},
		},
		Before: func(ctx context.Context, cmd *cli.Command) (context.Context, error) {
			if err := a.setupLogging(cmd.String("log-level"), cmd.String("log-format")); err != nil {
				return ctx, err
			}
			if err := readSecretFiles(cmd); err != nil {
				return ctx, err
			}
			return ctx, a.loadSQLProjections(cmd.String("projections-dir"))
		},
		ExitErrHandler: func(context.Context, *cli.Command, error) {},
		Commands: []*cli.Command{
			a.migrateCommand(),
			a.runCommand(),
			a.offsetsCommand(),
			a.rebuildCommand(),
			a.pruneCommand(),
			a.dlqCommand(),
			a.projectionsCommand(),
		},
	}
	root.Flags = append(root.Flags, securityFlags()...) // security.go
	markUsageErrors(root)
	return root
}

// markUsageErrors makes a flag that does not parse, on any command, a
// usage error (exit code 2).
func markUsageErrors(cmd *cli.Command) {
	cmd.OnUsageError = func(_ context.Context, _ *cli.Command, err error, _ bool) error {
		return usageError{err}
	}
	for _, sub := range cmd.Commands {
		markUsageErrors(sub)
	}
}

func (a *app) setupLogging(level, format string) error {
	lvl, err := logrus.ParseLevel(level)
	if err != nil {
		return usagef("--log-level: %q is not one of debug, info, warn, error", level)
	}
	a.log.SetLevel(lvl)
	switch format {
	case "text":
		a.log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: "2006-01-02T15:04:05.000Z07:00"})
	case "json":
		a.log.SetFormatter(&logrus.JSONFormatter{TimestampFormat: time.RFC3339Nano})
	default:
		return usagef("--log-format: %q is not text or json", format)
	}
	saramaLog.Store(a.log.WithField("component", "sarama"))
	return nil
}

// saramaLog receives sarama's own log lines, at debug level: they are
// many. sarama's logger is a package variable, set once; the logrus entry
// behind it is swapped atomically when a command sets up logging.
var saramaLog atomic.Pointer[logrus.Entry]

func init() {
	saramaLog.Store(logrus.NewEntry(logrus.New()))
	sarama.Logger = log.New(saramaWriter{}, "", 0)
}

type saramaWriter struct{}

func (saramaWriter) Write(p []byte) (int, error) {
	saramaLog.Load().Debug(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// splitList splits a comma-separated flag value, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// openStore opens the database named by --database-url; a malformed URL
// is a usage error.
func (a *app) openStore(ctx context.Context, cmd *cli.Command, cfg store.Config) (*store.Store, error) {
	cfg.URL = cmd.String("database-url")
	cfg.Projections = a.projections
	st, err := store.Open(ctx, cfg)
	if errors.Is(err, store.ErrBadProjection) {
		return nil, usageError{err}
	}
	if err != nil {
		return nil, usageError{fmt.Errorf("--database-url: %w", err)}
	}
	return st, nil
}

// setupProjections runs every projection's Setup. A projection that fails
// its Setup is a configuration error: exit code 2, naming it.
func (a *app) setupProjections(ctx context.Context, st *store.Store) error {
	err := st.SetupProjections(ctx)
	if pe := (*model.ProjectionError)(nil); errors.As(err, &pe) {
		return usageError{err}
	}
	if err != nil {
		return fmt.Errorf("set up projections: %w", err)
	}
	return nil
}

// loadSQLProjections loads the projections in SQL of dir (none when dir
// is empty): a directory that cannot be read or a file that does not
// parse is a usage error.
func (a *app) loadSQLProjections(dir string) error {
	if dir == "" {
		return nil
	}
	ps, err := store.LoadSQLProjections(dir)
	if err != nil {
		return usagef("--projections-dir: %w", err)
	}
	a.sqlDir, a.sqlLoaded = dir, len(ps)
	a.projections = slices.Concat(a.projections, ps)
	return nil
}

// checkSQLProjections checks the projections in SQL against the database
// (store.CheckSQLProjections): a file PostgreSQL refuses is a usage
// error, naming it.
func (a *app) checkSQLProjections(ctx context.Context, st *store.Store) error {
	err := st.CheckSQLProjections(ctx)
	if fe := (*store.SQLFileError)(nil); errors.As(err, &fe) {
		return usageError{err}
	}
	return err
}
