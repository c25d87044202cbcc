package model

import (
	"cmp"
	"database/sql"
	"slices"
	"strings"
	"time"
)

// Step is the projected row of one step of a run's attempt (contract §3.1)
// plus the hidden fields that make projections mergeable, as Run is for
// runs: the projection of a union of disjoint event sets of one step is
// CombineSteps of their projections.
//
// Every field is a function of S, the set of distinct known step.* events
// (step.started, step.succeeded, step.failed, step.skipped) of the key
// (WorkflowRunID, Attempt, StepID). "Latest" means the greatest
// (Timestamp, EventID), event IDs compared bytewise (Go string order,
// COLLATE "C").
type Step struct {
	// WorkflowRunID, Attempt and StepID are the key.
	WorkflowRunID string
	Attempt       int32
	StepID        string
	// WorkflowID and Source are those of the latest event in S.
	WorkflowID, Source string
	// Status is StatusSucceeded, StatusFailed or StatusSkipped when S has a
	// terminal event (step.succeeded, step.failed, step.skipped): the
	// latest one decides; else StatusRunning.
	Status string
	// StartedAt is the earliest step.started in S.
	StartedAt sql.NullTime
	// FinishedAt is the timestamp of the deciding terminal event; it is
	// valid exactly when there is one.
	FinishedAt sql.NullTime
	// Error is data.error of the deciding terminal event when that event
	// is step.failed with a string data.error (Event.HasError).
	Error sql.NullString
	// EventCount is |S|.
	EventCount int64
	// FirstEventAt and LastEventAt are the earliest and latest timestamps
	// in S.
	FirstEventAt, LastEventAt time.Time
	// LatestEventID is the event_id of the latest event in S (hidden: it
	// breaks timestamp ties when choosing WorkflowID and Source).
	LatestEventID string
	// TerminalEventID is the event_id of the deciding terminal event, ""
	// when there is none (hidden: it breaks timestamp ties between
	// terminal events).
	TerminalEventID string
}

// Equal reports whether two steps are the same row: times compared as
// instants (time.Time.Equal), not by location or monotonic reading.
func (s Step) Equal(o Step) bool {
	return s.WorkflowRunID == o.WorkflowRunID && s.Attempt == o.Attempt && s.StepID == o.StepID &&
		s.WorkflowID == o.WorkflowID && s.Source == o.Source && s.Status == o.Status &&
		nullTimeEqual(s.StartedAt, o.StartedAt) && nullTimeEqual(s.FinishedAt, o.FinishedAt) && s.Error == o.Error &&
		s.EventCount == o.EventCount && s.FirstEventAt.Equal(o.FirstEventAt) && s.LastEventAt.Equal(o.LastEventAt) &&
		s.LatestEventID == o.LatestEventID && s.TerminalEventID == o.TerminalEventID
}

// StatusSkipped is the status of a step whose deciding terminal event is
// step.skipped. Steps are otherwise StatusRunning, StatusSucceeded or
// StatusFailed.
const StatusSkipped = "skipped"

// stepTerminalStatus returns the step status a terminal step event type
// decides, and false for every other type.
func stepTerminalStatus(eventType string) (string, bool) {
	switch eventType {
	case TypeStepSucceeded:
		return StatusSucceeded, true
	case TypeStepFailed:
		return StatusFailed, true
	case TypeStepSkipped:
		return StatusSkipped, true
	}
	return "", false
}

// DurationMS is FinishedAt - StartedAt in whole milliseconds rounded down
// (floor, also when negative), and false unless both are set; the same
// rule as Run.DurationMS and the duration_ms column.
func (s Step) DurationMS() (int64, bool) { return durationMS(s.StartedAt, s.FinishedAt) }

// StepFromEvent is the projection of the one-event set {e}, and false when
// e is not one of the four known step.* types (it then belongs to no
// step).
func StepFromEvent(e Event) (Step, bool) {
	if !IsStep(e.EventType) {
		return Step{}, false
	}
	s := Step{
		WorkflowRunID: e.WorkflowRunID,
		Attempt:       e.Attempt,
		StepID:        e.StepID,
		WorkflowID:    e.WorkflowID,
		Source:        e.Source,
		Status:        StatusRunning,
		EventCount:    1,
		FirstEventAt:  e.Timestamp,
		LastEventAt:   e.Timestamp,
		LatestEventID: e.EventID,
	}
	at := sql.NullTime{Time: e.Timestamp, Valid: true}
	if status, ok := stepTerminalStatus(e.EventType); ok {
		s.Status = status
		s.FinishedAt = at
		s.TerminalEventID = e.EventID
		if e.EventType == TypeStepFailed && e.HasError {
			s.Error = sql.NullString{String: e.Error, Valid: true}
		}
	} else { // step.started
		s.StartedAt = at
	}
	return s, true
}

// CombineSteps merges the projections a and b of two disjoint, non-empty
// event sets of the same step into the projection of their union. It is
// commutative and associative, pure, and does not allocate. The zero Step
// (EventCount == 0, the projection of the empty set) is its identity.
//
// Field by field (the specification MergeSteps mirrors in SQL, event IDs
// compared bytewise, COLLATE "C"):
//
//   - WorkflowRunID, Attempt, StepID: a's (both are the same step).
//   - EventCount: a + b.
//   - FirstEventAt: the earlier of the two.
//   - LastEventAt, LatestEventID, WorkflowID, Source: all four from the side
//     with the greater (LastEventAt, LatestEventID).
//   - StartedAt: the earlier of the two non-null values; null if both are
//     null.
//   - Terminal: the terminal side is, among the sides whose FinishedAt is
//     not null, the one with the greater (FinishedAt, TerminalEventID). If
//     there is one, Status, FinishedAt, Error and TerminalEventID all four
//     come from it (its Error may be null even when the other side's is
//     not); else both sides are running, and so is the result.
//
// Unlike a run, a step needs no attempt rule (the attempt is part of the
// key) and no running/queued distinction (S is never empty and every
// non-terminal step event is step.started).
func CombineSteps(a, b Step) Step {
	if a.EventCount == 0 {
		return b
	}
	if b.EventCount == 0 {
		return a
	}
	s := a
	s.EventCount = a.EventCount + b.EventCount
	if b.FirstEventAt.Before(a.FirstEventAt) {
		s.FirstEventAt = b.FirstEventAt
	}
	if after(b.LastEventAt, b.LatestEventID, a.LastEventAt, a.LatestEventID) {
		s.LastEventAt, s.LatestEventID = b.LastEventAt, b.LatestEventID
		s.WorkflowID, s.Source = b.WorkflowID, b.Source
	}
	s.StartedAt = minNullTime(a.StartedAt, b.StartedAt)
	if b.FinishedAt.Valid && (!a.FinishedAt.Valid ||
		after(b.FinishedAt.Time, b.TerminalEventID, a.FinishedAt.Time, a.TerminalEventID)) {
		s.Status, s.FinishedAt, s.Error, s.TerminalEventID = b.Status, b.FinishedAt, b.Error, b.TerminalEventID
	}
	return s
}

// stepKey is the key of a Step: (workflow_run_id, attempt, step_id).
type stepKey struct {
	runID   string
	attempt int32
	stepID  string
}

func (s *Step) key() stepKey { return stepKey{s.WorkflowRunID, s.Attempt, s.StepID} }

// compareStepKeys orders steps by (WorkflowRunID, Attempt, StepID), the
// IDs bytewise: the order FoldSteps and ProjectSteps return, and the
// order MergeSteps locks rows in.
func compareStepKeys(x, y Step) int {
	return cmp.Or(
		strings.Compare(x.WorkflowRunID, y.WorkflowRunID),
		cmp.Compare(x.Attempt, y.Attempt),
		strings.Compare(x.StepID, y.StepID),
	)
}

// ProjectSteps computes the step rows from scratch from events of any runs,
// written literally from contract §3.1; it is the reference CombineSteps is
// checked against. Events repeating an EventID are counted once: the first
// occurrence in the slice is kept (whatever its type). It returns one row
// per (WorkflowRunID, Attempt, StepID) with at least one known step.*
// event, sorted by that key; nil when there is none. The input slice is not
// modified.
func ProjectSteps(events []Event) []Step {
	// E: the distinct events, the first of each EventID kept; then the
	// known step.* events of E, grouped by step.
	seen := make(map[string]struct{}, len(events))
	groups := map[stepKey][]Event{}
	for _, e := range events {
		if _, dup := seen[e.EventID]; dup {
			continue
		}
		seen[e.EventID] = struct{}{}
		if IsStep(e.EventType) {
			k := stepKey{e.WorkflowRunID, e.Attempt, e.StepID}
			groups[k] = append(groups[k], e)
		}
	}

	var steps []Step
	for k, ss := range groups {
		// Sorted by (timestamp, event_id): ss[0] is the earliest, the last
		// one is the latest.
		slices.SortFunc(ss, compareEvents)
		first, latest := ss[0], ss[len(ss)-1]
		s := Step{
			WorkflowRunID: k.runID,
			Attempt:       k.attempt,
			StepID:        k.stepID,
			WorkflowID:    latest.WorkflowID,
			Source:        latest.Source,
			Status:        StatusRunning,
			EventCount:    int64(len(ss)),
			FirstEventAt:  first.Timestamp,
			LastEventAt:   latest.Timestamp,
			LatestEventID: latest.EventID,
		}
		var deciding *Event
		for i, e := range ss {
			if e.EventType == TypeStepStarted && !s.StartedAt.Valid { // the earliest step.started
				s.StartedAt = sql.NullTime{Time: e.Timestamp, Valid: true}
			}
			if _, ok := stepTerminalStatus(e.EventType); ok {
				deciding = &ss[i] // the latest terminal so far
			}
		}
		if deciding != nil {
			s.Status, _ = stepTerminalStatus(deciding.EventType)
			s.FinishedAt = sql.NullTime{Time: deciding.Timestamp, Valid: true}
			s.TerminalEventID = deciding.EventID
			if deciding.EventType == TypeStepFailed && deciding.HasError {
				s.Error = sql.NullString{String: deciding.Error, Valid: true}
			}
		}
		steps = append(steps, s)
	}
	slices.SortFunc(steps, compareStepKeys)
	return steps
}

// FoldSteps projects the step.* events of records into one partial Step per
// (WorkflowRunID, Attempt, StepID), sorted by that key; events of other
// types are left out; nil when there is none. The events must be
// distinct. It is FoldRecords for the steps projection: the rows a batch
// merges into workflow_steps.
func FoldSteps(recs []*Record) []Step {
	return foldSteps(len(recs), func(i int) *Event { return &recs[i].Event })
}

// FoldStepEvents is FoldSteps of events.
func FoldStepEvents(events []Event) []Step {
	return foldSteps(len(events), func(i int) *Event { return &events[i] })
}

func foldSteps(n int, event func(i int) *Event) []Step {
	idx := make(map[stepKey]int, n/4)
	steps := make([]Step, 0, n/4)
	for i := range n {
		s, ok := StepFromEvent(*event(i))
		if !ok {
			continue
		}
		k := s.key()
		if j, ok := idx[k]; ok {
			steps[j] = CombineSteps(steps[j], s)
			continue
		}
		idx[k] = len(steps)
		steps = append(steps, s)
	}
	if len(steps) == 0 {
		return nil // as ProjectSteps
	}
	slices.SortFunc(steps, compareStepKeys)
	return steps
}
