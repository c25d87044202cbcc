package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/jackc/pgx/v5"

	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/projector/retrypolicy"
	"github.com/projector-run/projector/store/internal/dbsqlc"
)

// ErrNotFound means a row that was asked for by its key is not stored.
var ErrNotFound = errors.New("not found")

// Position names one Kafka message: topic, partition and offset.
type Position struct {
	Topic     string
	Partition int32
	Offset    int64
}

// String returns TOPIC/PARTITION/OFFSET, the form ParsePosition reads.
func (p Position) String() string { return fmt.Sprintf("%s/%d/%d", p.Topic, p.Partition, p.Offset) }

// ParsePosition reads TOPIC/PARTITION/OFFSET. Kafka topic names cannot
// hold a slash, so the last two slashes separate the parts.
func ParsePosition(s string) (Position, error) {
	bad := fmt.Errorf("%q is not TOPIC/PARTITION/OFFSET", s)
	j := strings.LastIndexByte(s, '/')
	if j < 0 {
		return Position{}, bad
	}
	i := strings.LastIndexByte(s[:j], '/')
	if i <= 0 {
		return Position{}, bad
	}
	part, err1 := strconv.ParseInt(s[i+1:j], 10, 32)
	off, err2 := strconv.ParseInt(s[j+1:], 10, 64)
	if err1 != nil || err2 != nil || part < 0 || off < 0 {
		return Position{}, bad
	}
	return Position{Topic: s[:i], Partition: int32(part), Offset: off}, nil
}

// DeadLetterRow is a stored dead letter.
type DeadLetterRow struct {
	ID int64
	Position
	// Key and Value are the exact bytes received; nil when the message
	// had none.
	Key, Value []byte
	// Headers is the JSON array of the message's headers (see
	// model.HeadersJSON).
	Headers    []byte
	Reason     string
	Error      string
	ReceivedAt time.Time
}

func deadLetterRow(d dbsqlc.DeadLetter) DeadLetterRow {
	return DeadLetterRow{
		ID:       d.ID,
		Position: Position{Topic: d.Topic, Partition: d.Partition, Offset: d.Offset},
		Key:      d.Key, Value: d.Value, Headers: d.Headers,
		Reason: d.Reason, Error: d.Error, ReceivedAt: d.ReceivedAt.Time.UTC(),
	}
}

// ListDeadLetters returns up to limit dead letters in (topic, partition,
// offset) order, of one reason only unless reason is "", and how many
// there are in all.
func (s *Store) ListDeadLetters(ctx context.Context, reason string, limit int) ([]DeadLetterRow, int64, error) {
	total, err := s.q.CountDeadLetters(ctx, s.pool, reason)
	if err != nil {
		return nil, 0, fmt.Errorf("count dead letters: %w", err)
	}
	rows, err := s.q.ListDeadLetters(ctx, s.pool, listFrom(Position{Partition: -1, Offset: -1}, reason, limit))
	if err != nil {
		return nil, 0, fmt.Errorf("list dead letters: %w", err)
	}
	out := make([]DeadLetterRow, len(rows))
	for i, r := range rows {
		out[i] = deadLetterRow(r)
	}
	return out, total, nil
}

func listFrom(after Position, reason string, limit int) dbsqlc.ListDeadLettersParams {
	return dbsqlc.ListDeadLettersParams{
		AfterTopic: after.Topic, AfterPartition: after.Partition, AfterOffset: after.Offset,
		Reason: reason, MaxRows: int32(min(limit, 1<<30)),
	}
}

// GetDeadLetter returns the dead letter of one message; the error wraps
// ErrNotFound when there is none.
func (s *Store) GetDeadLetter(ctx context.Context, p Position) (DeadLetterRow, error) {
	d, err := s.q.GetDeadLetter(ctx, s.pool, dbsqlc.GetDeadLetterParams{Topic: p.Topic, Partition: p.Partition, OffsetAt: p.Offset})
	if errors.Is(err, pgx.ErrNoRows) {
		return DeadLetterRow{}, fmt.Errorf("dead letter %s: %w", p, ErrNotFound)
	}
	if err != nil {
		return DeadLetterRow{}, fmt.Errorf("read dead letter %s: %w", p, err)
	}
	return deadLetterRow(d), nil
}

// Replay outcomes.
const (
	// ReplayApplied: the message is valid today; its event was stored and
	// its run merged, and the dead letter removed.
	ReplayApplied = "applied"
	// ReplayDuplicate: the message is valid today but its event_id was
	// stored already (the first one applied wins); the dead letter was
	// removed and nothing else changed.
	ReplayDuplicate = "duplicate"
	// ReplayInvalid: the message is still invalid; the dead letter stays
	// with today's reason and error.
	ReplayInvalid = "invalid"
)

// ReplayOptions select the dead letters ReplayDeadLetters re-validates.
type ReplayOptions struct {
	// Reason selects the dead letters of one reason; "" selects all.
	Reason string
	// Positions, when given, selects exactly these dead letters; each must
	// exist.
	Positions []Position
	// DryRun re-validates and reports, and writes nothing.
	DryRun bool
	// Samples caps ReplayResult.Outcomes. Outcomes that change nothing
	// (still invalid, for the same reason and error) are left out, unless
	// Positions are given.
	Samples int
}

// ReplayOutcome is what replaying one dead letter did, or would do.
type ReplayOutcome struct {
	Position
	// Result is ReplayApplied, ReplayDuplicate or ReplayInvalid.
	Result string
	// EventID is the event's id when the message is valid today.
	EventID string
	// OldReason is the stored reason before the replay; Reason and Error
	// are today's, for a message still invalid.
	OldReason, Reason, Error string
	// Updated is set for a message still invalid whose stored reason or
	// error changed to today's.
	Updated bool
}

// ReplayResult counts what ReplayDeadLetters did, or would do.
type ReplayResult struct {
	Checked, Applied, Duplicates, Invalid int
	// Outcomes are the first few, in (topic, partition, offset) order
	// (see ReplayOptions.Samples).
	Outcomes []ReplayOutcome
}

// replayChunk is how many dead letters one replay transaction takes.
const replayChunk = 500

// ReplayDeadLetters re-validates the exact stored bytes of dead letters
// with today's rules (model.Decode). A message now valid is applied
// as if it had just been consumed, at its own topic, partition and offset
// (its event stored unless its event_id is, its run merged), and its dead
// letter removed, in one transaction: replaying again finds nothing to do.
// A message still invalid keeps its dead letter, with today's reason and
// error. Each transaction holds the offset rows of its partition, as a
// batch of that partition does.
func (s *Store) ReplayDeadLetters(ctx context.Context, opts ReplayOptions) (ReplayResult, error) {
	var res ReplayResult
	if err := s.CheckProjections(ctx); err != nil {
		return res, err
	}
	if len(opts.Positions) > 0 {
		var rows []dbsqlc.DeadLetter
		for _, p := range opts.Positions {
			d, err := s.q.GetDeadLetter(ctx, s.pool, dbsqlc.GetDeadLetterParams{Topic: p.Topic, Partition: p.Partition, OffsetAt: p.Offset})
			if errors.Is(err, pgx.ErrNoRows) {
				return res, fmt.Errorf("dead letter %s: %w", p, ErrNotFound)
			}
			if err != nil {
				return res, fmt.Errorf("read dead letter %s: %w", p, err)
			}
			rows = append(rows, d)
		}
		slices.SortFunc(rows, compareDeadLetters)
		rows = slices.CompactFunc(rows, func(a, b dbsqlc.DeadLetter) bool { return a.ID == b.ID })
		return res, s.replayRows(ctx, opts, &res, rows)
	}
	after := Position{Partition: -1, Offset: -1}
	for {
		rows, err := s.q.ListDeadLetters(ctx, s.pool, listFrom(after, opts.Reason, replayChunk))
		if err != nil {
			return res, fmt.Errorf("list dead letters: %w", err)
		}
		if len(rows) == 0 {
			return res, nil
		}
		if err := s.replayRows(ctx, opts, &res, rows); err != nil {
			return res, err
		}
		last := rows[len(rows)-1]
		after = Position{Topic: last.Topic, Partition: last.Partition, Offset: last.Offset}
	}
}

func compareDeadLetters(a, b dbsqlc.DeadLetter) int {
	return cmp.Or(strings.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
}

// replayRows replays dead letters in (topic, partition, offset) order,
// one transaction per partition.
func (s *Store) replayRows(ctx context.Context, opts ReplayOptions, res *ReplayResult, rows []dbsqlc.DeadLetter) error {
	for len(rows) > 0 {
		n := 1
		for n < len(rows) && rows[n].Topic == rows[0].Topic && rows[n].Partition == rows[0].Partition {
			n++
		}
		part := rows[:n]
		rows = rows[n:]
		var outs []ReplayOutcome
		var err error
		// A before_horizon dead letter is applied only by hand: named
		// by its position, or by its reason.
		byHand := len(opts.Positions) > 0 || opts.Reason == model.ReasonBeforeHorizon
		if opts.DryRun {
			outs, err = s.replayDry(ctx, part, byHand)
		} else {
			outs, err = s.replayPartition(ctx, part, byHand)
		}
		if err != nil {
			return fmt.Errorf("replay dead letters of %s/%d: %w", part[0].Topic, part[0].Partition, err)
		}
		for _, o := range outs {
			res.Checked++
			switch o.Result {
			case ReplayApplied:
				res.Applied++
			case ReplayDuplicate:
				res.Duplicates++
			case ReplayInvalid:
				res.Invalid++
			}
			notable := o.Result != ReplayInvalid || o.Updated || len(opts.Positions) > 0
			if notable && len(res.Outcomes) < opts.Samples {
				res.Outcomes = append(res.Outcomes, o)
			}
		}
	}
	return nil
}

// revalidate decodes dead letters of one partition again into a batch:
// its Records are the messages now valid, its DeadLetters those still
// invalid, with today's reason and error.
func revalidate(rows []dbsqlc.DeadLetter) *model.Batch {
	b := &model.Batch{}
	if len(rows) > 0 { // one partition's, as replayTx takes them
		b.Lease.Topic, b.Lease.Partition = rows[0].Topic, rows[0].Partition
	}
	for _, d := range rows {
		b.Add(model.Message{Offset: d.Offset, Key: d.Key, Value: d.Value})
	}
	return b
}

// outcomes classifies a revalidated batch: a valid message is a duplicate
// when its event_id is in stored or an earlier message of the batch holds
// it.
func outcomes(rows []dbsqlc.DeadLetter, b *model.Batch, stored map[string]bool) []ReplayOutcome {
	byOffset := make(map[int64]dbsqlc.DeadLetter, len(rows))
	for _, d := range rows {
		byOffset[d.Offset] = d
	}
	first := make(map[string]int64, len(b.Records))
	for _, r := range b.UniqueRecords() {
		first[r.Event.EventID] = r.Offset
	}
	var out []ReplayOutcome
	for _, r := range b.Records {
		d := byOffset[r.Offset]
		o := ReplayOutcome{Position: Position{d.Topic, d.Partition, d.Offset}, Result: ReplayApplied, EventID: r.Event.EventID, OldReason: d.Reason}
		if stored[r.Event.EventID] || first[r.Event.EventID] != r.Offset {
			o.Result = ReplayDuplicate
		}
		out = append(out, o)
	}
	for _, dl := range b.DeadLetters {
		d := byOffset[dl.Offset]
		out = append(out, ReplayOutcome{Position: Position{d.Topic, d.Partition, d.Offset}, Result: ReplayInvalid,
			OldReason: d.Reason, Reason: dl.Reason, Error: dl.Error, Updated: dl.Reason != d.Reason || dl.Error != d.Error})
	}
	slices.SortFunc(out, func(a, b ReplayOutcome) int { return cmp.Compare(a.Offset, b.Offset) })
	return out
}

func (s *Store) replayDry(ctx context.Context, rows []dbsqlc.DeadLetter, byHand bool) ([]ReplayOutcome, error) {
	b := revalidate(rows)
	stored, err := s.storedEventIDs(ctx, s.pool, b.UniqueRecords())
	if err != nil {
		return nil, err
	}
	if !byHand {
		h, err := s.Horizon(ctx)
		if err != nil {
			return nil, err
		}
		holdBackReplayed(b, h, stored)
	}
	return outcomes(rows, b, stored), nil
}

// holdBackReplayed turns the messages of b now valid whose events
// occurred before horizon and whose event_id is not in stored into
// before_horizon dead letters: they may be duplicates of pruned events.
func holdBackReplayed(b *model.Batch, horizon time.Time, stored map[string]bool) {
	if horizon.IsZero() {
		return
	}
	var kept []model.Record
	for i := range b.Records {
		r := &b.Records[i]
		if r.Event.Timestamp.Before(horizon) && !stored[r.Event.EventID] {
			b.DeadLetters = append(b.DeadLetters, beforeHorizon(r, horizon))
		} else {
			kept = append(kept, *r)
		}
	}
	b.Records = kept
}

func (s *Store) storedEventIDs(ctx context.Context, db dbsqlc.DBTX, recs []*model.Record) (map[string]bool, error) {
	ids := make([]string, len(recs))
	for i, r := range recs {
		ids[i] = r.Event.EventID
	}
	found, err := s.q.StoredEventIDs(ctx, db, ids)
	if err != nil {
		return nil, fmt.Errorf("look up event ids: %w", err)
	}
	stored := make(map[string]bool, len(found))
	for _, id := range found {
		stored[id] = true
	}
	return stored, nil
}

// replayPartition replays dead letters of one partition in one
// transaction, retried on deadlock. When PostgreSQL refuses the data of
// one of them, each is replayed on its own, and the one it still refuses
// stays a dead letter with the reason unstorable. A projection's error is
// never the data's, whatever PostgreSQL said inside it (see classify): it
// fails the replay, and the dead letters stay as they were.
func (s *Store) replayPartition(ctx context.Context, rows []dbsqlc.DeadLetter, byHand bool) ([]ReplayOutcome, error) {
	outs, err := s.replayTx(ctx, rows, byHand)
	if pe := (*model.ProjectionError)(nil); !IsDataError(err) || errors.As(err, &pe) {
		return outs, err
	}
	if len(rows) > 1 {
		outs = nil
		for i := range rows {
			o, err := s.replayPartition(ctx, rows[i:i+1], byHand)
			if err != nil {
				return nil, err
			}
			outs = append(outs, o...)
		}
		return outs, nil
	}
	d := rows[0]
	msg := "postgresql refused it: " + refusal(err)
	if err := s.withTx(ctx, func(tx pgx.Tx) error {
		return s.q.UpdateDeadLetters(ctx, tx, dbsqlc.UpdateDeadLettersParams{
			Ids: []int64{d.ID}, Reasons: []string{model.ReasonUnstorable}, Errors: []string{msg},
		})
	}); err != nil {
		return nil, fmt.Errorf("update dead letter at offset %d: %w", d.Offset, err)
	}
	return []ReplayOutcome{{Position: Position{d.Topic, d.Partition, d.Offset}, Result: ReplayInvalid,
		OldReason: d.Reason, Reason: model.ReasonUnstorable, Error: msg, Updated: true}}, nil
}

func (s *Store) replayTx(ctx context.Context, rows []dbsqlc.DeadLetter, byHand bool) ([]ReplayOutcome, error) {
	topic, partition := rows[0].Topic, rows[0].Partition
	ids := make([]int64, len(rows))
	for i, d := range rows {
		ids[i] = d.ID
	}
	var outs []ReplayOutcome
	err := retryConflicts(ctx, func() error {
		return s.withTx(ctx, func(tx pgx.Tx) error {
			// The retention lock before the offset rows, as a batch takes
			// them: a prune queued between the two would make a cycle.
			if _, err := tx.Exec(ctx, retentionLock); err != nil {
				return fmt.Errorf("lock retention horizon: %w", err)
			}
			if _, err := s.q.LockPartitionOffsets(ctx, tx, dbsqlc.LockPartitionOffsetsParams{Topic: topic, Partition: partition}); err != nil {
				return fmt.Errorf("lock offsets: %w", err)
			}
			// A projection registered since the replay began must not
			// miss these events (its build's snapshot has none of them).
			if err := s.checkProjections(ctx, tx); err != nil {
				return err
			}
			// Only those still there: another replay, or a reset, may
			// have removed some meanwhile.
			cur, err := s.q.LockDeadLetters(ctx, tx, ids)
			if err != nil {
				return fmt.Errorf("lock dead letters: %w", err)
			}
			slices.SortFunc(cur, compareDeadLetters)
			b := revalidate(cur)
			stored, err := s.storedEventIDs(ctx, tx, b.UniqueRecords())
			if err != nil {
				return err
			}
			if !byHand {
				h, err := s.horizonIn(ctx, tx)
				if err != nil {
					return err
				}
				holdBackReplayed(b, h, stored)
			}
			outs = outcomes(cur, b, stored)
			// An event seen stored is a duplicate, even if a prune
			// deletes it before the insert below (prune's chunks do not
			// wait for replays): only the others go in.
			recs := slices.DeleteFunc(b.UniqueRecords(), func(r *model.Record) bool { return stored[r.Event.EventID] })
			if _, err := s.storeEvents(ctx, tx, topic, partition, recs); err != nil {
				return err
			}
			var done []int64
			var upd dbsqlc.UpdateDeadLettersParams
			for i, o := range outs {
				d := cur[i] // outs and cur are both in offset order
				if o.Result != ReplayInvalid {
					done = append(done, d.ID)
				} else if o.Updated {
					upd.Ids = append(upd.Ids, d.ID)
					upd.Reasons = append(upd.Reasons, o.Reason)
					upd.Errors = append(upd.Errors, o.Error)
				}
			}
			if len(done) > 0 {
				if _, err := s.q.DeleteDeadLettersByID(ctx, tx, done); err != nil {
					return fmt.Errorf("remove dead letters: %w", err)
				}
			}
			if len(upd.Ids) > 0 {
				if err := s.q.UpdateDeadLetters(ctx, tx, upd); err != nil {
					return fmt.Errorf("update dead letters: %w", err)
				}
			}
			return nil
		})
	})
	return outs, err
}

// retryConflicts runs op again, a few times with a short backoff, while
// it fails with a deadlock or a serialization failure: PostgreSQL chose
// it as the victim of a conflict with a concurrent transaction.
func retryConflicts(ctx context.Context, op func() error) error {
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		err := op()
		if err != nil && !isConflict(err) {
			return struct{}{}, backoff.Permanent(err)
		}
		return struct{}{}, err
	}, backoff.WithBackOff(retrypolicy.NewBackOff(50*time.Millisecond, time.Second)), backoff.WithMaxTries(5))
	return err
}
