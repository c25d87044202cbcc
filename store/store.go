// Package store is projector's PostgreSQL side: the embedded migrations,
// the transaction that applies a batch and moves the stored offset behind
// the fence, and the queries the commands run. Queries live in .sql files
// under internal/dbsqlc, compiled by sqlc.
package store

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projector-run/projector/store/internal/dbsqlc"
)

// Store is a pool of connections to the projection database.
type Store struct {
	pool *pgxpool.Pool
	q    *dbsqlc.Queries
	// ways: which way each partition's next batch stores its events and
	// merges (Apply).
	ways ways
	// slots holds a token per batch transaction in flight (Parallelism).
	slots chan struct{}
	// copies: the batch COPYs seen waiting on their client (stalled.go).
	copies copyWatch
	// projections: the built-in ones, then Config.Projections; loaded:
	// their names.
	projections []Projection
	loaded      []string
	// users: the user's projections, those of projections that are not
	// built-in folders.
	users []Projection
	// horizon is the retention horizon as the latest batch read it (nil:
	// none), for preparing the next ones (retention.go).
	horizon atomic.Pointer[time.Time]
}

// DefaultURL is the database every command uses when none is given.
const DefaultURL = "postgres://postgres@localhost:5432/postgres"

// LocalURL is DefaultURL without TLS, for the demo and the bench on this
// machine (the local server's TLS would only add its cost to theirs).
const LocalURL = DefaultURL + "?sslmode=disable"

// Config says how to reach PostgreSQL.
type Config struct {
	// URL is a PostgreSQL connection URL or DSN.
	URL string
	// Parallelism is the most batch transactions (Apply) in flight at
	// once, each on a connection of its own. More than the server's cores
	// mostly adds contention. Default DefaultParallelism.
	Parallelism int
	// StalledCopyAfter is how long a batch COPY may wait on its client
	// with no progress before ReapStalledCopies ends its session. Default
	// DefaultStalledCopyAfter.
	StalledCopyAfter time.Duration
	// Projections are the user's projections, applied after the built-in
	// ones (workflow_runs, workflow_steps) in every transaction that
	// stores events, resets offsets or rebuilds. Default none.
	Projections []Projection
	// MaxConns caps the pool; each batch in flight applies on a
	// connection of its own. Default (0): pgxpool's, the greater of 4 and
	// the number of CPUs (projector run sets it from --db-max-conns).
	MaxConns int32
}

// DefaultParallelism is the default of Config.Parallelism.
const DefaultParallelism = 4

// IdleInTransactionTimeout is how long PostgreSQL lets a session of this
// program sit idle inside a transaction before it ends the session and
// so releases its locks (idle_in_transaction_session_timeout).
const IdleInTransactionTimeout = 10 * time.Second

// Open validates the URL and creates a pool; it does not wait for the
// server, so a worker can start while PostgreSQL is still coming up.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if err := checkProjections(cfg.Projections); err != nil {
		return nil, err
	}
	pc, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("parse database url %s: %w", RedactURL(cfg.URL), errors.Unwrap(err))
	}
	if cfg.MaxConns > 0 {
		pc.MaxConns = cfg.MaxConns
	}
	// A session idle inside a transaction keeps its row locks: a worker
	// frozen or cut off in the middle of a batch would hold its
	// partition's offset row, and the next owner's claim, so its whole
	// consumer session, would wait until the frozen one woke up. No
	// transaction of this program waits on its client for more than
	// moments, so the server ends one that does (unless the URL says
	// otherwise).
	if _, ok := pc.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"]; !ok {
		pc.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"] = strconv.FormatInt(IdleInTransactionTimeout.Milliseconds(), 10)
	}
	// Every pool of the store copies this config (the build's too).
	sqlRelations := hasSQL(cfg.Projections)
	pc.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		registerArrayCodecs(c.TypeMap())
		if sqlRelations {
			return createSQLRelations(ctx, c)
		}
		return nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("create pool for %s: %w", RedactURL(cfg.URL), err)
	}
	par := cfg.Parallelism
	if par <= 0 {
		par = DefaultParallelism
	}
	stall := cfg.StalledCopyAfter
	if stall <= 0 {
		stall = DefaultStalledCopyAfter
	}
	s := &Store{pool: pool, q: dbsqlc.New(), slots: make(chan struct{}, par), copies: copyWatch{after: stall},
		projections: append(builtinProjections(), cfg.Projections...)}
	for _, p := range s.projections {
		s.loaded = append(s.loaded, p.Name())
		if isUser(p) {
			s.users = append(s.users, p)
		}
	}
	return s, nil
}

// Pool returns the underlying pool, for tests and tools.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Close closes every connection.
func (s *Store) Close() { s.pool.Close() }

// Ping checks that PostgreSQL answers.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// RedactURL returns a database URL with its password replaced, fit for
// logs and error messages. A DSN in key=value form is shown as its host
// and database only.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		cfg, perr := pgx.ParseConfig(raw)
		if perr != nil {
			return "(unparseable database url)"
		}
		return fmt.Sprintf("host=%s port=%d dbname=%s user=%s", cfg.Host, cfg.Port, cfg.Database, cfg.User)
	}
	// libpq also takes secrets as parameters: ?password=, ?sslpassword=.
	if q := u.Query(); q.Has("password") || q.Has("sslpassword") {
		for _, k := range []string{"password", "sslpassword"} {
			if q.Has(k) {
				q.Set(k, "xxxxx")
			}
		}
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// withTx runs fn in a transaction, committing when it returns nil. The
// rollback and the commit run even when ctx is cancelled meanwhile.
func (s *Store) withTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if err := fn(tx); err != nil {
		return err
	}
	// Once the work is sent, wait for the commit's answer even if ctx ends
	// now, so the caller knows whether the batch is in.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	defer cancel()
	if err := tx.Commit(cctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// commitTimeout bounds how long a transaction whose work is done may take
// to commit after its caller's context ended.
const commitTimeout = 30 * time.Second

// RecreateDatabase drops database name on the server of serverURL (a
// postgres:// URL), creates it empty, and returns its URL. The demo and
// the benchmark start from a fresh database this way.
func RecreateDatabase(ctx context.Context, serverURL, name string) (string, error) {
	u, err := url.Parse(serverURL)
	if err != nil || u.Scheme == "" {
		return "", fmt.Errorf("%s is not a postgres:// URL", RedactURL(serverURL))
	}
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return "", fmt.Errorf("connect to %s: %w", RedactURL(serverURL), err)
	}
	defer conn.Close(ctx)
	id := pgx.Identifier{name}.Sanitize()
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+id+" WITH (FORCE)"); err != nil {
		return "", fmt.Errorf("drop database %s: %w", name, err)
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+id); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	u.Path = "/" + name
	return u.String(), nil
}
