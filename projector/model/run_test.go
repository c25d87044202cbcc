package model

import (
	"database/sql"
	"math/big"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// t0 is the base timestamp of the table tests; events are placed at offsets
// from it.
var t0 = time.Date(2025, 3, 14, 15, 9, 26, 535897000, time.UTC)

func ts(d time.Duration) time.Time { return t0.Add(d) }

func nt(d time.Duration) sql.NullTime { return sql.NullTime{Time: ts(d), Valid: true} }

func ns(s string) sql.NullString { return sql.NullString{String: s, Valid: true} }

// ev builds an event of run "run-1" whose workflow_id and source name the
// event, so that tests see which event was the latest.
func ev(id, typ string, at time.Duration, attempt int32) Event {
	e := Event{
		EventID:       id,
		EventType:     typ,
		Source:        "src-" + id,
		WorkflowID:    "wf-" + id,
		WorkflowRunID: "run-1",
		Timestamp:     ts(at),
		Attempt:       attempt,
	}
	if IsStep(typ) {
		e.StepID = "step-" + id
	}
	return e
}

// withError sets a string data.error on an event.
func withError(e Event, msg string) Event {
	e.Error, e.HasError = msg, true
	return e
}

// projectChecked returns Project(events), after checking that it agrees
// with folding FromEvent over the events with Combine, in the given order,
// in reverse, and as a right fold; and that the input is not modified.
func projectChecked(t *testing.T, events []Event) Run {
	t.Helper()
	before := slices.Clone(events)
	want := Project(events)
	require.Equal(t, before, events, "Project modified its input")

	var left, rev, right Run
	for i, e := range events {
		left = Combine(left, FromEvent(e))
		rev = Combine(rev, FromEvent(events[len(events)-1-i]))
		right = Combine(FromEvent(events[len(events)-1-i]), right)
	}
	require.Equal(t, want, left, "left fold")
	require.Equal(t, want, rev, "reverse fold")
	require.Equal(t, want, right, "right fold")
	return want
}

type projectCase struct {
	name   string
	events []Event
	check  func(t *testing.T, r Run)
}

func runProjectCases(t *testing.T, cases []projectCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.check(t, projectChecked(t, tc.events))
		})
	}
}

func TestProjectAttempts(t *testing.T) {
	t.Parallel()
	runProjectCases(t, []projectCase{
		{
			name: "later attempt resets status, steps and started_at but not queued_at or event_count",
			events: []Event{
				ev("e1", TypeRunQueued, 0, 1),
				ev("e2", TypeRunStarted, 1*time.Second, 1),
				ev("e3", TypeStepSucceeded, 2*time.Second, 1),
				ev("e4", TypeStepFailed, 3*time.Second, 1),
				ev("e5", TypeStepSkipped, 3*time.Second, 1),
				withError(ev("e6", TypeRunFailed, 4*time.Second, 1), "boom"),
				ev("e7", TypeRunQueued, 5*time.Second, 2),
			},
			check: func(t *testing.T, r Run) {
				require.Equal(t, Run{
					WorkflowRunID: "run-1",
					WorkflowID:    "wf-e7",
					Source:        "src-e7",
					Attempt:       2,
					Status:        StatusQueued,
					QueuedAt:      nt(0),
					EventCount:    7,
					FirstEventAt:  ts(0),
					LastEventAt:   ts(5 * time.Second),
					LatestEventID: "e7",
				}, r)
			},
		},
		{
			name: "later attempt running: its own started_at and steps only",
			events: []Event{
				ev("e1", TypeRunStarted, 1*time.Second, 1),
				ev("e2", TypeStepSucceeded, 2*time.Second, 1),
				ev("e3", TypeRunSucceeded, 3*time.Second, 1),
				ev("e4", TypeRunStarted, 6*time.Second, 2),
				ev("e5", TypeStepSucceeded, 7*time.Second, 2),
				ev("e6", TypeStepSucceeded, 8*time.Second, 2),
				ev("e7", TypeRunStarted, 9*time.Second, 2), // a later run.started of A
			},
			check: func(t *testing.T, r Run) {
				require.Equal(t, int32(2), r.Attempt)
				require.Equal(t, StatusRunning, r.Status)
				require.Equal(t, nt(6*time.Second), r.StartedAt)
				require.Equal(t, int64(2), r.StepsSucceeded)
				require.False(t, r.FinishedAt.Valid)
				require.Empty(t, r.TerminalEventID)
				require.Equal(t, int64(7), r.EventCount)
			},
		},
		{
			name: "the attempt number decides, not the time: an older attempt's later events do not matter",
			events: []Event{
				ev("e1", TypeRunStarted, 1*time.Second, 2),
				ev("e2", TypeRunStarted, 5*time.Second, 1),
				ev("e3", TypeStepFailed, 6*time.Second, 1),
				ev("e4", TypeRunCancelled, 7*time.Second, 1),
			},
			check: func(t *testing.T, r Run) {
				require.Equal(t, int32(2), r.Attempt)
				require.Equal(t, StatusRunning, r.Status)
				require.Equal(t, nt(1*time.Second), r.StartedAt)
				require.Zero(t, r.StepsFailed)
				require.False(t, r.FinishedAt.Valid)
				// Global fields still see every attempt.
				require.Equal(t, "wf-e4", r.WorkflowID)
				require.Equal(t, ts(7*time.Second), r.LastEventAt)
				require.Equal(t, int64(4), r.EventCount)
			},
		},
		{
			name: "attempts need not be contiguous",
			events: []Event{
				ev("e1", TypeRunSucceeded, 1*time.Second, 1),
				ev("e2", TypeRunQueued, 2*time.Second, 1000),
			},
			check: func(t *testing.T, r Run) {
				require.Equal(t, int32(1000), r.Attempt)
				require.Equal(t, StatusQueued, r.Status)
				require.Equal(t, nt(2*time.Second), r.QueuedAt)
			},
		},
	})
}

func TestProjectQueuedAndStartedAt(t *testing.T) {
	t.Parallel()
	runProjectCases(t, []projectCase{
		{
			name: "queued_at from an older attempt",
			events: []Event{
				ev("e1", TypeRunQueued, 1*time.Second, 1),
				ev("e2", TypeRunStarted, 2*time.Second, 2),
			},
			check: func(t *testing.T, r Run) {
				require.Equal(t, nt(1*time.Second), r.QueuedAt)
				require.Equal(t, nt(2*time.Second), r.StartedAt)
			},
		},
		{
			name: "queued_at is the earliest run.queued of any attempt, even of a later attempt",
			events: []Event{
				ev("e1", TypeRunQueued, 5*time.Second, 1),
				ev("e2", TypeRunQueued, 3*time.Second, 3),
				ev("e3", TypeRunQueued, 4*time.Second, 2),
			},
			check: func(t *testing.T, r Run) {
				require.Equal(t, nt(3*time.Second), r.QueuedAt)
			},
		},
		{
			name: "no run.queued: queued_at null, status still queued",
			events: []Event{
				ev("e1", "run.paused", 0, 1),
			},
			check: func(t *testing.T, r Run) {
				require.False(t, r.QueuedAt.Valid)
				require.Equal(t, StatusQueued, r.Status)
			},
		},
		{
			name: "started_at only from attempt A: null when A has no run.started",
			events: []Event{
				ev("e1", TypeRunStarted, 1*time.Second, 1),
				ev("e2", TypeStepStarted, 2*time.Second, 2),
			},
			check: func(t *testing.T, r Run) {
				require.False(t, r.StartedAt.Valid)
				require.Equal(t, StatusRunning, r.Status) // step.* is a sign of running
			},
		},
		{
			name: "started_at is the earliest run.started of A, not an earlier one of an older attempt",
			events: []Event{
				ev("e1", TypeRunStarted, 1*time.Second, 1),
				ev("e2", TypeRunStarted, 9*time.Second, 2),
				ev("e3", TypeRunStarted, 4*time.Second, 2),
				ev("e4", TypeRunStarted, 6*time.Second, 2),
			},
			check: func(t *testing.T, r Run) {
				require.Equal(t, nt(4*time.Second), r.StartedAt)
			},
		},
	})
}

func TestProjectStatus(t *testing.T) {
	t.Parallel()
	cases := []projectCase{
		{
			name:   "only run.queued: queued",
			events: []Event{ev("e1", TypeRunQueued, 0, 1)},
			check: func(t *testing.T, r Run) {
				require.Equal(t, StatusQueued, r.Status)
			},
		},
		{
			name: "latest terminal decides among several terminals of A",
			events: []Event{
				ev("e1", TypeRunSucceeded, 1*time.Second, 1),
				withError(ev("e2", TypeRunFailed, 3*time.Second, 1), "late"),
				ev("e3", TypeRunCancelled, 2*time.Second, 1),
			},
			check: func(t *testing.T, r Run) {
				require.Equal(t, StatusFailed, r.Status)
				require.Equal(t, nt(3*time.Second), r.FinishedAt)
				require.Equal(t, "e2", r.TerminalEventID)
				require.Equal(t, ns("late"), r.Error)
			},
		},
		{
			name: "a terminal decides even when non-terminal events come after it",
			events: []Event{
				ev("e1", TypeRunCancelled, 1*time.Second, 1),
				ev("e2", TypeRunStarted, 2*time.Second, 1),
				ev("e3", TypeStepSucceeded, 3*time.Second, 1),
			},
			check: func(t *testing.T, r Run) {
				require.Equal(t, StatusCancelled, r.Status)
				require.Equal(t, nt(1*time.Second), r.FinishedAt)
				require.Equal(t, nt(2*time.Second), r.StartedAt)
				require.Equal(t, int64(1), r.StepsSucceeded)
				require.Equal(t, "e3", r.LatestEventID)
			},
		},
		{
			name: "terminals of older attempts are ignored",
			events: []Event{
				ev("e1", TypeRunSucceeded, 1*time.Second, 1),
				ev("e2", TypeRunFailed, 9*time.Second, 2),
				ev("e3", TypeRunCancelled, 5*time.Second, 3),
				ev("e4", TypeRunSucceeded, 8*time.Second, 2),
			},
			check: func(t *testing.T, r Run) {
				require.Equal(t, int32(3), r.Attempt)
				require.Equal(t, StatusCancelled, r.Status)
				require.Equal(t, nt(5*time.Second), r.FinishedAt)
				require.Equal(t, "e3", r.TerminalEventID)
			},
		},
		{
			name: "an older attempt's terminal does not finish a later attempt",
			events: []Event{
				ev("e1", TypeRunSucceeded, 1*time.Second, 1),
				ev("e2", TypeRunQueued, 2*time.Second, 2),
			},
			check: func(t *testing.T, r Run) {
				require.Equal(t, StatusQueued, r.Status)
				require.False(t, r.FinishedAt.Valid)
				require.Empty(t, r.TerminalEventID)
			},
		},
		{
			name: "step events of an older attempt are no sign of running",
			events: []Event{
				ev("e1", TypeStepStarted, 1*time.Second, 1),
				ev("e2", TypeRunStarted, 1*time.Second, 1),
				ev("e3", TypeRunQueued, 2*time.Second, 2),
			},
			check: func(t *testing.T, r Run) {
				require.Equal(t, StatusQueued, r.Status)
			},
		},
	}
	for _, typ := range []string{TypeRunStarted, TypeStepStarted, TypeStepSucceeded, TypeStepFailed, TypeStepSkipped} {
		cases = append(cases, projectCase{
			name:   typ + " alone: running",
			events: []Event{ev("e1", TypeRunQueued, 0, 1), ev("e2", typ, time.Second, 1)},
			check: func(t *testing.T, r Run) {
				require.Equal(t, StatusRunning, r.Status)
				require.False(t, r.FinishedAt.Valid)
			},
		})
	}
	for typ, status := range map[string]string{
		TypeRunSucceeded: StatusSucceeded,
		TypeRunFailed:    StatusFailed,
		TypeRunCancelled: StatusCancelled,
	} {
		cases = append(cases, projectCase{
			name:   typ + " decides " + status,
			events: []Event{ev("e1", TypeRunStarted, 0, 1), ev("e2", typ, 1500*time.Millisecond, 1)},
			check: func(t *testing.T, r Run) {
				require.Equal(t, status, r.Status)
				require.Equal(t, nt(1500*time.Millisecond), r.FinishedAt)
				require.Equal(t, "e2", r.TerminalEventID)
				d, ok := r.DurationMS()
				require.True(t, ok)
				require.Equal(t, int64(1500), d)
			},
		})
	}
	runProjectCases(t, cases)
}

func TestProjectTiesByEventID(t *testing.T) {
	t.Parallel()
	latestOf := func(ids ...string) []Event {
		es := make([]Event, len(ids))
		for i, id := range ids {
			es[i] = ev(id, TypeRunQueued, time.Second, 1)
		}
		return es
	}
	cases := []struct {
		name   string
		ids    []string
		latest string
	}{
		{"bytewise: upper case sorts before lower case", []string{"a", "B"}, "a"},
		{"bytewise: a prefix sorts first", []string{"ab", "a"}, "ab"},
		{"bytewise: digits before letters", []string{"9", "A"}, "A"},
		{"multi-byte UTF-8 after ASCII", []string{"é", "z", "~"}, "é"},
		{"multi-byte UTF-8 among themselves", []string{"é", "日", "Ω"}, "日"},
		// U+1F600 is F0 9F 98 80 and U+FFFD is EF BF BD: bytewise (and by code
		// point) the emoji is greater; in UTF-16 order (a surrogate pair,
		// D83D...) it would be smaller.
		{"bytewise, not UTF-16 order", []string{"😀", "\uFFFD"}, "😀"},
		// Not normalized: "e" + combining acute (65 CC 81) vs "é" (C3 A9).
		{"no Unicode normalization", []string{"é", "e\u0301"}, "é"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := projectChecked(t, latestOf(tc.ids...))
			require.Equal(t, tc.latest, r.LatestEventID)
			require.Equal(t, "wf-"+tc.latest, r.WorkflowID)
			require.Equal(t, "src-"+tc.latest, r.Source)
		})
	}

	runProjectCases(t, []projectCase{
		{
			name: "the later timestamp wins over a greater event_id",
			events: []Event{
				ev("zzz", TypeRunQueued, time.Second, 1),
				ev("AAA", TypeRunQueued, time.Second+time.Microsecond, 1),
			},
			check: func(t *testing.T, r Run) {
				require.Equal(t, "AAA", r.LatestEventID)
				require.Equal(t, "wf-AAA", r.WorkflowID)
			},
		},
		{
			name: "terminal tie: the bytewise greater event_id decides",
			events: []Event{
				ev("B", TypeRunSucceeded, time.Second, 1),
				withError(ev("a", TypeRunFailed, time.Second, 1), "tie"),
				ev("C", TypeRunCancelled, time.Second, 1),
			},
			check: func(t *testing.T, r Run) {
				require.Equal(t, StatusFailed, r.Status)
				require.Equal(t, "a", r.TerminalEventID)
				require.Equal(t, ns("tie"), r.Error)
			},
		},
		{
			name: "terminal tie with multi-byte ids",
			events: []Event{
				withError(ev("日", TypeRunFailed, time.Second, 1), "x"),
				ev("é", TypeRunSucceeded, time.Second, 1),
				ev("😀", TypeRunCancelled, time.Second, 1),
			},
			check: func(t *testing.T, r Run) {
				require.Equal(t, StatusCancelled, r.Status)
				require.Equal(t, "😀", r.TerminalEventID)
				require.False(t, r.Error.Valid)
			},
		},
		{
			name: "tie on the latest between a terminal and an unknown type",
			events: []Event{
				ev("a", "run.paused", time.Second, 1),
				ev("B", TypeRunSucceeded, time.Second, 1),
			},
			check: func(t *testing.T, r Run) {
				require.Equal(t, "a", r.LatestEventID)
				require.Equal(t, "wf-a", r.WorkflowID)
				require.Equal(t, StatusSucceeded, r.Status)
				require.Equal(t, "B", r.TerminalEventID)
			},
		},
	})
}

func TestProjectUnknownTypes(t *testing.T) {
	t.Parallel()
	unknown := []string{"run.paused", "Run.Failed", "run.succeeded ", "step.retried", "STEP.STARTED", "custom"}
	var cases []projectCase
	for _, typ := range unknown {
		cases = append(cases, projectCase{
			name: typ + ": counted, can be the latest, never terminal nor running",
			events: []Event{
				ev("e1", TypeRunQueued, 0, 1),
				withError(ev("e2", typ, time.Second, 1), "not an error"),
			},
			check: func(t *testing.T, r Run) {
				require.Equal(t, Run{
					WorkflowRunID: "run-1",
					WorkflowID:    "wf-e2",
					Source:        "src-e2",
					Attempt:       1,
					Status:        StatusQueued,
					QueuedAt:      nt(0),
					EventCount:    2,
					FirstEventAt:  ts(0),
					LastEventAt:   ts(time.Second),
					LatestEventID: "e2",
				}, r)
			},
		})
	}
	cases = append(cases,
		projectCase{
			name: "an unknown type of a later attempt sets A and resets the status",
			events: []Event{
				ev("e1", TypeRunStarted, 0, 1),
				ev("e2", TypeRunSucceeded, time.Second, 1),
				ev("e3", "run.retry_requested", 2*time.Second, 2),
			},
			check: func(t *testing.T, r Run) {
				require.Equal(t, int32(2), r.Attempt)
				require.Equal(t, StatusQueued, r.Status)
				require.False(t, r.StartedAt.Valid)
				require.False(t, r.FinishedAt.Valid)
				require.Equal(t, "wf-e3", r.WorkflowID)
			},
		},
		projectCase{
			name: "unknown types do not hide a running attempt nor a terminal",
			events: []Event{
				ev("e1", TypeStepStarted, 0, 1),
				ev("e2", TypeRunFailed, time.Second, 1),
				ev("e3", "run.resumed", 2*time.Second, 1),
			},
			check: func(t *testing.T, r Run) {
				require.Equal(t, StatusFailed, r.Status)
				require.Equal(t, "e2", r.TerminalEventID)
				require.Equal(t, "e3", r.LatestEventID)
			},
		},
		projectCase{
			name: "unknown step-like types are not counted as steps",
			events: []Event{
				ev("e1", "step.retried", 0, 1),
				ev("e2", "step.succeeded.v2", 0, 1),
			},
			check: func(t *testing.T, r Run) {
				require.Zero(t, r.StepsSucceeded+r.StepsFailed+r.StepsSkipped)
				require.Equal(t, StatusQueued, r.Status)
			},
		},
	)
	runProjectCases(t, cases)
}

func TestProjectError(t *testing.T) {
	t.Parallel()
	runProjectCases(t, []projectCase{
		{
			name:   "string data.error on the deciding run.failed",
			events: []Event{withError(ev("e1", TypeRunFailed, 0, 1), "exit code 1")},
			check: func(t *testing.T, r Run) {
				require.Equal(t, StatusFailed, r.Status)
				require.Equal(t, ns("exit code 1"), r.Error)
			},
		},
		{
			name:   "the empty string is a string",
			events: []Event{withError(ev("e1", TypeRunFailed, 0, 1), "")},
			check: func(t *testing.T, r Run) {
				require.Equal(t, ns(""), r.Error)
			},
		},
		{
			// The decoder leaves HasError false when data.error is a number,
			// an object, null or absent.
			name:   "no string data.error (number, absent): null",
			events: []Event{ev("e1", TypeRunFailed, 0, 1)},
			check: func(t *testing.T, r Run) {
				require.Equal(t, StatusFailed, r.Status)
				require.False(t, r.Error.Valid)
			},
		},
		{
			name: "error of a run.failed that is not deciding: null",
			events: []Event{
				withError(ev("e1", TypeRunFailed, 1*time.Second, 1), "first try"),
				ev("e2", TypeRunSucceeded, 2*time.Second, 1),
			},
			check: func(t *testing.T, r Run) {
				require.Equal(t, StatusSucceeded, r.Status)
				require.False(t, r.Error.Valid)
			},
		},
		{
			name: "deciding run.failed without error, an earlier one with: null",
			events: []Event{
				withError(ev("e1", TypeRunFailed, 1*time.Second, 1), "first"),
				ev("e2", TypeRunFailed, 2*time.Second, 1),
			},
			check: func(t *testing.T, r Run) {
				require.Equal(t, "e2", r.TerminalEventID)
				require.False(t, r.Error.Valid)
			},
		},
		{
			name: "error of an older attempt's run.failed: null",
			events: []Event{
				withError(ev("e1", TypeRunFailed, 1*time.Second, 1), "attempt 1"),
				ev("e2", TypeRunStarted, 2*time.Second, 2),
			},
			check: func(t *testing.T, r Run) {
				require.Equal(t, StatusRunning, r.Status)
				require.False(t, r.Error.Valid)
			},
		},
		{
			name: "error field on other terminal types is ignored",
			events: []Event{
				withError(ev("e1", TypeRunCancelled, 1*time.Second, 1), "cancelled by user"),
			},
			check: func(t *testing.T, r Run) {
				require.Equal(t, StatusCancelled, r.Status)
				require.False(t, r.Error.Valid)
			},
		},
		{
			name: "the later attempt's failure error",
			events: []Event{
				withError(ev("e1", TypeRunFailed, 1*time.Second, 1), "attempt 1"),
				withError(ev("e2", TypeRunFailed, 2*time.Second, 2), "attempt 2"),
			},
			check: func(t *testing.T, r Run) {
				require.Equal(t, ns("attempt 2"), r.Error)
			},
		},
	})
}

func TestProjectCountsAndBounds(t *testing.T) {
	t.Parallel()
	runProjectCases(t, []projectCase{
		{
			name: "event_count and first/last over all types and attempts",
			events: []Event{
				ev("e1", TypeStepSucceeded, 5*time.Second, 1),
				ev("e2", "custom", -3*time.Second, 1),
				ev("e3", TypeStepSucceeded, 1*time.Second, 2),
				ev("e4", TypeStepSkipped, 2*time.Second, 2),
				ev("e5", TypeStepSkipped, 2*time.Second, 2),
				ev("e6", TypeStepFailed, 4*time.Second, 2),
				ev("e7", TypeStepStarted, 4*time.Second, 2),
			},
			check: func(t *testing.T, r Run) {
				require.Equal(t, int64(7), r.EventCount)
				require.Equal(t, ts(-3*time.Second), r.FirstEventAt)
				require.Equal(t, ts(5*time.Second), r.LastEventAt)
				require.Equal(t, "e1", r.LatestEventID) // of the older attempt
				require.Equal(t, int64(1), r.StepsSucceeded)
				require.Equal(t, int64(1), r.StepsFailed)
				require.Equal(t, int64(2), r.StepsSkipped)
				require.Equal(t, StatusRunning, r.Status)
			},
		},
	})
}

func TestProjectDedupAndEmpty(t *testing.T) {
	t.Parallel()

	t.Run("empty input is the zero Run", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, Run{}, Project(nil))
		require.Equal(t, Run{}, Project([]Event{}))
	})

	t.Run("a repeated event_id is counted once", func(t *testing.T) {
		t.Parallel()
		e := ev("e1", TypeStepSucceeded, 0, 1)
		r := Project([]Event{e, e, e})
		require.Equal(t, FromEvent(e), r)
		require.Equal(t, int64(1), r.EventCount)
		require.Equal(t, int64(1), r.StepsSucceeded)
	})

	t.Run("the first of a repeated event_id is kept", func(t *testing.T) {
		t.Parallel()
		first := ev("e1", TypeRunQueued, 0, 1)
		second := ev("e1", TypeRunFailed, time.Hour, 7)
		second.WorkflowID = "other"
		require.Equal(t, FromEvent(first), Project([]Event{first, second}))
		require.Equal(t, FromEvent(second), Project([]Event{second, first}))
	})
}

func TestFromEventIsProjectOfOne(t *testing.T) {
	t.Parallel()
	types := []string{
		TypeRunQueued, TypeRunStarted, TypeRunSucceeded, TypeRunFailed, TypeRunCancelled,
		TypeStepStarted, TypeStepSucceeded, TypeStepFailed, TypeStepSkipped, "custom",
	}
	for _, typ := range types {
		for _, e := range []Event{ev("e1", typ, 0, 3), withError(ev("e1", typ, 0, 1), "boom")} {
			require.Equal(t, Project([]Event{e}), FromEvent(e), "type %q", typ)
		}
	}
}

func TestRunDurationMS(t *testing.T) {
	t.Parallel()
	const us = time.Microsecond
	ms := func(d time.Duration) (int64, bool) {
		return Run{StartedAt: nt(0), FinishedAt: nt(d)}.DurationMS()
	}
	cases := []struct {
		name string
		d    time.Duration
		want int64
	}{
		{"zero", 0, 0},
		{"whole milliseconds", 1500 * time.Millisecond, 1500},
		{"sub-millisecond rounds down to 0", 999 * us, 0},
		{"1 µs", us, 0},
		{"1.999 ms rounds down", 1999 * us, 1},
		{"exactly 1 ms", time.Millisecond, 1},
		{"negative 1 µs floors to -1", -us, -1},
		{"negative 1 ms", -time.Millisecond, -1},
		{"negative 1.001 ms floors to -2", -1001 * us, -2},
		{"negative 999 µs floors to -1", -999 * us, -1},
		{"a day and a bit", 24*time.Hour + 123456*us, 86400123},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, ok := ms(tc.d)
			require.True(t, ok)
			require.Equal(t, tc.want, got)
		})
	}

	t.Run("null unless both are set", func(t *testing.T) {
		t.Parallel()
		for _, r := range []Run{{}, {StartedAt: nt(0)}, {FinishedAt: nt(0)}} {
			d, ok := r.DurationMS()
			require.False(t, ok)
			require.Zero(t, d)
		}
	})

	t.Run("beyond time.Duration's range (292 years), exact", func(t *testing.T) {
		t.Parallel()
		s := time.Date(1, 1, 1, 0, 0, 0, 1000, time.UTC)
		f := time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC)
		exact := func(from, to time.Time) int64 {
			// floor((to - from) / 1 ms) with big integers.
			n := new(big.Int).Sub(
				new(big.Int).Add(new(big.Int).Mul(big.NewInt(to.Unix()), big.NewInt(1e9)), big.NewInt(int64(to.Nanosecond()))),
				new(big.Int).Add(new(big.Int).Mul(big.NewInt(from.Unix()), big.NewInt(1e9)), big.NewInt(int64(from.Nanosecond()))),
			)
			q := new(big.Int)
			q.Div(n, big.NewInt(1e6)) // Euclidean division: floor for a positive divisor
			return q.Int64()
		}
		for _, pair := range [][2]time.Time{{s, f}, {f, s}} {
			r := Run{StartedAt: sql.NullTime{Time: pair[0], Valid: true}, FinishedAt: sql.NullTime{Time: pair[1], Valid: true}}
			d, ok := r.DurationMS()
			require.True(t, ok)
			require.Equal(t, exact(pair[0], pair[1]), d)
		}
	})

	runProjectCases(t, []projectCase{
		{
			name: "via Project: finished before started gives a negative duration",
			events: []Event{
				ev("e1", TypeRunStarted, 2*time.Second, 1),
				ev("e2", TypeRunSucceeded, 500*time.Millisecond+500*us, 1),
			},
			check: func(t *testing.T, r Run) {
				d, ok := r.DurationMS()
				require.True(t, ok)
				require.Equal(t, int64(-1500), d) // -1499.5 ms floors to -1500
			},
		},
		{
			name: "via Project: running, no duration",
			events: []Event{
				ev("e1", TypeRunStarted, 0, 1),
			},
			check: func(t *testing.T, r Run) {
				_, ok := r.DurationMS()
				require.False(t, ok)
			},
		},
		{
			name: "via Project: finished without run.started, no duration",
			events: []Event{
				ev("e1", TypeRunSucceeded, 0, 1),
			},
			check: func(t *testing.T, r Run) {
				_, ok := r.DurationMS()
				require.False(t, ok)
			},
		},
	})
}

func TestCombine(t *testing.T) {
	t.Parallel()

	a := Project([]Event{
		ev("a1", TypeRunQueued, 0, 1),
		ev("a2", TypeRunStarted, time.Second, 1),
		ev("a3", TypeStepSucceeded, 2*time.Second, 1),
	})
	b := Project([]Event{
		ev("b1", TypeStepFailed, 3*time.Second, 1),
		withError(ev("b2", TypeRunFailed, 4*time.Second, 1), "boom"),
	})

	t.Run("zero Run is the identity", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, a, Combine(Run{}, a))
		require.Equal(t, a, Combine(a, Run{}))
		require.Equal(t, Run{}, Combine(Run{}, Run{}))
	})

	t.Run("commutative on an example", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, Combine(a, b), Combine(b, a))
		require.Equal(t, Project([]Event{
			ev("a1", TypeRunQueued, 0, 1),
			ev("a2", TypeRunStarted, time.Second, 1),
			ev("a3", TypeStepSucceeded, 2*time.Second, 1),
			ev("b1", TypeStepFailed, 3*time.Second, 1),
			withError(ev("b2", TypeRunFailed, 4*time.Second, 1), "boom"),
		}), Combine(a, b))
	})

	t.Run("larger attempt takes every per-attempt field, even the nulls", func(t *testing.T) {
		t.Parallel()
		later := FromEvent(ev("c1", "custom", -time.Second, 2))
		got := Combine(Combine(a, b), later)
		require.Equal(t, Run{
			WorkflowRunID: "run-1",
			WorkflowID:    "wf-b2",
			Source:        "src-b2",
			Attempt:       2,
			Status:        StatusQueued,
			QueuedAt:      nt(0),
			EventCount:    6,
			FirstEventAt:  ts(-time.Second),
			LastEventAt:   ts(4 * time.Second),
			LatestEventID: "b2",
		}, got)
	})

	t.Run("equal attempts: running beats queued without a terminal", func(t *testing.T) {
		t.Parallel()
		q := FromEvent(ev("q", TypeRunQueued, 5*time.Second, 1))
		r := FromEvent(ev("r", TypeStepSkipped, 0, 1))
		require.Equal(t, StatusRunning, Combine(q, r).Status)
		require.Equal(t, StatusRunning, Combine(r, q).Status)
		require.Equal(t, StatusQueued, Combine(q, FromEvent(ev("u", "custom", 0, 1))).Status)
	})
}

// TestRunEqual: Equal compares times as instants (a run read from
// PostgreSQL and one projected from events hold the same instants in other
// locations), and sees every field: changing any one makes runs differ.
func TestRunEqual(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	base := Run{WorkflowRunID: "r", WorkflowID: "w", Source: "s", Attempt: 2, Status: StatusFailed,
		QueuedAt: sql.NullTime{Time: at, Valid: true}, StartedAt: sql.NullTime{Time: at, Valid: true},
		FinishedAt: sql.NullTime{Time: at.Add(time.Second), Valid: true}, Error: sql.NullString{String: "boom", Valid: true},
		StepsSucceeded: 1, StepsFailed: 2, StepsSkipped: 3, EventCount: 4, FirstEventAt: at, LastEventAt: at.Add(time.Second),
		LatestEventID: "e2", TerminalEventID: "e2"}

	elsewhere := base
	loc := time.FixedZone("UTC+1", 3600)
	elsewhere.QueuedAt.Time = at.In(loc)
	elsewhere.FirstEventAt = at.In(loc)
	require.True(t, base.Equal(elsewhere), "the same instants in another location")
	require.NotEqual(t, base, elsewhere, "(which == and reflect.DeepEqual tell apart)")

	unset := base
	unset.StartedAt = sql.NullTime{Time: at}
	other := unset
	other.StartedAt.Time = at.Add(time.Hour)
	require.True(t, unset.Equal(other), "a null time is null whatever its Time")
	other.StartedAt.Valid = true
	require.False(t, unset.Equal(other))

	requireEqualSeesEveryField(t, base, Run.Equal)
}

// TestStepEqual: Step.Equal compares every field, times as instants.
func TestStepEqual(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	base := Step{WorkflowRunID: "r", Attempt: 2, StepID: "build", WorkflowID: "w", Source: "s", Status: StatusFailed,
		StartedAt: sql.NullTime{Time: at, Valid: true}, FinishedAt: sql.NullTime{Time: at.Add(time.Second), Valid: true},
		Error: sql.NullString{String: "boom", Valid: true}, EventCount: 4, FirstEventAt: at, LastEventAt: at.Add(time.Second),
		LatestEventID: "e2", TerminalEventID: "e2"}
	elsewhere := base
	elsewhere.StartedAt.Time = at.In(time.FixedZone("UTC+1", 3600))
	require.True(t, base.Equal(elsewhere), "the same instants in another location")
	requireEqualSeesEveryField(t, base, Step.Equal)
}

// requireEqualSeesEveryField changes each field of base in turn and
// requires equal to tell the result from base, so that a field added to
// the struct but not to its Equal fails.
func requireEqualSeesEveryField[T any](t *testing.T, base T, equal func(a, b T) bool) {
	t.Helper()
	typ := reflect.TypeFor[T]()
	for i := range typ.NumField() {
		changed := base
		switch f := reflect.ValueOf(&changed).Elem().Field(i).Addr().Interface().(type) {
		case *string:
			*f += "x"
		case *int32:
			*f++
		case *int64:
			*f++
		case *time.Time:
			*f = f.Add(time.Microsecond)
		case *sql.NullTime:
			f.Time = f.Time.Add(time.Microsecond)
		case *sql.NullString:
			f.String += "x"
		default:
			t.Fatalf("field %s: this test does not know how to change a %T", typ.Field(i).Name, f)
		}
		require.False(t, equal(base, changed), "Equal ignores field %s", typ.Field(i).Name)
	}
}
