package model

import (
	"database/sql"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// sev builds an event of run "run-1" for step stepID (ev's workflow_id and
// source name the event).
func sev(id, typ string, at time.Duration, attempt int32, stepID string) Event {
	e := ev(id, typ, at, attempt)
	e.StepID = stepID
	return e
}

// projectStepsChecked returns ProjectSteps(events), after checking that it
// agrees with FoldSteps and with folding StepFromEvent over the events
// with CombineSteps in the given order, in reverse and as a right fold;
// and that the input is not modified.
func projectStepsChecked(t *testing.T, events []Event) []Step {
	t.Helper()
	before := slices.Clone(events)
	want := ProjectSteps(events)
	require.Equal(t, before, events, "ProjectSteps modified its input")

	var left, rev, right []Step
	for i := range events {
		left = addStepEvent(left, events[i])
		rev = addStepEvent(rev, events[len(events)-1-i])
		if s, ok := StepFromEvent(events[len(events)-1-i]); ok {
			right = combineStepSets([]Step{s}, right)
		}
	}
	require.Equal(t, want, left, "left fold")
	require.Equal(t, want, rev, "reverse fold")
	require.Equal(t, want, right, "right fold")
	require.Equal(t, want, FoldSteps(stepRecords(events)), "FoldSteps")
	return want
}

type stepsCase struct {
	name   string
	events []Event
	check  func(t *testing.T, steps []Step)
}

// oneStep is a check for cases of a single step.
func oneStep(check func(t *testing.T, s Step)) func(t *testing.T, steps []Step) {
	return func(t *testing.T, steps []Step) {
		t.Helper()
		require.Len(t, steps, 1)
		check(t, steps[0])
	}
}

func runStepsCases(t *testing.T, cases []stepsCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.check(t, projectStepsChecked(t, tc.events))
		})
	}
}

func TestProjectStepsKey(t *testing.T) {
	t.Parallel()
	other := sev("o1", TypeStepStarted, 0, 1, "build")
	other.WorkflowRunID = "run-0"
	runStepsCases(t, []stepsCase{
		{
			name: "one row per (workflow_run_id, attempt, step_id), sorted by it",
			events: []Event{
				sev("e1", TypeStepStarted, 0, 2, "build"),
				sev("e2", TypeStepStarted, 0, 1, "test"),
				sev("e3", TypeStepSucceeded, time.Second, 1, "build"),
				sev("e4", TypeStepStarted, 0, 1, "Build"), // bytewise before "build"
				other,
			},
			check: func(t *testing.T, steps []Step) {
				var keys []stepKey
				for _, s := range steps {
					keys = append(keys, s.key())
				}
				require.Equal(t, []stepKey{
					{"run-0", 1, "build"},
					{"run-1", 1, "Build"},
					{"run-1", 1, "build"},
					{"run-1", 1, "test"},
					{"run-1", 2, "build"},
				}, keys)
			},
		},
		{
			name: "a whole row for an attempt's step",
			events: []Event{
				sev("e1", TypeStepStarted, time.Second, 3, "build"),
				withError(sev("e2", TypeStepFailed, 2500*time.Millisecond, 3, "build"), "boom"),
			},
			check: oneStep(func(t *testing.T, s Step) {
				require.Equal(t, Step{
					WorkflowRunID:   "run-1",
					Attempt:         3,
					StepID:          "build",
					WorkflowID:      "wf-e2",
					Source:          "src-e2",
					Status:          StatusFailed,
					StartedAt:       nt(time.Second),
					FinishedAt:      nt(2500 * time.Millisecond),
					Error:           ns("boom"),
					EventCount:      2,
					FirstEventAt:    ts(time.Second),
					LastEventAt:     ts(2500 * time.Millisecond),
					LatestEventID:   "e2",
					TerminalEventID: "e2",
				}, s)
				d, ok := s.DurationMS()
				require.True(t, ok)
				require.Equal(t, int64(1500), d)
			}),
		},
		{
			name: "run events and unknown step-like types make no row and do not count",
			events: []Event{
				ev("e1", TypeRunQueued, 0, 1),
				ev("e2", TypeRunStarted, 0, 1),
				ev("e3", TypeRunFailed, 9*time.Second, 1),
				sev("e4", "step.retried", 9*time.Second, 1, "build"),
				sev("e5", "Step.Failed", 9*time.Second, 1, "build"),
			},
			check: func(t *testing.T, steps []Step) {
				require.Empty(t, steps)
			},
		},
		{
			name: "only the step's own events count, not the run's",
			events: []Event{
				ev("e0", TypeRunQueued, -time.Second, 1),
				sev("e1", TypeStepStarted, 0, 1, "build"),
				ev("e2", TypeRunSucceeded, 9*time.Second, 1),
				sev("e3", "step.retried", 10*time.Second, 1, "build"),
			},
			check: oneStep(func(t *testing.T, s Step) {
				require.Equal(t, int64(1), s.EventCount)
				require.Equal(t, ts(0), s.FirstEventAt)
				require.Equal(t, ts(0), s.LastEventAt)
				require.Equal(t, "wf-e1", s.WorkflowID)
				require.Equal(t, StatusRunning, s.Status)
			}),
		},
		{
			name: "attempts are separate rows: a later attempt resets nothing of an older one",
			events: []Event{
				sev("e1", TypeStepStarted, 0, 1, "build"),
				sev("e2", TypeStepFailed, time.Second, 1, "build"),
				sev("e3", TypeStepStarted, 5*time.Second, 2, "build"),
			},
			check: func(t *testing.T, steps []Step) {
				require.Len(t, steps, 2)
				require.Equal(t, StatusFailed, steps[0].Status)
				require.Equal(t, int64(2), steps[0].EventCount)
				require.Equal(t, StatusRunning, steps[1].Status)
				require.Equal(t, nt(5*time.Second), steps[1].StartedAt)
				require.Equal(t, int64(1), steps[1].EventCount)
			},
		},
	})
}

func TestProjectStepsStatus(t *testing.T) {
	t.Parallel()
	cases := []stepsCase{
		{
			name:   "only step.started: running",
			events: []Event{sev("e1", TypeStepStarted, 0, 1, "s")},
			check: oneStep(func(t *testing.T, s Step) {
				require.Equal(t, StatusRunning, s.Status)
				require.False(t, s.FinishedAt.Valid)
				require.Empty(t, s.TerminalEventID)
			}),
		},
		{
			name: "the latest terminal decides among several",
			events: []Event{
				sev("e1", TypeStepSucceeded, 1*time.Second, 1, "s"),
				withError(sev("e2", TypeStepFailed, 3*time.Second, 1, "s"), "late"),
				sev("e3", TypeStepSkipped, 2*time.Second, 1, "s"),
			},
			check: oneStep(func(t *testing.T, s Step) {
				require.Equal(t, StatusFailed, s.Status)
				require.Equal(t, nt(3*time.Second), s.FinishedAt)
				require.Equal(t, "e2", s.TerminalEventID)
				require.Equal(t, ns("late"), s.Error)
			}),
		},
		{
			name: "a terminal decides even when a step.started comes after it",
			events: []Event{
				sev("e1", TypeStepSkipped, 1*time.Second, 1, "s"),
				sev("e2", TypeStepStarted, 2*time.Second, 1, "s"),
			},
			check: oneStep(func(t *testing.T, s Step) {
				require.Equal(t, StatusSkipped, s.Status)
				require.Equal(t, nt(1*time.Second), s.FinishedAt)
				require.Equal(t, nt(2*time.Second), s.StartedAt)
				require.Equal(t, "e2", s.LatestEventID)
			}),
		},
		{
			name: "terminal tie: the bytewise greater event_id decides",
			events: []Event{
				sev("B", TypeStepSucceeded, time.Second, 1, "s"),
				withError(sev("a", TypeStepFailed, time.Second, 1, "s"), "tie"),
				sev("C", TypeStepSkipped, time.Second, 1, "s"),
			},
			check: oneStep(func(t *testing.T, s Step) {
				require.Equal(t, StatusFailed, s.Status)
				require.Equal(t, "a", s.TerminalEventID)
				require.Equal(t, ns("tie"), s.Error)
			}),
		},
		{
			name: "terminal tie with multi-byte ids: bytewise, not UTF-16 order",
			events: []Event{
				withError(sev("\uFFFD", TypeStepFailed, time.Second, 1, "s"), "x"),
				sev("😀", TypeStepSucceeded, time.Second, 1, "s"),
			},
			check: oneStep(func(t *testing.T, s Step) {
				require.Equal(t, StatusSucceeded, s.Status)
				require.Equal(t, "😀", s.TerminalEventID)
				require.False(t, s.Error.Valid)
			}),
		},
		{
			name: "the later timestamp wins over a greater event_id",
			events: []Event{
				sev("zzz", TypeStepSucceeded, time.Second, 1, "s"),
				sev("AAA", TypeStepSkipped, time.Second+time.Microsecond, 1, "s"),
			},
			check: oneStep(func(t *testing.T, s Step) {
				require.Equal(t, StatusSkipped, s.Status)
				require.Equal(t, "AAA", s.TerminalEventID)
			}),
		},
	}
	for typ, status := range map[string]string{
		TypeStepSucceeded: StatusSucceeded,
		TypeStepFailed:    StatusFailed,
		TypeStepSkipped:   StatusSkipped,
	} {
		cases = append(cases, stepsCase{
			name:   typ + " decides " + status,
			events: []Event{sev("e1", TypeStepStarted, 0, 1, "s"), sev("e2", typ, 1500*time.Millisecond, 1, "s")},
			check: oneStep(func(t *testing.T, s Step) {
				require.Equal(t, status, s.Status)
				require.Equal(t, nt(1500*time.Millisecond), s.FinishedAt)
				require.Equal(t, "e2", s.TerminalEventID)
			}),
		})
	}
	runStepsCases(t, cases)
}

func TestProjectStepsStartedFinishedDuration(t *testing.T) {
	t.Parallel()
	const us = time.Microsecond
	runStepsCases(t, []stepsCase{
		{
			name: "started_at is the earliest step.started",
			events: []Event{
				sev("e1", TypeStepStarted, 9*time.Second, 1, "s"),
				sev("e2", TypeStepStarted, 4*time.Second, 1, "s"),
				sev("e3", TypeStepStarted, 6*time.Second, 1, "s"),
			},
			check: oneStep(func(t *testing.T, s Step) {
				require.Equal(t, nt(4*time.Second), s.StartedAt)
				_, ok := s.DurationMS()
				require.False(t, ok, "running: no duration")
			}),
		},
		{
			name: "no step.started: started_at null, no duration",
			events: []Event{
				sev("e1", TypeStepSucceeded, time.Second, 1, "s"),
			},
			check: oneStep(func(t *testing.T, s Step) {
				require.False(t, s.StartedAt.Valid)
				require.Equal(t, nt(time.Second), s.FinishedAt)
				_, ok := s.DurationMS()
				require.False(t, ok)
			}),
		},
		{
			name: "finished_at is the deciding terminal's, not the earliest terminal's",
			events: []Event{
				sev("e1", TypeStepStarted, 0, 1, "s"),
				sev("e2", TypeStepFailed, time.Second, 1, "s"),
				sev("e3", TypeStepSucceeded, 2*time.Second+1999*us, 1, "s"),
			},
			check: oneStep(func(t *testing.T, s Step) {
				require.Equal(t, nt(2*time.Second+1999*us), s.FinishedAt)
				d, ok := s.DurationMS()
				require.True(t, ok)
				require.Equal(t, int64(2001), d, "2001.999 ms rounds down")
			}),
		},
		{
			name: "finished before started: a negative duration, floored",
			events: []Event{
				sev("e1", TypeStepStarted, 2*time.Second, 1, "s"),
				sev("e2", TypeStepSucceeded, 500*time.Millisecond+500*us, 1, "s"),
			},
			check: oneStep(func(t *testing.T, s Step) {
				d, ok := s.DurationMS()
				require.True(t, ok)
				require.Equal(t, int64(-1500), d) // -1499.5 ms floors to -1500
			}),
		},
	})

	t.Run("DurationMS is Run's rule", func(t *testing.T) {
		t.Parallel()
		for _, d := range []time.Duration{0, us, -us, 999 * us, -1001 * us, 1500 * time.Millisecond, 24 * time.Hour} {
			want, wantOK := Run{StartedAt: nt(0), FinishedAt: nt(d)}.DurationMS()
			got, ok := Step{StartedAt: nt(0), FinishedAt: nt(d)}.DurationMS()
			require.Equal(t, wantOK, ok)
			require.Equal(t, want, got, "%s", d)
		}
		for _, s := range []Step{{}, {StartedAt: nt(0)}, {FinishedAt: nt(0)}} {
			d, ok := s.DurationMS()
			require.False(t, ok)
			require.Zero(t, d)
		}
	})
}

func TestProjectStepsError(t *testing.T) {
	t.Parallel()
	runStepsCases(t, []stepsCase{
		{
			name:   "string data.error on the deciding step.failed",
			events: []Event{withError(sev("e1", TypeStepFailed, 0, 1, "s"), "exit code 1")},
			check: oneStep(func(t *testing.T, s Step) {
				require.Equal(t, ns("exit code 1"), s.Error)
			}),
		},
		{
			name:   "the empty string is a string",
			events: []Event{withError(sev("e1", TypeStepFailed, 0, 1, "s"), "")},
			check: oneStep(func(t *testing.T, s Step) {
				require.Equal(t, ns(""), s.Error)
			}),
		},
		{
			name:   "no string data.error: null",
			events: []Event{sev("e1", TypeStepFailed, 0, 1, "s")},
			check: oneStep(func(t *testing.T, s Step) {
				require.Equal(t, StatusFailed, s.Status)
				require.False(t, s.Error.Valid)
			}),
		},
		{
			name: "error of a step.failed that is not deciding: null",
			events: []Event{
				withError(sev("e1", TypeStepFailed, 1*time.Second, 1, "s"), "first try"),
				sev("e2", TypeStepSucceeded, 2*time.Second, 1, "s"),
			},
			check: oneStep(func(t *testing.T, s Step) {
				require.Equal(t, StatusSucceeded, s.Status)
				require.False(t, s.Error.Valid)
			}),
		},
		{
			name: "deciding step.failed without error, an earlier one with: null",
			events: []Event{
				withError(sev("e1", TypeStepFailed, 1*time.Second, 1, "s"), "first"),
				sev("e2", TypeStepFailed, 2*time.Second, 1, "s"),
			},
			check: oneStep(func(t *testing.T, s Step) {
				require.Equal(t, "e2", s.TerminalEventID)
				require.False(t, s.Error.Valid)
			}),
		},
		{
			name: "error on other step types is ignored",
			events: []Event{
				withError(sev("e1", TypeStepStarted, 0, 1, "s"), "no"),
				withError(sev("e2", TypeStepSkipped, 1*time.Second, 1, "s"), "skipped: no"),
			},
			check: oneStep(func(t *testing.T, s Step) {
				require.Equal(t, StatusSkipped, s.Status)
				require.False(t, s.Error.Valid)
			}),
		},
		{
			name: "a run.failed's error is not a step's",
			events: []Event{
				sev("e1", TypeStepSucceeded, 0, 1, "s"),
				withError(ev("e2", TypeRunFailed, time.Second, 1), "run boom"),
			},
			check: oneStep(func(t *testing.T, s Step) {
				require.Equal(t, StatusSucceeded, s.Status)
				require.False(t, s.Error.Valid)
			}),
		},
		{
			name: "each attempt keeps its own error",
			events: []Event{
				withError(sev("e1", TypeStepFailed, 1*time.Second, 1, "s"), "attempt 1"),
				withError(sev("e2", TypeStepFailed, 2*time.Second, 2, "s"), "attempt 2"),
			},
			check: func(t *testing.T, steps []Step) {
				require.Len(t, steps, 2)
				require.Equal(t, ns("attempt 1"), steps[0].Error)
				require.Equal(t, ns("attempt 2"), steps[1].Error)
			},
		},
	})
}

func TestProjectStepsLatestCountsAndBounds(t *testing.T) {
	t.Parallel()
	runStepsCases(t, []stepsCase{
		{
			name: "event_count, first/last and the latest's workflow_id and source, over S",
			events: []Event{
				sev("e1", TypeStepSucceeded, 5*time.Second, 1, "s"),
				sev("e2", TypeStepStarted, -3*time.Second, 1, "s"),
				sev("e3", TypeStepFailed, 1*time.Second, 1, "s"),
				sev("e4", TypeStepStarted, 2*time.Second, 1, "s"),
			},
			check: oneStep(func(t *testing.T, s Step) {
				require.Equal(t, int64(4), s.EventCount)
				require.Equal(t, ts(-3*time.Second), s.FirstEventAt)
				require.Equal(t, ts(5*time.Second), s.LastEventAt)
				require.Equal(t, "e1", s.LatestEventID)
				require.Equal(t, "wf-e1", s.WorkflowID)
				require.Equal(t, "src-e1", s.Source)
			}),
		},
		{
			name: "latest tie: the bytewise greater event_id gives workflow_id and source",
			events: []Event{
				sev("é", TypeStepStarted, time.Second, 1, "s"),
				sev("z", TypeStepStarted, time.Second, 1, "s"),
				sev("e\u0301", TypeStepSucceeded, time.Second, 1, "s"),
			},
			check: oneStep(func(t *testing.T, s Step) {
				require.Equal(t, "é", s.LatestEventID)
				require.Equal(t, "wf-é", s.WorkflowID)
				require.Equal(t, "src-é", s.Source)
			}),
		},
	})
}

func TestProjectStepsDedupAndEmpty(t *testing.T) {
	t.Parallel()

	t.Run("empty input, and no step events: no rows", func(t *testing.T) {
		t.Parallel()
		require.Nil(t, ProjectSteps(nil))
		require.Nil(t, ProjectSteps([]Event{ev("e1", TypeRunQueued, 0, 1)}))
		require.Nil(t, FoldSteps(nil))
		require.Nil(t, FoldSteps(stepRecords([]Event{ev("e1", "custom", 0, 1)})))
	})

	t.Run("a repeated event_id is counted once", func(t *testing.T) {
		t.Parallel()
		e := sev("e1", TypeStepStarted, 0, 1, "s")
		s, ok := StepFromEvent(e)
		require.True(t, ok)
		require.Equal(t, []Step{s}, ProjectSteps([]Event{e, e, e}))
	})

	t.Run("the first of a repeated event_id is kept, whatever its type", func(t *testing.T) {
		t.Parallel()
		first := sev("e1", TypeStepStarted, 0, 1, "s")
		second := sev("e1", TypeStepFailed, time.Hour, 2, "t")
		s1, _ := StepFromEvent(first)
		s2, _ := StepFromEvent(second)
		require.Equal(t, []Step{s1}, ProjectSteps([]Event{first, second}))
		require.Equal(t, []Step{s2}, ProjectSteps([]Event{second, first}))
		// A run event first: the step event repeating its id is ignored.
		require.Nil(t, ProjectSteps([]Event{ev("e1", TypeRunQueued, 0, 1), second}))
	})
}

func TestStepFromEvent(t *testing.T) {
	t.Parallel()
	for _, typ := range KnownEventTypes {
		for _, e := range []Event{sev("e1", typ, 0, 3, "s"), withError(sev("e1", typ, 0, 1, "s"), "boom")} {
			s, ok := StepFromEvent(e)
			require.Equal(t, IsStep(typ), ok, typ)
			if !ok {
				require.Zero(t, s)
				continue
			}
			require.Equal(t, []Step{s}, ProjectSteps([]Event{e}), typ)
		}
	}
	_, ok := StepFromEvent(sev("e1", "step.retried", 0, 1, "s"))
	require.False(t, ok)
}

func TestCombineSteps(t *testing.T) {
	t.Parallel()
	a := ProjectSteps([]Event{sev("a1", TypeStepStarted, time.Second, 1, "s")})[0]
	b := ProjectSteps([]Event{
		sev("b1", TypeStepStarted, 0, 1, "s"),
		withError(sev("b2", TypeStepFailed, 3*time.Second, 1, "s"), "boom"),
	})[0]

	t.Run("zero Step is the identity", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, a, CombineSteps(Step{}, a))
		require.Equal(t, a, CombineSteps(a, Step{}))
		require.Equal(t, Step{}, CombineSteps(Step{}, Step{}))
	})

	t.Run("commutative on an example", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, CombineSteps(a, b), CombineSteps(b, a))
		require.Equal(t, Step{
			WorkflowRunID:   "run-1",
			Attempt:         1,
			StepID:          "s",
			WorkflowID:      "wf-b2",
			Source:          "src-b2",
			Status:          StatusFailed,
			StartedAt:       nt(0),
			FinishedAt:      nt(3 * time.Second),
			Error:           ns("boom"),
			EventCount:      3,
			FirstEventAt:    ts(0),
			LastEventAt:     ts(3 * time.Second),
			LatestEventID:   "b2",
			TerminalEventID: "b2",
		}, CombineSteps(a, b))
	})

	t.Run("the terminal side's error, even null, goes with it", func(t *testing.T) {
		t.Parallel()
		c := ProjectSteps([]Event{sev("c1", TypeStepSucceeded, 4*time.Second, 1, "s")})[0]
		got := CombineSteps(b, c)
		require.Equal(t, StatusSucceeded, got.Status)
		require.False(t, got.Error.Valid)
		require.Equal(t, sql.NullTime{Time: ts(4 * time.Second), Valid: true}, got.FinishedAt)
	})
}

// TestCombineStepsDoesNotAllocate is not parallel: AllocsPerRun may not
// run in a parallel test.
func TestCombineStepsDoesNotAllocate(t *testing.T) {
	a := ProjectSteps([]Event{sev("a1", TypeStepStarted, time.Second, 1, "s"), sev("a2", TypeStepSkipped, time.Second, 1, "s")})[0]
	b := ProjectSteps([]Event{withError(sev("b1", TypeStepFailed, time.Second, 1, "s"), "boom")})[0]
	var sink Step
	require.Zero(t, testing.AllocsPerRun(100, func() { sink = CombineSteps(a, b) }))
	require.Equal(t, "b1", sink.TerminalEventID)
}
