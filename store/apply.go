package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
	"unsafe"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store/internal/dbsqlc"
)

// Apply writes a batch of one partition in one transaction: it locks the
// partition's offset row and checks the fence (the lease epoch and stored
// offset are what the batch's lease expects), stores the new events,
// merges the runs they touch, stores the dead letters and moves the
// offset to b.End. When the fence fails, nothing is written and the error
// wraps model.ErrFenced; when PostgreSQL refuses the data itself, it
// wraps model.ErrRejected.
//
// Events go in one of two ways. The fast way streams them with a binary
// COPY, which is as cheap as storing rows gets, but cannot skip an
// event_id that is already stored: a duplicate of an earlier batch makes
// the COPY fail, and the batch is applied again the safe way, an INSERT
// that skips stored event_ids (ON CONFLICT DO NOTHING) and says which
// rows were new. A partition whose batches keep meeting such duplicates
// stays on the safe way until a batch finds none.
//
// Steps go in the same spirit: a plain insert first, since in a backlog a
// step's events mostly come in one batch, and the usual upsert (ON
// CONFLICT ... DO UPDATE, which costs about twice as much a row) from a
// savepoint when a step is already stored. A partition whose batches keep
// meeting stored steps, as a live stream's do, upserts at once, trying
// the plain insert again now and then (ways).
func (s *Store) Apply(ctx context.Context, b *model.Batch) (model.Applied, error) {
	l := b.Lease
	tp := model.TopicPartition{Topic: l.Topic, Partition: l.Partition}
	// The turn is taken before the batch is prepared, so that batches
	// waiting for one hold no prepared copy of their events.
	release, err := s.acquireApplySlot(ctx)
	if err != nil {
		return model.Applied{}, fmt.Errorf("apply batch %s/%d [%d, %d): %w", l.Topic, l.Partition, l.NextOffset, b.End, err)
	}
	defer release()
	w := s.newWork(b, s.ways.safeEvents(tp))
	defer func() { w.release() }()
	res, stored, err := s.apply(ctx, w)
	conflicts := 0
	// A duplicate turns the fast way off; the horizon moves only forward,
	// and rarely.
	for again := true; again; {
		switch {
		case errors.Is(err, errHorizonMoved):
			w.release()
			w = s.newWork(b, w.safe)
		case errors.Is(err, errStoredDuplicate):
			conflicts = 1
			s.ways.eventsMet(tp, true)
			w.safe = true
		default:
			again = false
			continue
		}
		res, stored, err = s.apply(ctx, w)
	}
	if w.safe && err == nil {
		s.ways.eventsMet(tp, stored > 0)
	}
	res.CopyConflicts = conflicts
	if err = classify(err); err != nil {
		return model.Applied{}, fmt.Errorf("apply batch %s/%d [%d, %d): %w", l.Topic, l.Partition, l.NextOffset, b.End, err)
	}
	return res, nil
}

// errStoredDuplicate: the fast way met an event_id already stored.
var errStoredDuplicate = errors.New("an event_id of the batch is already stored")

// errHorizonMoved: a prune moved the retention horizon since the batch was
// prepared with the one the store knew.
var errHorizonMoved = errors.New("the retention horizon moved")

// work is a batch made ready for its transaction. The fast way, everything
// the client computes for the built-in projections is computed before the
// transaction begins, so that the transaction never waits on the client
// between its statements; the safe way folds their rows inside it, once
// the insert has said which events are new (a fold of 2000 events takes
// about 0.2 ms). The user's projections apply inside it either way.
type work struct {
	b    *model.Batch
	safe bool
	// recs are the batch's records, one per event_id, sorted by event_id,
	// but those of old.
	recs []*model.Record
	// old are the records of events before horizon, the retention
	// horizon the store knew (retention.go): each is skipped when its
	// event_id is stored, and held back as a dead letter otherwise.
	old     []*model.Record
	horizon time.Time
	// For the fast way: the COPY stream of recs, and the built-in
	// projections' merges of them (every event of recs is new when the
	// COPY succeeds).
	copyBuf *[]byte
	merges  []merge
	dead    dbsqlc.InsertDeadLettersParams
}

func (s *Store) newWork(b *model.Batch, safe bool) *work {
	l := b.Lease
	w := &work{b: b, safe: safe, horizon: s.knownHorizon()}
	w.recs, w.old = holdBack(b.UniqueRecords(), w.horizon)
	if len(b.DeadLetters) > 0 {
		w.dead = deadLettersParams(l.Topic, l.Partition, b.DeadLetters)
	}
	if !safe && len(w.recs) > 0 {
		w.copyBuf = copyBuffers.Get().(*[]byte)
		*w.copyBuf = appendEventsCopy((*w.copyBuf)[:0], l.Topic, l.Partition, w.recs)
		w.merges = s.prepareMerges(w.recs)
	}
	return w
}

// release returns the COPY buffer for reuse, unless a failed COPY may
// still be reading it (copyEvents drops it then).
func (w *work) release() {
	if w.copyBuf != nil {
		copyBuffers.Put(w.copyBuf)
		w.copyBuf = nil
	}
}

// apply is one attempt at Apply's transaction, the fast way or the safe
// way. It also returns how many records were skipped as already stored
// (the safe way only). The statements go in four round trips: BEGIN and
// the lock; then, once the fence is checked, the COPY (the fast way) or
// the insert that skips stored event_ids (the safe way); then, once the
// new events are known, the merges of the runs and steps, the dead
// letters and the offset; then COMMIT. When the steps' plain insert meets
// a stored step, ROLLBACK TO SAVEPOINT and the steps' upsert with the
// statements after it take two more, and pgx, which drops the cached
// statements of a batch that failed, prepares them again: a live stream
// pays that on one batch in fastPause+1 at most.
func (s *Store) apply(ctx context.Context, w *work) (res model.Applied, stored int, err error) {
	b, l := w.b, w.b.Lease
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return res, 0, fmt.Errorf("acquire connection: %w", err)
	}
	start := time.Now() // Applied.Took: from BEGIN, not from waiting for a connection

	// A connection released inside a transaction is closed by the pool,
	// which aborts the transaction: whatever fails below, nothing commits.
	defer conn.Release()
	defer func() {
		if err != nil && !conn.Conn().IsClosed() {
			_, _ = conn.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		}
	}()

	var cur dbsqlc.LockOffsetRow
	first := &pgx.Batch{}
	first.Queue("BEGIN")
	// Safe for exactly-once: a commit that a server crash loses takes its
	// offset move with it, and the messages are read again. It saves the
	// wait for the WAL flush on every batch.
	first.Queue("SET LOCAL synchronous_commit = off")
	if len(s.users) > 0 {
		first.Queue(constraintsImmediate)
	}
	// The horizon, under the lock that a prune takes to move it.
	first.Queue(retentionLock)
	var horizon pgtype.Timestamptz
	dbsqlc.QueueHorizon(first, &horizon)
	dbsqlc.QueueLockOffset(first, dbsqlc.LockOffsetParams{GroupID: l.Group, Topic: l.Topic, Partition: l.Partition}, &cur)
	// Which old events are stored is read once the offset row is locked:
	// no reset or rebuild (which delete events) runs from then on until
	// the commit.
	var storedOld map[string]bool
	if len(w.old) > 0 {
		storedOld = make(map[string]bool, len(w.old))
		dbsqlc.QueueStoredEventIDs(first, eventIDs(w.old), storedOld)
	}
	err = conn.SendBatch(ctx, first).Close()
	if errors.Is(err, pgx.ErrNoRows) {
		return res, 0, fmt.Errorf("%w: no stored offset row", model.ErrFenced)
	}
	if err != nil {
		return res, 0, fmt.Errorf("lock offset: %w", err)
	}
	if err := fence(cur.NextOffset, cur.LeaseEpoch, l); err != nil {
		return res, 0, err
	}
	if h := horizonTime(horizon); !h.Equal(w.horizon) {
		s.learnHorizon(h)
		return res, 0, errHorizonMoved
	}
	dead, held := w.dead, 0
	for _, r := range w.old {
		if !storedOld[r.Event.EventID] {
			if held == 0 {
				dead = deadLettersParams(l.Topic, l.Partition, b.DeadLetters)
			}
			appendDeadLetter(&dead, beforeHorizon(r, w.horizon))
			held++
		}
	}
	var fresh []*model.Record
	merges := w.merges
	if w.safe {
		if fresh, err = s.insertNew(ctx, conn, l.Topic, l.Partition, w.recs); err != nil {
			return res, 0, err
		}
		stored = len(w.recs) - len(fresh)
		merges = s.prepareMerges(fresh)
	} else if w.copyBuf != nil {
		if err := copyEvents(ctx, conn.Conn().PgConn(), w); err != nil {
			return res, 0, err
		}
		fresh = w.recs
	}

	var deadStored int64
	var unknown []string
	// The merges, then the batch's other statements. Merges that have a
	// fast way take it unless the partition's last ones met stored rows;
	// when one meets a stored row, the transaction goes back to the
	// savepoint before them and merges them the usual way.
	fastFrom := firstFast(merges)
	queue := func(q *pgx.Batch, merges []merge, fast bool) {
		for i, m := range merges {
			switch {
			case fast && m.insert != nil:
				if i == fastFrom {
					q.Queue("SAVEPOINT " + fastMergesSavepoint)
				}
				m.insert(q)
			case m.queue != nil:
				m.queue(q)
			}
		}
		if len(dead.Offsets) > 0 {
			dbsqlc.QueueInsertDeadLetters(q, dead, &deadStored)
		}
		dbsqlc.QueueAdvanceOffset(q, dbsqlc.AdvanceOffsetParams{GroupID: l.Group, Topic: l.Topic, Partition: l.Partition, NextOffset: b.End, Events: int64(len(fresh))})
		// A projection registered since this process started, by a
		// binary that has it, must not miss this batch's events: this
		// process lacks it, so it must stop instead.
		dbsqlc.QueueUnknownProjections(q, s.names(), &unknown)
	}
	tp := model.TopicPartition{Topic: l.Topic, Partition: l.Partition}
	fast := fastFrom >= 0 && s.ways.fastMerges(tp)
	second := &pgx.Batch{}
	queue(second, merges, fast)
	err = conn.SendBatch(ctx, second).Close()
	if fast && err == nil {
		s.ways.mergesSucceeded(tp)
	}
	stepConflicts := 0
	if fast && isFastMergeConflict(err, merges) {
		stepConflicts = 1
		s.ways.mergesConflicted(tp)
		// On its own: until it has run, the transaction refuses even to
		// prepare the statements of a batch.
		if _, err = conn.Exec(ctx, "ROLLBACK TO SAVEPOINT "+fastMergesSavepoint); err == nil {
			again := &pgx.Batch{}
			queue(again, merges[fastFrom:], false)
			err = conn.SendBatch(ctx, again).Close()
		}
	}
	if err != nil {
		return res, 0, fmt.Errorf("merge projections and move offset: %w", err)
	}
	if len(unknown) > 0 {
		return res, 0, &UnknownProjectionsError{Names: unknown}
	}
	if len(fresh) > 0 && len(s.users) > 0 {
		if err = s.applyProjections(ctx, conn, eventsInOffsetOrder(fresh), true); err != nil {
			return res, 0, err
		}
	}
	// Once COMMIT is sent, wait for its answer even if ctx ends now, so
	// the caller knows whether the batch is in. (So COMMIT goes on its
	// own: a cancelled ctx must still stop the statements before it.)
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	defer cancel()
	if _, err = conn.Exec(cctx, "COMMIT"); err != nil {
		return res, 0, fmt.Errorf("commit: %w", err)
	}
	return model.Applied{
		Events:        len(fresh),
		Duplicates:    len(b.Records) - len(fresh) - held,
		DeadLetters:   int(deadStored),
		BeforeHorizon: held,
		Runs:          runsMerged(merges),
		EventTypes:    countTypes(fresh),
		Insert:        insertWay(w.safe),
		Took:          time.Since(start),
		StepConflicts: stepConflicts,
	}, stored, nil
}

// acquireApplySlot waits until fewer than Config.Parallelism batch
// transactions are in flight.
func (s *Store) acquireApplySlot(ctx context.Context) (release func(), err error) {
	select {
	case s.slots <- struct{}{}:
		return func() { <-s.slots }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func insertWay(safe bool) string {
	if safe {
		return model.InsertSkipStored
	}
	return model.InsertCopy
}

// copyEvents streams w's COPY buffer into workflow_events. An event_id
// already stored fails it with errStoredDuplicate.
func copyEvents(ctx context.Context, conn *pgconn.PgConn, w *work) error {
	_, err := conn.CopyFrom(ctx, bytes.NewReader(*w.copyBuf), copyEventsSQL)
	if err != nil {
		// When the connection fails, pgconn may return while its writer
		// goroutine still reads the buffer: leave it to the GC.
		w.copyBuf = nil
	}
	if isStoredDuplicate(err) {
		return fmt.Errorf("%w: %w", errStoredDuplicate, err)
	}
	if err != nil {
		return fmt.Errorf("copy events: %w", err)
	}
	return nil
}

// copyBuffers holds the buffers COPY streams are built in, so that a
// batch reuses one instead of growing a new one.
var copyBuffers = sync.Pool{New: func() any { return new([]byte) }}

// fastMergesSavepoint is where a batch's transaction goes back to when a
// merge's fast way met a stored row.
const fastMergesSavepoint = "fast_merges"

// firstFast returns the index of the first merge of ms that has a fast
// way, or -1. The merges from there on are done again when one fails.
func firstFast(ms []merge) int {
	for i, m := range ms {
		if m.insert != nil {
			return i
		}
	}
	return -1
}

// isFastMergeConflict reports whether err is the fast way of one of ms
// meeting a stored row.
func isFastMergeConflict(err error, ms []merge) bool {
	for _, m := range ms {
		if m.insert != nil && isUniqueViolationOn(err, m.table) {
			return true
		}
	}
	return false
}

// ways remembers, for each partition, which way its next batch goes.
//
// Events: a partition whose last batch met a stored event_id goes the
// safe way at once, until one of its batches finds none stored.
//
// Merges: a partition whose merges met stored rows the fast way merges
// the usual way for a pause that doubles with each failed try, up to
// fastPause batches, and ends with a try that succeeds: a backlog, where
// a step is stored only when a batch boundary cut its events apart,
// tries the fast way nearly every batch; a live stream, whose steps
// start in one batch and end in a later one, tries it once every
// fastPause+1 batches instead of paying for each step twice.
type ways struct {
	mu sync.Mutex
	m  map[model.TopicPartition]*partitionWays
}

// partitionWays is one partition's memory; the zero value (no entry) is
// the fast way for both.
type partitionWays struct {
	safeEvents bool
	pause      int // batches to merge the usual way after the last failed try
	left       int // of those, how many are still to come
}

// fastPause is the longest pause.
const fastPause = 8

// update calls f with tp's memory, made if need be, and forgets it when f
// leaves it at the zero value.
func (w *ways) update(tp model.TopicPartition, f func(*partitionWays)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		w.m = map[model.TopicPartition]*partitionWays{}
	}
	st := w.m[tp]
	if st == nil {
		st = &partitionWays{}
		w.m[tp] = st
	}
	f(st)
	if *st == (partitionWays{}) {
		delete(w.m, tp)
	}
}

// safeEvents reports whether the partition's next batch stores its
// events the safe way.
func (w *ways) safeEvents(tp model.TopicPartition) (safe bool) {
	w.update(tp, func(st *partitionWays) { safe = st.safeEvents })
	return safe
}

// eventsMet records whether the partition's last batch met stored
// event_ids.
func (w *ways) eventsMet(tp model.TopicPartition, met bool) {
	w.update(tp, func(st *partitionWays) { st.safeEvents = met })
}

// fastMerges reports whether the partition's next batch may merge the
// fast way, and counts the batch against a pause.
func (w *ways) fastMerges(tp model.TopicPartition) (fast bool) {
	w.update(tp, func(st *partitionWays) {
		if fast = st.left == 0; !fast {
			st.left--
		}
	})
	return fast
}

// mergesConflicted: the partition's fast way met a stored row.
func (w *ways) mergesConflicted(tp model.TopicPartition) {
	w.update(tp, func(st *partitionWays) {
		st.pause = min(max(2*st.pause, 1), fastPause)
		st.left = st.pause
	})
}

// mergesSucceeded: the partition's fast way met no stored row.
func (w *ways) mergesSucceeded(tp model.TopicPartition) {
	w.update(tp, func(st *partitionWays) { st.pause, st.left = 0, 0 })
}

// storeEvents inserts events that came from one topic partition, skipping
// event_ids already stored, and applies the new ones to every projection,
// inside tx: Apply's safe way, for a dead-letter replay. recs must hold one
// record per event_id, sorted by event_id (Batch.UniqueRecords). It
// returns how many events were new.
func (s *Store) storeEvents(ctx context.Context, tx pgx.Tx, topic string, partition int32, recs []*model.Record) (int, error) {
	fresh, err := s.insertNew(ctx, tx, topic, partition, recs)
	if err != nil {
		return 0, err
	}
	if err := s.applyProjections(ctx, tx, eventsInOffsetOrder(fresh), false); err != nil {
		return 0, err
	}
	if len(fresh) > 0 {
		if err := s.q.AddOtherEvents(ctx, tx, dbsqlc.AddOtherEventsParams{Events: int64(len(fresh)), Names: s.names()}); err != nil {
			return 0, fmt.Errorf("count replayed events: %w", err)
		}
	}
	return len(fresh), nil
}

// runsMerged is how many runs the built-in workflow_runs projection, the
// first folder, merges.
func runsMerged(ms []merge) int {
	if len(ms) == 0 {
		return 0
	}
	return ms[0].rows
}

// insertNew inserts the events of recs (one record per event_id, sorted by
// event_id) that came from one topic partition, skipping event_ids already
// stored, and returns the records that were new, in event_id order. It is
// the one way events go in besides the batches' COPY.
func (s *Store) insertNew(ctx context.Context, db dbsqlc.DBTX, topic string, partition int32, recs []*model.Record) ([]*model.Record, error) {
	if len(recs) == 0 {
		return nil, nil
	}
	ids, err := s.q.InsertEvents(ctx, db, insertEventsParams(topic, partition, recs))
	if err != nil {
		return nil, fmt.Errorf("insert events: %w", err)
	}
	return freshRecords(recs, ids), nil
}

// freshRecords returns the records of recs, sorted by event_id, whose
// event_id is in ids.
func freshRecords(recs []*model.Record, ids []string) []*model.Record {
	if len(ids) == len(recs) {
		return recs
	}
	slices.Sort(ids)
	fresh := make([]*model.Record, 0, len(ids))
	for i := range recs {
		if len(ids) == 0 {
			break
		}
		if recs[i].Event.EventID == ids[0] {
			fresh = append(fresh, recs[i])
			ids = ids[1:]
		}
	}
	return fresh
}

func insertEventsParams(topic string, partition int32, recs []*model.Record) dbsqlc.InsertEventsParams {
	n := len(recs)
	p := dbsqlc.InsertEventsParams{
		Topic:          topic,
		Partition:      partition,
		EventIds:       make([]string, n),
		WorkflowRunIds: make([]string, n),
		WorkflowIds:    make([]string, n),
		EventTypes:     make([]string, n),
		Sources:        make([]string, n),
		OccurredAts:    make([]pgtype.Timestamptz, n),
		Attempts:       make([]int32, n),
		StepIds:        make([]string, n),
		Offsets:        make([]int64, n),
		Payloads:       make([]string, n),
	}
	for i := range recs {
		r := recs[i]
		e := &r.Event
		p.EventIds[i] = e.EventID
		p.WorkflowRunIds[i] = e.WorkflowRunID
		p.WorkflowIds[i] = e.WorkflowID
		p.EventTypes[i] = e.EventType
		p.Sources[i] = e.Source
		p.OccurredAts[i] = pgtype.Timestamptz{Time: e.Timestamp, Valid: true}
		p.Attempts[i] = e.Attempt
		p.StepIds[i] = e.StepID
		p.Offsets[i] = r.Offset
		// The payload is only read from here on: share its bytes instead
		// of copying every event once more.
		p.Payloads[i] = unsafe.String(unsafe.SliceData(e.Payload), len(e.Payload))
	}
	return p
}

// mergeRuns combines partial runs into the stored rows (model.Combine in
// SQL), in db's transaction. runs must be sorted by workflow_run_id and
// hold one row per run.
func mergeRuns(ctx context.Context, db dbsqlc.DBTX, runs []model.Run) error {
	if len(runs) == 0 {
		return nil
	}
	if err := dbsqlc.New().MergeRuns(ctx, db, mergeRunsParams(runs)); err != nil {
		return fmt.Errorf("merge %d runs: %w", len(runs), err)
	}
	return nil
}

func mergeRunsParams(runs []model.Run) dbsqlc.MergeRunsParams {
	n := len(runs)
	p := dbsqlc.MergeRunsParams{
		WorkflowRunIds:   make([]string, n),
		WorkflowIds:      make([]string, n),
		Sources:          make([]string, n),
		Attempts:         make([]int32, n),
		Statuses:         make([]string, n),
		QueuedAts:        make([]pgtype.Timestamptz, n),
		StartedAts:       make([]pgtype.Timestamptz, n),
		FinishedAts:      make([]pgtype.Timestamptz, n),
		Errors:           make([]string, n),
		HasErrors:        make([]bool, n),
		StepsSucceeded:   make([]int64, n),
		StepsFailed:      make([]int64, n),
		StepsSkipped:     make([]int64, n),
		EventCounts:      make([]int64, n),
		FirstEventAts:    make([]pgtype.Timestamptz, n),
		LastEventAts:     make([]pgtype.Timestamptz, n),
		LatestEventIds:   make([]string, n),
		DecidingEventIds: make([]string, n),
	}
	for i := range runs {
		r := &runs[i]
		p.WorkflowRunIds[i] = r.WorkflowRunID
		p.WorkflowIds[i] = r.WorkflowID
		p.Sources[i] = r.Source
		p.Attempts[i] = r.Attempt
		p.Statuses[i] = r.Status
		p.QueuedAts[i] = pgtype.Timestamptz{Time: r.QueuedAt.Time, Valid: r.QueuedAt.Valid}
		p.StartedAts[i] = pgtype.Timestamptz{Time: r.StartedAt.Time, Valid: r.StartedAt.Valid}
		p.FinishedAts[i] = pgtype.Timestamptz{Time: r.FinishedAt.Time, Valid: r.FinishedAt.Valid}
		p.Errors[i] = r.Error.String
		p.HasErrors[i] = r.Error.Valid
		p.StepsSucceeded[i] = r.StepsSucceeded
		p.StepsFailed[i] = r.StepsFailed
		p.StepsSkipped[i] = r.StepsSkipped
		p.EventCounts[i] = r.EventCount
		p.FirstEventAts[i] = pgtype.Timestamptz{Time: r.FirstEventAt, Valid: true}
		p.LastEventAts[i] = pgtype.Timestamptz{Time: r.LastEventAt, Valid: true}
		p.LatestEventIds[i] = r.LatestEventID
		p.DecidingEventIds[i] = r.TerminalEventID
	}
	return p
}

// appendDeadLetter adds d to p.
func appendDeadLetter(p *dbsqlc.InsertDeadLettersParams, d model.DeadLetter) {
	p.Offsets = append(p.Offsets, d.Offset)
	p.Keys = append(p.Keys, d.Key)
	p.Vals = append(p.Vals, d.Value)
	p.Headers = append(p.Headers, string(d.Headers))
	p.Reasons = append(p.Reasons, d.Reason)
	p.Errors = append(p.Errors, d.Error)
}

// eventIDs returns the event_ids of recs.
func eventIDs(recs []*model.Record) []string {
	ids := make([]string, len(recs))
	for i, r := range recs {
		ids[i] = r.Event.EventID
	}
	return ids
}

func deadLettersParams(topic string, partition int32, dls []model.DeadLetter) dbsqlc.InsertDeadLettersParams {
	n := len(dls)
	p := dbsqlc.InsertDeadLettersParams{
		Topic:     topic,
		Partition: partition,
		Offsets:   make([]int64, n),
		Keys:      make([][]byte, n),
		Vals:      make([][]byte, n),
		Headers:   make([]string, n),
		Reasons:   make([]string, n),
		Errors:    make([]string, n),
	}
	for i, d := range dls {
		p.Offsets[i] = d.Offset
		p.Keys[i] = d.Key
		p.Vals[i] = d.Value
		p.Headers[i] = string(d.Headers)
		p.Reasons[i] = d.Reason
		p.Errors[i] = d.Error
	}
	return p
}

// countTypes counts the events of recs by event_type.
func countTypes(recs []*model.Record) map[string]int {
	types := make(map[string]int, 10)
	for i := range recs {
		types[recs[i].Event.EventType]++
	}
	return types
}
