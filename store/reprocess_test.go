package store_test

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/projector-run/projector/projector/eventgen"
	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store"
	"github.com/projector-run/projector/store/storetest"
)

// partitioned spreads a workload over n partitions by key, in order, the
// way a keyed producer would; a nil key goes to partition 0.
func partitioned(msgs []model.Message, n int32) [][]model.Message {
	parts := make([][]model.Message, n)
	for _, m := range msgs {
		h := fnv.New32a()
		h.Write(m.Key)
		p := int32(h.Sum32() % uint32(n))
		m.Offset = int64(len(parts[p]))
		parts[p] = append(parts[p], m)
	}
	return parts
}

// consumePartition applies a partition's messages from its stored offset
// (claiming it, as a new session would) to the end, in batches, and
// returns the number of new events.
func consumePartition(ctx context.Context, st *store.Store, p int32, msgs []model.Message) (int, error) {
	lease, err := st.Claim(ctx, group, topic, p, 0, "test")
	if err != nil {
		return 0, err
	}
	events := 0
	for lease.NextOffset < int64(len(msgs)) {
		b := &model.Batch{Lease: lease}
		for _, m := range msgs[lease.NextOffset:min(lease.NextOffset+40, int64(len(msgs)))] {
			b.Add(m)
		}
		res, err := st.Apply(ctx, b)
		if err != nil {
			return events, err
		}
		events += res.Events
		lease.NextOffset = b.End
	}
	return events, nil
}

// consumeAll consumes every partition to its end, one after the other,
// and returns the number of new events.
func consumeAll(t *testing.T, st *store.Store, parts [][]model.Message) int {
	t.Helper()
	total := 0
	for p, msgs := range parts {
		n, err := consumePartition(context.Background(), st, int32(p), msgs)
		require.NoError(t, err)
		total += n
	}
	return total
}

// requireRunsAreTheirProjection checks, independently of the code under
// test, that workflow_runs holds exactly one row per run that has stored
// events, equal to model.Project of those events.
func requireRunsAreTheirProjection(t *testing.T, st *store.Store) {
	t.Helper()
	ctx := context.Background()
	rows, err := st.Pool().Query(ctx, `SELECT workflow_run_id, payload FROM workflow_events`)
	require.NoError(t, err)
	byRun := map[string][]model.Event{}
	for rows.Next() {
		var run string
		var payload []byte
		require.NoError(t, rows.Scan(&run, &payload))
		ev, err := model.Decode(payload)
		require.NoError(t, err)
		byRun[run] = append(byRun[run], ev)
	}
	require.NoError(t, rows.Err())
	runs, err := st.ListRuns(ctx)
	require.NoError(t, err)
	var bad []string
	for _, r := range runs {
		if want := model.Project(byRun[r.WorkflowRunID]); !want.Equal(r.Run) {
			bad = append(bad, fmt.Sprintf("%s:\n got  %+v\n want %+v", r.WorkflowRunID, r.Run, want))
		}
		delete(byRun, r.WorkflowRunID)
	}
	require.Empty(t, bad, "runs that are not the projection of their stored events")
	require.Empty(t, byRun, "runs with events but no row")
}

func countAtOrAfter(t *testing.T, st *store.Store, table string, p int32, from int64) int64 {
	t.Helper()
	var n int64
	require.NoError(t, st.Pool().QueryRow(context.Background(),
		`SELECT count(*) FROM `+table+` WHERE topic = $1 AND partition = $2 AND "offset" >= $3`, topic, p, from).Scan(&n))
	return n
}

// unkeyedWorkload has runs spread over partitions (unkeyed messages),
// duplicates, re-runs and malformed messages.
func unkeyedWorkload(seed uint64, runs int) eventgen.Workload {
	return eventgen.Generate(eventgen.Config{Seed: seed, Runs: runs, DuplicateRate: 0.05, ShuffleRate: 0.2,
		MalformedRate: 0.03, RetryRate: 0.1, UnkeyedRate: 0.3})
}

func TestResetRemovesEffectsFromTheNewOffsetsAndConsumingAgainRestoresTheTables(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.New(t)
	parts := partitioned(unkeyedWorkload(21, 150).Messages, 3)
	consumeAll(t, st, parts)
	before := storetest.Snapshot(t, st)
	stale, err := st.Claim(ctx, group, topic, 1, 0, "old-owner")
	require.NoError(t, err)

	mid := int64(len(parts[1]) / 2)
	e1, d1 := countAtOrAfter(t, st, "workflow_events", 1, mid), countAtOrAfter(t, st, "dead_letters", 1, mid)
	e2, d2 := countAtOrAfter(t, st, "workflow_events", 2, 0), countAtOrAfter(t, st, "dead_letters", 2, 0)
	require.Positive(t, e1)
	require.Positive(t, d1+d2)

	res, err := st.ResetOffsets(ctx, store.ResetOptions{Group: group, Targets: []store.OffsetTarget{
		{Topic: topic, Partition: 2, Offset: 0}, {Topic: topic, Partition: 1, Offset: mid},
	}})
	require.NoError(t, err)
	require.Equal(t, []store.PartitionReset{
		{Topic: topic, Partition: 1, HadRow: true, From: int64(len(parts[1])), To: mid, Events: e1, DeadLetters: d1},
		{Topic: topic, Partition: 2, HadRow: true, From: int64(len(parts[2])), To: 0, Events: e2, DeadLetters: d2},
	}, res.Partitions)
	require.Positive(t, res.Runs.Updated+res.Runs.Deleted)

	// The effects at and after the new offsets are gone, the rest is
	// untouched, and every run is the projection of what remains.
	require.Zero(t, countAtOrAfter(t, st, "workflow_events", 1, mid))
	require.Zero(t, countAtOrAfter(t, st, "dead_letters", 1, mid))
	require.Zero(t, countAtOrAfter(t, st, "workflow_events", 2, 0))
	require.Positive(t, countAtOrAfter(t, st, "workflow_events", 0, 0))
	requireRunsAreTheirProjection(t, st)
	stored, err := st.StoredOffsets(ctx, group)
	require.NoError(t, err)
	require.Equal(t, mid, stored[model.TopicPartition{Topic: topic, Partition: 1}])
	require.Equal(t, int64(0), stored[model.TopicPartition{Topic: topic, Partition: 2}])
	require.Equal(t, int64(len(parts[0])), stored[model.TopicPartition{Topic: topic, Partition: 0}])

	// The partition's owner from before the reset is fenced.
	b := &model.Batch{Lease: stale}
	b.Add(parts[1][len(parts[1])-1])
	_, err = st.Apply(ctx, b)
	require.ErrorIs(t, err, model.ErrFenced)

	// Consuming again applies each removed event exactly once more.
	applied := consumeAll(t, st, parts)
	require.Equal(t, e1+e2, int64(applied), "no event lost or counted twice")
	require.Equal(t, before, storetest.Snapshot(t, st))
}

func TestResetDryRunReportsWhatTheResetDoesAndChangesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.New(t)
	parts := partitioned(unkeyedWorkload(22, 120).Messages, 2)
	consumeAll(t, st, parts)
	before := storetest.Snapshot(t, st)
	opts := store.ResetOptions{Group: group, Samples: 5, DryRun: true,
		Targets: []store.OffsetTarget{{Topic: topic, Partition: 0, Offset: int64(len(parts[0]) / 3)}}}

	dry, err := st.ResetOffsets(ctx, opts)
	require.NoError(t, err)
	require.Equal(t, before, storetest.Snapshot(t, st), "a dry run changes nothing")
	require.Positive(t, dry.Partitions[0].Events)
	require.NotEmpty(t, dry.Runs.Samples)

	opts.DryRun = false
	real, err := st.ResetOffsets(ctx, opts)
	require.NoError(t, err)
	require.Equal(t, dry, real, "the dry run says exactly what the reset does")
}

func TestResetCreatesTheRowOfAPartitionNeverConsumed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.New(t)
	res, err := st.ResetOffsets(ctx, store.ResetOptions{Group: group,
		Targets: []store.OffsetTarget{{Topic: topic, Partition: 5, Offset: 42}}})
	require.NoError(t, err)
	require.Equal(t, []store.PartitionReset{{Topic: topic, Partition: 5, To: 42}}, res.Partitions)
	rows, err := st.GroupOffsets(ctx, group)
	require.NoError(t, err)
	require.Len(t, rows, 1)
	require.Equal(t, int64(42), rows[0].NextOffset)
	lease, err := st.Claim(ctx, group, topic, 5, 0, "w")
	require.NoError(t, err)
	require.Equal(t, int64(42), lease.NextOffset, "a worker starts from the reset offset")
}

// corruptRuns damages workflow_runs the ways a bug or a hand-written
// UPDATE could: changed columns, missing rows, rows of runs that have no
// events. It returns how many rows of each kind it damaged.
func corruptRuns(t *testing.T, st *store.Store) (updated, missing, extra int64) {
	t.Helper()
	ctx := context.Background()
	tag, err := st.Pool().Exec(ctx, `UPDATE workflow_runs SET status = 'running', event_count = event_count + 1
		WHERE workflow_run_id IN (SELECT workflow_run_id FROM workflow_runs ORDER BY workflow_run_id LIMIT 4)`)
	require.NoError(t, err)
	updated += tag.RowsAffected()
	tag, err = st.Pool().Exec(ctx, `UPDATE workflow_runs SET error = 'made up', deciding_event_id = NULL
		WHERE workflow_run_id IN (SELECT workflow_run_id FROM workflow_runs ORDER BY workflow_run_id DESC LIMIT 2)`)
	require.NoError(t, err)
	updated += tag.RowsAffected()
	tag, err = st.Pool().Exec(ctx, `DELETE FROM workflow_runs
		WHERE workflow_run_id IN (SELECT workflow_run_id FROM workflow_runs ORDER BY workflow_run_id OFFSET 10 LIMIT 3)`)
	require.NoError(t, err)
	missing = tag.RowsAffected()
	tag, err = st.Pool().Exec(ctx, `INSERT INTO workflow_runs (workflow_run_id, workflow_id, source, attempt, status,
		steps_succeeded, steps_failed, steps_skipped, event_count, first_event_at, last_event_at, latest_event_id)
		VALUES ('', 'w', 's', 1, 'queued', 0, 0, 0, 1, now(), now(), 'x'),
		       ('zzzz-ghost', 'w', 's', 1, 'queued', 0, 0, 0, 1, now(), now(), 'x')`)
	require.NoError(t, err)
	extra = tag.RowsAffected()
	return updated, missing, extra
}

func TestRebuildRepairsCorruptedRunsAndDryRunCountsThem(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.New(t)
	wl := unkeyedWorkload(23, 100)
	consumeAll(t, st, partitioned(wl.Messages, 2))
	before := storetest.Snapshot(t, st)
	updated, missing, extra := corruptRuns(t, st)
	corrupted := storetest.Snapshot(t, st)

	var progress []int64
	dry, err := st.Rebuild(ctx, store.RebuildOptions{DryRun: true, Samples: 3, ChunkRuns: 7,
		Progress: func(done, total int64) { progress = append(progress, done, total) }})
	require.NoError(t, err)
	require.Equal(t, corrupted, storetest.Snapshot(t, st), "a dry run changes nothing")
	require.Equal(t, updated, dry.Updated)
	require.Equal(t, missing, dry.Inserted)
	require.Equal(t, extra, dry.Deleted)
	require.Equal(t, int64(100), dry.Recomputed)
	require.Equal(t, int64(100)-updated-missing, dry.Unchanged)
	require.Equal(t, int64(wl.Valid), dry.Events)
	require.Len(t, dry.Samples, 3)
	require.Equal(t, store.RunDiff{WorkflowRunID: "", Change: "delete"}, dry.Samples[0])
	require.Equal(t, "update", dry.Samples[1].Change)
	require.Contains(t, strings.Join(dry.Samples[1].Fields, ", "), "event_count: ")
	require.Equal(t, []int64{int64(wl.Valid), int64(wl.Valid)}, progress[len(progress)-2:], "progress ends at the total")

	res, err := st.Rebuild(ctx, store.RebuildOptions{ChunkRuns: 7})
	require.NoError(t, err)
	require.Equal(t, dry.Changed(), res.Changed())
	require.Equal(t, before, storetest.Snapshot(t, st), "the rebuilt table equals the one before the damage")

	again, err := st.Rebuild(ctx, store.RebuildOptions{})
	require.NoError(t, err)
	require.Zero(t, again.Changed(), "a second rebuild finds nothing to change")
}

// TestRebuildAndResetWhileBatchesApply runs rebuilds and resets while
// batches of every partition are applied concurrently, with runs spread
// over partitions: no batch's update may be lost, so at the end every run
// is the projection of its events and consuming to the end restores the
// tables of an undisturbed consumption.
func TestRebuildAndResetWhileBatchesApply(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	wl := unkeyedWorkload(24, 300)
	parts := partitioned(wl.Messages, 4)

	reference := storetest.New(t)
	consumeAll(t, reference, parts)
	want := storetest.Snapshot(t, reference)
	delete(want, "workflow_event_positions")

	st := storetest.New(t)
	g, gctx := errgroup.WithContext(ctx)
	var fenced atomic.Int64
	for p := range parts {
		g.Go(func() error {
			// Fenced by a reset: claim again and go on from the new offset.
			for {
				_, err := consumePartition(gctx, st, int32(p), parts[p])
				if !errors.Is(err, model.ErrFenced) {
					return err
				}
				fenced.Add(1)
			}
		})
	}
	consumed := make(chan error, 1)
	go func() { consumed <- g.Wait() }()

	// Alternate rebuilds and resets while the partitions are consumed.
	var rebuilds, resets int
	for i := 0; i < 40; i++ {
		if i%2 == 0 {
			_, err := st.Rebuild(ctx, store.RebuildOptions{ChunkRuns: 50})
			require.NoError(t, err)
			rebuilds++
		} else {
			// Back to half the stored offset: only backwards, since a
			// reset forwards skips messages, on purpose.
			p := int32(i / 2 % 4)
			stored, err := st.StoredOffsets(ctx, group)
			require.NoError(t, err)
			_, err = st.ResetOffsets(ctx, store.ResetOptions{Group: group,
				Targets: []store.OffsetTarget{{Topic: topic, Partition: p, Offset: stored[model.TopicPartition{Topic: topic, Partition: p}] / 2}}})
			require.NoError(t, err)
			resets++
		}
		select {
		case err := <-consumed:
			consumed <- err
			i = 40
		case <-time.After(10 * time.Millisecond):
		}
	}
	require.NoError(t, <-consumed)
	t.Logf("%d rebuilds and %d resets while applying; batches fenced by a reset: %d", rebuilds, resets, fenced.Load())
	require.Positive(t, fenced.Load(), "resets happened while batches were applied")

	requireRunsAreTheirProjection(t, st)
	consumeAll(t, st, parts) // what the last resets removed
	got := storetest.Snapshot(t, st)
	delete(got, "workflow_event_positions")
	requireSameSnapshot(t, want, got)
}

// requireSameSnapshot compares two snapshots table by table and shows the
// first rows that differ.
func requireSameSnapshot(t *testing.T, want, got map[string][]string) {
	t.Helper()
	for table, w := range want {
		g := got[table]
		var diff []string
		seen := map[string]bool{}
		for _, r := range g {
			seen[r] = true
		}
		for _, r := range w {
			if !seen[r] && len(diff) < 5 {
				diff = append(diff, "- "+r)
			}
		}
		seen = map[string]bool{}
		for _, r := range w {
			seen[r] = true
		}
		for _, r := range g {
			if !seen[r] && len(diff) < 10 {
				diff = append(diff, "+ "+r)
			}
		}
		require.Empty(t, diff, "%s: %d rows wanted, %d got", table, len(w), len(g))
		require.Equal(t, w, g, table)
	}
	require.Len(t, got, len(want))
}
