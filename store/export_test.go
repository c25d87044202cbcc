package store

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store/internal/dbsqlc"
)

// ApplySkipStored applies b with the insert that skips stored event_ids
// only, never by COPY, so that tests can compare the two ways.
func (s *Store) ApplySkipStored(ctx context.Context, b *model.Batch) (model.Applied, error) {
	w := s.newWork(b, true)
	defer w.release()
	res, _, err := s.apply(ctx, w)
	return res, err
}

// AppendEventsCopy and CopySize are the COPY stream's encoder and size.
var (
	AppendEventsCopy = appendEventsCopy
	CopySize         = copySize
)

// CopyEventsSQL is the batch COPY statement.
const CopyEventsSQL = copyEventsSQL

// SetStalledCopyClock makes ReapStalledCopies read the time from now.
func SetStalledCopyClock(s *Store, now func() time.Time) { s.copies.now = now }

// MergeSteps merges steps (model.FoldSteps rows of events never merged
// before) in a transaction of its own: with mergeSteps, or queued in a
// pgx.Batch with dbsqlc.QueueMergeSteps when queued is set.
func (s *Store) MergeSteps(ctx context.Context, steps []model.Step, queued bool) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if queued {
		b := &pgx.Batch{}
		dbsqlc.QueueMergeSteps(b, mergeStepsParams(steps))
		err = tx.SendBatch(ctx, b).Close()
	} else {
		err = mergeSteps(ctx, tx, steps)
	}
	if err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// FastMergesPaused returns how many more batches of a partition merge the
// usual way because its fast way met a stored row.
func FastMergesPaused(s *Store, topic string, partition int32) int {
	s.ways.mu.Lock()
	defer s.ways.mu.Unlock()
	if st := s.ways.m[model.TopicPartition{Topic: topic, Partition: partition}]; st != nil {
		return st.left
	}
	return 0
}

// FastPause is fastPause.
const FastPause = fastPause
