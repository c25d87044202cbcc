package cli

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/projector-run/projector/store"
)

// What the one-shot commands (offsets, rebuild, dlq) share.

// dryRunFlag is the --dry-run flag of reset, rebuild and replay. Its
// variable is shared: DRY_RUN=1 makes all three report only.
func dryRunFlag(usage string) cli.Flag {
	return &cli.BoolFlag{Name: "dry-run", Usage: usage, Sources: cli.EnvVars("DRY_RUN")}
}

// openReady opens the database for a one-shot command. Unlike run, it
// does not wait for PostgreSQL: a database that does not answer fails at
// once (exit code 1), and one that lacks this binary's migrations is a
// usage error (exit code 2).
func (a *app) openReady(ctx context.Context, cmd *cli.Command) (*store.Store, error) {
	st, err := a.openStore(ctx, cmd, store.Config{MaxConns: 4})
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := st.Ping(pctx); err != nil {
		st.Close()
		if store.IsConfigError(err) {
			return nil, databaseRefused(cmd.String("database-url"), errors.New(flatten(err)))
		}
		cerr := fmt.Errorf("connect to database %s: %s", store.RedactURL(cmd.String("database-url")), flatten(err))
		if errors.Is(err, store.ErrSQLRelations) {
			return nil, usageError{cerr}
		}
		return nil, cerr
	}
	m, err := st.NewMigrator()
	if err != nil {
		st.Close()
		return nil, err
	}
	defer m.Close()
	if err := m.CheckCurrent(ctx); err != nil {
		st.Close()
		if store.IsNotMigrated(err) {
			return nil, usageError{err}
		}
		if store.IsConfigError(err) {
			return nil, databaseRefused(cmd.String("database-url"), err)
		}
		return nil, err
	}
	if err := a.checkSQLProjections(ctx, st); err != nil {
		st.Close()
		return nil, err
	}
	return st, nil
}

// notFound turns a lookup of something that is not stored into a usage
// error: the command line names something that does not exist.
func notFound(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return usageError{err}
	}
	return err
}

// noArgs refuses stray arguments.
func noArgs(cmd *cli.Command) error {
	if cmd.Args().Len() > 0 {
		return usagef("unexpected argument %q", cmd.Args().First())
	}
	return nil
}

// plural returns "1 event", "2 events".
func plural(n int64, noun string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, noun)
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// clip shortens s to at most n runes, on one line.
func clip(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// flatten renders an error that spans several lines (pgx lists each
// address it tried) as one line, without repeated lines.
func flatten(err error) string {
	var parts []string
	for _, l := range strings.Split(err.Error(), "\n") {
		if l = strings.TrimSpace(l); l != "" && !slices.Contains(parts, l) {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, " ")
}
