package model

import (
	"database/sql"
	"slices"
	"strings"
	"time"
)

// Run is the projected row of one run (contract §3) plus the hidden fields
// that make projections mergeable: the projection of a union of disjoint
// event sets is Combine of their projections, so a batch of events can be
// projected in memory and merged into the stored row.
//
// Every field is a function of the run's set of distinct events E. A is
// the largest attempt in E; "latest" means the greatest (Timestamp,
// EventID), event IDs compared bytewise (Go string order, COLLATE "C").
type Run struct {
	WorkflowRunID string
	// WorkflowID and Source are those of the latest event in E.
	WorkflowID, Source string
	// Attempt is A, the largest attempt in E.
	Attempt int32
	// Status is StatusQueued, StatusRunning, StatusSucceeded, StatusFailed
	// or StatusCancelled, decided by the events of attempt A only.
	Status string
	// QueuedAt is the earliest run.queued in E, any attempt.
	QueuedAt sql.NullTime
	// StartedAt is the earliest run.started of attempt A.
	StartedAt sql.NullTime
	// FinishedAt is the timestamp of the deciding terminal event: the latest
	// terminal event of attempt A. It is valid exactly when there is one.
	FinishedAt sql.NullTime
	// Error is data.error of the deciding terminal event when that event is
	// run.failed with a string data.error (Event.HasError).
	Error sql.NullString
	// StepsSucceeded, StepsFailed and StepsSkipped count the step.succeeded,
	// step.failed and step.skipped events of attempt A.
	StepsSucceeded, StepsFailed, StepsSkipped int64
	// EventCount is |E|, all types and attempts.
	EventCount int64
	// FirstEventAt and LastEventAt are the earliest and latest timestamps in E.
	FirstEventAt, LastEventAt time.Time
	// LatestEventID is the event_id of the latest event in E (hidden: it
	// breaks timestamp ties when choosing WorkflowID and Source).
	LatestEventID string
	// TerminalEventID is the event_id of the deciding terminal event, ""
	// when there is none (hidden: it breaks timestamp ties between
	// terminal events).
	TerminalEventID string
}

// Equal reports whether r and o are the same projection, their times
// compared as instants: == on time.Time also compares locations and
// monotonic clock readings, which differ between a run read from
// PostgreSQL and one projected from decoded events.
func (r Run) Equal(o Run) bool {
	return r.WorkflowRunID == o.WorkflowRunID && r.WorkflowID == o.WorkflowID && r.Source == o.Source &&
		r.Attempt == o.Attempt && r.Status == o.Status &&
		nullTimeEqual(r.QueuedAt, o.QueuedAt) && nullTimeEqual(r.StartedAt, o.StartedAt) &&
		nullTimeEqual(r.FinishedAt, o.FinishedAt) && r.Error == o.Error &&
		r.StepsSucceeded == o.StepsSucceeded && r.StepsFailed == o.StepsFailed && r.StepsSkipped == o.StepsSkipped &&
		r.EventCount == o.EventCount && r.FirstEventAt.Equal(o.FirstEventAt) && r.LastEventAt.Equal(o.LastEventAt) &&
		r.LatestEventID == o.LatestEventID && r.TerminalEventID == o.TerminalEventID
}

func nullTimeEqual(a, b sql.NullTime) bool {
	return a.Valid == b.Valid && (!a.Valid || a.Time.Equal(b.Time))
}

// DurationMS is FinishedAt - StartedAt in whole milliseconds rounded down
// (floor, also when negative, i.e. when the run finished before it
// started), and false unless both are set. It is exact over the whole
// time.Time range (no time.Duration saturation).
func (r Run) DurationMS() (int64, bool) { return durationMS(r.StartedAt, r.FinishedAt) }

// durationMS is finished - started in whole milliseconds rounded down
// (floor, also when negative), and false unless both are set: the
// duration_ms of every projection. It is exact over the whole time.Time
// range (no time.Duration saturation), like the SQL column
// floor(extract(epoch FROM finished_at - started_at) * 1000).
func durationMS(started, finished sql.NullTime) (int64, bool) {
	if !started.Valid || !finished.Valid {
		return 0, false
	}
	f, s := finished.Time, started.Time
	sec := f.Unix() - s.Unix()
	ns := int64(f.Nanosecond() - s.Nanosecond()) // in (-1e9, 1e9)
	// floor((sec*1e9 + ns) / 1e6) == sec*1000 + floor(ns / 1e6), because
	// 1e9 is a multiple of 1e6.
	ms := ns / int64(time.Millisecond)
	if ns%int64(time.Millisecond) != 0 && ns < 0 {
		ms--
	}
	return sec*1000 + ms, true
}

// after reports whether (t1, id1) > (t2, id2): later timestamp, or equal
// timestamps and a bytewise greater id.
func after(t1 time.Time, id1 string, t2 time.Time, id2 string) bool {
	if c := t1.Compare(t2); c != 0 {
		return c > 0
	}
	return id1 > id2
}

// minNullTime is the earlier of the valid values, invalid if neither is.
func minNullTime(a, b sql.NullTime) sql.NullTime {
	if !a.Valid || (b.Valid && b.Time.Before(a.Time)) {
		return b
	}
	return a
}

// FromEvent is the projection of the one-event set {e}.
func FromEvent(e Event) Run {
	r := Run{
		WorkflowRunID: e.WorkflowRunID,
		WorkflowID:    e.WorkflowID,
		Source:        e.Source,
		Attempt:       e.Attempt,
		Status:        StatusQueued,
		EventCount:    1,
		FirstEventAt:  e.Timestamp,
		LastEventAt:   e.Timestamp,
		LatestEventID: e.EventID,
	}
	at := sql.NullTime{Time: e.Timestamp, Valid: true}
	if status, ok := TerminalStatus(e.EventType); ok {
		r.Status = status
		r.FinishedAt = at
		r.TerminalEventID = e.EventID
		if e.EventType == TypeRunFailed && e.HasError {
			r.Error = sql.NullString{String: e.Error, Valid: true}
		}
	} else if SignalsRunning(e.EventType) {
		r.Status = StatusRunning
	}
	switch e.EventType {
	case TypeRunQueued:
		r.QueuedAt = at
	case TypeRunStarted:
		r.StartedAt = at
	case TypeStepSucceeded:
		r.StepsSucceeded = 1
	case TypeStepFailed:
		r.StepsFailed = 1
	case TypeStepSkipped:
		r.StepsSkipped = 1
	}
	return r
}

// Combine merges the projections a and b of two disjoint, non-empty event
// sets of the same run into the projection of their union. It is
// commutative and associative, pure, and does not allocate. The zero Run
// (EventCount == 0, the projection of the empty set) is its identity, so
// m[id] = Combine(m[id], FromEvent(e)) folds events into a map.
//
// Field by field (this is the specification the SQL upsert mirrors, with
// event IDs compared bytewise, COLLATE "C"). Global fields, whatever the
// attempts:
//
//   - WorkflowRunID: a's (both are the same run).
//   - EventCount: a + b.
//   - FirstEventAt: the earlier of the two.
//   - QueuedAt: the earlier of the two non-null values; null if both are null.
//   - LastEventAt, LatestEventID, WorkflowID, Source: all four from the side
//     with the greater (LastEventAt, LatestEventID).
//   - Attempt: the larger of the two.
//
// Per-attempt fields: Status, StartedAt, FinishedAt, Error, StepsSucceeded,
// StepsFailed, StepsSkipped and TerminalEventID.
//
//   - Attempts differ: all eight come, unchanged, from the side with the
//     larger attempt; the other side's are about an older attempt and are
//     dropped.
//   - Attempts equal, StartedAt: the earlier of the two non-null values; null
//     if both are null.
//   - Attempts equal, StepsSucceeded, StepsFailed, StepsSkipped: a + b.
//   - Attempts equal, terminal: the terminal side is, among the sides whose
//     FinishedAt is not null, the one with the greater (FinishedAt,
//     TerminalEventID). If there is one, Status, FinishedAt, Error and
//     TerminalEventID all four come from it (its Error may be null even
//     when the other side's is not).
//   - Attempts equal, no terminal (both FinishedAt null): FinishedAt null,
//     Error null, TerminalEventID "", and Status is running if either
//     side's Status is running, else queued.
//
// No further hidden state is needed for the status: without a terminal
// event, a side's Status is running exactly when it holds a run.started or
// step.* event of its attempt, and once a terminal event exists it decides
// and the running/queued distinction no longer matters.
func Combine(a, b Run) Run {
	if a.EventCount == 0 {
		return b
	}
	if b.EventCount == 0 {
		return a
	}
	r := a
	r.EventCount = a.EventCount + b.EventCount
	if b.FirstEventAt.Before(a.FirstEventAt) {
		r.FirstEventAt = b.FirstEventAt
	}
	r.QueuedAt = minNullTime(a.QueuedAt, b.QueuedAt)
	if after(b.LastEventAt, b.LatestEventID, a.LastEventAt, a.LatestEventID) {
		r.LastEventAt, r.LatestEventID = b.LastEventAt, b.LatestEventID
		r.WorkflowID, r.Source = b.WorkflowID, b.Source
	}
	switch {
	case b.Attempt > a.Attempt:
		r.Attempt = b.Attempt
		r.Status = b.Status
		r.StartedAt = b.StartedAt
		r.FinishedAt = b.FinishedAt
		r.Error = b.Error
		r.StepsSucceeded, r.StepsFailed, r.StepsSkipped = b.StepsSucceeded, b.StepsFailed, b.StepsSkipped
		r.TerminalEventID = b.TerminalEventID
	case b.Attempt == a.Attempt:
		r.StartedAt = minNullTime(a.StartedAt, b.StartedAt)
		r.StepsSucceeded += b.StepsSucceeded
		r.StepsFailed += b.StepsFailed
		r.StepsSkipped += b.StepsSkipped
		switch {
		case b.FinishedAt.Valid && (!a.FinishedAt.Valid ||
			after(b.FinishedAt.Time, b.TerminalEventID, a.FinishedAt.Time, a.TerminalEventID)):
			r.Status, r.FinishedAt, r.Error, r.TerminalEventID = b.Status, b.FinishedAt, b.Error, b.TerminalEventID
		case !a.FinishedAt.Valid && b.Status == StatusRunning:
			r.Status = StatusRunning
		}
	}
	return r
}

// compareEvents orders events by (Timestamp, EventID), EventID bytewise.
func compareEvents(x, y Event) int {
	if c := x.Timestamp.Compare(y.Timestamp); c != 0 {
		return c
	}
	return strings.Compare(x.EventID, y.EventID)
}

// Project computes the run row from scratch from the events of one run,
// written literally from contract §3; it is the reference Combine is
// checked against, and what a rebuild needs. Events repeating an EventID
// are counted once: the first occurrence in the slice is kept.
//
// On empty input Project returns the zero Run (EventCount == 0), which is
// the identity of Combine; it never panics. The input slice is not
// modified.
func Project(events []Event) Run {
	if len(events) == 0 {
		return Run{}
	}

	// E: the distinct events, the first of each EventID kept.
	seen := make(map[string]struct{}, len(events))
	es := make([]Event, 0, len(events))
	for _, e := range events {
		if _, dup := seen[e.EventID]; dup {
			continue
		}
		seen[e.EventID] = struct{}{}
		es = append(es, e)
	}
	// Sorted by (timestamp, event_id): es[0] is the earliest, the last one
	// is the latest.
	slices.SortFunc(es, compareEvents)
	first, latest := es[0], es[len(es)-1]

	r := Run{
		WorkflowRunID: latest.WorkflowRunID,
		WorkflowID:    latest.WorkflowID,
		Source:        latest.Source,
		EventCount:    int64(len(es)),
		FirstEventAt:  first.Timestamp,
		LastEventAt:   latest.Timestamp,
		LatestEventID: latest.EventID,
	}

	// A: the largest attempt.
	r.Attempt = es[0].Attempt
	for _, e := range es {
		r.Attempt = max(r.Attempt, e.Attempt)
	}

	// queued_at: the earliest run.queued, any attempt.
	for _, e := range es {
		if e.EventType == TypeRunQueued {
			r.QueuedAt = sql.NullTime{Time: e.Timestamp, Valid: true}
			break
		}
	}

	// The events of attempt A, still in (timestamp, event_id) order.
	var ofA []Event
	for _, e := range es {
		if e.Attempt == r.Attempt {
			ofA = append(ofA, e)
		}
	}

	var terminals []Event
	running := false
	for _, e := range ofA {
		if _, ok := TerminalStatus(e.EventType); ok {
			terminals = append(terminals, e)
		}
		if SignalsRunning(e.EventType) {
			running = true
		}
		switch e.EventType {
		case TypeRunStarted:
			if !r.StartedAt.Valid { // the earliest run.started of attempt A
				r.StartedAt = sql.NullTime{Time: e.Timestamp, Valid: true}
			}
		case TypeStepSucceeded:
			r.StepsSucceeded++
		case TypeStepFailed:
			r.StepsFailed++
		case TypeStepSkipped:
			r.StepsSkipped++
		}
	}

	switch {
	case len(terminals) > 0:
		deciding := terminals[len(terminals)-1] // the latest terminal decides
		r.Status, _ = TerminalStatus(deciding.EventType)
		r.FinishedAt = sql.NullTime{Time: deciding.Timestamp, Valid: true}
		r.TerminalEventID = deciding.EventID
		if deciding.EventType == TypeRunFailed && deciding.HasError {
			r.Error = sql.NullString{String: deciding.Error, Valid: true}
		}
	case running:
		r.Status = StatusRunning
	default:
		r.Status = StatusQueued
	}
	return r
}
