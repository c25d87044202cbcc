package store

import (
	"encoding/binary"
	"slices"
	"time"

	"github.com/projector-run/projector/projector/model"
)

// copyEventsSQL streams a batch's events into workflow_events in
// PostgreSQL's binary COPY format, written by appendEventsCopy. The
// column list and appendEventRow must agree; TestCopyStoresWhatTheInsertStores
// checks every column against what the insert stores.
const copyEventsSQL = `COPY workflow_events (event_id, workflow_run_id, workflow_id, event_type, source, occurred_at, attempt, step_id, topic, partition, "offset", payload) FROM STDIN WITH (FORMAT binary)`

// copyEventsColumns is the number of columns of copyEventsSQL.
const copyEventsColumns = 12

// copyHeader starts a binary COPY stream: the signature, no flags, no
// header extension.
var copyHeader = []byte("PGCOPY\n\xff\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00")

// appendEventsCopy appends recs, as rows of copyEventsSQL, to buf as one
// whole binary COPY stream. It is the hot path of every batch: no
// reflection, no allocation beyond growing buf.
func appendEventsCopy(buf []byte, topic string, partition int32, recs []*model.Record) []byte {
	buf = slices.Grow(buf, copySize(topic, recs))
	buf = append(buf, copyHeader...)
	for _, r := range recs {
		buf = appendEventRow(buf, topic, partition, r)
	}
	return binary.BigEndian.AppendUint16(buf, 0xffff) // the trailer: -1 columns
}

// copySize is the length of appendEventsCopy's stream, so that the
// buffer is allocated once.
func copySize(topic string, recs []*model.Record) int {
	// Per row: the column count, 12 lengths, the fixed-size values
	// (timestamp, attempt, partition, offset) and jsonb's version byte.
	const fixed = 2 + copyEventsColumns*4 + 8 + 4 + 4 + 8 + 1
	n := len(copyHeader) + 2
	for _, r := range recs {
		e := &r.Event
		n += fixed + len(e.EventID) + len(e.WorkflowRunID) + len(e.WorkflowID) + len(e.EventType) +
			len(e.Source) + len(e.StepID) + len(topic) + len(e.Payload)
	}
	return n
}

func appendEventRow(buf []byte, topic string, partition int32, r *model.Record) []byte {
	e := &r.Event
	buf = binary.BigEndian.AppendUint16(buf, copyEventsColumns)
	buf = appendText(buf, e.EventID)
	buf = appendText(buf, e.WorkflowRunID)
	buf = appendText(buf, e.WorkflowID)
	buf = appendText(buf, e.EventType)
	buf = appendText(buf, e.Source)
	buf = appendTimestamptz(buf, e.Timestamp)
	buf = binary.BigEndian.AppendUint32(buf, 4)
	buf = binary.BigEndian.AppendUint32(buf, uint32(e.Attempt))
	if e.StepID == "" {
		buf = binary.BigEndian.AppendUint32(buf, 0xffffffff) // NULL
	} else {
		buf = appendText(buf, e.StepID)
	}
	buf = appendText(buf, topic)
	buf = binary.BigEndian.AppendUint32(buf, 4)
	buf = binary.BigEndian.AppendUint32(buf, uint32(partition))
	buf = binary.BigEndian.AppendUint32(buf, 8)
	buf = binary.BigEndian.AppendUint64(buf, uint64(r.Offset))
	// jsonb's binary form: a version byte, then the JSON text.
	buf = binary.BigEndian.AppendUint32(buf, uint32(1+len(e.Payload)))
	buf = append(buf, 1)
	return append(buf, e.Payload...)
}

// The binary forms the COPY stream and the array encoders (arrays.go)
// share: a field's length, then its bytes.

// appendText writes a text value.
func appendText(buf []byte, s string) []byte {
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(s)))
	return append(buf, s...)
}

// pgEpochMicros is the zero of PostgreSQL's binary timestamps,
// 2000-01-01T00:00:00Z, in Unix microseconds.
var pgEpochMicros = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro()

// appendTimestamptz writes a timestamp, truncated to whole microseconds
// as pgx and PostgreSQL do. Not Time.Sub: a Duration ends 292 years from
// 2000.
func appendTimestamptz(buf []byte, t time.Time) []byte {
	buf = binary.BigEndian.AppendUint32(buf, 8)
	return binary.BigEndian.AppendUint64(buf, uint64(t.UnixMicro()-pgEpochMicros))
}
