package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store/storetest"
)

// TestEmptyBatchMovesOffsetBehindFence: a batch with no messages (offsets
// of transaction markers and aborted messages) moves next_offset to its
// End in a fenced transaction and writes nothing else; with a stale lease
// it is fenced like any batch.
func TestEmptyBatchMovesOffsetBehindFence(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.New(t)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	lease := claim(t, st, 0)
	b := batchOf(lease, eventJSON("e1", "run.queued", "r1", t0, 1, ""))
	_, err := st.Apply(ctx, b)
	require.NoError(t, err)
	before := storetest.Snapshot(t, st)

	lease.NextOffset = b.End
	res, err := st.Apply(ctx, &model.Batch{Lease: lease, End: 7})
	require.NoError(t, err)
	require.Equal(t, model.Applied{Insert: res.Insert, Took: res.Took, EventTypes: res.EventTypes}, res, "nothing written")
	require.Empty(t, res.EventTypes)
	stored, err := st.StoredOffsets(ctx, group)
	require.NoError(t, err)
	require.Equal(t, int64(7), stored[model.TopicPartition{Topic: topic, Partition: 0}])
	after := storetest.Snapshot(t, st)
	delete(before, "consumer_offsets")
	delete(after, "consumer_offsets")
	require.Equal(t, before, after, "no event, run or dead letter changed")

	// The lease still expects offset 1: fenced, nothing moves.
	_, err = st.Apply(ctx, &model.Batch{Lease: lease, End: 9})
	require.ErrorIs(t, err, model.ErrFenced)
	// Another session took the partition: the old lease is fenced.
	lease.NextOffset = 7
	_, err = st.Claim(ctx, group, topic, 0, 0, "other")
	require.NoError(t, err)
	_, err = st.Apply(ctx, &model.Batch{Lease: lease, End: 9})
	require.ErrorIs(t, err, model.ErrFenced)
	stored, err = st.StoredOffsets(ctx, group)
	require.NoError(t, err)
	require.Equal(t, int64(7), stored[model.TopicPartition{Topic: topic, Partition: 0}])
}

// TestConsumerLagCountsToLastStableOffset: while a transaction is open the
// last stable offset is below the high watermark, and lag counts only what
// a read-committed consumer can read.
func TestConsumerLagCountsToLastStableOffset(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.New(t)
	lease := claim(t, st, 0)
	read := func() (next, hwm, lso, lag int64) {
		t.Helper()
		require.NoError(t, st.Pool().QueryRow(ctx,
			`SELECT next_offset, high_watermark, last_stable_offset, lag FROM consumer_lag WHERE group_id = $1 AND topic = $2 AND partition = 0`,
			group, topic).Scan(&next, &hwm, &lso, &lag))
		return next, hwm, lso, lag
	}

	require.NoError(t, st.RecordHighWatermark(ctx, lease, 10, 4, time.Time{}))
	_, hwm, lso, lag := read()
	require.Equal(t, []int64{10, 4, 4}, []int64{hwm, lso, lag})

	// Everything before the open transaction applied: lag 0.
	_, err := st.Apply(ctx, &model.Batch{Lease: lease, End: 4})
	require.NoError(t, err)
	_, _, lso, lag = read()
	require.Equal(t, []int64{4, 0}, []int64{lso, lag})

	// The transaction ended: the last stable offset is the high watermark.
	require.NoError(t, st.RecordHighWatermark(ctx, lease, 12, 12, time.Time{}))
	_, hwm, lso, lag = read()
	require.Equal(t, []int64{12, 12, 8}, []int64{hwm, lso, lag})

	// Unknown last stable offset: lag counts to the high watermark.
	require.NoError(t, st.RecordHighWatermark(ctx, lease, 12, -1, time.Time{}))
	_, _, lso, lag = read()
	require.Equal(t, []int64{12, 8}, []int64{lso, lag})
}
