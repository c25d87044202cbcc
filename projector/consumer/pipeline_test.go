package consumer_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/require"

	"github.com/projector-run/projector/projector/consumer"
	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store"
	"github.com/projector-run/projector/store/storetest"
)

// heldSink announces each Apply and holds it until the test releases it,
// then reports what the store returned. It fails the test if two batches
// are applied at once.
type heldSink struct {
	*store.Store
	t        *testing.T
	inFlight atomic.Int32
	started  chan *model.Batch
	release  chan struct{}
	applied  chan error
}

func (g *heldSink) Apply(ctx context.Context, b *model.Batch) (model.Applied, error) {
	if g.inFlight.Add(1) > 1 {
		g.t.Error("two batches of one claim applied at once")
	}
	defer g.inFlight.Add(-1)
	g.started <- b
	<-g.release
	res, err := g.Store.Apply(ctx, b)
	g.applied <- err
	return res, err
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
// order. The claim's message channel is unbuffered and the claim's loop
// reports each time it is about to wait, whether it would read and at
// which offset, so the test sees exactly when the worker reads.
func TestNextBatchFillsWhileOneApplies(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := storetest.New(t)
	lease, err := st.Claim(ctx, "g", topic, 0, 0, "test")
	require.NoError(t, err)
	sink := &heldSink{Store: st, t: t, started: make(chan *model.Batch), release: make(chan struct{}), applied: make(chan error, 1)}
	cfg := consumer.DefaultConfig()
	cfg.Group = "g"
	cfg.BatchSize = 10
	cfg.BatchWait = time.Minute // batches are cut by count only
	w, err := consumer.NewWorker(cfg, sink, testLogger(t, "w"))
	require.NoError(t, err)
	claim := fakeClaim{msgs: make(chan *sarama.ConsumerMessage)}
	type wait struct {
		reading bool
		next    int64
	}
	waits := make(chan wait, 1024)
	waiting := func(reading bool, next int64) {
		select {
		case waits <- wait{reading, next}:
		case <-ctx.Done():
		}
	}
	done := make(chan error, 1)
	go func() { done <- consumer.ConsumeClaim(w, fakeSession{ctx}, claim, lease, waiting) }()

	// waitAt returns whether the claim, once it has read every message
	// before offset, waits for the next message (rather than only for the
	// batch in flight). The guard's timeout is for a hung worker only.
	waitAt := func(offset int64) bool {
		t.Helper()
		for {
			select {
			case w := <-waits:
				if w.next == offset {
					return w.reading
				}
				require.Less(t, w.next, offset, "the claim read past offset %d", offset)
			case <-time.After(time.Minute):
				t.Fatalf("the claim never waited at offset %d", offset)
			}
		}
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	send := func(offset int64) {
		t.Helper()
		m := &sarama.ConsumerMessage{Topic: topic, Offset: offset, Value: fmt.Appendf(nil,
			`{"event_id":"e%d","event_type":"run.queued","source":"s","workflow_id":"w","workflow_run_id":"r%d","timestamp":%q}`,
			offset, offset, t0.Format(time.RFC3339))}
		select {
		case claim.msgs <- m:
		case <-time.After(time.Minute):
			t.Fatalf("message %d was never read", offset)
		}
	}
	receive := func(ch <-chan *model.Batch) *model.Batch {
		t.Helper()
		select {
		case b := <-ch:
			return b
		case <-time.After(time.Minute):
			t.Fatal("no batch was applied")
			return nil
		}
	}

	for o := range int64(10) {
		require.True(t, waitAt(o), "the claim waits for message %d of the first batch", o)
		send(o)
	}
	first := receive(sink.started)
	require.Equal(t, int64(0), first.Lease.NextOffset)
	require.Equal(t, int64(10), first.End)
	for o := int64(10); o < 20; o++ {
		require.True(t, waitAt(o), "the claim waits for message %d while the first batch applies", o)
		send(o)
	}
	require.False(t, waitAt(20), "a third batch began to fill while the first applied")

	sink.release <- struct{}{}
	require.NoError(t, <-sink.applied)
	second := receive(sink.started)
	require.Equal(t, int64(10), second.Lease.NextOffset, "the second batch starts where the first ended")
	require.Equal(t, int64(20), second.End)
	for !waitAt(20) { // until the loop has taken back the first batch
	}
	send(20) // once the first batch committed, the third fills
	sink.release <- struct{}{}
	require.NoError(t, <-sink.applied)

	stored, err := st.StoredOffsets(ctx, "g")
	require.NoError(t, err)
	require.Equal(t, int64(20), stored[model.TopicPartition{Topic: topic, Partition: 0}])
	cancel()
	require.NoError(t, <-done)
	var n int
	require.NoError(t, st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM workflow_events`).Scan(&n))
	require.Equal(t, 20, n)
}
