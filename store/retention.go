package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store/internal/dbsqlc"
)

// Retention (contract §6.1): Prune deletes the events that occurred
// before a horizon and the dead letters received before it, and records
// the horizon (retention_horizon). Exactly once still holds after it:
//
//   - A batch reads the horizon under a shared advisory lock that Prune
//     takes exclusively to move it, and deletes nothing until it has. So
//     no batch applies, by an older horizon, an event whose first copy a
//     prune is deleting.
//   - An event before the horizon whose event_id is not stored could be
//     the duplicate of a pruned event: it becomes a before_horizon dead
//     letter instead of being applied (replayable by hand: `dlq replay
//     --reason before_horizon`).
//   - A run whose history was pruned in part is one with an event before
//     the horizon applied, so its workflow_runs.first_event_at is before
//     the horizon: offsets reset refuses to recompute such runs, and
//     rebuild refuses, or keeps their rows (KeepPrunedRuns).

// retentionLock is the advisory lock key of the horizon: batches and
// replays take it shared, Prune exclusively to move the horizon.
const retentionLock = "SELECT pg_advisory_xact_lock_shared(hashtext('projector retention'))"

// ErrPrunedHistory means a reset or a rebuild would recompute runs from
// part of their history: their events before the retention horizon were
// pruned.
var ErrPrunedHistory = errors.New("part of their history was pruned")

// PrunedHistoryError names the horizon and some of the runs a reset or a
// rebuild refused to recompute.
type PrunedHistoryError struct {
	Horizon time.Time
	// Runs are the first few of them, in workflow_run_id order.
	Runs []string
	// More is set when there are more than Runs.
	More bool
}

func (e *PrunedHistoryError) Error() string {
	runs := fmt.Sprintf("%q", e.Runs)
	if e.More {
		runs = fmt.Sprintf("%q and more", e.Runs)
	}
	return fmt.Sprintf("runs %s: %s (their events before the retention horizon %s)", runs, ErrPrunedHistory,
		e.Horizon.UTC().Format(time.RFC3339Nano))
}

func (e *PrunedHistoryError) Unwrap() error { return ErrPrunedHistory }

// prunedRunsShown is how many runs a PrunedHistoryError names.
const prunedRunsShown = 5

// Horizon returns the retention horizon, the zero time when nothing was
// ever pruned.
func (s *Store) Horizon(ctx context.Context) (time.Time, error) {
	return s.horizonIn(ctx, s.pool)
}

func (s *Store) horizonIn(ctx context.Context, db dbsqlc.DBTX) (time.Time, error) {
	h, err := s.q.Horizon(ctx, db)
	if err != nil {
		return time.Time{}, fmt.Errorf("read retention horizon: %w", classify(err))
	}
	return horizonTime(h), nil
}

func horizonTime(h pgtype.Timestamptz) time.Time {
	if !h.Valid {
		return time.Time{}
	}
	return h.Time.UTC()
}

// checkPrunedRuns returns a *PrunedHistoryError when any of runIDs (every
// run when nil) had part of its history pruned, in tx.
func (s *Store) checkPrunedRuns(ctx context.Context, tx pgx.Tx, runIDs []string) error {
	h, err := s.horizonIn(ctx, tx)
	if err != nil || h.IsZero() {
		return err
	}
	if runIDs != nil && len(runIDs) == 0 {
		return nil
	}
	pruned, err := s.q.PrunedRuns(ctx, tx, dbsqlc.PrunedRunsParams{
		Horizon: pgtype.Timestamptz{Time: h, Valid: true}, RunIds: runIDs, MaxRuns: prunedRunsShown + 1,
	})
	if err != nil {
		return fmt.Errorf("look up pruned runs: %w", err)
	}
	if len(pruned) == 0 {
		return nil
	}
	e := &PrunedHistoryError{Horizon: h, Runs: pruned, More: len(pruned) > prunedRunsShown}
	if e.More {
		e.Runs = pruned[:prunedRunsShown]
	}
	return e
}

// prunedFilter leaves the runs whose history was pruned in part out of
// a rebuild (RebuildOptions.KeepPrunedRuns), a chunk at a time, so that
// a year of pruned runs is never held in memory. Its zero value leaves
// out none.
type prunedFilter struct{ horizon time.Time }

// prunedFilter returns the filter of tx's pruned runs: the zero one when
// there are none.
func (s *Store) prunedFilter(ctx context.Context, tx pgx.Tx) (prunedFilter, error) {
	h, err := s.horizonIn(ctx, tx)
	if err != nil || h.IsZero() {
		return prunedFilter{}, err
	}
	some, err := s.q.PrunedRuns(ctx, tx, dbsqlc.PrunedRunsParams{Horizon: pgtype.Timestamptz{Time: h, Valid: true}, MaxRuns: 1})
	if err != nil {
		return prunedFilter{}, fmt.Errorf("look up pruned runs: %w", err)
	}
	if len(some) == 0 {
		return prunedFilter{}, nil
	}
	return prunedFilter{horizon: h}, nil
}

func (f prunedFilter) active() bool { return !f.horizon.IsZero() }

// rows returns the stored runs of rows whose history was not pruned.
func (f prunedFilter) rows(rows []dbsqlc.WorkflowRun) []dbsqlc.WorkflowRun {
	if !f.active() {
		return rows
	}
	return slices.DeleteFunc(slices.Clone(rows), func(r dbsqlc.WorkflowRun) bool { return r.FirstEventAt.Time.Before(f.horizon) })
}

// notPrunedIDs returns the runs of ids whose history f does not leave
// out, in tx.
func (s *Store) notPrunedIDs(ctx context.Context, tx pgx.Tx, f prunedFilter, ids []string) ([]string, error) {
	if !f.active() || len(ids) == 0 {
		return ids, nil
	}
	pruned, err := s.q.PrunedRuns(ctx, tx, dbsqlc.PrunedRunsParams{
		Horizon: pgtype.Timestamptz{Time: f.horizon, Valid: true}, RunIds: ids, MaxRuns: int32(len(ids)),
	})
	if err != nil {
		return nil, fmt.Errorf("look up pruned runs: %w", err)
	}
	if len(pruned) == 0 {
		return ids, nil
	}
	// pruned is in workflow_run_id order, COLLATE "C": bytewise, as Go's.
	out := make([]string, 0, len(ids)-len(pruned))
	for _, id := range ids {
		if _, found := slices.BinarySearch(pruned, id); !found {
			out = append(out, id)
		}
	}
	return out, nil
}

// knownHorizon is the retention horizon as the latest batch read it; the
// zero time when none.
func (s *Store) knownHorizon() time.Time {
	if h := s.horizon.Load(); h != nil {
		return *h
	}
	return time.Time{}
}

// learnHorizon records the horizon a batch read, unless a later one is
// known already (a slower batch may read an older one).
func (s *Store) learnHorizon(h time.Time) {
	for {
		cur := s.horizon.Load()
		if cur != nil && !cur.Before(h) {
			return
		}
		if s.horizon.CompareAndSwap(cur, &h) {
			return
		}
	}
}

// holdBack moves out of recs (sorted by event_id) the records of events
// that occurred before horizon, returning the others and those.
func holdBack(recs []*model.Record, horizon time.Time) (recent, old []*model.Record) {
	if horizon.IsZero() {
		return recs, nil
	}
	for _, r := range recs {
		if r.Event.Timestamp.Before(horizon) {
			old = append(old, r)
		} else {
			recent = append(recent, r)
		}
	}
	if len(old) == 0 {
		return recs, nil
	}
	return recent, old
}

// beforeHorizon is the dead letter of a record held back: an event before
// the horizon whose event_id is not stored.
func beforeHorizon(r *model.Record, horizon time.Time) model.DeadLetter {
	return model.DeadLetter{
		Offset:  r.Offset,
		Key:     r.Key,
		Value:   r.Event.Payload,
		Headers: model.HeadersJSON(r.Headers),
		Reason:  model.ReasonBeforeHorizon,
		Error: fmt.Sprintf("the event occurred at %s, before the retention horizon %s, and its event_id %q is not stored: "+
			"it may be a duplicate of a pruned event; replay it by hand if it is not",
			r.Event.Timestamp.UTC().Format(time.RFC3339Nano), horizon.UTC().Format(time.RFC3339Nano), r.Event.EventID),
	}
}

// PruneOptions say what Prune deletes.
type PruneOptions struct {
	// Before is the new horizon: events that occurred before it and dead
	// letters received before it are deleted. A horizon never moves back:
	// an earlier one than stored prunes up to the stored one.
	Before time.Time
	// DryRun counts what would be deleted, and changes nothing.
	DryRun bool
	// Progress, when set, is called after each chunk with the blocks of
	// workflow_events scanned so far and their total.
	Progress func(done, total int64)
	// ChunkBlocks is how many blocks of workflow_events one transaction
	// scans. Default 2048 (16 MiB).
	ChunkBlocks int64
}

// PruneResult is what Prune did, or would do.
type PruneResult struct {
	// Horizon is the horizon in force: the one asked for, or the stored
	// one when that is later.
	Horizon time.Time
	// Events and DeadLetters are how many were deleted (would be, in a
	// dry run).
	Events, DeadLetters int64
}

// Prune bounds the stored history (contract §6.1): it moves the horizon
// forward to opts.Before, then deletes the events that occurred before it
// and the dead letters received before it, online, a chunk at a time in
// transactions of their own. Every projection's rows stay as they are.
// Each chunk holds a ROW SHARE lock on consumer_offsets, so that an
// offsets reset or a rebuild (which recompute runs from their stored
// events) waits for it; batches do not.
func (s *Store) Prune(ctx context.Context, opts PruneOptions) (PruneResult, error) {
	if opts.Before.IsZero() {
		return PruneResult{}, errors.New("prune: no horizon given")
	}
	if err := s.CheckProjections(ctx); err != nil {
		return PruneResult{}, err
	}
	chunk := opts.ChunkBlocks
	if chunk <= 0 {
		chunk = 2048
	}
	res := PruneResult{Horizon: opts.Before.UTC()}
	if opts.DryRun {
		cur, err := s.Horizon(ctx)
		if err != nil {
			return res, err
		}
		if cur.After(res.Horizon) {
			res.Horizon = cur
		}
		h := pgtype.Timestamptz{Time: res.Horizon, Valid: true}
		if res.Events, err = s.q.CountEventsBefore(ctx, s.pool, h); err != nil {
			return res, fmt.Errorf("count events: %w", err)
		}
		if res.DeadLetters, err = s.q.CountDeadLettersBefore(ctx, s.pool, h); err != nil {
			return res, fmt.Errorf("count dead letters: %w", err)
		}
		return res, nil
	}
	// Move the horizon first: from its commit on, no batch applies an
	// event before it, and batches that read the old one have committed
	// (the exclusive lock waited for them).
	err := s.withTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext('projector retention'))"); err != nil {
			return fmt.Errorf("wait for the batches in flight: %w", err)
		}
		h, err := s.q.MoveHorizon(ctx, tx, pgtype.Timestamptz{Time: res.Horizon, Valid: true})
		if err != nil {
			return fmt.Errorf("move the retention horizon: %w", err)
		}
		res.Horizon = h.Time.UTC()
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("prune: %w", err)
	}
	h := pgtype.Timestamptz{Time: res.Horizon, Valid: true}
	blocks, err := s.q.EventBlocks(ctx, s.pool)
	if err != nil {
		return res, fmt.Errorf("prune: size of workflow_events: %w", err)
	}
	for first := int64(0); first < blocks; first += chunk {
		err := s.withTx(ctx, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "LOCK TABLE consumer_offsets IN ROW SHARE MODE"); err != nil {
				return fmt.Errorf("lock consumer_offsets: %w", err)
			}
			n, err := s.q.PruneEventBlocks(ctx, tx, dbsqlc.PruneEventBlocksParams{
				FirstTid: pgtype.TID{BlockNumber: uint32(first), Valid: true},
				EndTid:   pgtype.TID{BlockNumber: uint32(first + chunk), Valid: true},
				Horizon:  h,
			})
			res.Events += n
			return err
		})
		if err != nil {
			return res, fmt.Errorf("prune events of blocks [%d, %d): %w", first, first+chunk, err)
		}
		if opts.Progress != nil {
			opts.Progress(min(first+chunk, blocks), blocks)
		}
	}
	for {
		var n int64
		err := s.withTx(ctx, func(tx pgx.Tx) (err error) {
			n, err = s.q.PruneDeadLetters(ctx, tx, dbsqlc.PruneDeadLettersParams{Horizon: h, MaxRows: 10000})
			return err
		})
		if err != nil {
			return res, fmt.Errorf("prune dead letters: %w", err)
		}
		res.DeadLetters += n
		if n == 0 {
			break
		}
	}
	return res, nil
}

// Vacuum vacuums and analyzes the tables Prune deletes from, so that the
// space of the deleted rows, in the table and its indexes, is reused by
// the next inserts instead of growing them (autovacuum would, later). It
// needs the tables' owner.
func (s *Store) Vacuum(ctx context.Context) error {
	if _, err := s.pool.Exec(ctx, "VACUUM (ANALYZE) workflow_events, dead_letters"); err != nil {
		return fmt.Errorf("vacuum: %w", err)
	}
	return nil
}
