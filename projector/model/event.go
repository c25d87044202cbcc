// Package model is the event model that the consumer and the store share:
// it decodes and validates workflow events, computes the run-state and step
// projections as pure functions (order-insensitive merges), and defines the
// batches, leases and errors that pass between the Kafka consumer
// (projector/consumer) and PostgreSQL (store). It does no I/O.
package model

import (
	"slices"
	"time"
)

// Known event types (contract §2).
const (
	TypeRunQueued     = "run.queued"
	TypeRunStarted    = "run.started"
	TypeRunSucceeded  = "run.succeeded"
	TypeRunFailed     = "run.failed"
	TypeRunCancelled  = "run.cancelled"
	TypeStepStarted   = "step.started"
	TypeStepSucceeded = "step.succeeded"
	TypeStepFailed    = "step.failed"
	TypeStepSkipped   = "step.skipped"
)

// KnownEventTypes lists the known event types, in the contract's order:
// the one list that metrics, docs and tests take them from.
var KnownEventTypes = []string{
	TypeRunQueued, TypeRunStarted, TypeRunSucceeded, TypeRunFailed, TypeRunCancelled,
	TypeStepStarted, TypeStepSucceeded, TypeStepFailed, TypeStepSkipped,
}

// IsKnown reports whether eventType is one of KnownEventTypes.
func IsKnown(eventType string) bool { return slices.Contains(KnownEventTypes, eventType) }

// Run statuses (contract §3).
const (
	StatusQueued    = "queued"
	StatusRunning   = "running"
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed"
	StatusCancelled = "cancelled"
)

// Event is one valid workflow event, decoded from a Kafka message value.
type Event struct {
	EventID       string
	EventType     string
	Source        string
	WorkflowID    string
	WorkflowRunID string
	// Timestamp is truncated to whole microseconds, in UTC.
	Timestamp time.Time
	// Attempt is 1..1000, 1 when the event did not say.
	Attempt int32
	// StepID is set for step.* events only.
	StepID string
	// Error is data.error when the event is run.failed or step.failed and
	// data.error is a JSON string; HasError tells whether it was. The run
	// projection reads it of run.failed only, the steps projection of
	// step.failed only.
	Error    string
	HasError bool
	// Payload is the whole event as received: valid UTF-8 JSON that
	// PostgreSQL's jsonb accepts.
	Payload []byte
	// Topic, Partition and Offset say which Kafka message carried it
	// (zero when it was only decoded, not consumed).
	Topic     string
	Partition int32
	Offset    int64
}

// TerminalStatus returns the run status a terminal event type decides, and
// false for every other type.
func TerminalStatus(eventType string) (string, bool) {
	switch eventType {
	case TypeRunSucceeded:
		return StatusSucceeded, true
	case TypeRunFailed:
		return StatusFailed, true
	case TypeRunCancelled:
		return StatusCancelled, true
	}
	return "", false
}

// SignalsRunning reports whether an event type is a sign that its attempt
// is running: run.started or any known step.* type.
func SignalsRunning(eventType string) bool {
	return eventType == TypeRunStarted || IsStep(eventType)
}

// IsStep reports whether the type is one of the known step.* types, which
// require step_id.
func IsStep(eventType string) bool {
	switch eventType {
	case TypeStepStarted, TypeStepSucceeded, TypeStepFailed, TypeStepSkipped:
		return true
	}
	return false
}
