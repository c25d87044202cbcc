package projector_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/require"

	"github.com/projector-run/projector/projector"
	"github.com/projector-run/projector/store"
	"github.com/projector-run/projector/store/storetest"
)

// heldSink announces each Apply and holds it until the test releases it.
type heldSink struct {
	*store.Store
	started chan *projector.Batch
	release chan struct{}
}

func (g *heldSink) Apply(ctx context.Context, b *projector.Batch) (projector.Applied, error) {
	g.started <- b
	<-g.release
	return g.Store.Apply(ctx, b)
}

type fakeSession struct{ ctx context.Context }

func (s fakeSession) Claims() map[string][]int32                  { return nil }
func (s fakeSession) MemberID() string                            { return "m" }
func (s fakeSession) GenerationID() int32                         { return 1 }
func (s fakeSession) MarkOffset(string, int32, int64, string)     {}
func (s fakeSession) Commit()                                     {}
func (s fakeSession) ResetOffset(string, int32, int64, string)    {}
func (s fakeSession) MarkMessage(*sarama.ConsumerMessage, string) {}
func (s fakeSession) Context() context.Context                    { return s.ctx }

type fakeClaim struct{ msgs chan *sarama.ConsumerMessage }

func (c fakeClaim) Topic() string                            { return topic }
func (c fakeClaim) Partition() int32                         { return 0 }
func (c fakeClaim) InitialOffset() int64                     { return 0 }
func (c fakeClaim) HighWaterMarkOffset() int64               { return 1000 }
func (c fakeClaim) Messages() <-chan *sarama.ConsumerMessage { return c.msgs }

// TestNextBatchFillsWhileOneApplies: while a batch's transaction runs,
// the claim goes on reading and decoding messages into the next batch, up
// to a full batch and no further; batches are applied one at a time, in
// order. The claim's message channel is unbuffered, so the test sees
// exactly when the worker reads.
func TestNextBatchFillsWhileOneApplies(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := storetest.New(t)
	lease, err := st.Claim(ctx, "g", topic, 0, 0, "test")
	require.NoError(t, err)
	sink := &heldSink{Store: st, started: make(chan *projector.Batch), release: make(chan struct{})}
	cfg := projector.DefaultConfig()
	cfg.Group = "g"
	cfg.BatchSize = 10
	cfg.BatchWait = time.Minute // batches are cut by count only
	w, err := projector.NewWorker(cfg, sink, testLogger(t, "w"))
	require.NoError(t, err)
	claim := fakeClaim{msgs: make(chan *sarama.ConsumerMessage)}
	done := make(chan error, 1)
	go func() { done <- projector.ConsumeClaim(w, fakeSession{ctx}, claim, lease) }()

	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	send := func(offset int64) bool {
		m := &sarama.ConsumerMessage{Topic: topic, Offset: offset, Value: fmt.Appendf(nil,
			`{"event_id":"e%d","event_type":"run.queued","source":"s","workflow_id":"w","workflow_run_id":"r%d","timestamp":%q}`,
			offset, offset, t0.Format(time.RFC3339))}
		select {
		case claim.msgs <- m:
			return true
		case <-time.After(300 * time.Millisecond):
			return false
		}
	}
	for o := range int64(10) {
		require.True(t, send(o), "message %d of the first batch", o)
	}
	first := <-sink.started
	require.Equal(t, int64(0), first.Lease.NextOffset)
	require.Equal(t, int64(10), first.End)
	for o := int64(10); o < 20; o++ {
		require.True(t, send(o), "message %d was not read while the first batch applied", o)
	}
	require.False(t, send(20), "a third batch began to fill while the first applied")

	sink.release <- struct{}{}
	second := <-sink.started
	require.Equal(t, int64(10), second.Lease.NextOffset, "the second batch starts where the first ended")
	require.Equal(t, int64(20), second.End)
	require.True(t, send(20), "once the first batch committed, the third fills")
	sink.release <- struct{}{}

	require.Eventually(t, func() bool {
		stored, err := st.StoredOffsets(ctx, "g")
		return err == nil && stored[projector.TopicPartition{Topic: topic, Partition: 0}] == 20
	}, 10*time.Second, 10*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
	var n int
	require.NoError(t, st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM workflow_events`).Scan(&n))
	require.Equal(t, 20, n)
}
