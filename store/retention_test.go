package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store"
	"github.com/projector-run/projector/store/storetest"
)

// TestPruneHoldsBackWhatMayBeDuplicates walks through contract 6.1: a
// prune deletes the events before the horizon and leaves every run row as
// it was; a duplicate of a pruned event, and any event before the horizon
// whose event_id is not stored, becomes a before_horizon dead letter and
// no run counts it; reset and rebuild refuse to recompute a run whose
// history was pruned in part, and rebuild --keep-pruned-runs keeps it.
func TestPruneHoldsBackWhatMayBeDuplicates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.New(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	horizon := t0.Add(2 * time.Hour)
	lease := claim(t, st, 0)
	b := batchOf(lease,
		eventJSON("e1", "run.queued", "old", t0, 1, ""),
		eventJSON("e2", "run.started", "old", t0.Add(time.Hour), 1, ""),
		eventJSON("e3", "run.queued", "spans", t0.Add(time.Hour), 1, ""),
		eventJSON("e4", "run.started", "spans", t0.Add(3*time.Hour), 1, ""),
		eventJSON("e5", "run.queued", "new", t0.Add(3*time.Hour), 1, ""),
	)
	_, err := st.Apply(ctx, b)
	require.NoError(t, err)
	lease.NextOffset = b.End
	before := storetest.Snapshot(t, st)

	res, err := st.Prune(ctx, store.PruneOptions{Before: horizon, ChunkBlocks: 1})
	require.NoError(t, err)
	require.Equal(t, store.PruneResult{Horizon: horizon, Events: 3}, res)
	after := storetest.Snapshot(t, st)
	require.Equal(t, before["workflow_runs"], after["workflow_runs"], "a prune changed run rows")
	require.Equal(t, before["workflow_steps"], after["workflow_steps"])
	require.Len(t, after["workflow_events"], 2)
	h, err := st.Horizon(ctx)
	require.NoError(t, err)
	require.True(t, h.Equal(horizon))

	// A horizon never moves back.
	res, err = st.Prune(ctx, store.PruneOptions{Before: t0})
	require.NoError(t, err)
	require.True(t, res.Horizon.Equal(horizon))
	require.Zero(t, res.Events)

	// e1 again (its first copy pruned), a new event before the horizon,
	// e4 again (stored: a plain duplicate), a new event after it.
	b = batchOf(lease,
		eventJSON("e1", "run.queued", "old", t0, 1, ""),
		eventJSON("e6", "run.succeeded", "old", t0.Add(90*time.Minute), 1, ""),
		eventJSON("e4", "run.started", "spans", t0.Add(3*time.Hour), 1, ""),
		eventJSON("e7", "run.succeeded", "new", t0.Add(4*time.Hour), 1, ""),
	)
	applied, err := st.Apply(ctx, b)
	require.NoError(t, err)
	require.Equal(t, 1, applied.Events)
	require.Equal(t, 1, applied.Duplicates)
	require.Equal(t, 2, applied.BeforeHorizon)
	require.Equal(t, 2, applied.DeadLetters)
	lease.NextOffset = b.End
	letters, n, err := st.ListDeadLetters(ctx, model.ReasonBeforeHorizon, 10)
	require.NoError(t, err)
	require.Equal(t, int64(2), n)
	require.Contains(t, letters[0].Error, "before the retention horizon")
	runs := runsByID(t, st)
	require.Equal(t, int64(2), runs["old"].EventCount, "a held back event was counted")
	require.Equal(t, "running", runs["old"].Status)
	require.Equal(t, int64(2), runs["new"].EventCount)

	// A plain replay leaves them; by hand (their reason) applies them.
	rep, err := st.ReplayDeadLetters(ctx, store.ReplayOptions{})
	require.NoError(t, err)
	require.Equal(t, 2, rep.Invalid)
	require.Zero(t, rep.Applied)
	rep, err = st.ReplayDeadLetters(ctx, store.ReplayOptions{Reason: model.ReasonBeforeHorizon})
	require.NoError(t, err)
	require.Equal(t, 2, rep.Applied)
	require.Equal(t, "succeeded", runsByID(t, st)["old"].Status)

	// The run "spans" had an event pruned: a reset that would recompute it
	// is refused, naming it and the horizon.
	_, err = st.ResetOffsets(ctx, store.ResetOptions{Group: group,
		Targets: []store.OffsetTarget{{Topic: topic, Partition: 0, Offset: 3}}})
	require.ErrorIs(t, err, store.ErrPrunedHistory)
	require.ErrorContains(t, err, `"spans"`)
	require.ErrorContains(t, err, horizon.Format(time.RFC3339))

	// So is a rebuild; --keep-pruned-runs keeps those rows as they are.
	_, err = st.Rebuild(ctx, store.RebuildOptions{})
	require.ErrorIs(t, err, store.ErrPrunedHistory)
	_, err = st.Pool().Exec(ctx, "UPDATE workflow_runs SET status = 'queued' WHERE workflow_run_id = 'new'")
	require.NoError(t, err)
	keep := storetest.Snapshot(t, st)["workflow_runs"]
	rb, err := st.Rebuild(ctx, store.RebuildOptions{KeepPrunedRuns: true})
	require.NoError(t, err)
	require.Equal(t, int64(1), rb.Updated, "the run new is rebuilt")
	runs = runsByID(t, st)
	require.Equal(t, "succeeded", runs["new"].Status)
	got := storetest.Snapshot(t, st)["workflow_runs"]
	require.Len(t, got, 3)
	require.Equal(t, keep[1:], got[1:], "the pruned runs' rows changed") // new, old, spans
}

// TestPruneWhileBatchesApply: batches of events on both sides of the
// horizon apply while a prune moves it and deletes; nothing is lost
// (every event is stored, was applied before the prune, or is a
// before_horizon dead letter), and each run counts each of its applied
// events once.
func TestPruneWhileBatchesApply(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.New(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	horizon := t0.Add(time.Hour)
	const partitions, batches, size = 4, 40, 50
	prunedOnce := make(chan struct{})
	var g errgroup.Group
	for p := range partitions {
		lease := claim(t, st, int32(p))
		g.Go(func() error {
			for i := range batches {
				if i == batches/2 {
					<-prunedOnce // half the batches after the horizon moved
				}
				var vals [][]byte
				for j := range size {
					n := (p*batches+i)*size + j
					// Every other event before the horizon; a run has
					// events on both sides.
					at := horizon.Add(time.Duration(n%7+1) * time.Minute)
					if n%2 == 0 {
						at = t0.Add(time.Duration(n%50) * time.Second)
					}
					vals = append(vals, eventJSON(fmt.Sprintf("e%d", n), "run.heartbeat", fmt.Sprintf("r%d", n/10), at, 1, ""))
				}
				b := batchOf(lease, vals...)
				if _, err := st.Apply(ctx, b); err != nil {
					return err
				}
				lease.NextOffset = b.End
			}
			return nil
		})
	}
	g.Go(func() error {
		defer close(prunedOnce)
		_, err := st.Prune(ctx, store.PruneOptions{Before: horizon, ChunkBlocks: 2})
		return err
	})
	require.NoError(t, g.Wait())
	// Prune again: what was applied before the horizon moved, by the
	// batches that had read the old one, goes too.
	_, err := st.Prune(ctx, store.PruneOptions{Before: horizon})
	require.NoError(t, err)

	var stored, held, runEvents, early int64
	require.NoError(t, st.Pool().QueryRow(ctx, "SELECT count(*) FROM workflow_events").Scan(&stored))
	require.NoError(t, st.Pool().QueryRow(ctx, "SELECT count(*) FROM dead_letters WHERE reason = 'before_horizon'").Scan(&held))
	require.NoError(t, st.Pool().QueryRow(ctx, "SELECT coalesce(sum(event_count), 0) FROM workflow_runs").Scan(&runEvents))
	require.NoError(t, st.Pool().QueryRow(ctx, "SELECT count(*) FROM workflow_events WHERE occurred_at < $1", horizon).Scan(&early))
	total := int64(partitions * batches * size)
	require.Zero(t, early, "events before the horizon are stored")
	require.Equal(t, total/2, stored, "the events after the horizon are all stored")
	require.Equal(t, total, runEvents+held, "each event is counted by its run once, or held back")
	require.Positive(t, held, "no batch met the new horizon")
}

func runsByID(t *testing.T, st *store.Store) map[string]store.RunRow {
	t.Helper()
	rows, err := st.ListRuns(context.Background())
	require.NoError(t, err)
	out := map[string]store.RunRow{}
	for _, r := range rows {
		out[r.WorkflowRunID] = r
	}
	return out
}
