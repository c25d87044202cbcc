package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store/internal/dbsqlc"
)

// The projection seam (contract §7): every projection, the built-in ones
// (workflow_runs, workflow_steps) and the user's, derives tables of its own
// from the stored events, in the transaction that stores them. Apply (the
// batches), ReplayDeadLetters, ResetOffsets and Rebuild all go through the
// Store's list of projections, built-in ones first.

// DB is what a projection may do in the transaction: pgx.Tx without
// Commit, Rollback or Begin.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, rows pgx.CopyFromSource) (int64, error)
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// Projection derives tables of its own from the stored events.
type Projection interface {
	// Name is stable and unique, [a-z][a-z0-9_]* (at most 63 bytes).
	Name() string
	// Setup creates what the projection needs if it is not there yet
	// (idempotent). `migrate up` and `run` call it.
	Setup(ctx context.Context, db DB) error
	// Apply is called in a batch transaction with the events that the
	// transaction stores for the first time: distinct, valid, each given to
	// the projection once (until it forgets it), those of one partition in
	// offset order. An error rolls the whole transaction back.
	Apply(ctx context.Context, db DB, events []model.Event) error
	// Forget removes everything derived from the events of these runs (all
	// runs when runIDs is nil). The caller then applies every stored event
	// of those runs again, in the same transaction.
	Forget(ctx context.Context, db DB, runIDs []string) error
}

// validName is the form of a projection's name.
var validName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// ErrBadProjection means a projection given to Open has a name that is not
// valid, or taken.
var ErrBadProjection = errors.New("bad projection")

// checkProjections validates the names of the user's projections: each
// well formed, and no two alike, nor alike a built-in one.
func checkProjections(ps []Projection) error {
	seen := map[string]bool{}
	for _, p := range builtinProjections() {
		seen[p.Name()] = true
	}
	var errs []error
	for _, p := range ps {
		name := p.Name()
		switch {
		case !validName.MatchString(name):
			errs = append(errs, fmt.Errorf("%w %q: a name is [a-z][a-z0-9_]*, at most 63 bytes", ErrBadProjection, name))
		case seen[name]:
			errs = append(errs, fmt.Errorf("%w %q: the name is taken (by a built-in projection or another one loaded)", ErrBadProjection, name))
		}
		seen[name] = true
	}
	return errors.Join(errs...)
}

// IsBuiltin reports whether name is one of the built-in projections.
func IsBuiltin(name string) bool {
	return slices.ContainsFunc(builtinProjections(), func(p Projection) bool { return p.Name() == name })
}

// builtinProjections are the projections every store has, in the order
// they apply.
func builtinProjections() []Projection {
	return []Projection{runsProjection{}, stepsProjection{}}
}

// Projections returns the store's projections in the order they apply:
// the built-in ones, then the user's.
func (s *Store) Projections() []Projection { return slices.Clone(s.projections) }

// SetupProjections runs every projection's Setup, in one transaction:
// `migrate up` and `run` call it, so that each projection's tables exist
// before a batch applies it.
func (s *Store) SetupProjections(ctx context.Context) error {
	return s.withTx(ctx, func(tx pgx.Tx) error {
		// Workers that start together would create the same tables at
		// once, and PostgreSQL's CREATE ... IF NOT EXISTS is not safe
		// against that: one setup at a time.
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext('projector setup'))"); err != nil {
			return fmt.Errorf("wait for other setups: %w", err)
		}
		for _, p := range s.projections {
			if err := p.Setup(ctx, txDB{tx}); err != nil {
				return &model.ProjectionError{Projection: p.Name(), Op: "setup", Err: err}
			}
		}
		return nil
	})
}

// folder is a built-in projection whose rows are a fold of its events: its
// merge of a batch is prepared from the batch's records before the
// transaction begins, and queued with the batch's other statements, so
// that it costs the transaction no round trip of its own.
type folder interface {
	Projection
	// prepare folds recs (one per event_id, never applied before) into
	// the merge of their rows.
	prepare(recs []*model.Record) merge
}

// merge is a folder's prepared merge: queue adds it to a batch; rows is
// how many rows it merges. A merge may also have a fast way, insert,
// that only inserts (no stored row may have the keys of its rows): when
// one of them does, the statement fails with a unique_violation on
// table, and the merge is done again the usual way (Store.apply).
type merge struct {
	queue  func(b *pgx.Batch)
	insert func(b *pgx.Batch)
	table  string
	rows   int
}

// prepareMerges prepares the merge of every folder for recs.
func (s *Store) prepareMerges(recs []*model.Record) []merge {
	var ms []merge
	for _, p := range s.projections {
		if f, ok := p.(folder); ok {
			ms = append(ms, f.prepare(recs))
		}
	}
	return ms
}

// runsProjection is workflow_runs (contract §3): model.Combine in SQL.
type runsProjection struct{}

func (runsProjection) Name() string { return "workflow_runs" }

// Setup has nothing to do: the migrations create workflow_runs.
func (runsProjection) Setup(context.Context, DB) error { return nil }

func (runsProjection) Apply(ctx context.Context, db DB, events []model.Event) error {
	return mergeRuns(ctx, db, model.FoldEvents(events))
}

func (runsProjection) prepare(recs []*model.Record) merge {
	runs := model.FoldRecords(recs)
	if len(runs) == 0 {
		return merge{}
	}
	params := mergeRunsParams(runs)
	return merge{queue: func(b *pgx.Batch) { dbsqlc.QueueMergeRuns(b, params) }, rows: len(runs)}
}

func (runsProjection) Forget(ctx context.Context, db DB, runIDs []string) error {
	return forgetRows(ctx, db, "workflow_runs", runIDs)
}

// stepsProjection is workflow_steps (contract §3.1): model.CombineSteps
// in SQL.
type stepsProjection struct{}

func (stepsProjection) Name() string { return "workflow_steps" }

// Setup has nothing to do: the migrations create workflow_steps.
func (stepsProjection) Setup(context.Context, DB) error { return nil }

func (stepsProjection) Apply(ctx context.Context, db DB, events []model.Event) error {
	return mergeSteps(ctx, db, model.FoldStepEvents(events))
}

func (stepsProjection) prepare(recs []*model.Record) merge {
	steps := model.FoldSteps(recs)
	if len(steps) == 0 {
		return merge{}
	}
	params := mergeStepsParams(steps)
	return merge{
		queue:  func(b *pgx.Batch) { dbsqlc.QueueMergeSteps(b, params) },
		insert: func(b *pgx.Batch) { dbsqlc.QueueInsertSteps(b, params) },
		table:  "workflow_steps",
		rows:   len(steps),
	}
}

func (stepsProjection) Forget(ctx context.Context, db DB, runIDs []string) error {
	return forgetRows(ctx, db, "workflow_steps", runIDs)
}

// forgetRows deletes a built-in table's rows of some runs, or all rows.
func forgetRows(ctx context.Context, db DB, table string, runIDs []string) error {
	var err error
	if runIDs == nil {
		_, err = db.Exec(ctx, "DELETE FROM "+table)
	} else {
		_, err = db.Exec(ctx, "DELETE FROM "+table+" WHERE workflow_run_id = ANY($1::text[])", runIDs)
	}
	if err != nil {
		return fmt.Errorf("forget rows of %s: %w", table, err)
	}
	return nil
}

// txDB is what a projection gets: the transaction's five methods, and
// nothing that could end it.
type txDB struct{ db DB }

func (t txDB) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return t.db.Exec(ctx, sql, args...)
}

func (t txDB) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	return t.db.Query(ctx, sql, args...)
}

func (t txDB) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return t.db.QueryRow(ctx, sql, args...)
}

func (t txDB) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, rows pgx.CopyFromSource) (int64, error) {
	return t.db.CopyFrom(ctx, table, columns, rows)
}

func (t txDB) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	return t.db.SendBatch(ctx, b)
}

// applyProjections gives events (distinct, never applied before; each
// partition's in offset order) to the store's projections, or, when folded
// is set, to the user's only (the folders' merges were queued already, and
// so was constraintsImmediate).
func (s *Store) applyProjections(ctx context.Context, db DB, events []model.Event, folded bool) error {
	if folded {
		if err := fillNewEvents(ctx, db, s.users, events); err != nil {
			return err
		}
		return each(s.users, "apply", func(p Projection) error { return p.Apply(ctx, txDB{db}, events) })
	}
	return apply(ctx, db, s.projections, events)
}

// constraintsImmediate makes every deferrable constraint of the
// transaction be checked at the end of each statement: a user's table
// whose deferred constraint refuses the rows then fails in its
// projection's own statement, as that projection's error, not at COMMIT,
// where it would read as the data's fault.
const constraintsImmediate = "SET CONSTRAINTS ALL IMMEDIATE"

// apply gives events to ps. A projection's error is a
// *model.ProjectionError: never the data's fault, so the batch is retried,
// not split into dead letters.
func apply(ctx context.Context, db DB, ps []Projection, events []model.Event) error {
	if len(events) == 0 {
		return nil
	}
	if err := settleConstraints(ctx, db, ps); err != nil {
		return err
	}
	if err := fillNewEvents(ctx, db, ps, events); err != nil {
		return err
	}
	return each(ps, "apply", func(p Projection) error { return p.Apply(ctx, txDB{db}, events) })
}

// forgetRuns has ps forget the runs of runIDs; with none, it does nothing
// (never read as "all runs": that is forgetAll).
func forgetRuns(ctx context.Context, db DB, ps []Projection, runIDs []string) error {
	if len(runIDs) == 0 {
		return nil
	}
	return forget(ctx, db, ps, runIDs)
}

// forgetAll has ps forget everything (Forget with nil).
func forgetAll(ctx context.Context, db DB, ps []Projection) error { return forget(ctx, db, ps, nil) }

func forget(ctx context.Context, db DB, ps []Projection, runIDs []string) error {
	if err := settleConstraints(ctx, db, ps); err != nil {
		return err
	}
	if err := fillForgottenRuns(ctx, db, ps, runIDs); err != nil {
		return err
	}
	return each(ps, "forget", func(p Projection) error { return p.Forget(ctx, txDB{db}, runIDs) })
}

// each runs op on every projection of ps, wrapping the first error as that
// projection's.
func each(ps []Projection, op string, fn func(p Projection) error) error {
	for _, p := range ps {
		if err := fn(p); err != nil {
			return &model.ProjectionError{Projection: p.Name(), Op: op, Err: err}
		}
	}
	return nil
}

// settleConstraints sets constraintsImmediate when ps has a user's
// projection (the built-in tables have no deferrable constraint).
func settleConstraints(ctx context.Context, db DB, ps []Projection) error {
	if !slices.ContainsFunc(ps, isUser) {
		return nil
	}
	if _, err := db.Exec(ctx, constraintsImmediate); err != nil {
		return fmt.Errorf("set constraints immediate: %w", err)
	}
	return nil
}

// isUser reports whether p is a user's projection, not a built-in folder.
func isUser(p Projection) bool { _, ok := p.(folder); return !ok }

// eventsInOffsetOrder returns the events of recs, each partition's in
// offset order, for Projection.Apply.
func eventsInOffsetOrder(recs []*model.Record) []model.Event {
	out := make([]model.Event, len(recs))
	for i, r := range recs {
		out[i] = r.Event
	}
	slices.SortFunc(out, func(x, y model.Event) int {
		return cmp.Or(cmp.Compare(x.Topic, y.Topic), cmp.Compare(x.Partition, y.Partition), cmp.Compare(x.Offset, y.Offset))
	})
	return out
}
