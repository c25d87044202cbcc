package cli

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projector-run/projector/projector/kafkatest"
	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store/storetest"
)

// pruneEvent is a message of an event of run r.
func pruneEvent(id, typ string, r int, at time.Time) model.Message {
	run := fmt.Sprintf("run-%03d", r)
	return model.Message{Key: []byte(run), Value: fmt.Appendf(nil,
		`{"event_id":%q,"event_type":%q,"source":"ci","workflow_id":"wf-%d","workflow_run_id":%q,"timestamp":%q}`,
		id, typ, r%7, run, at.Format(time.RFC3339Nano))}
}

// TestPruneWhileTheWorkerRuns: `prune` runs while a worker applies
// events that keep arriving, on both sides of the horizon, some of them
// resent copies of events it prunes. Nothing is lost and nothing counted
// twice: every run row is the projection of its distinct events but those
// held back as before_horizon dead letters, which are all before the
// horizon; the resends after the prune are held back. Then reset and
// rebuild refuse the runs pruned in part (exit 2, naming the horizon),
// and rebuild --keep-pruned-runs leaves every row as it is.
func TestPruneWhileTheWorkerRuns(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := newWorld(t, 4)
	t0 := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	horizon := t0.Add(time.Hour)
	const runs = 240
	queuedAt := func(r int) time.Time { return t0.Add(time.Duration(r%120) * time.Minute) }
	var first, later, resends []model.Message
	for r := range runs {
		first = append(first,
			pruneEvent(fmt.Sprintf("q-%d", r), "run.queued", r, queuedAt(r)),
			pruneEvent(fmt.Sprintf("s-%d", r), "run.started", r, queuedAt(r).Add(20*time.Minute)))
		later = append(later, pruneEvent(fmt.Sprintf("f-%d", r), "run.succeeded", r, queuedAt(r).Add(50*time.Minute)))
		if r%5 == 0 && queuedAt(r).Before(horizon) { // a copy of an event pruned
			resends = append(resends, first[2*r])
		}
	}
	kafkatest.Produce(t, w.cluster, testTopic, first)
	stderr := &lockedBuffer{}
	exit := make(chan int, 1)
	go func() {
		exit <- Run(ctx, []string{"projector", "--database-url", w.url, "--brokers", w.cluster.ListenAddrs()[0], "--group", "g",
			"run", "--batch-wait", "1ms", "--batch-size", "50"}, io.Discard, stderr)
	}()
	caughtUp := func() bool {
		stored, err := w.st.StoredOffsets(ctx, "g")
		require.NoError(t, err)
		for p, hwm := range kafkatest.HighWatermarks(w.cluster, testTopic) {
			if stored[model.TopicPartition{Topic: testTopic, Partition: p}] != hwm {
				return false
			}
		}
		return true
	}
	waitUntil(t, time.Minute, caughtUp, "the worker never applied the first events")

	// The prune, while the rest arrives in small pieces.
	pruned := make(chan [3]string, 1)
	go func() {
		code, out, errOut := w.cli("prune", "--before", horizon.Format(time.RFC3339))
		pruned <- [3]string{fmt.Sprint(code), out, errOut}
	}()
	for i := 0; i < len(later); i += 10 {
		kafkatest.Produce(t, w.cluster, testTopic, later[i:min(i+10, len(later))])
	}
	res := <-pruned
	require.Equal(t, "0", res[0], res[2])
	require.Contains(t, res[1], "before "+horizon.Format(time.RFC3339Nano))
	kafkatest.Produce(t, w.cluster, testTopic, resends)
	waitUntil(t, time.Minute, caughtUp, "the worker never caught up:\n%s", stderr)

	// Which events were held back: every one before the horizon.
	held := map[string]bool{}
	letters, n, err := w.st.ListDeadLetters(ctx, model.ReasonBeforeHorizon, 10000)
	require.NoError(t, err)
	require.Equal(t, int64(len(letters)), w.count("SELECT count(*) FROM dead_letters"), "only before_horizon dead letters")
	for _, d := range letters {
		ev, err := model.Decode(d.Value)
		require.NoError(t, err)
		require.True(t, ev.Timestamp.Before(horizon), "%s held back but after the horizon", ev.EventID)
		held[ev.EventID] = true
	}
	for _, m := range resends {
		ev, _ := model.Decode(m.Value)
		require.True(t, held[ev.EventID], "the resent copy of pruned %s was not held back", ev.EventID)
	}
	require.Positive(t, n)
	require.Zero(t, w.count("SELECT count(*) FROM workflow_events WHERE occurred_at < $1", horizon), "events before the horizon stored")

	byRun := map[string][]model.Event{}
	seen := map[string]bool{}
	for _, m := range append(append(first, later...), resends...) {
		ev, err := model.Decode(m.Value)
		require.NoError(t, err)
		if seen[ev.EventID] || (held[ev.EventID] && !isFirst(first, ev.EventID)) {
			continue
		}
		seen[ev.EventID] = true
		byRun[ev.WorkflowRunID] = append(byRun[ev.WorkflowRunID], ev)
	}
	rows, err := w.st.ListRuns(ctx)
	require.NoError(t, err)
	require.Len(t, rows, runs)
	for _, row := range rows {
		want := model.Project(byRun[row.WorkflowRunID])
		require.True(t, want.Equal(row.Run), "run %s:\nwant %+v\ngot  %+v", row.WorkflowRunID, want, row.Run)
	}
	cancel()
	require.Equal(t, 0, <-exit, stderr.String())

	// Reset and rebuild across the horizon: exit 2, naming it.
	code, _, errOut := w.cli("offsets", "reset", "--to", "earliest")
	require.Equal(t, 2, code, errOut)
	require.Contains(t, errOut, horizon.Format(time.RFC3339))
	code, _, errOut = w.cli("rebuild")
	require.Equal(t, 2, code, errOut)
	require.Contains(t, errOut, "--keep-pruned-runs")
	before := storetest.Snapshot(t, w.st)
	code, out, errOut := w.cli("rebuild", "--keep-pruned-runs")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "0 updated, 0 inserted, 0 deleted")
	require.Equal(t, before["workflow_runs"], storetest.Snapshot(t, w.st)["workflow_runs"])
}

// isFirst reports whether id is the id of one of msgs' events.
func isFirst(msgs []model.Message, id string) bool {
	for _, m := range msgs {
		if ev, err := model.Decode(m.Value); err == nil && ev.EventID == id {
			return true
		}
	}
	return false
}

func TestPruneUsageErrors(t *testing.T) {
	t.Parallel()
	url := storetest.URL(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"prune"}, "give the horizon"},
		{[]string{"prune", "--before", "2026-01-01T00:00:00Z", "--older-than", "3d"}, "not both"},
		{[]string{"prune", "--before", "yesterday"}, "--before"},
		{[]string{"prune", "--older-than", "3 weeks"}, "--older-than"},
		{[]string{"prune", "--older-than", "-5d"}, "--older-than"},
		{[]string{"prune", "--before", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}, "in the future"},
	} {
		code, _, stderr := runCLI(t, append([]string{"--database-url", url}, tc.args...)...)
		require.Equal(t, 2, code, stderr)
		require.Contains(t, stderr, tc.want)
	}
	code, out, stderr := runCLI(t, "--database-url", url, "prune", "--older-than", "30d", "--dry-run")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, out, "dry run: the horizon would be")
}
