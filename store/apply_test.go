package store_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store"
	"github.com/projector-run/projector/store/storetest"
)

const (
	group = "test-group"
	topic = "workflow-events"
)

// eventJSON renders an event as the JSON a producer would send.
func eventJSON(id, typ, run string, ts time.Time, attempt int, extra string) []byte {
	step := ""
	if len(typ) > 5 && typ[:5] == "step." {
		step = `,"step_id":"s1"`
	}
	return fmt.Appendf(nil, `{"event_id":%q,"event_type":%q,"source":"ci","workflow_id":"wf","workflow_run_id":%q,"timestamp":%q,"attempt":%d%s%s}`,
		id, typ, run, ts.Format(time.RFC3339Nano), attempt, step, extra)
}

// batchOf decodes values into a batch of consecutive offsets from lease.NextOffset.
func batchOf(lease model.Lease, values ...[]byte) *model.Batch {
	b := &model.Batch{Lease: lease}
	for i, v := range values {
		b.Add(model.Message{Offset: lease.NextOffset + int64(i), Key: []byte("k"), Value: v,
			Headers: []model.Header{{Key: []byte("h"), Value: []byte{0xff, 0}}}})
	}
	return b
}

func claim(t testing.TB, st *store.Store, partition int32) model.Lease {
	t.Helper()
	l, err := st.Claim(context.Background(), group, topic, partition, 0, "test")
	require.NoError(t, err)
	return l
}

func TestApplyStoresEventsRunsDeadLettersAndOffset(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.New(t)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)
	b := batchOf(claim(t, st, 0),
		eventJSON("e1", "run.queued", "r1", t0, 1, ""),
		eventJSON("e2", "run.started", "r1", t0.Add(time.Second), 1, ""),
		[]byte(`{not json`),
		eventJSON("e3", "run.failed", "r1", t0.Add(2500*time.Millisecond), 1, `,"data":{"error":"boom"}`),
		eventJSON("e1", "run.queued", "r1", t0, 1, ""), // a duplicate within the batch
	)
	res, err := st.Apply(ctx, b)
	require.NoError(t, err)
	require.Positive(t, res.Took)
	res.Took = 0
	require.Equal(t, model.Applied{Events: 3, Duplicates: 1, DeadLetters: 1, Runs: 1,
		EventTypes: map[string]int{"run.queued": 1, "run.started": 1, "run.failed": 1},
		Insert:     model.InsertCopy}, res)

	runs, err := st.ListRuns(ctx)
	require.NoError(t, err)
	require.Len(t, runs, 1)
	r := runs[0]
	require.Equal(t, "failed", r.Status)
	require.Equal(t, "boom", r.Error.String)
	require.Equal(t, int64(3), r.EventCount)
	require.Equal(t, t0.Truncate(time.Microsecond), r.QueuedAt.Time)
	require.Equal(t, int64(1500), r.DurationMS.Int64)

	snap := storetest.Snapshot(t, st)
	require.Equal(t, []string{"test-group|workflow-events|0|5"}, snap["consumer_offsets"])
	require.Len(t, snap["dead_letters"], 1)
	var key, value []byte
	var headers, reason string
	require.NoError(t, st.Pool().QueryRow(ctx, `SELECT key, value, headers::text, reason FROM dead_letters`).Scan(&key, &value, &headers, &reason))
	require.Equal(t, []byte("k"), key)
	require.Equal(t, []byte(`{not json`), value, "a dead letter keeps the exact bytes")
	require.Equal(t, `[{"key": "h", "value_base64": "/wA="}]`, headers)
	require.Equal(t, model.ReasonInvalidJSON, reason)
}

func TestApplyTwiceChangesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.New(t)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	values := [][]byte{
		eventJSON("a1", "run.queued", "ra", t0, 1, ""),
		eventJSON("a2", "step.succeeded", "ra", t0.Add(time.Second), 1, ""),
		[]byte(`[]`),
		eventJSON("b1", "run.started", "rb", t0, 2, ""),
	}
	_, err := st.Apply(ctx, batchOf(claim(t, st, 0), values...))
	require.NoError(t, err)
	before := storetest.Snapshot(t, st)

	// The same messages delivered again, as after an offset moved back by
	// hand without removing effects.
	_, err = st.Pool().Exec(ctx, `UPDATE consumer_offsets SET next_offset = 0`)
	require.NoError(t, err)
	res, err := st.Apply(ctx, batchOf(claim(t, st, 0), values...))
	require.NoError(t, err)
	require.Equal(t, 0, res.Events)
	require.Equal(t, 3, res.Duplicates)
	require.Equal(t, before, storetest.Snapshot(t, st))
}

func TestStaleOwnerIsFenced(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.New(t)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	stale := claim(t, st, 3)
	current := claim(t, st, 3) // a new session took the partition
	require.Greater(t, current.Epoch, stale.Epoch)
	before := storetest.Snapshot(t, st)

	_, err := st.Apply(ctx, batchOf(stale, eventJSON("z1", "run.queued", "rz", t0, 1, ""), []byte(`bad`)))
	require.ErrorIs(t, err, model.ErrFenced)
	require.Equal(t, before, storetest.Snapshot(t, st), "a fenced batch writes nothing")

	// The offset moved by someone else fences too, even with the right epoch.
	_, err = st.Pool().Exec(ctx, `UPDATE consumer_offsets SET next_offset = 7 WHERE partition = 3`)
	require.NoError(t, err)
	_, err = st.Apply(ctx, batchOf(current, eventJSON("z1", "run.queued", "rz", t0, 1, "")))
	require.ErrorIs(t, err, model.ErrFenced)

	// The current owner at the current offset applies.
	current.NextOffset = 7
	_, err = st.Apply(ctx, batchOf(current, eventJSON("z1", "run.queued", "rz", t0, 1, "")))
	require.NoError(t, err)
}

func TestCancelledTransactionLeavesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.New(t)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	_, err := st.Apply(ctx, batchOf(claim(t, st, 0), eventJSON("x1", "run.queued", "rx", t0, 1, "")))
	require.NoError(t, err)
	before := storetest.Snapshot(t, st)

	// Another transaction holds the run's row, so the batch stops midway:
	// after its events are inserted, while merging the run.
	blocker, err := st.Pool().Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = blocker.Rollback(ctx) }()
	_, err = blocker.Exec(ctx, `SELECT 1 FROM workflow_runs WHERE workflow_run_id = 'rx' FOR UPDATE`)
	require.NoError(t, err)

	actx, cancel := context.WithCancel(ctx)
	lease := claim(t, st, 0)
	done := make(chan error, 1)
	go func() {
		_, err := st.Apply(actx, batchOf(lease, eventJSON("x2", "run.started", "rx", t0, 1, ""), eventJSON("y1", "run.queued", "ry", t0, 1, ""), []byte(`0`)))
		done <- err
	}()
	for deadline, waiting := time.Now().Add(time.Minute), false; !waiting; time.Sleep(10 * time.Millisecond) {
		require.NoError(t, st.Pool().QueryRow(ctx,
			`SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting))
		require.False(t, time.Now().After(deadline) && !waiting, "the batch never reached the locked run")
	}
	cancel()
	err = <-done
	require.Error(t, err)
	require.NoError(t, blocker.Rollback(ctx))
	require.Equal(t, before, storetest.Snapshot(t, st), "a cancelled batch leaves nothing half-written")
}

func TestDataErrorIsRejected(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.New(t)
	// The decoder keeps such events out; if one slipped through,
	// PostgreSQL's refusal must be reported as ErrRejected (so the worker
	// isolates the message) and not as a transient failure.
	lease := claim(t, st, 0)
	b := &model.Batch{Lease: lease, End: 1, Records: []model.Record{{Offset: 0, Event: model.Event{
		EventID: "n", EventType: "run.queued", Source: "s", WorkflowID: "w", WorkflowRunID: "r\x00", Attempt: 1,
		Timestamp: time.Unix(0, 0).UTC(), Payload: []byte(`{}`),
	}}}}
	_, err := st.Apply(ctx, b)
	require.ErrorIs(t, err, model.ErrRejected)
	require.False(t, errors.Is(err, model.ErrFenced))
}

// TestMergeRunsMatchesProject is the property that the SQL combine in
// MergeRuns is model.Combine: random event sets, split into random
// batches over several partitions and applied in random order, leave each
// run's row equal to model.Project of its events computed from scratch.
// Ties on timestamps and attempts are frequent on purpose, since those are
// where a CASE in SQL can disagree with Go.
func TestMergeRunsMatchesProject(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	st := storetest.New(t)
	types := []string{"run.queued", "run.started", "run.succeeded", "run.failed", "run.cancelled",
		"step.started", "step.succeeded", "step.failed", "step.skipped", "run.heartbeat"}
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

	var values [][]byte
	byRun := map[string][]model.Event{}
	for i := range 400 {
		run := fmt.Sprintf("run-%d", rng.IntN(25))
		id := fmt.Sprintf("%c%d", "aAbB_"[rng.IntN(5)], i)
		extra := ""
		switch rng.IntN(3) {
		case 0:
			extra = fmt.Sprintf(`,"data":{"error":"e%d"}`, i)
		case 1:
			extra = `,"data":{"error":{"code":1}}`
		}
		v := eventJSON(id, types[rng.IntN(len(types))], run, t0.Add(time.Duration(rng.IntN(6))*time.Second+time.Duration(rng.IntN(3))*time.Microsecond), 1+rng.IntN(3), extra)
		ev, err := model.Decode(v)
		require.NoError(t, err)
		byRun[run] = append(byRun[run], ev)
		values = append(values, v)
		if rng.IntN(10) == 0 { // a duplicate, later
			values = append(values, v)
		}
	}
	rng.Shuffle(len(values), func(i, j int) { values[i], values[j] = values[j], values[i] })
	// Split into batches on 4 partitions, applied in a random interleaving.
	queues := make([][][]byte, 4)
	for _, v := range values {
		p := rng.IntN(4)
		queues[p] = append(queues[p], v)
	}
	leases := make([]model.Lease, 4)
	for p := range leases {
		leases[p] = claim(t, st, int32(p))
	}
	for {
		live := slices.DeleteFunc([]int{0, 1, 2, 3}, func(p int) bool { return len(queues[p]) == 0 })
		if len(live) == 0 {
			break
		}
		p := live[rng.IntN(len(live))]
		n := min(len(queues[p]), 1+rng.IntN(30))
		b := batchOf(leases[p], queues[p][:n]...)
		queues[p] = queues[p][n:]
		_, err := st.Apply(ctx, b)
		require.NoError(t, err)
		leases[p].NextOffset = b.End
	}

	rows, err := st.ListRuns(ctx)
	require.NoError(t, err)
	require.Len(t, rows, len(byRun))
	for _, row := range rows {
		want := model.Project(byRun[row.WorkflowRunID])
		require.Equal(t, want, row.Run, "run %s", row.WorkflowRunID)
		d, ok := want.DurationMS()
		require.Equal(t, ok, row.DurationMS.Valid)
		require.Equal(t, d, row.DurationMS.Int64)
	}
}

// TestRepeatedEventIDFirstAppliedWins: messages repeating an event_id are
// applied once, and the first one applied is the one kept, within a batch
// (lowest offset) and across batches, even when their contents differ.
func TestRepeatedEventIDFirstAppliedWins(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.New(t)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	lease := claim(t, st, 0)
	b := batchOf(lease,
		eventJSON("same", "run.started", "r1", t0, 1, ""),
		eventJSON("same", "run.cancelled", "r1", t0, 1, ""),
	)
	_, err := st.Apply(ctx, b)
	require.NoError(t, err)
	lease.NextOffset = b.End
	_, err = st.Apply(ctx, batchOf(lease, eventJSON("same", "run.succeeded", "r1", t0, 1, "")))
	require.NoError(t, err)

	var typ string
	var offset int64
	require.NoError(t, st.Pool().QueryRow(ctx, `SELECT event_type, "offset" FROM workflow_events WHERE event_id = 'same'`).Scan(&typ, &offset))
	require.Equal(t, "run.started", typ)
	require.Equal(t, int64(0), offset)
	runs, err := st.ListRuns(ctx)
	require.NoError(t, err)
	require.Len(t, runs, 1)
	require.Equal(t, "running", runs[0].Status)
	require.Equal(t, int64(1), runs[0].EventCount)
}

// TestApplyMergesAStepWhoseRunIsGone: a step row whose run row was
// deleted (by hand) is merged with the step's new events, and the run row
// made again.
func TestApplyMergesAStepWhoseRunIsGone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.New(t)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	_, err := st.Apply(ctx, batchOf(claim(t, st, 0),
		eventJSON("e1", "run.queued", "r1", t0, 1, ""),
		eventJSON("e2", "step.started", "r1", t0.Add(time.Second), 1, "")))
	require.NoError(t, err)
	_, err = st.Pool().Exec(ctx, "DELETE FROM workflow_runs")
	require.NoError(t, err)

	res, err := st.Apply(ctx, batchOf(claim(t, st, 1),
		eventJSON("e3", "step.succeeded", "r1", t0.Add(3*time.Second), 1, "")))
	require.NoError(t, err)
	require.Equal(t, 1, res.Events)
	steps, err := st.ListSteps(ctx)
	require.NoError(t, err)
	require.Len(t, steps, 1)
	require.Equal(t, "succeeded", steps[0].Status)
	require.Equal(t, int64(2), steps[0].EventCount)
	require.Equal(t, int64(2000), steps[0].DurationMS.Int64)
}

// TestConcurrentBatchesOfOneRunMergeAsProject: the events of each run are
// spread over four partitions whose batches apply at once, so that
// batches race to store a run's first rows and to merge them; the rows
// end as the projection of all the events computed in Go, for runs and
// steps.
func TestConcurrentBatchesOfOneRunMergeAsProject(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	st := storetest.New(t)
	types := []string{"run.queued", "run.started", "run.succeeded", "run.failed",
		"step.started", "step.succeeded", "step.failed", "step.skipped"}
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	const partitions = 4
	queues := make([][][]byte, partitions)
	var all []model.Event
	for i := range 3000 {
		run := fmt.Sprintf("run-%d", i/12) // 12 events a run, one after another
		v := eventJSON(fmt.Sprintf("e%d", i), types[rng.IntN(len(types))], run,
			t0.Add(time.Duration(rng.IntN(600))*time.Second), 1+rng.IntN(2), "")
		ev, err := model.Decode(v)
		require.NoError(t, err)
		all = append(all, ev)
		p := rng.IntN(partitions)
		queues[p] = append(queues[p], v)
	}
	var g errgroup.Group
	for p := range partitions {
		lease := claim(t, st, int32(p))
		g.Go(func() error {
			for q := queues[p]; len(q) > 0; {
				n := min(len(q), 1+rng2(p, len(q)))
				b := batchOf(lease, q[:n]...)
				q = q[n:]
				if _, err := st.Apply(ctx, b); err != nil {
					return err
				}
				lease.NextOffset = b.End
			}
			return nil
		})
	}
	require.NoError(t, g.Wait())

	byRun := map[string][]model.Event{}
	for _, e := range all {
		byRun[e.WorkflowRunID] = append(byRun[e.WorkflowRunID], e)
	}
	runs, err := st.ListRuns(ctx)
	require.NoError(t, err)
	require.Len(t, runs, len(byRun))
	for _, row := range runs {
		want := model.Project(byRun[row.WorkflowRunID])
		require.True(t, want.Equal(row.Run), "run %s:\nwant %+v\ngot  %+v", row.WorkflowRunID, want, row.Run)
	}
	wantSteps := model.ProjectSteps(all)
	steps, err := st.ListSteps(ctx)
	require.NoError(t, err)
	require.Len(t, steps, len(wantSteps))
	for i := range steps {
		require.True(t, wantSteps[i].Equal(steps[i].Step), "step %d:\nwant %+v\ngot  %+v", i, wantSteps[i], steps[i].Step)
	}
}

// rng2 is a batch size for partition p's next batch: small and varied,
// so that a run's rows are raced for often; deterministic per call.
func rng2(p, left int) int { return (p*7 + left*13) % 25 }
