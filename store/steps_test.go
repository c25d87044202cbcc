package store_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store"
	"github.com/projector-run/projector/store/storetest"
)

// stepEventJSON renders an event with a step_id as a producer would send it.
func stepEventJSON(id, typ, run string, ts time.Time, attempt int, step, extra string) []byte {
	return fmt.Appendf(nil, `{"event_id":%q,"event_type":%q,"source":"ci-%s","workflow_id":"wf-%s","workflow_run_id":%q,"timestamp":%q,"attempt":%d,"step_id":%q%s}`,
		id, typ, id, id, run, ts.Format(time.RFC3339Nano), attempt, step, extra)
}

// TestMergeStepsMatchesProjectSteps is the property that the SQL combine
// in MergeSteps is model.CombineSteps: random event sets (several
// runs, attempts and steps; step events and others; ties on timestamps;
// event ids whose bytewise order differs from a linguistic one), split
// into random batches, folded with model.FoldSteps and merged by three
// concurrent transactions in random order, leave every workflow_steps row
// equal to model.ProjectSteps of all the events, computed from
// scratch, and duration_ms equal to Step.DurationMS. Half the merges go
// through mergeSteps, half queued in a pgx.Batch (QueueMergeSteps), as a
// batch transaction would.
func TestMergeStepsMatchesProjectSteps(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	st := storetest.New(t)
	types := []string{"step.started", "step.succeeded", "step.failed", "step.skipped",
		"step.started", "step.failed", "run.started", "run.failed", "step.retried"}
	steps := []string{"build", "Build", "test", "é", "e\u0301"}
	prefixes := []string{"a", "A", "b", "B", "_", "é", "日", "😀", "\uFFFD"}
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

	var events []model.Event
	for i := range 600 {
		run := fmt.Sprintf("run-%d", rng.IntN(8))
		id := fmt.Sprintf("%s%d", prefixes[rng.IntN(len(prefixes))], i)
		extra := ""
		switch rng.IntN(3) {
		case 0:
			extra = fmt.Sprintf(`,"data":{"error":"e%d"}`, i)
		case 1:
			extra = `,"data":{"error":{"code":1}}`
		}
		typ := types[rng.IntN(len(types))]
		if run == "run-0" && typ != "step.retried" {
			typ = "step.started" // steps that keep running
		}
		at := t0.Add(time.Duration(rng.IntN(4))*time.Second + time.Duration(rng.IntN(3))*time.Microsecond)
		ev, err := model.Decode(stepEventJSON(id, typ, run, at, 1+rng.IntN(2), steps[rng.IntN(len(steps))], extra))
		require.NoError(t, err)
		events = append(events, ev)
	}
	want := model.ProjectSteps(events)

	// Random batches, each folded as a batch transaction would.
	rng.Shuffle(len(events), func(i, j int) { events[i], events[j] = events[j], events[i] })
	var batches [][]model.Step
	for rest := events; len(rest) > 0; {
		n := min(len(rest), 1+rng.IntN(40))
		recs := make([]*model.Record, n)
		for i := range n {
			recs[i] = &model.Record{Offset: int64(i), Event: rest[i]}
		}
		batches = append(batches, model.FoldSteps(recs))
		rest = rest[n:]
	}
	const workers = 3
	queues := make([][][]model.Step, workers)
	for _, b := range batches {
		w := rng.IntN(workers)
		queues[w] = append(queues[w], b)
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		queued := w%2 == 0
		wg.Go(func() {
			for i, b := range queues[w] {
				if err := st.MergeSteps(ctx, b, queued != (i%2 == 0)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	rows, err := st.ListSteps(ctx)
	require.NoError(t, err)
	require.Len(t, rows, len(want))
	statuses := map[string]int{}
	for i, row := range rows {
		require.Equal(t, want[i], row.Step, "step %d", i)
		d, ok := want[i].DurationMS()
		require.Equal(t, ok, row.DurationMS.Valid, "step %d", i)
		require.Equal(t, d, row.DurationMS.Int64, "step %d", i)
		statuses[row.Status]++
		if row.Error.Valid {
			statuses["with error"]++
		}
	}
	t.Logf("%d events, %d batches, %d steps: %v", len(events), len(batches), len(rows), statuses)
	for _, s := range []string{"running", "succeeded", "failed", "skipped", "with error"} {
		require.Positive(t, statuses[s], "the random input has a step %s", s)
	}
}

// TestMergeStepsEmptyAndRepeatedMerge: no steps is a no-op, and the merge
// is an upsert: a step's second batch updates its row.
func TestMergeStepsEmptyAndRepeatedMerge(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.New(t)
	require.NoError(t, st.MergeSteps(ctx, nil, false))
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	decode := func(v []byte) model.Event {
		e, err := model.Decode(v)
		require.NoError(t, err)
		return e
	}
	e1 := decode(stepEventJSON("e1", "step.started", "r1", t0, 1, "build", ""))
	e2 := decode(stepEventJSON("e2", "step.failed", "r1", t0.Add(1500*time.Millisecond), 1, "build", `,"data":{"error":"exit 2"}`))
	for _, e := range []model.Event{e1, e2} {
		require.NoError(t, st.MergeSteps(ctx, model.FoldSteps([]*model.Record{{Event: e}}), false))
	}
	rows, err := st.ListSteps(ctx)
	require.NoError(t, err)
	require.Len(t, rows, 1)
	require.Equal(t, model.ProjectSteps([]model.Event{e1, e2})[0], rows[0].Step)
	require.Equal(t, "failed", rows[0].Status)
	require.Equal(t, "exit 2", rows[0].Error.String)
	require.Equal(t, int64(1500), rows[0].DurationMS.Int64)
}

// TestApplyStepsFastWayFallsBack: a batch merges its steps with a plain
// insert first; when a step of it is already stored, the insert fails and
// the batch merges its steps the usual way instead, from a savepoint,
// with nothing lost or counted twice. The partition's next batches merge
// the usual way at once, for a pause that doubles with each failed try up
// to FastPause batches and ends with a try that succeeds.
func TestApplyStepsFastWayFallsBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.New(t)
	lease := claim(t, st, 0)
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	var events []model.Event
	n := 0
	// batch applies one batch of step events of (run, step) pairs: a
	// step.started for a step not seen before, a step.succeeded else;
	// and a message that is no event, a dead letter.
	seen := map[string]bool{}
	batches, conflicts := 0, 0
	batch := func(keys ...string) {
		t.Helper()
		var values [][]byte
		for _, k := range keys {
			typ := "step.started"
			if seen[k] {
				typ = "step.succeeded"
			}
			seen[k] = true
			n++
			v := stepEventJSON(fmt.Sprintf("e%03d", n), typ, "r-"+k, t0.Add(time.Duration(n)*time.Second), 1, "build", "")
			e, err := model.Decode(v)
			require.NoError(t, err)
			events = append(events, e)
			values = append(values, v)
		}
		b := batchOf(lease, append(values, []byte(`{not json`))...)
		res, err := st.Apply(ctx, b)
		require.NoError(t, err)
		lease.NextOffset = b.End
		batches++
		conflicts += res.StepConflicts
	}

	paused := func(want int) {
		t.Helper()
		require.Equal(t, want, store.FastMergesPaused(st, topic, 0))
	}
	batch("a", "b")
	paused(0)             // new steps went in the fast way
	batch("a0", "b", "d") // b is stored: the fast way fails after a0 went in, then merges
	paused(1)
	batch("n0", "b") // the usual way
	paused(0)
	batch("c", "d") // the fast way again, and it fails again
	paused(2)
	batch("n1", "e")
	paused(1)
	batch("n2", "e")
	paused(0)
	// It keeps failing: a try (pause 4), four batches the usual way, a
	// try (pause 8, the longest).
	for range 6 {
		batch("n3", "a")
	}
	paused(store.FastPause)
	for i := range store.FastPause {
		batch(fmt.Sprintf("m%d", i), "b")
	}
	paused(0)
	batch("f", "g") // the fast way succeeds: the pause is over
	batch("f", "h") // f is stored: a pause of 1 again
	paused(1)
	require.Equal(t, 5, conflicts, "Applied.StepConflicts counts each failed try")

	rows, err := st.ListSteps(ctx)
	require.NoError(t, err)
	want := model.ProjectSteps(events)
	require.Len(t, rows, len(want))
	for i := range want {
		require.Equal(t, want[i], rows[i].Step, "step %d", i)
	}
	require.Equal(t, "succeeded", rows[0].Status)

	// The runs were merged once, the dead letters stored once, the
	// offset moved past every batch.
	runs, err := st.ListRuns(ctx)
	require.NoError(t, err)
	wantRuns := model.FoldEvents(events)
	require.Len(t, runs, len(wantRuns))
	for i := range wantRuns {
		require.Equal(t, wantRuns[i].EventCount, runs[i].EventCount, "run %s", wantRuns[i].WorkflowRunID)
	}
	_, dead, err := st.ListDeadLetters(ctx, "", 1)
	require.NoError(t, err)
	require.Equal(t, int64(batches), dead)
	offsets, err := st.StoredOffsets(ctx, group)
	require.NoError(t, err)
	require.Equal(t, lease.NextOffset, offsets[model.TopicPartition{Topic: topic, Partition: 0}])
}
