package store_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store"
	"github.com/projector-run/projector/store/storetest"
)

// TestCopyStoresWhatTheInsertStores: the binary COPY of the fast way and
// the insert of the safe way store the same rows, column by column, for
// values at the edges of their types: timestamps far before and after
// PostgreSQL's epoch (2000-01-01) and beyond what a Go Duration spans,
// zones other than UTC, multi-byte UTF-8, ids of 200 bytes, a NULL and a
// set step_id, attempt 1000, offsets above 2^32, extra top-level fields.
// A COPY stream that wrote a column wrongly, or in another order, fails.
func TestCopyStoresWhatTheInsertStores(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	long := strings.Repeat("é", 100) // 200 bytes
	values := [][]byte{
		[]byte(`{"event_id":"a","event_type":"run.queued","source":"ci","workflow_id":"wf","workflow_run_id":"r1","timestamp":"0001-01-01T00:00:00Z"}`),
		[]byte(`{"event_id":"b","event_type":"run.started","source":"ci","workflow_id":"wf","workflow_run_id":"r1","timestamp":"1969-12-31T23:59:59.999999Z","attempt":1000}`),
		[]byte(`{"event_id":"c","event_type":"step.failed","source":"ci","workflow_id":"wf","workflow_run_id":"r1","timestamp":"1999-12-31T23:59:59.9999999-05:00","attempt":1000,"step_id":"🦀 build"}`),
		[]byte(`{"event_id":"d","event_type":"run.failed","source":"ci","workflow_id":"wf","workflow_run_id":"r1","timestamp":"2000-01-01T00:00:00Z","attempt":1000,"data":{"error":"boom \"quoted\" ☃","n":[1,2.5e3,null,true]}}`),
		[]byte(`{"event_id":"e","event_type":"run.succeeded","source":"airflow","workflow_id":"` + long + `","workflow_run_id":"` + long + `","timestamp":"2262-04-12T00:00:00.000001+14:00","extra":{"k":"v"},"schema_version":1}`),
		[]byte(`{"event_id":"` + long + `","event_type":"custom.thing","source":"` + long + `","workflow_id":"工作流","workflow_run_id":"r2","timestamp":"9999-12-31T23:59:59.999999Z","step_id":"ignored for run events"}`),
	}
	apply := func(skipStored bool) map[string][]string {
		st := storetest.New(t)
		lease := claim(t, st, 7)
		_, err := st.Pool().Exec(ctx, `UPDATE consumer_offsets SET next_offset = 5000000000 WHERE partition = 7`)
		require.NoError(t, err)
		lease.NextOffset = 5_000_000_000
		b := batchOf(lease, values...)
		require.Empty(t, b.DeadLetters)
		var res model.Applied
		if skipStored {
			res, err = st.ApplySkipStored(ctx, b)
			require.Equal(t, model.InsertSkipStored, res.Insert)
		} else {
			res, err = st.Apply(ctx, b)
			require.Equal(t, model.InsertCopy, res.Insert)
		}
		require.NoError(t, err)
		require.Equal(t, len(values), res.Events)
		return storetest.Snapshot(t, st)
	}
	copied, inserted := apply(false), apply(true)
	require.Equal(t, inserted, copied)
	// And the values are the right ones, not just the same wrong ones.
	require.Contains(t, copied["workflow_events"], "c|r1|wf|step.failed|ci|2000-01-01 04:59:59.999999+00|1000|🦀 build|"+
		`{"source": "ci", "attempt": 1000, "step_id": "🦀 build", "event_id": "c", "timestamp": "1999-12-31T23:59:59.9999999-05:00", "event_type": "step.failed", "workflow_id": "wf", "workflow_run_id": "r1"}`)
	require.Contains(t, copied["workflow_event_positions"], "a|workflow-events|7|5000000000")
	require.Contains(t, copied["workflow_events"][0], "0001-01-01 00:00:00+00|1|")
}

// TestCopyConflictFallsBackToTheSafeWayAndComesBack: a batch whose COPY
// meets an event_id stored by an earlier batch is applied again the safe
// way, with the stored event skipped; the partition's next batch goes the
// safe way too, and once a batch finds no stored event_id, the next goes
// by COPY again. Another partition is not affected.
func TestCopyConflictFallsBackToTheSafeWayAndComesBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.New(t)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ev := func(id string) []byte { return eventJSON(id, "run.started", "r-"+id, t0, 1, "") }
	leases := []model.Lease{claim(t, st, 0), claim(t, st, 1)}
	step := func(p int, ids ...string) model.Applied {
		t.Helper()
		var vs [][]byte
		for _, id := range ids {
			vs = append(vs, ev(id))
		}
		b := batchOf(leases[p], vs...)
		res, err := st.Apply(ctx, b)
		require.NoError(t, err)
		leases[p].NextOffset = b.End
		return res
	}
	type way struct {
		Insert                        string
		Conflicts, Events, Duplicates int
	}
	of := func(r model.Applied) way { return way{r.Insert, r.CopyConflicts, r.Events, r.Duplicates} }

	require.Equal(t, way{model.InsertCopy, 0, 2, 0}, of(step(0, "e1", "e2")))
	require.Equal(t, way{model.InsertSkipStored, 1, 1, 1}, of(step(0, "e3", "e2")))
	require.Equal(t, way{model.InsertCopy, 0, 1, 0}, of(step(1, "f1")), "partition 1 is not affected")
	require.Equal(t, way{model.InsertSkipStored, 0, 1, 1}, of(step(0, "e4", "e1")), "stays safe while it meets stored ids")
	require.Equal(t, way{model.InsertSkipStored, 0, 1, 0}, of(step(0, "e5")), "one more safe batch, which finds none")
	require.Equal(t, way{model.InsertCopy, 0, 1, 0}, of(step(0, "e6")), "back to COPY")

	var n int
	require.NoError(t, st.Pool().QueryRow(ctx, `SELECT count(*) FROM workflow_events`).Scan(&n))
	require.Equal(t, 7, n)
	var typ string
	var offset int64
	require.NoError(t, st.Pool().QueryRow(ctx, `SELECT "offset" FROM workflow_events WHERE event_id = 'e2'`).Scan(&offset))
	require.Equal(t, int64(1), offset, "the first one applied is kept")
	require.NoError(t, st.Pool().QueryRow(ctx, `SELECT status FROM workflow_runs WHERE workflow_run_id = 'r-e3'`).Scan(&typ))
	require.Equal(t, "running", typ)
}

// TestPartitionsSharingEventIDsConcurrently: four partitions carry the
// same events in different orders and apply them at once, so COPYs meet
// rows that concurrent transactions have stored and not yet committed.
// Every event is stored once, the counts of new events add up to the
// number of distinct events, and every run is the projection of its
// events.
func TestPartitionsSharingEventIDsConcurrently(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.New(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	t0 := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	types := []string{"run.queued", "run.started", "step.started", "step.succeeded", "run.succeeded", "run.failed"}
	var values [][]byte
	byRun := map[string][]model.Event{}
	for i := range 3000 {
		run := fmt.Sprintf("run-%d", rng.IntN(300))
		v := eventJSON(fmt.Sprintf("ev-%05d", i), types[rng.IntN(len(types))], run, t0.Add(time.Duration(rng.IntN(600))*time.Second), 1+rng.IntN(2), "")
		e, err := model.Decode(v)
		require.NoError(t, err)
		byRun[run] = append(byRun[run], e)
		values = append(values, v)
	}
	const partitions = 4
	var wg sync.WaitGroup
	var mu sync.Mutex
	applied, conflicts := 0, 0
	for p := range partitions {
		lease := claim(t, st, int32(p))
		mine := slices.Clone(values)
		// Each partition has its own order, but neighbours overlap: both
		// stored rows and rows in flight are met.
		r := rand.New(rand.NewPCG(seed, uint64(p)))
		for i := range mine {
			if j := i + r.IntN(min(200, len(mine)-i)); j != i {
				mine[i], mine[j] = mine[j], mine[i]
			}
		}
		wg.Go(func() {
			for len(mine) > 0 {
				n := min(len(mine), 50+r.IntN(100))
				b := batchOf(lease, mine[:n]...)
				mine = mine[n:]
				res, err := st.Apply(ctx, b)
				if !assertNoError(t, err) {
					return
				}
				lease.NextOffset = b.End
				mu.Lock()
				applied += res.Events
				conflicts += res.CopyConflicts
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	t.Logf("copy conflicts: %d", conflicts)
	require.Equal(t, len(values), applied)
	require.Positive(t, conflicts, "the partitions met each other's events")
	var n int
	require.NoError(t, st.Pool().QueryRow(ctx, `SELECT count(*) FROM workflow_events`).Scan(&n))
	require.Equal(t, len(values), n)
	rows, err := st.ListRuns(ctx)
	require.NoError(t, err)
	require.Len(t, rows, len(byRun))
	for _, row := range rows {
		require.Equal(t, model.Project(byRun[row.WorkflowRunID]), row.Run, "run %s", row.WorkflowRunID)
	}
}

// assertNoError reports err from a goroutine other than the test's.
func assertNoError(t *testing.T, err error) bool {
	t.Helper()
	if err != nil {
		t.Error(err)
		return false
	}
	return true
}

// TestCopySizeIsExact: copySize is the length of the stream, so the
// buffer is allocated once, at its final size.
func TestCopySizeIsExact(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 1, 7, 100} {
		var vs [][]byte
		for i := range n {
			extra := ""
			if i%2 == 0 {
				extra = `,"data":{"k":"` + strings.Repeat("x", i) + `"}`
			}
			vs = append(vs, eventJSON(fmt.Sprintf("e%d", i), []string{"run.queued", "step.started"}[i%2], "r", time.Unix(int64(i), 0), 1, extra))
		}
		b := batchOf(model.Lease{Topic: "a-topic"}, vs...)
		recs := b.UniqueRecords()
		got := store.AppendEventsCopy(nil, "a-topic", 3, recs)
		require.Equal(t, len(got), store.CopySize("a-topic", recs), "%d events", n)
		once := slices.Grow([]byte(nil), len(got))
		require.Equal(t, cap(once), cap(got), "%d events: the buffer grew more than once", n)
	}
}
