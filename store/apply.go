package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/projector-run/projector/projector"
	"github.com/projector-run/projector/store/internal/dbsqlc"
)

// Apply writes a batch of one partition in one transaction: it locks the
// partition's offset row and checks the fence (the lease epoch and stored
// offset are what the batch's lease expects), stores the new events,
// merges the runs they touch, stores the dead letters and moves the
// offset to b.End. When the fence fails, nothing is written and the error
// wraps projector.ErrFenced.
func (s *Store) Apply(ctx context.Context, b *projector.Batch) (projector.Applied, error) {
	var res projector.Applied
	l := b.Lease
	err := s.withTx(ctx, func(tx pgx.Tx) error {
		cur, err := s.q.LockOffset(ctx, tx, dbsqlc.LockOffsetParams{GroupID: l.Group, Topic: l.Topic, Partition: l.Partition})
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: no stored offset row", projector.ErrFenced)
		}
		if err != nil {
			return fmt.Errorf("lock offset: %w", err)
		}
		if err := fence(cur.NextOffset, cur.LeaseEpoch, l); err != nil {
			return err
		}
		res, err = s.applyEffects(ctx, tx, l.Topic, l.Partition, b)
		if err != nil {
			return err
		}
		err = s.q.AdvanceOffset(ctx, tx, dbsqlc.AdvanceOffsetParams{
			GroupID: l.Group, Topic: l.Topic, Partition: l.Partition, NextOffset: b.End,
		})
		if err != nil {
			return fmt.Errorf("advance offset: %w", err)
		}
		return nil
	})
	if IsDataError(err) {
		err = fmt.Errorf("%w: %w", projector.ErrRejected, err)
	}
	if err != nil {
		return projector.Applied{}, fmt.Errorf("apply batch %s/%d [%d, %d): %w", l.Topic, l.Partition, l.NextOffset, b.End, err)
	}
	return res, nil
}

// applyEffects stores a batch's events and dead letters and merges its
// runs, inside tx.
func (s *Store) applyEffects(ctx context.Context, tx pgx.Tx, topic string, partition int32, b *projector.Batch) (projector.Applied, error) {
	var res projector.Applied
	recs := b.UniqueRecords()
	inserted, runs, err := s.storeEvents(ctx, tx, topic, partition, recs)
	if err != nil {
		return res, err
	}
	res.Events, res.Runs = inserted, runs
	res.Duplicates = len(b.Records) - inserted
	if len(b.DeadLetters) > 0 {
		n, err := s.insertDeadLetters(ctx, tx, topic, partition, b.DeadLetters)
		if err != nil {
			return res, err
		}
		res.DeadLetters = n
	}
	return res, nil
}

// storeEvents inserts events that came from one topic partition, skipping
// event_ids already stored, and merges the new ones into their runs,
// inside tx. recs must hold one record per event_id, sorted by event_id
// (Batch.UniqueRecords). It returns how many events were new and how many
// runs they touched.
func (s *Store) storeEvents(ctx context.Context, tx pgx.Tx, topic string, partition int32, recs []projector.Record) (inserted, runs int, err error) {
	if len(recs) == 0 {
		return 0, 0, nil
	}
	p := dbsqlc.InsertEventsParams{
		Topic:          topic,
		Partition:      partition,
		EventIds:       make([]string, len(recs)),
		WorkflowRunIds: make([]string, len(recs)),
		WorkflowIds:    make([]string, len(recs)),
		EventTypes:     make([]string, len(recs)),
		Sources:        make([]string, len(recs)),
		OccurredAts:    make([]pgtype.Timestamptz, len(recs)),
		Attempts:       make([]int32, len(recs)),
		StepIds:        make([]string, len(recs)),
		Offsets:        make([]int64, len(recs)),
		Payloads:       make([]string, len(recs)),
	}
	for i, r := range recs {
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
		p.Payloads[i] = string(e.Payload)
	}
	ids, err := s.q.InsertEvents(ctx, tx, p)
	if err != nil {
		return 0, 0, fmt.Errorf("insert events: %w", err)
	}
	if len(ids) == 0 {
		return 0, 0, nil
	}
	fresh := make(map[string]struct{}, len(ids))
	for _, id := range ids {
		fresh[id] = struct{}{}
	}
	events := make([]projector.Event, 0, len(ids))
	for _, r := range recs {
		if _, ok := fresh[r.Event.EventID]; ok {
			events = append(events, r.Event)
		}
	}
	merged := projector.FoldRuns(events)
	if err := s.mergeRuns(ctx, tx, merged); err != nil {
		return 0, 0, err
	}
	return len(ids), len(merged), nil
}

// mergeRuns combines partial runs into the stored rows (projector.Combine
// in SQL). runs must be sorted by workflow_run_id and hold one row per run.
func (s *Store) mergeRuns(ctx context.Context, tx pgx.Tx, runs []projector.Run) error {
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
	if err := s.q.MergeRuns(ctx, tx, p); err != nil {
		return fmt.Errorf("merge %d runs: %w", n, err)
	}
	return nil
}

func (s *Store) insertDeadLetters(ctx context.Context, tx pgx.Tx, topic string, partition int32, dls []projector.DeadLetter) (int, error) {
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
	rows, err := s.q.InsertDeadLetters(ctx, tx, p)
	if err != nil {
		return 0, fmt.Errorf("insert %d dead letters: %w", n, err)
	}
	return int(rows), nil
}
