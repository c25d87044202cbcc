package model

import (
	"errors"
	"time"
)

// ErrRejected means PostgreSQL refused the rows of a batch themselves (a
// data exception, not a connection problem): retrying the same rows fails
// the same way. The worker then narrows the batch down to the message to
// blame and stores it as an unstorable dead letter.
var ErrRejected = errors.New("postgresql rejected the data")

// Applied counts what one batch transaction wrote.
type Applied struct {
	// Events is the number of new events stored.
	Events int
	// Duplicates is the number of events skipped because their event_id
	// was already stored, or repeated within the batch.
	Duplicates int
	// DeadLetters is the number of invalid messages stored, and of those
	// held back as BeforeHorizon.
	DeadLetters int
	// BeforeHorizon is the number of valid events stored as dead letters
	// of reason before_horizon (ReasonBeforeHorizon): they occurred before
	// the retention horizon, and their event_id is not stored.
	BeforeHorizon int
	// Runs is the number of runs merged.
	Runs int
	// EventTypes counts Events by event_type, when the sink counts them
	// (nil otherwise; metrics then count Events as unattributed).
	EventTypes map[string]int
	// Insert is how the events were stored: InsertCopy or
	// InsertSkipStored (empty when the sink does not say).
	Insert string
	// Took is how long the transaction that committed took, from BEGIN to
	// COMMIT's answer, when the sink tells.
	Took time.Duration
	// CopyConflicts is the number of times a COPY met an event_id already
	// stored, so that the batch was applied again with InsertSkipStored.
	CopyConflicts int
	// StepConflicts is the number of times the steps' plain insert met a
	// step already stored, so that the batch's merges went back to their
	// savepoint and merged the steps with the upsert.
	StepConflicts int
}

// How a sink stored a batch's events (Applied.Insert).
const (
	// InsertCopy: a COPY, the fast way, for batches without event_ids
	// already stored.
	InsertCopy = "copy"
	// InsertSkipStored: an insert that skips event_ids already stored.
	InsertSkipStored = "insert_skip_stored"
)

// Incident is something about a partition that an operator must see.
type Incident struct {
	Kind           string
	ExpectedOffset int64
	ActualOffset   int64
	Detail         string
}

// IncidentOffsetOutOfRange: the stored offset is not in the partition's
// log (retention deleted it, or the topic was recreated).
const IncidentOffsetOutOfRange = "offset_out_of_range"

// StalledSession is a database session that a worker ended because its
// batch transaction had waited on its client, with no progress, for a
// long time: a frozen worker's.
type StalledSession struct {
	PID             int32
	ApplicationName string
	ClientAddr      string
	Since           time.Time // when its statement began
	Bytes           int64     // how much of its data had arrived
}
