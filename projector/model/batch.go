package model

import (
	"cmp"
	"encoding/base64"
	"errors"
	"slices"
	"unicode/utf8"
)

// ErrFenced means the partition's stored offset or lease epoch is not what
// this owner expects: another session took the partition, or an operator
// moved the offset. The batch was rolled back and the claim must end.
var ErrFenced = errors.New("fenced: the partition's stored offset or lease moved")

// ErrProjectionNotLoaded means the database has a projection that this
// process does not: applying events without it would leave its table
// silently wrong, so the worker stops (exit code 2).
var ErrProjectionNotLoaded = errors.New("a projection of the database is not loaded in this process")

// SchemaError means PostgreSQL answered that something the program needs
// is not there: a table dropped or renamed under a running worker, a
// column or function missing. Retrying cannot mend it until someone
// restores the schema (projector migrate up), so the worker retries it
// loudly: an error line naming Relation, /readyz unready at once, and
// projector_schema_errors_total.
type SchemaError struct {
	// Relation names what is missing, as PostgreSQL said it.
	Relation string
	Err      error
}

func (e *SchemaError) Error() string {
	return "the database schema is broken (" + e.Relation + " is missing; run projector migrate up, or restore it): " + e.Err.Error()
}

func (e *SchemaError) Unwrap() error { return e.Err }

// ProjectionError is a projection's own failure (contract §7): its Apply
// or Forget returned an error, so the transaction rolled back. It is never
// the data's fault: the worker retries the batch with backoff, reports
// itself unready and logs the projection's name, until the projection
// succeeds; no event becomes a dead letter or is skipped because of it.
type ProjectionError struct {
	Projection string
	// Op is "apply", "forget", "setup" or "build".
	Op  string
	Err error
}

func (e *ProjectionError) Error() string {
	return "projection " + e.Projection + ": " + e.Op + ": " + e.Err.Error()
}

func (e *ProjectionError) Unwrap() error { return e.Err }

// Lease is one consumer session's claim on a partition, as stored in
// consumer_offsets. NextOffset is where this owner expects the stored
// offset to be; Epoch is the lease epoch it took.
type Lease struct {
	Group      string
	Topic      string
	Partition  int32
	Epoch      int64
	NextOffset int64
}

// Header is one Kafka record header.
type Header struct {
	Key, Value []byte
}

// Message is one Kafka message as received.
type Message struct {
	Offset  int64
	Key     []byte
	Value   []byte
	Headers []Header
}

// Record is a valid event and the message that carried it.
type Record struct {
	Offset  int64
	Event   Event
	Key     []byte
	Headers []Header
}

// DeadLetter is an invalid message, kept with its exact bytes.
type DeadLetter struct {
	Offset  int64
	Key     []byte
	Value   []byte
	Headers []byte // a JSON array, see HeadersJSON
	Reason  string
	Error   string
}

// Batch is a run of consecutive messages of one partition, applied in one
// transaction that also moves the stored offset from Lease.NextOffset to
// End.
type Batch struct {
	Lease       Lease
	Records     []Record
	DeadLetters []DeadLetter
	// End is the offset after the last message of the batch.
	End int64
	// bytes is the size of the keys, values and headers added by Add.
	bytes int
}

// MaxBatchBytes caps the size (keys, values, headers) of the messages of
// one batch: a batch is applied as soon as it holds BatchSize messages or
// this many bytes, so that a burst of large messages, valid or not, never
// holds BatchSize of them in memory at once (with the copy the database
// driver encodes).
const MaxBatchBytes = 16 << 20

// Len is the number of messages in the batch.
func (b *Batch) Len() int { return len(b.Records) + len(b.DeadLetters) }

// Full reports whether the batch holds size messages, or MaxBatchBytes
// bytes of them.
func (b *Batch) Full(size int) bool { return b.Len() >= size || b.bytes >= MaxBatchBytes }

// Reset empties the batch for reuse, keeping its lease.
func (b *Batch) Reset() {
	clear(b.Records)
	clear(b.DeadLetters)
	b.Records, b.DeadLetters, b.End, b.bytes = b.Records[:0], b.DeadLetters[:0], 0, 0
}

// Add decodes a message into the batch: a valid event or a dead letter.
// Messages must be added in offset order.
func (b *Batch) Add(m Message) {
	b.bytes += len(m.Key) + len(m.Value)
	for _, h := range m.Headers {
		b.bytes += len(h.Key) + len(h.Value)
	}
	ev, err := Decode(m.Value)
	if err != nil {
		b.AddDeadLetter(m, err)
	} else {
		ev.Topic, ev.Partition, ev.Offset = b.Lease.Topic, b.Lease.Partition, m.Offset
		b.Records = append(b.Records, Record{Offset: m.Offset, Event: ev, Key: m.Key, Headers: m.Headers})
	}
	b.End = m.Offset + 1
}

// AddDeadLetter adds a message as a dead letter with the reason carried by
// err (a *DecodeError), or unstorable for any other error.
func (b *Batch) AddDeadLetter(m Message, err error) {
	reason := ReasonUnstorable
	var de *DecodeError
	if errors.As(err, &de) {
		reason = de.Reason
	}
	b.DeadLetters = append(b.DeadLetters, DeadLetter{
		Offset:  m.Offset,
		Key:     m.Key,
		Value:   m.Value,
		Headers: HeadersJSON(m.Headers),
		Reason:  reason,
		Error:   err.Error(),
	})
	b.End = m.Offset + 1
}

// UniqueRecords returns the batch's records with one per event_id (the
// lowest offset wins: the first one applied), sorted by event_id so that
// concurrent transactions insert, and lock, in the same order. They point
// into b.Records, which stays in offset order.
func (b *Batch) UniqueRecords() []*Record {
	out := make([]*Record, len(b.Records))
	for i := range b.Records {
		out[i] = &b.Records[i]
	}
	slices.SortFunc(out, func(x, y *Record) int {
		return cmp.Or(cmp.Compare(x.Event.EventID, y.Event.EventID), cmp.Compare(x.Offset, y.Offset))
	})
	return slices.CompactFunc(out, func(x, y *Record) bool { return x.Event.EventID == y.Event.EventID })
}

// FoldRecords projects the events of records into one partial Run per
// workflow_run_id, sorted by workflow_run_id. The events must be distinct.
func FoldRecords(recs []*Record) []Run {
	return foldRuns(len(recs), func(i int) *Event { return &recs[i].Event })
}

// FoldEvents is FoldRecords of events.
func FoldEvents(events []Event) []Run {
	return foldRuns(len(events), func(i int) *Event { return &events[i] })
}

func foldRuns(n int, event func(i int) *Event) []Run {
	idx := make(map[string]int, n/4)
	runs := make([]Run, 0, n/4)
	for i := range n {
		e := event(i)
		if j, ok := idx[e.WorkflowRunID]; ok {
			runs[j] = Combine(runs[j], FromEvent(*e))
			continue
		}
		idx[e.WorkflowRunID] = len(runs)
		runs = append(runs, FromEvent(*e))
	}
	slices.SortFunc(runs, func(x, y Run) int { return cmp.Compare(x.WorkflowRunID, y.WorkflowRunID) })
	return runs
}

// HeadersJSON renders Kafka headers as a JSON array for the dead_letters
// table: [{"key": "...", "value": "..."}], where a key or value that is not
// valid UTF-8, or holds a NUL byte, is given base64-encoded as key_base64 or
// value_base64 instead, so that the exact bytes survive.
func HeadersJSON(hs []Header) []byte {
	buf := make([]byte, 0, 2+len(hs)*32)
	buf = append(buf, '[')
	for i, h := range hs {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, '{')
		buf = appendBytesField(buf, "key", h.Key)
		buf = append(buf, ',')
		buf = appendBytesField(buf, "value", h.Value)
		buf = append(buf, '}')
	}
	return append(buf, ']')
}

func appendBytesField(buf []byte, name string, v []byte) []byte {
	buf = append(buf, '"')
	buf = append(buf, name...)
	if utf8.Valid(v) && !slices.Contains(v, 0) {
		buf = append(buf, `":`...)
		return appendJSONString(buf, v)
	}
	buf = append(buf, `_base64":"`...)
	buf = base64.StdEncoding.AppendEncode(buf, v)
	return append(buf, '"')
}

// appendJSONString appends s, valid UTF-8, as a JSON string.
func appendJSONString(buf, s []byte) []byte {
	const hex = "0123456789abcdef"
	buf = append(buf, '"')
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			buf = append(buf, '\\', c)
		case c < 0x20:
			buf = append(buf, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			buf = append(buf, c)
		}
	}
	return append(buf, '"')
}

// TopicPartition names one partition.
type TopicPartition struct {
	Topic     string
	Partition int32
}

// Split cuts a batch of two or more messages into two batches at its
// middle message: the first ends where the second begins, so that applied
// one after the other they move the offset exactly as the whole would.
func (b *Batch) Split() (first, second *Batch) {
	offsets := make([]int64, 0, b.Len())
	for _, r := range b.Records {
		offsets = append(offsets, r.Offset)
	}
	for _, d := range b.DeadLetters {
		offsets = append(offsets, d.Offset)
	}
	slices.Sort(offsets)
	mid := offsets[len(offsets)/2]
	first = &Batch{Lease: b.Lease, End: mid}
	second = &Batch{Lease: b.Lease, End: b.End}
	second.Lease.NextOffset = mid
	for _, r := range b.Records {
		if r.Offset < mid {
			first.Records = append(first.Records, r)
		} else {
			second.Records = append(second.Records, r)
		}
	}
	for _, d := range b.DeadLetters {
		if d.Offset < mid {
			first.DeadLetters = append(first.DeadLetters, d)
		} else {
			second.DeadLetters = append(second.DeadLetters, d)
		}
	}
	return first, second
}
