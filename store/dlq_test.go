package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projector-run/projector/projector/eventgen"
	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store"
	"github.com/projector-run/projector/store/storetest"
)

// insertDeadLetter stores a dead letter as an older worker would have.
func insertDeadLetter(t *testing.T, st *store.Store, p int32, offset int64, value []byte, reason, errText string) store.Position {
	t.Helper()
	_, err := st.Pool().Exec(context.Background(), `INSERT INTO dead_letters (topic, partition, "offset", key, value, headers, reason, error)
		VALUES ($1, $2, $3, 'k', $4, '[{"key": "h", "value": "v"}]', $5, $6)`, topic, p, offset, value, reason, errText)
	require.NoError(t, err)
	return store.Position{Topic: topic, Partition: p, Offset: offset}
}

// replayFixture is a consumed workload plus dead letters that today's
// rules judge differently from the version that stored them.
type replayFixture struct {
	st *store.Store
	wl eventgen.Workload
	// newEvent is valid today and extends an existing run; newRun is
	// valid today and starts a run; dup is valid today but repeats a
	// stored event; stale is still invalid, for another reason than stored.
	newEvent, newRun, dup, stale store.Position
	run                          string
}

func newReplayFixture(t *testing.T, seed uint64) *replayFixture {
	t.Helper()
	ctx := context.Background()
	f := &replayFixture{st: storetest.New(t), wl: unkeyedWorkload(seed, 60)}
	parts := partitioned(f.wl.Messages, 2)
	consumeAll(t, f.st, parts)

	runs, err := f.st.ListRuns(ctx)
	require.NoError(t, err)
	r := runs[len(runs)/2]
	f.run = r.WorkflowRunID
	var stored []byte
	require.NoError(t, f.st.Pool().QueryRow(ctx, `SELECT payload FROM workflow_events WHERE workflow_run_id = $1 LIMIT 1`, f.run).Scan(&stored))

	end := int64(len(parts[1]))
	f.newEvent = insertDeadLetter(t, f.st, 1, end, eventJSON("replayed-1", "step.succeeded", f.run,
		r.LastEventAt.Add(time.Second), int(r.Attempt), `,"schema_version":1`), model.ReasonUnsupportedSchemaVersion, "unsupported schema version 1")
	f.newRun = insertDeadLetter(t, f.st, 1, end+1, eventJSON("replayed-2", "run.queued", "run-from-replay",
		r.LastEventAt, 1, ""), model.ReasonInvalidField, "timestamp: an old rule")
	f.dup = insertDeadLetter(t, f.st, 1, end+2, stored, model.ReasonInvalidJSON, "an old bug")
	f.stale = insertDeadLetter(t, f.st, 0, int64(len(parts[0])), []byte(`{"event_id":"only"}`), model.ReasonInvalidJSON, "old text")
	return f
}

func TestReplayAppliesDeadLettersValidTodayExactlyOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newReplayFixture(t, 31)
	st := f.st
	before, err := st.ListRuns(ctx)
	require.NoError(t, err)
	beforeDead := storetest.Snapshot(t, st)["dead_letters"]

	res, err := st.ReplayDeadLetters(ctx, store.ReplayOptions{Samples: 1000})
	require.NoError(t, err)
	require.Equal(t, 2, res.Applied)
	require.Equal(t, 1, res.Duplicates)
	require.Equal(t, f.wl.Invalid+1, res.Invalid, "the workload's malformed messages are still invalid")
	require.Equal(t, f.wl.Invalid+4, res.Checked)
	byPos := map[store.Position]store.ReplayOutcome{}
	for _, o := range res.Outcomes {
		byPos[o.Position] = o
	}
	require.Equal(t, store.ReplayOutcome{Position: f.newEvent, Result: store.ReplayApplied, EventID: "replayed-1",
		OldReason: model.ReasonUnsupportedSchemaVersion}, byPos[f.newEvent])
	require.Equal(t, store.ReplayApplied, byPos[f.newRun].Result)
	require.Equal(t, store.ReplayDuplicate, byPos[f.dup].Result)
	require.Equal(t, store.ReplayOutcome{Position: f.stale, Result: store.ReplayInvalid, OldReason: model.ReasonInvalidJSON,
		Reason: model.ReasonMissingField, Error: "event_type: is required", Updated: true}, byPos[f.stale])
	require.Len(t, res.Outcomes, 4, "outcomes that change nothing are not listed")

	// The events are stored at the dead letters' positions, their runs
	// merged, and those dead letters are gone.
	for _, p := range []store.Position{f.newEvent, f.newRun, f.dup} {
		_, err := st.GetDeadLetter(ctx, p)
		require.ErrorIs(t, err, store.ErrNotFound)
	}
	var part int32
	var offset int64
	require.NoError(t, st.Pool().QueryRow(ctx, `SELECT partition, "offset" FROM workflow_events WHERE event_id = 'replayed-1'`).Scan(&part, &offset))
	require.Equal(t, f.newEvent.Partition, part)
	require.Equal(t, f.newEvent.Offset, offset)
	requireRunsAreTheirProjection(t, st)
	after, err := st.ListRuns(ctx)
	require.NoError(t, err)
	require.Len(t, after, len(before)+1, "one new run")
	for _, r := range after {
		if r.WorkflowRunID == f.run {
			require.Equal(t, before[len(before)/2].EventCount+1, r.EventCount)
		}
	}

	// Still invalid: stays, with today's reason and error; the others are
	// untouched.
	d, err := st.GetDeadLetter(ctx, f.stale)
	require.NoError(t, err)
	require.Equal(t, model.ReasonMissingField, d.Reason)
	require.Equal(t, "event_type: is required", d.Error)
	require.Equal(t, []byte(`{"event_id":"only"}`), d.Value)
	afterDead := storetest.Snapshot(t, st)["dead_letters"]
	require.Len(t, afterDead, len(beforeDead)-3)

	// Replaying again applies nothing more.
	snap := storetest.Snapshot(t, st)
	again, err := st.ReplayDeadLetters(ctx, store.ReplayOptions{})
	require.NoError(t, err)
	require.Zero(t, again.Applied+again.Duplicates)
	require.Equal(t, f.wl.Invalid+1, again.Invalid)
	require.Equal(t, snap, storetest.Snapshot(t, st))
}

func TestReplayDryRunReportsWhatReplayDoesAndChangesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newReplayFixture(t, 32)
	before := storetest.Snapshot(t, f.st)
	dry, err := f.st.ReplayDeadLetters(ctx, store.ReplayOptions{DryRun: true, Samples: 1000})
	require.NoError(t, err)
	require.Equal(t, before, storetest.Snapshot(t, f.st), "a dry run changes nothing")
	real, err := f.st.ReplayDeadLetters(ctx, store.ReplayOptions{Samples: 1000})
	require.NoError(t, err)
	require.Equal(t, dry, real)
}

func TestReplaySelectsByPositionOrReason(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newReplayFixture(t, 33)
	st := f.st
	before := storetest.Snapshot(t, st)

	missing := store.Position{Topic: topic, Partition: 0, Offset: 999999}
	_, err := st.ReplayDeadLetters(ctx, store.ReplayOptions{Positions: []store.Position{f.newRun, missing}})
	require.ErrorIs(t, err, store.ErrNotFound)
	require.ErrorContains(t, err, missing.String())
	require.Equal(t, before, storetest.Snapshot(t, st), "nothing is replayed when one position is not there")

	res, err := st.ReplayDeadLetters(ctx, store.ReplayOptions{Positions: []store.Position{f.newRun, f.newRun}})
	require.NoError(t, err)
	require.Equal(t, store.ReplayResult{Checked: 1, Applied: 1}, res)

	res, err = st.ReplayDeadLetters(ctx, store.ReplayOptions{Reason: model.ReasonUnsupportedSchemaVersion, Samples: 100})
	require.NoError(t, err)
	require.Equal(t, 1, res.Applied, "the dead letter that an older version refused for its schema_version")
	for _, o := range res.Outcomes {
		require.Equal(t, model.ReasonUnsupportedSchemaVersion, o.OldReason)
	}
	_, err = st.GetDeadLetter(ctx, f.dup)
	require.NoError(t, err, "other reasons are left alone")
}

func TestListAndGetDeadLetters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newReplayFixture(t, 34)
	st := f.st

	all, total, err := st.ListDeadLetters(ctx, "", 1000)
	require.NoError(t, err)
	require.Equal(t, int64(f.wl.Invalid+4), total)
	require.Len(t, all, f.wl.Invalid+4)
	for i := 1; i < len(all); i++ {
		a, b := all[i-1].Position, all[i].Position
		require.True(t, a.Partition < b.Partition || (a.Partition == b.Partition && a.Offset < b.Offset), "ordered by position")
	}

	some, total, err := st.ListDeadLetters(ctx, model.ReasonInvalidJSON, 2)
	require.NoError(t, err)
	require.Len(t, some, 2)
	require.Equal(t, int64(f.wl.Reasons[model.ReasonInvalidJSON]+2), total)
	for _, d := range some {
		require.Equal(t, model.ReasonInvalidJSON, d.Reason)
	}

	d, err := st.GetDeadLetter(ctx, f.stale)
	require.NoError(t, err)
	require.Equal(t, f.stale, d.Position)
	require.Equal(t, []byte("k"), d.Key)
	require.JSONEq(t, `[{"key": "h", "value": "v"}]`, string(d.Headers))
	require.Equal(t, "old text", d.Error)
	require.WithinDuration(t, time.Now(), d.ReceivedAt, time.Minute)

	_, err = st.GetDeadLetter(ctx, store.Position{Topic: "nope", Partition: 0, Offset: 0})
	require.ErrorIs(t, err, store.ErrNotFound)
}

func TestParsePosition(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want store.Position
		ok   bool
	}{
		{"workflow-events/3/1234", store.Position{Topic: "workflow-events", Partition: 3, Offset: 1234}, true},
		{"a.b_c/0/0", store.Position{Topic: "a.b_c", Partition: 0, Offset: 0}, true},
		{"workflow-events/3", store.Position{}, false},
		{"/3/4", store.Position{}, false},
		{"t/-1/4", store.Position{}, false},
		{"t/1/-4", store.Position{}, false},
		{"t/x/4", store.Position{}, false},
		{"t/1/4x", store.Position{}, false},
		{"t/99999999999/4", store.Position{}, false},
		{"", store.Position{}, false},
	} {
		got, err := store.ParsePosition(tc.in)
		if !tc.ok {
			require.Error(t, err, tc.in)
			require.Contains(t, err.Error(), "TOPIC/PARTITION/OFFSET")
			continue
		}
		require.NoError(t, err, tc.in)
		require.Equal(t, tc.want, got)
		require.Equal(t, tc.in, got.String())
	}
}

func TestReplayOfAnEventPostgreSQLRefusesKeepsItAsUnstorable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newReplayFixture(t, 35)
	st := f.st
	// A rule of the database that the decoder does not know about: such
	// an event is refused by PostgreSQL itself (a data error).
	_, err := st.Pool().Exec(ctx, `ALTER TABLE workflow_events ADD CONSTRAINT no_poison CHECK (event_id <> 'poison')`)
	require.NoError(t, err)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	poison := insertDeadLetter(t, st, 1, f.dup.Offset+1, eventJSON("poison", "run.queued", "r-poison", t0, 1, ""), model.ReasonInvalidJSON, "old")

	res, err := st.ReplayDeadLetters(ctx, store.ReplayOptions{Samples: 1000})
	require.NoError(t, err)
	require.Equal(t, 2, res.Applied, "the other dead letters of the partition are applied")
	require.Equal(t, 1, res.Duplicates)
	d, err := st.GetDeadLetter(ctx, poison)
	require.NoError(t, err)
	require.Equal(t, model.ReasonUnstorable, d.Reason)
	require.Contains(t, d.Error, "postgresql refused it")
	require.Contains(t, d.Error, "no_poison")
	requireRunsAreTheirProjection(t, st)
}
