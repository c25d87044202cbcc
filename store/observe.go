package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store/internal/dbsqlc"
)

// RecordHighWatermark stores a claimed partition's high watermark and last
// stable offset (lso; -1: unknown, stored as NULL) beside its offset, for
// the consumer_lag view, and lastApplied, when the claim
// last committed a batch (the zero time: not yet, keep the stored one). It
// is sent as a duration before the server's now(), so the worker's and the
// server's clocks need not agree. One UPDATE outside any batch transaction,
// and it writes only while l is the partition's current lease (a lost lease
// writes nothing and is not an error: the fence reports it). Nothing
// positions from the stored values.
func (s *Store) RecordHighWatermark(ctx context.Context, l model.Lease, hwm, lso int64, lastApplied time.Time) error {
	var ago pgtype.Int8
	if !lastApplied.IsZero() {
		ago = pgtype.Int8{Int64: max(time.Since(lastApplied).Milliseconds(), 0), Valid: true}
	}
	_, err := s.q.RecordHighWatermark(ctx, s.pool, dbsqlc.RecordHighWatermarkParams{
		GroupID: l.Group, Topic: l.Topic, Partition: l.Partition, LeaseEpoch: l.Epoch,
		HighWatermark: hwm, AppliedAgoMs: ago, LastStableOffset: pgtype.Int8{Int64: lso, Valid: lso >= 0},
	})
	if err != nil {
		return fmt.Errorf("record high watermark of %s/%d: %w", l.Topic, l.Partition, classify(err))
	}
	return nil
}

// IndexMemory is how much memory the indexes of the tables every batch
// writes (workflow_events, workflow_runs, workflow_steps) take, against
// the server's shared_buffers.
type IndexMemory struct {
	Indexes       int64 // bytes
	SharedBuffers int64 // bytes
}

// Outgrown reports whether the indexes no longer fit in shared_buffers.
// From then on batches read index pages from outside PostgreSQL's cache,
// and throughput falls as the history grows: at 50M stored events (about 7 GB
// of indexes) 4 GB of shared_buffers ran at 0.64 of the empty database's
// rate where 8 GB ran at 0.88 (README, "PostgreSQL server settings").
func (m IndexMemory) Outgrown() bool { return m.Indexes > m.SharedBuffers }

// IndexMemory reads the indexes' size and shared_buffers.
func (s *Store) IndexMemory(ctx context.Context) (IndexMemory, error) {
	r, err := s.q.IndexMemory(ctx, s.pool)
	if err != nil {
		return IndexMemory{}, fmt.Errorf("read the indexes' size and shared_buffers: %w", classify(err))
	}
	return IndexMemory{Indexes: r.Indexes, SharedBuffers: r.SharedBuffers}, nil
}
