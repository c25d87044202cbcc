package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/projector/retrypolicy"
	"github.com/projector-run/projector/store/internal/dbsqlc"
)

// The database remembers which projections it has (the projections table,
// contract 7.1). A projection loaded for the first time is built from the
// stored events before any batch of this process applies it
// (BuildProjections); a process that lacks a projection the database has
// refuses to change events (CheckProjections, and each batch).

// UnknownProjectionsError means the database has projections that are not
// loaded in this process: applying, removing or re-applying events without
// them would leave their tables silently wrong.
type UnknownProjectionsError struct {
	Names []string
}

func (e *UnknownProjectionsError) Error() string {
	noun, them := "projections", "them"
	if len(e.Names) == 1 {
		noun, them = "projection", "it"
	}
	return fmt.Sprintf("the database has %s %s, not loaded in this process (a different binary, or a missing --projections-dir?): "+
		"run a binary that has %s, or forget one for good with `projector projections drop NAME`",
		noun, strings.Join(e.Names, ", "), them)
}

// Unwrap makes it model.ErrProjectionNotLoaded, which stops a worker.
func (e *UnknownProjectionsError) Unwrap() error { return model.ErrProjectionNotLoaded }

// ErrBuilding means a reset or a rebuild met a projection that is being
// built from the stored events by a worker: it would change the events
// under the build.
var ErrBuilding = errors.New("a projection is being built from the stored events; try again once it is ready (see projection_status)")

// CheckProjections returns an *UnknownProjectionsError when the database
// has a projection that this store does not have.
func (s *Store) CheckProjections(ctx context.Context) error {
	return s.checkProjections(ctx, s.pool)
}

func (s *Store) checkProjections(ctx context.Context, db dbsqlc.DBTX) error {
	unknown, err := s.q.UnknownProjections(ctx, db, s.names())
	if err != nil {
		return fmt.Errorf("list projections: %w", classify(err))
	}
	if len(unknown) > 0 {
		return &UnknownProjectionsError{Names: unknown}
	}
	return nil
}

// KindOf says what a projection is: builtin, go (the user's Go code), or
// what it says itself with a Kind method.
func KindOf(p Projection) string {
	switch p.(type) {
	case runsProjection, stepsProjection:
		return "builtin"
	}
	if k, ok := p.(interface{ Kind() string }); ok {
		return k.Kind()
	}
	return "go"
}

// BuildOptions are told how a build from the stored events goes.
type BuildOptions struct {
	// Progress, when set, is told how far the build of a projection has
	// come.
	Progress func(projection string, done, total int64)
	// Retried, when set, is told of each failed attempt at a chunk, and
	// when the next one is: a chunk is retried until it succeeds or ctx
	// ends, as batches are (a projection that fails is the user's to mend
	// meanwhile).
	Retried func(projection string, err error, next time.Duration)
}

// buildChunkRuns is how many runs' events one catch-up transaction
// applies.
const buildChunkRuns = 1000

// BuildProjections builds, from the stored events, every loaded projection
// that the database does not have yet or whose build did not finish
// (contract 7.1), and returns their names. For each, under one short
// EXCLUSIVE lock on consumer_offsets, it forgets whatever the projection
// holds, registers it as building, and takes a snapshot of the stored
// events; from the commit on, the batches of every worker that has it
// apply the events they store. Then, outside the lock, it applies the
// snapshot's events chunk by chunk, a chunk of runs per transaction,
// while the batches go on; at the end the projection is ready. Each event
// is thus applied once: by the build if it was stored before the
// registration, by its batch otherwise. Workers of other processes wait
// for a build in progress (an advisory lock) rather than start another.
func (s *Store) BuildProjections(ctx context.Context, opts BuildOptions) ([]string, error) {
	// A pool of its own: a build holds its advisory lock's session, the
	// snapshot's and a chunk's at once, whatever the store's pool allows.
	pc := s.pool.Config().Copy()
	pc.MaxConns, pc.MinConns = 3, 0
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("connect for the build: %w", err)
	}
	defer pool.Close()
	b := &builder{s: s, pool: pool, opts: opts}
	var built []string
	for _, p := range s.projections {
		ok, err := b.buildIfNeeded(ctx, p)
		if err != nil {
			return built, err
		}
		if ok {
			built = append(built, p.Name())
		}
	}
	return built, nil
}

// builder builds projections from the stored events, on a pool of its
// own.
type builder struct {
	s    *Store
	pool *pgxpool.Pool
	opts BuildOptions
}

func (b *builder) buildIfNeeded(ctx context.Context, p Projection) (bool, error) {
	s := b.s
	name := p.Name()
	ready := func() (bool, error) {
		rows, err := s.q.ListProjections(ctx, b.pool)
		if err != nil {
			return false, fmt.Errorf("list projections: %w", classify(err))
		}
		return slices.ContainsFunc(rows, func(r dbsqlc.ListProjectionsRow) bool { return r.Name == name && r.State == "ready" }), nil
	}
	if ok, err := ready(); ok || err != nil {
		return false, err
	}
	// One builder at a time per projection, across processes: the lock is
	// the session's, so a builder that dies releases it.
	conn, err := b.pool.Acquire(ctx)
	if err != nil {
		return false, fmt.Errorf("acquire connection: %w", err)
	}
	defer conn.Release()
	key := "projector build " + name
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(hashtext($1))", key); err != nil {
		return false, fmt.Errorf("wait for other builders of %s: %w", name, err)
	}
	defer func() { _, _ = conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock(hashtext($1))", key) }()
	if ok, err := ready(); ok || err != nil {
		return false, err // another process built it meanwhile
	}
	if err := b.build(ctx, p); err != nil {
		return false, err
	}
	return true, nil
}

// build registers p as building and applies every event stored before that
// to it (BuildProjections).
func (b *builder) build(ctx context.Context, p Projection) error {
	s, progress := b.s, b.opts.Progress
	name := p.Name()
	snap, err := b.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = snap.Rollback(context.WithoutCancel(ctx)) }()
	var batchEvents int64
	// Under the lock, so that nothing a batch applies to p before the
	// registration is left when the build applies the snapshot again.
	err = s.lockedTx(ctx, func(tx pgx.Tx) error {
		if err := forgetAll(ctx, tx, []Projection{p}); err != nil {
			return err
		}
		var err error
		if batchEvents, err = s.q.BatchEvents(ctx, tx); err != nil {
			return fmt.Errorf("count applied events: %w", err)
		}
		if err := s.q.StartBuild(ctx, tx, dbsqlc.StartBuildParams{Name: name, Kind: KindOf(p), BatchEvents: batchEvents}); err != nil {
			return fmt.Errorf("register projection %s: %w", name, err)
		}
		// The snapshot is taken while the lock keeps every batch out: it
		// holds exactly the events stored before the registration. It
		// then waits, idle, while each chunk applies: no idle timeout.
		if _, err := snap.Exec(ctx, "SELECT 1"); err != nil {
			return fmt.Errorf("take the snapshot: %w", err)
		}
		_, err = snap.Exec(ctx, "SET LOCAL idle_in_transaction_session_timeout = 0")
		return err
	})
	if err != nil {
		return fmt.Errorf("build projection %s: %w", name, err)
	}
	total, err := s.q.CountEvents(ctx, snap)
	if err != nil {
		return fmt.Errorf("count events: %w", err)
	}
	var done int64
	after := ""
	for {
		ids, err := s.q.RunIDsWithEventsAfter(ctx, snap, dbsqlc.RunIDsWithEventsAfterParams{After: after, MaxRuns: buildChunkRuns})
		if err != nil {
			return fmt.Errorf("build projection %s: list runs: %w", name, err)
		}
		if len(ids) == 0 {
			break
		}
		events, err := s.loadEvents(ctx, snap, dbsqlc.EventsOfRunsParams{RunIds: ids})
		if err != nil {
			return fmt.Errorf("build projection %s: %w", name, err)
		}
		// ROW SHARE on consumer_offsets keeps resets and rebuilds out of
		// the chunk, not the batches. A chunk that fails rolls back whole
		// and is tried again.
		_, err = backoff.Retry(ctx, func() (struct{}, error) {
			return struct{}{}, pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, "LOCK TABLE consumer_offsets IN ROW SHARE MODE"); err != nil {
					return fmt.Errorf("lock consumer_offsets: %w", err)
				}
				return apply(ctx, tx, []Projection{p}, events)
			})
		}, backoff.WithBackOff(retrypolicy.NewBackOff(100*time.Millisecond, 10*time.Second)), backoff.WithMaxElapsedTime(0),
			backoff.WithNotify(func(err error, next time.Duration) {
				if b.opts.Retried != nil {
					b.opts.Retried(name, err, next)
				}
			}))
		if err != nil {
			return fmt.Errorf("build projection %s: %w", name, err)
		}
		done += int64(len(events))
		after = ids[len(ids)-1]
		if progress != nil {
			progress(name, done, total)
		}
	}
	if err := s.q.FinishBuild(ctx, b.pool, dbsqlc.FinishBuildParams{Name: name, Events: done, BatchEvents: batchEvents}); err != nil {
		return fmt.Errorf("build projection %s: finish: %w", name, err)
	}
	if progress != nil && total == 0 {
		progress(name, 0, 0)
	}
	return nil
}

// lockedTx runs fn in a transaction that first takes the EXCLUSIVE lock on
// consumer_offsets: no batch is in flight while fn runs (see
// reprocessTx), waiting at most lockTimeout for it.
func (s *Store) lockedTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	err := s.withTx(ctx, func(tx pgx.Tx) error {
		if err := s.q.SetLockTimeout(ctx, tx, strconv.FormatInt(lockTimeout.Milliseconds(), 10)); err != nil {
			return fmt.Errorf("set lock timeout: %w", err)
		}
		if err := s.q.LockOffsetsTable(ctx, tx); err != nil {
			if isLockTimeout(err) {
				return ErrLockTimeout
			}
			return fmt.Errorf("lock consumer_offsets: %w", err)
		}
		// The timeout is for taking that lock, not for what fn does.
		if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = 0"); err != nil {
			return fmt.Errorf("set lock timeout: %w", err)
		}
		return fn(tx)
	})
	return err
}

// ProjectionInfo is a row of projection_status.
type ProjectionInfo = dbsqlc.ProjectionStatus

// ProjectionStatus lists the projections the database has.
func (s *Store) ProjectionStatus(ctx context.Context) ([]ProjectionInfo, error) {
	rows, err := s.q.ProjectionStatus(ctx, s.pool)
	if err != nil {
		return nil, fmt.Errorf("list projections: %w", classify(err))
	}
	return rows, nil
}

// DropProjection makes the database forget a projection for good; its
// tables are left to the user. It reports whether there was one.
func (s *Store) DropProjection(ctx context.Context, name string) (bool, error) {
	n, err := s.q.DropProjection(ctx, s.pool, name)
	if err != nil {
		return false, fmt.Errorf("drop projection %s: %w", name, classify(err))
	}
	return n > 0, nil
}
