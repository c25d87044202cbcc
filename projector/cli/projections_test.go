package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projector-run/projector/projector/eventgen"
	"github.com/projector-run/projector/projector/kafkatest"
	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/projector/projectiontest"
	"github.com/projector-run/projector/store"
	"github.com/projector-run/projector/store/storetest"
)

// The commands of a user's binary (contract §7.1): every command loads
// the user's projections, and each one that removes, rebuilds or replays
// events keeps their tables equal to what the stored events make, as it
// keeps workflow_runs and workflow_steps.

// userProjections are two projections of a user's kind: an aggregate (pc)
// and a table per run (pr).
func userProjections() []store.Projection {
	return []store.Projection{projectiontest.Counts{N: "pc"}, projectiontest.PerRun{N: "pr"}}
}

// distinctEvents decodes msgs and returns the first copy of each valid
// event, as the tables must hold them once everything is consumed.
func distinctEvents(msgs []model.Message) []model.Event {
	seen := map[string]bool{}
	var out []model.Event
	for _, m := range msgs {
		ev, err := model.Decode(m.Value)
		if err != nil || seen[ev.EventID] {
			continue
		}
		seen[ev.EventID] = true
		out = append(out, ev)
	}
	return out
}

// storedEvents returns the events workflow_events holds, decoded from
// their payloads.
func (w *world) storedEvents() []model.Event {
	w.t.Helper()
	rows, err := w.st.Pool().Query(context.Background(), `SELECT payload FROM workflow_events`)
	require.NoError(w.t, err)
	defer rows.Close()
	var out []model.Event
	for rows.Next() {
		var payload []byte
		require.NoError(w.t, rows.Scan(&payload))
		ev, err := model.Decode(payload)
		require.NoError(w.t, err)
		out = append(out, ev)
	}
	require.NoError(w.t, rows.Err())
	return out
}

// userTables returns what the tables of pc and pr hold, as
// projectiontest.Tables renders them.
func (w *world) userTables() []string {
	w.t.Helper()
	got, err := projectiontest.Tables(context.Background(), w.st.Pool(), "pc", "pr")
	require.NoError(w.t, err)
	return got
}

// requireProjections checks every projection against the projection of
// events computed from scratch: the user's pc and pr, workflow_runs and
// workflow_steps.
func (w *world) requireProjections(events []model.Event, when string) {
	t := w.t
	t.Helper()
	ctx := context.Background()
	byRun := map[string][]model.Event{}
	for _, ev := range events {
		byRun[ev.WorkflowRunID] = append(byRun[ev.WorkflowRunID], ev)
	}
	require.Equal(t, projectiontest.Want(events), w.userTables(), "%s: the tables of the user's projections", when)
	runs, err := w.st.ListRuns(ctx)
	require.NoError(t, err)
	require.Equal(t, len(byRun), len(runs), "%s: rows of workflow_runs", when)
	for _, row := range runs {
		want := model.Project(byRun[row.WorkflowRunID])
		require.True(t, want.Equal(row.Run), "%s: run %s:\n got  %+v\n want %+v", when, row.WorkflowRunID, row.Run, want)
	}
	wantSteps := model.ProjectSteps(events)
	steps, err := w.st.ListSteps(ctx)
	require.NoError(t, err)
	require.Equal(t, len(wantSteps), len(steps), "%s: rows of workflow_steps", when)
	for i, row := range steps { // both in key order
		require.True(t, wantSteps[i].Equal(row.Step), "%s: step %d:\n got  %+v\n want %+v", when, i, row.Step, wantSteps[i])
	}
}

// resetThenConsume resets the group's offsets with args, checks that every
// projection then equals the projection of the events that remain, and
// consumes again: each removed event is applied exactly once more, and
// every projection equals the projection of all the distinct events.
func (w *world) resetThenConsume(all []model.Event, args ...string) {
	t := w.t
	t.Helper()
	when := "offsets reset " + strings.Join(args, " ")
	stored := w.count(`SELECT count(*) FROM workflow_events`)
	code, _, stderr := w.cli(append([]string{"offsets", "reset"}, args...)...)
	require.Equal(t, 0, code, stderr)
	remaining := w.storedEvents()
	removed := stored - int64(len(remaining))
	require.Positive(t, removed, "%s removes events", when)
	w.requireProjections(remaining, "after "+when)
	require.Equal(t, int(removed), w.consume(), "%s: each removed event applied exactly once more", when)
	w.requireProjections(all, "after "+when+" and consuming again")
}

// TestUserProjectionsFollowOffsetResets resets the whole topic, one
// partition, and to a time, consuming again after each: a reset has the
// user's projections forget the runs whose events it removes and get
// their remaining events again, so their tables always equal what the
// stored events make, and consuming again gives each event to them once.
// Runs span partitions (unkeyed messages), so a reset of one partition
// touches runs whose other events stay.
func TestUserProjectionsFollowOffsetResets(t *testing.T) {
	t.Parallel()
	w := newWorldWith(t, 3, userProjections())
	wl := eventgen.Generate(eventgen.Config{Seed: 71, Runs: 150, DuplicateRate: 0.05, ShuffleRate: 0.2,
		MalformedRate: 0.03, RetryRate: 0.1, UnkeyedRate: 0.3})
	half := len(wl.Messages) / 2
	// The first half is stamped two hours ago, the second half now: a
	// reset to the hour between removes the second half.
	at := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	kafkatest.ProduceAt(t, w.cluster, testTopic, wl.Messages[:half], at.Add(-time.Hour))
	kafkatest.Produce(t, w.cluster, testTopic, wl.Messages[half:])
	all := distinctEvents(wl.Messages)
	require.Len(t, all, wl.Valid)

	require.Equal(t, wl.Valid, w.consume())
	w.requireProjections(all, "after consuming")
	before := w.userTables()

	code, out, stderr := w.cli("offsets", "reset", "--to", "earliest", "--dry-run")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, out, "dry run")
	require.Equal(t, before, w.userTables(), "a dry run changes nothing")

	w.resetThenConsume(all, "--to", "earliest")
	require.Equal(t, before, w.userTables())
	mid := kafkatest.HighWatermarks(w.cluster, testTopic)[1] / 2
	w.resetThenConsume(all, "--topic", testTopic, "--partition", "1", "--to", strconv.FormatInt(mid, 10))
	w.resetThenConsume(all, "--to", at.Format(time.RFC3339Nano))
	require.Equal(t, before, w.userTables())

	// A reset that removes no event (to latest: every partition is caught
	// up) forgets nothing: no run is touched, so no projection loses a
	// row.
	code, _, stderr = w.cli("offsets", "reset", "--to", "latest")
	require.Equal(t, 0, code, stderr)
	w.requireProjections(all, "after a reset that removes nothing")
}

// splitTables splits projectiontest.Tables lines into pc's (per source
// and event type) and pr's (per run).
func splitTables(lines []string) (counts, runs []string) {
	for _, l := range lines {
		if strings.HasPrefix(l, "run ") {
			runs = append(runs, l)
		} else {
			counts = append(counts, l)
		}
	}
	return counts, runs
}

// TestRebuildUserProjections damages the tables of both user projections
// and rebuilds them: `rebuild --projection pc` restores pc only (a dry
// run of it changes nothing), `rebuild` restores every one, and an unknown
// name is a usage error naming the loaded ones.
func TestRebuildUserProjections(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorldWith(t, 3, userProjections())
	wl := keyedWorkload(72, 120)
	kafkatest.Produce(t, w.cluster, testTopic, wl.Messages)
	all := distinctEvents(wl.Messages)
	w.consume()
	w.requireProjections(all, "after consuming")
	good := w.userTables()
	goodCounts, goodRuns := splitTables(good)
	snap := storetest.Snapshot(t, w.st)

	exec := func(q string) {
		tag, err := w.st.Pool().Exec(ctx, q)
		require.NoError(t, err)
		require.Positive(t, tag.RowsAffected(), q)
	}
	exec(`UPDATE pc_counts SET events = events + 7`)
	exec(`DELETE FROM pr_runs WHERE workflow_run_id = (SELECT min(workflow_run_id) FROM pr_runs)`)
	damaged := w.userTables()
	damagedCounts, damagedRuns := splitTables(damaged)
	require.NotEqual(t, goodCounts, damagedCounts)
	require.Len(t, damagedRuns, len(goodRuns)-1)

	code, out, stderr := w.cli("rebuild", "--projection", "pc", "--dry-run")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, out, fmt.Sprintf("dry run: pc would be rebuilt from %d events", wl.Valid))
	require.Contains(t, out, "nothing was changed")
	require.Equal(t, damaged, w.userTables(), "a dry run changes nothing")

	code, out, stderr = w.cli("rebuild", "--projection", "pc")
	require.Equal(t, 0, code, stderr)
	counts, runs := splitTables(w.userTables())
	require.Equal(t, goodCounts, counts, "pc rebuilt")
	require.Equal(t, damagedRuns, runs, "pr, not named, is left as it was")
	require.Contains(t, out, fmt.Sprintf("rebuilt pc from %d events", wl.Valid))
	require.NotContains(t, out, "rebuilt pr")
	require.NotContains(t, out, "rebuilt workflow_runs")
	require.Equal(t, snap, storetest.Snapshot(t, w.st), "the built-in tables are untouched")

	code, _, stderr = w.cli("rebuild", "--projection", "nosuch")
	requireOneLineError(t, 2, "nosuch", code, stderr)
	require.Contains(t, stderr, "workflow_runs, workflow_steps, pc, pr", "the error names the loaded projections")

	code, out, stderr = w.cli("rebuild")
	require.Equal(t, 0, code, stderr)
	for _, name := range []string{"workflow_steps", "pc", "pr"} {
		require.Contains(t, out, fmt.Sprintf("rebuilt %s from %d events", name, wl.Valid))
	}
	require.Equal(t, good, w.userTables(), "every projection rebuilt")
	w.requireProjections(all, "after rebuild")
	require.Equal(t, snap, storetest.Snapshot(t, w.st))
}

// TestDLQReplayAppliesUserProjectionsOnce replays the dead letters an
// older version would have left for messages valid today: one of a new
// run, one of a run already stored, and one a copy of a stored event. The
// user's projections get the two new events once; replaying again, and
// the copy, change nothing.
func TestDLQReplayAppliesUserProjectionsOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorldWith(t, 2, userProjections())
	wl := keyedWorkload(73, 80)
	kafkatest.Produce(t, w.cluster, testTopic, wl.Messages)
	all := distinctEvents(wl.Messages)
	w.consume()
	w.requireProjections(all, "after consuming")

	// A valid message of a stored run, and the exact bytes of a stored
	// event.
	var storedRun string
	var copyOf []byte
	require.NoError(t, w.st.Pool().QueryRow(ctx, `SELECT workflow_run_id, payload FROM workflow_events
		WHERE event_type = 'run.queued' ORDER BY event_id LIMIT 1`).Scan(&storedRun, &copyOf))
	late := []string{
		`{"event_id":"late-1","event_type":"run.queued","source":"ci","workflow_id":"wf","workflow_run_id":"late-run","timestamp":"2026-01-01T00:00:00Z","schema_version":1}`,
		fmt.Sprintf(`{"event_id":"late-2","event_type":"step.started","source":"ci","workflow_id":"wf","workflow_run_id":%q,"step_id":"late-step","timestamp":"2026-01-01T00:00:01Z","schema_version":1}`, storedRun),
	}
	end := kafkatest.HighWatermarks(w.cluster, testTopic)[0]
	_, err := w.st.Pool().Exec(ctx, `INSERT INTO dead_letters (topic, partition, "offset", key, value, headers, reason, error)
		VALUES ($1, 0, $2, NULL, $3, '[]', 'unsupported_schema_version', 'an older rule'),
		       ($1, 0, $4, NULL, $5, '[]', 'unsupported_schema_version', 'an older rule'),
		       ($1, 0, $6, NULL, $7, '[]', 'unsupported_schema_version', 'an older rule')`,
		testTopic, end, late[0], end+1, late[1], end+2, copyOf)
	require.NoError(t, err)
	for _, v := range late {
		ev, err := model.Decode([]byte(v))
		require.NoError(t, err)
		all = append(all, ev)
	}
	db := []string{"--database-url", w.url}

	code, out, stderr := runCLIWith(t, w.projections, append(db, "dlq", "replay")...)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, out, fmt.Sprintf("replayed %d dead letters: 2 applied, 1 duplicates of stored events removed, %d still invalid", wl.Invalid+3, wl.Invalid))
	w.requireProjections(all, "after dlq replay")
	after := w.userTables()

	code, out, stderr = runCLIWith(t, w.projections, append(db, "dlq", "replay")...)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, out, "0 applied, 0 duplicates")
	require.Equal(t, after, w.userTables(), "replaying again applies nothing more")
	require.True(t, slices.Contains(after, "run late-run 1 2026-01-01T00:00:00.000000 2026-01-01T00:00:00.000000"), after)
}

// TestDLQReplayWhileAProjectionFails replays a dead letter valid today
// while a user projection refuses its rows (a CHECK constraint: a data
// error of PostgreSQL's, but the projection's, not the message's): the
// replay fails naming the projection and changes nothing, the dead letter
// keeps its reason; once the projection is mended, the replay applies it.
func TestDLQReplayWhileAProjectionFails(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorldWith(t, 1, userProjections())
	wl := keyedWorkload(74, 30)
	kafkatest.Produce(t, w.cluster, testTopic, wl.Messages)
	all := distinctEvents(wl.Messages)
	w.consume()
	end := kafkatest.HighWatermarks(w.cluster, testTopic)[0]
	late := `{"event_id":"late-1","event_type":"run.queued","source":"ci","workflow_id":"wf","workflow_run_id":"late-run","timestamp":"2026-01-01T00:00:00Z","schema_version":1}`
	_, err := w.st.Pool().Exec(ctx, `INSERT INTO dead_letters (topic, partition, "offset", key, value, headers, reason, error)
		VALUES ($1, 0, $2, NULL, $3, '[]', 'unsupported_schema_version', 'an older rule')`, testTopic, end, late)
	require.NoError(t, err)
	_, err = w.st.Pool().Exec(ctx, `ALTER TABLE pc_counts ADD CONSTRAINT refuse_ci CHECK (source <> 'ci')`)
	require.NoError(t, err)
	before := storetest.Snapshot(t, w.st)
	db := []string{"--database-url", w.url}

	for _, args := range [][]string{{"dlq", "replay"}, {"dlq", "replay", fmt.Sprintf("%s/0/%d", testTopic, end)}} {
		code, _, stderr := runCLIWith(t, w.projections, append(db, args...)...)
		requireOneLineError(t, 1, "projection pc: apply: ", code, stderr)
		require.Equal(t, before, storetest.Snapshot(t, w.st), "%v while pc fails changes nothing: the dead letter stays as it was", args)
	}
	w.requireProjections(all, "after the failed replays")

	_, err = w.st.Pool().Exec(ctx, `ALTER TABLE pc_counts DROP CONSTRAINT refuse_ci`)
	require.NoError(t, err)
	code, out, stderr := runCLIWith(t, w.projections, append(db, "dlq", "replay")...)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, out, "1 applied")
	ev, err := model.Decode([]byte(late))
	require.NoError(t, err)
	w.requireProjections(append(all, ev), "after the replay")
}

// TestProjectionsRegistry runs the registry as users meet it: a binary
// with new projections builds them from the events an older binary
// stored; the older binary then refuses every command that applies,
// removes or re-applies events, exit 2 naming them, until they are
// dropped; projections list says which are loaded.
func TestProjectionsRegistry(t *testing.T) {
	t.Parallel()
	w := newWorldWith(t, 3, nil) // the binary without the user's projections
	wl := eventgen.Generate(eventgen.Config{Seed: 73, Runs: 120, DuplicateRate: 0.05, ShuffleRate: 0.2, MalformedRate: 0.03})
	kafkatest.Produce(t, w.cluster, testTopic, wl.Messages)
	require.Equal(t, wl.Valid, w.consume())

	// The new binary builds pc and pr from the stored events at its start.
	w.projections = userProjections()
	code, _, stderr := w.cli("run", "--until-caught-up")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "projection built from the stored events")
	require.Equal(t, projectiontest.Want(distinctEvents(wl.Messages)), w.userTables())
	code, out, stderr := w.cli("projections", "list", "--output", "json")
	require.Equal(t, 0, code, stderr)
	var rows []projectionRow
	require.NoError(t, json.Unmarshal([]byte(out), &rows))
	require.Len(t, rows, 4)
	for _, r := range rows {
		require.Equal(t, "ready", r.State, r.Name)
		require.True(t, r.Loaded, r.Name)
		require.Equal(t, int64(wl.Valid), r.EventsApplied, r.Name)
	}

	// The old binary lacks them.
	w.projections = nil
	for _, args := range [][]string{
		{"run", "--until-caught-up"},
		{"offsets", "reset", "--to", "earliest"},
		{"rebuild"},
		{"dlq", "replay"},
		{"prune", "--before", "2000-01-01T00:00:00Z"},
	} {
		code, _, stderr := w.cli(args...)
		require.Equal(t, 2, code, "%v: %s", args, stderr)
		require.Contains(t, stderr, "the database has projections pc, pr, not loaded", args)
	}
	code, out, stderr = w.cli("projections", "list")
	require.Equal(t, 0, code, stderr)
	require.Regexp(t, `(?m)^pc\s+go\s+ready\s+no`, out)
	for _, name := range []string{"workflow_runs", "nosuch"} {
		code, _, _ := w.cli("projections", "drop", name)
		require.Equal(t, 2, code, name)
	}
	for _, name := range []string{"pc", "pr"} {
		code, _, stderr := w.cli("projections", "drop", name)
		require.Equal(t, 0, code, stderr)
	}
	code, _, stderr = w.cli("rebuild")
	require.Equal(t, 0, code, "once dropped, the old binary runs: %s", stderr)
	require.Equal(t, projectiontest.Want(distinctEvents(wl.Messages)), w.userTables(), "a dropped projection's tables are left as they are")
}

// failingSetup is a projection whose Setup fails.
type failingSetup struct{ projectiontest.Counts }

func (failingSetup) Setup(context.Context, store.DB) error {
	return errors.New("no such schema: analytics")
}

// TestProjectionSetupRunsAtMigrateAndFailsLoudly: migrate up runs every
// projection's Setup (its tables exist afterwards); one that fails is
// exit 2 with one line naming it.
func TestProjectionSetupRunsAtMigrateAndFailsLoudly(t *testing.T) {
	t.Parallel()
	url := storetest.EmptyURL(t)
	code, _, stderr := runCLIWith(t, userProjections(), "--database-url", url, "migrate", "up")
	require.Equal(t, 0, code, stderr)
	st := storetest.Open(t, url)
	var n int
	require.NoError(t, st.Pool().QueryRow(context.Background(),
		`SELECT count(*) FROM pg_tables WHERE tablename IN ('pc_counts', 'pr_runs')`).Scan(&n))
	require.Equal(t, 2, n, "migrate up set the projections up")

	code, _, stderr = runCLIWith(t, []store.Projection{failingSetup{projectiontest.Counts{N: "bad"}}}, "--database-url", url, "migrate", "up")
	require.Equal(t, 2, code, stderr)
	require.Equal(t, 1, strings.Count(strings.TrimSpace(stderr), "\n")+1, stderr)
	require.Contains(t, stderr, "projection bad: setup: no such schema: analytics")
}
