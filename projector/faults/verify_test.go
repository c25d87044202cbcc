//go:build faults

package faults_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"

	"github.com/stretchr/testify/require"

	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/projector/projectiontest"
	"github.com/projector-run/projector/projector/sqlprojections"
)

// lostRange is a range of offsets of one partition that a worker reported
// lost in a consumer_incidents row (retention deleted the messages before
// they were applied): verify leaves those messages out of what it expects.
type lostRange struct {
	Gen       int
	Partition int32
	From, To  int64
}

// verdict is what verify found.
type verdict struct {
	// What was produced: messages, distinct valid events, repeated valid
	// messages, invalid messages (left out: those in lost ranges).
	Messages, Valid, Duplicates, Invalid int
	// Lost counts expected events not stored; Twice counts events applied
	// more than once (run event counts above the projection's).
	Lost, Twice int
	// Mismatches of each table.
	EventMismatches, RunMismatches, DeadLetterMismatches, OffsetMismatches int
	// StepMismatches and UserMismatches are those of workflow_steps and of
	// the user's projections of the binary (pc, pr).
	StepMismatches, UserMismatches int
	// AuditViolations counts offsets moved by a session that did not hold
	// the partition's lease, or moved backwards.
	AuditViolations int
	// Claims is the number of leases taken, Batches the number of
	// committed offset moves, from the audit.
	Claims, Batches int
	problems        []string
}

func (v *verdict) problem(format string, args ...any) {
	v.problems = append(v.problems, fmt.Sprintf(format, args...))
}

func (v verdict) mismatches() int {
	return v.Lost + v.EventMismatches + v.RunMismatches + v.StepMismatches + v.UserMismatches +
		v.DeadLetterMismatches + v.OffsetMismatches + v.AuditViolations
}

func (v verdict) String() string {
	return fmt.Sprintf("messages=%d valid=%d duplicates=%d invalid=%d batches=%d claims=%d lost=%d twice=%d mismatches=%d",
		v.Messages, v.Valid, v.Duplicates, v.Invalid, v.Batches, v.Claims, v.Lost, v.Twice, v.mismatches())
}

type position struct {
	Partition int32
	Offset    int64
}

type verifyOptions struct {
	// lost are the ranges reported lost to retention.
	lost []lostRange
	// backwardMoves allows an owner to move its offset back (a topic
	// recreated: consumption restarts at the new log's start).
	backwardMoves bool
}

// verify compares the tables with the projection computed independently
// from every produced message (decoded with model.Decode, deduplicated
// by event_id, projected with model.Project per run): every distinct
// valid event stored once with its payload, every run equal to its
// projection field by field, every invalid message exactly one dead letter
// with its exact key, value, headers and reason, every next_offset at its
// partition's high watermark, and the offset audit clean. It fails the
// test on any mismatch, after the report line.
func (e *env) verify(name string, opts verifyOptions, extra string) verdict {
	t := e.t
	t.Helper()
	ctx := context.Background()
	sent := e.prod.messages()
	v := verdict{Messages: len(sent)}
	isLost := func(m sentMsg) bool {
		for _, r := range opts.lost {
			if r.Gen == m.Gen && r.Partition == m.Partition && m.Offset >= r.From && m.Offset < r.To {
				return true
			}
		}
		return false
	}

	// What the produced messages say.
	type copyOf struct {
		m  sentMsg
		ev model.Event
	}
	copies := map[string][]copyOf{}
	// The dead letters of the topic's latest incarnation are in
	// dead_letters; those of an earlier one, whose positions the new log
	// reuses, in dead_letters_superseded.
	gen := 0
	for _, m := range sent {
		gen = max(gen, m.Gen)
	}
	wantDead := map[position][]deadWant{}
	wantSuperseded := map[position][]deadWant{}
	for _, m := range sent {
		if isLost(m) {
			continue
		}
		ev, err := model.Decode(m.Value)
		if err != nil {
			var de *model.DecodeError
			require.True(t, errors.As(err, &de), "Decode returns *DecodeError")
			p := position{m.Partition, m.Offset}
			if m.Gen == gen {
				wantDead[p] = append(wantDead[p], deadWant{m, de.Reason})
			} else {
				wantSuperseded[p] = append(wantSuperseded[p], deadWant{m, de.Reason})
			}
			v.Invalid++
			continue
		}
		copies[ev.EventID] = append(copies[ev.EventID], copyOf{m, ev})
	}
	want := map[string]model.Event{}
	allowed := map[string]map[position]bool{}
	byRun := map[string][]model.Event{}
	for id, cs := range copies {
		v.Duplicates += len(cs) - 1
		first := cs[0]
		ok := map[position]bool{}
		same := true
		for _, c := range cs {
			same = same && bytes.Equal(c.m.Value, first.m.Value)
			ok[position{c.m.Partition, c.m.Offset}] = true
		}
		if !same {
			// The first applied wins: unambiguous only in one partition.
			for _, c := range cs {
				require.True(t, c.m.Partition == first.m.Partition && c.m.Gen == first.m.Gen,
					"test input: event %q repeated with other bytes on another partition", id)
				if c.m.Offset < first.m.Offset {
					first = c
				}
			}
			ok = map[position]bool{{first.m.Partition, first.m.Offset}: true}
		}
		want[id] = first.ev
		allowed[id] = ok
		byRun[first.ev.WorkflowRunID] = append(byRun[first.ev.WorkflowRunID], first.ev)
	}
	v.Valid = len(want)

	// workflow_events: each expected event once, from one of its positions,
	// with its payload.
	rows, err := e.st.Pool().Query(ctx, `SELECT event_id, partition, "offset" FROM workflow_events`)
	require.NoError(t, err)
	stored := map[string]bool{}
	for rows.Next() {
		var id string
		var p position
		require.NoError(t, rows.Scan(&id, &p.Partition, &p.Offset))
		stored[id] = true
		switch {
		case want[id].EventID == "":
			v.EventMismatches++
			v.problem("event %q stored but never produced valid", id)
		case !allowed[id][p]:
			v.EventMismatches++
			v.problem("event %q stored from %d/%d, not where the first copy applied came from", id, p.Partition, p.Offset)
		}
	}
	require.NoError(t, rows.Err())
	ids := make([]string, 0, len(want))
	payloads := make([]string, 0, len(want))
	for id, ev := range want {
		if !stored[id] {
			v.Lost++
			v.problem("event %q lost", id)
		}
		ids = append(ids, id)
		payloads = append(payloads, string(ev.Payload))
	}
	var differ int
	require.NoError(t, e.st.Pool().QueryRow(ctx, `
SELECT count(*) FROM workflow_events e JOIN unnest($1::text[], $2::text[]) AS u(id, p) ON e.event_id = u.id
WHERE e.payload IS DISTINCT FROM u.p::jsonb`, ids, payloads).Scan(&differ))
	if differ > 0 {
		v.EventMismatches += differ
		v.problem("%d events stored with another payload", differ)
	}

	// workflow_runs: each equal to the projection of its distinct events.
	runs, err := e.st.ListRuns(ctx)
	require.NoError(t, err)
	got := make(map[string]model.Run, len(runs))
	for _, r := range runs {
		got[r.WorkflowRunID] = r.Run
		if _, ok := byRun[r.WorkflowRunID]; !ok {
			v.RunMismatches++
			v.problem("run %q stored but has no expected event", r.WorkflowRunID)
		}
	}
	for id, evs := range byRun {
		w := model.Project(evs)
		g, ok := got[id]
		switch {
		case !ok:
			v.RunMismatches++
			v.problem("run %q missing", id)
		case !g.Equal(w):
			v.RunMismatches++
			v.Twice += int(max(0, g.EventCount-w.EventCount))
			v.problem("run %q:\n got  %+v\n want %+v", id, g, w)
		}
	}

	// workflow_steps and the user's projections of the binary (pc, pr):
	// each equal to what the distinct events give.
	var all []model.Event
	for _, evs := range byRun {
		all = append(all, evs...)
	}
	wantSteps := model.ProjectSteps(all)
	steps, err := e.st.ListSteps(ctx)
	require.NoError(t, err)
	gotSteps := make(map[string]model.Step, len(steps))
	stepKey := func(s model.Step) string { return fmt.Sprintf("%s\x00%d\x00%s", s.WorkflowRunID, s.Attempt, s.StepID) }
	for _, s := range steps {
		gotSteps[stepKey(s.Step)] = s.Step
	}
	for _, w := range wantSteps {
		if g, ok := gotSteps[stepKey(w)]; !ok || !g.Equal(w) {
			v.StepMismatches++
			v.problem("step %s/%d/%s:\n got  %+v\n want %+v", w.WorkflowRunID, w.Attempt, w.StepID, g, w)
		}
	}
	if len(steps) != len(wantSteps) {
		v.StepMismatches++
		v.problem("%d steps stored, %d expected", len(steps), len(wantSteps))
	}
	gotUser, err := projectiontest.Tables(ctx, e.st.Pool(), "pc", "pr")
	require.NoError(t, err)
	wantUser := projectiontest.Want(all)
	if !slices.Equal(gotUser, wantUser) {
		v.UserMismatches++
		v.problem("the user's projections pc and pr differ from the distinct events: %d lines stored, %d expected", len(gotUser), len(wantUser))
	}

	// The examples of projections in SQL, when the workers load them.
	if e.sqlExamples {
		gotSQL, err := sqlprojections.Tables(ctx, e.st.Pool())
		require.NoError(t, err)
		wantSQL := sqlprojections.Want(all)
		if !slices.Equal(gotSQL, wantSQL) {
			v.UserMismatches++
			v.problem("the examples of projections in SQL differ from the distinct events: %d lines stored, %d expected, first difference: %s",
				len(gotSQL), len(wantSQL), firstDifference(gotSQL, wantSQL))
		}
	}

	// dead_letters: each invalid message exactly once, exact bytes.
	e.compareDeadLetters(&v, "dead_letters", wantDead)
	e.compareDeadLetters(&v, "dead_letters_superseded", wantSuperseded)

	// consumer_offsets: every next_offset at its high watermark.
	next, _, err := e.storedOffsets()
	require.NoError(t, err)
	parts := e.broker.partitionInfos()
	require.NotNil(t, parts, "the broker must be up to verify")
	for p, pi := range parts {
		n, ok := next[p]
		if (!ok && pi.HighWatermark == pi.LogStartOffset) || n == pi.HighWatermark {
			continue
		}
		v.OffsetMismatches++
		v.problem("partition %d: next_offset %d (stored: %v), high watermark %d", p, n, ok, pi.HighWatermark)
	}

	e.checkAudit(&v, opts.backwardMoves)

	t.Logf("REPORT %-9s %s | %s", name, v, extra)
	shown := v.problems
	if len(shown) > 25 {
		shown = append(shown[:25:25], fmt.Sprintf("... and %d more", len(v.problems)-25))
	}
	require.Zero(t, v.mismatches(), "mismatches:\n%s", strings.Join(shown, "\n"))
	return v
}

// deadWant is an invalid message and the reason it must be stored with.
type deadWant struct {
	m      sentMsg
	reason string
}

// compareDeadLetters requires table to hold exactly one row per position
// of want, with the exact key, value, headers and reason of the message.
func (e *env) compareDeadLetters(v *verdict, table string, want map[position][]deadWant) {
	t := e.t
	rows, err := e.st.Pool().Query(context.Background(),
		`SELECT partition, "offset", key, value, headers::text, reason FROM `+table+` WHERE topic = $1`, topic)
	require.NoError(t, err)
	defer rows.Close()
	seen := map[position]bool{}
	for rows.Next() {
		var p position
		var key, value []byte
		var headers, reason string
		require.NoError(t, rows.Scan(&p.Partition, &p.Offset, &key, &value, &headers, &reason))
		if seen[p] {
			v.DeadLetterMismatches++
			v.problem("%s: two rows at %d/%d", table, p.Partition, p.Offset)
			continue
		}
		seen[p] = true
		cands, ok := want[p]
		if !ok {
			v.DeadLetterMismatches++
			v.problem("%s: a row at %d/%d (%s) for no invalid message", table, p.Partition, p.Offset, reason)
			continue
		}
		var why []string
		for _, c := range cands {
			why = append(why, deadLetterDiff(c.m, c.reason, key, value, headers, reason))
		}
		if !slicesContainsEmpty(why) {
			v.DeadLetterMismatches++
			v.problem("%s: the row at %d/%d differs from the message: %s", table, p.Partition, p.Offset, strings.Join(why, "; "))
		}
		if len(cands) > 1 {
			v.DeadLetterMismatches += len(cands) - 1
			v.problem("%s: %d invalid messages at %d/%d, one row", table, len(cands), p.Partition, p.Offset)
		}
	}
	require.NoError(t, rows.Err())
	for p, cands := range want {
		if !seen[p] {
			v.DeadLetterMismatches += len(cands)
			v.problem("%s: no row for the invalid message at %d/%d (%s)", table, p.Partition, p.Offset, cands[0].reason)
		}
	}
}

func slicesContainsEmpty(ss []string) bool {
	for _, s := range ss {
		if s == "" {
			return true
		}
	}
	return false
}

// deadLetterDiff says how a stored dead letter differs from the invalid
// message m, "" when it is exactly m.
func deadLetterDiff(m sentMsg, wantReason string, key, value []byte, headers, reason string) string {
	var diffs []string
	if !bytes.Equal(key, m.Key) || (key == nil) != (m.Key == nil) {
		diffs = append(diffs, fmt.Sprintf("key %q (nil %v), sent %q (nil %v)", key, key == nil, m.Key, m.Key == nil))
	}
	if !bytes.Equal(value, m.Value) || (value == nil) != (m.Value == nil) {
		diffs = append(diffs, fmt.Sprintf("value of %d bytes (nil %v), sent %d bytes (nil %v)", len(value), value == nil, len(m.Value), m.Value == nil))
	}
	var gotH, wantH any
	if json.Unmarshal([]byte(headers), &gotH) != nil || json.Unmarshal(model.HeadersJSON(m.Headers), &wantH) != nil ||
		!reflect.DeepEqual(gotH, wantH) {
		diffs = append(diffs, fmt.Sprintf("headers %s, sent %s", headers, model.HeadersJSON(m.Headers)))
	}
	if reason != wantReason {
		diffs = append(diffs, fmt.Sprintf("reason %s, want %s", reason, wantReason))
	}
	return strings.Join(diffs, ", ")
}

// checkAudit walks the committed changes of consumer_offsets in commit
// order, partition by partition: a change that bumps the lease epoch is a
// claim and names the epoch's owner; any other change that moves the
// offset must come from that owner, and forward.
func (e *env) checkAudit(v *verdict, backward bool) {
	t := e.t
	rows, err := e.st.Pool().Query(context.Background(), `
SELECT app, partition, old_next, new_next, old_epoch, new_epoch FROM faults_offset_audit WHERE topic = $1 ORDER BY id`, topic)
	require.NoError(t, err)
	defer rows.Close()
	owners := map[int32]map[int64]string{}
	for rows.Next() {
		var app string
		var p int32
		var oldNext, oldEpoch *int64
		var newNext, newEpoch int64
		require.NoError(t, rows.Scan(&app, &p, &oldNext, &newNext, &oldEpoch, &newEpoch))
		if owners[p] == nil {
			owners[p] = map[int64]string{}
		}
		if oldEpoch == nil || *oldEpoch != newEpoch {
			v.Claims++
			owners[p][newEpoch] = app
			continue
		}
		if *oldNext == newNext {
			continue
		}
		v.Batches++
		if owner := owners[p][newEpoch]; owner != app {
			v.AuditViolations++
			v.problem("partition %d: offset moved %d -> %d by %q in lease epoch %d, which %q holds", p, *oldNext, newNext, app, newEpoch, owner)
		}
		if newNext < *oldNext && !backward {
			v.AuditViolations++
			v.problem("partition %d: offset moved back %d -> %d by %q", p, *oldNext, newNext, app)
		}
	}
	require.NoError(t, rows.Err())
}

// incidents returns the consumer_incidents rows.
type incident struct {
	Partition        int32
	Kind             string
	Expected, Actual int64
	Detail           string
}

func (e *env) incidents() []incident {
	rows, err := e.st.Pool().Query(context.Background(),
		`SELECT partition, kind, expected_offset, actual_offset, detail FROM consumer_incidents WHERE topic = $1 ORDER BY id`, topic)
	require.NoError(e.t, err)
	defer rows.Close()
	var out []incident
	for rows.Next() {
		var in incident
		require.NoError(e.t, rows.Scan(&in.Partition, &in.Kind, &in.Expected, &in.Actual, &in.Detail))
		out = append(out, in)
	}
	require.NoError(e.t, rows.Err())
	sort.SliceStable(out, func(i, j int) bool { return out[i].Partition < out[j].Partition })
	return out
}

// expectedValid is the number of distinct valid events produced.
func (e *env) expectedValid() int {
	ids := map[string]bool{}
	for _, m := range e.prod.messages() {
		if ev, err := model.Decode(m.Value); err == nil {
			ids[ev.EventID] = true
		}
	}
	return len(ids)
}

// firstDifference shows the first line where two sorted renderings of
// tables differ.
func firstDifference(got, want []string) string {
	for i := 0; i < max(len(got), len(want)); i++ {
		switch {
		case i >= len(got):
			return "missing " + want[i]
		case i >= len(want):
			return "extra " + got[i]
		case got[i] != want[i]:
			return fmt.Sprintf("got %s, want %s", got[i], want[i])
		}
	}
	return "none"
}
