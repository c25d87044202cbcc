package model

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Dead-letter reasons (contract §2).
const (
	ReasonTooLarge                 = "too_large"
	ReasonInvalidJSON              = "invalid_json"
	ReasonNotObject                = "not_object"
	ReasonMissingField             = "missing_field"
	ReasonInvalidField             = "invalid_field"
	ReasonUnsupportedSchemaVersion = "unsupported_schema_version"
	ReasonUnstorable               = "unstorable"
	// ReasonBeforeHorizon: a valid event that occurred before the
	// retention horizon, whose event_id is not stored: it may be the
	// duplicate of a pruned event, so it is not applied (contract 6.1).
	ReasonBeforeHorizon = "before_horizon"
)

// Reasons lists the dead-letter reasons, in the contract's order: the one
// list that metrics and the dlq commands take them from.
var Reasons = []string{
	ReasonTooLarge, ReasonInvalidJSON, ReasonNotObject, ReasonMissingField,
	ReasonInvalidField, ReasonUnsupportedSchemaVersion, ReasonUnstorable, ReasonBeforeHorizon,
}

// MaxValueBytes is the largest message value Decode accepts; a longer one
// is too_large.
const MaxValueBytes = 1 << 20

// SchemaVersion is the only schema_version this decoder knows.
const SchemaVersion = 1

// Byte-length limits of the string fields, unescaped (contract §2).
const (
	maxEventTypeBytes = 100
	maxIDBytes        = 200
	minAttempt        = 1
	maxAttempt        = 1000
)

// DecodeError says why a message is a dead letter. Error() returns a
// one-line lowercase text that names the field, e.g.
// `attempt: must be an integer from 1 to 1000, got 0`.
type DecodeError struct {
	// Reason is one of the Reason* constants.
	Reason string
	// Field is the top-level member at fault, or "" when none is (a syntax
	// error outside the known members, a top-level array, ...).
	Field string
	// Detail says what is wrong; syntax errors give the byte offset.
	Detail string
}

// Error returns "<field>: <detail>", or just the detail without a field.
func (e *DecodeError) Error() string {
	if e.Field != "" {
		return e.Field + ": " + e.Detail
	}
	return e.Detail
}

// Decode validates one Kafka message value and returns the event. Every
// failure is a *DecodeError. It never panics, whatever the bytes. Payload
// aliases value (no copy).
//
// The checks run in this order, and the first failing one gives the
// reason:
//
//  1. too_large: len(value) > MaxValueBytes.
//  2. invalid_json: anything RFC 8259 refuses (empty input, trailing
//     garbage, a byte order mark, raw control characters in strings, ...),
//     invalid UTF-8 anywhere, and duplicate keys in any object at any depth
//     (keys compared after unescaping; jsonb would silently keep only one).
//  3. not_object: valid JSON whose top-level value is not an object.
//  4. unstorable: valid JSON that PostgreSQL 15's jsonb refuses: a \u0000
//     escape (in a key too), an unpaired UTF-16 surrogate escape, a number
//     outside numeric's range (leading digit beyond 10^131071, more than
//     16383 digits of scale, |exponent| >= 2^30-1), or nesting deeper than
//     MaxDepth.
//  5. unsupported_schema_version: schema_version is an integer other than
//     1 (absent or null means 1).
//  6. missing_field: a required member absent or null, checked in the order
//     event_id, event_type, source, workflow_id, workflow_run_id,
//     timestamp, then step_id for the four step.* types.
//  7. invalid_field: checked in the order event_id, event_type, source,
//     workflow_id, workflow_run_id, timestamp, attempt, step_id, data,
//     schema_version.
//
// Strings are 1–200 bytes (event_type 1–100) after unescaping. timestamp is
// RFC 3339 with a zone (Z or ±hh:mm, fractional seconds of any length),
// parsed by time.Parse after a strict grammar check: time.Parse alone would
// also take "3:04:05", "05,123" or "+24:00". RFC 3339 allows a lower-case
// "t" and "z", but time.Parse refuses them, and so does Decode. Seconds "60"
// (leap seconds) and year 0000 (which PostgreSQL refuses) are invalid too.
// The result is in UTC, truncated (floored) to whole microseconds; note that
// "0001-01-01T00:00:00Z" is valid and decodes to the zero time.Time. attempt
// and schema_version count as integers only when written without fraction
// or exponent ("1e2", "1.0" are not); a huge integer is simply out of
// range.
func Decode(value []byte) (Event, error) {
	if len(value) > MaxValueBytes {
		return Event{}, &DecodeError{Reason: ReasonTooLarge,
			Detail: fmt.Sprintf("value is %d bytes, more than the limit of %d", len(value), MaxValueBytes)}
	}
	s := getScanner(value)
	defer putScanner(s)
	if err := s.scan(); err != nil {
		return Event{}, err
	}
	// The last value scanned is the top-level one.
	if s.lastKind != kindObject {
		return Event{}, &DecodeError{Reason: ReasonNotObject,
			Detail: "top-level value is " + s.lastKind.describe() + ", not an object"}
	}
	if s.unstorable != nil {
		return Event{}, s.unstorable
	}
	return s.event()
}

// stepType is IsStep for unescaped bytes (IsStep is inlined, so the
// conversion allocates nothing).
func stepType(b []byte) bool { return IsStep(string(b)) }

// appendStringValue appends the unescaped text of a scanned string value.
func appendStringValue(dst []byte, sp jsonSpan, data []byte) []byte {
	if !sp.esc {
		return append(dst, sp.body(data)...)
	}
	return appendUnescaped(dst, sp.body(data))
}

// event decodes the captured members of a valid, storable object.
func (s *jsonScanner) event() (Event, error) {
	f := &s.fields
	d := s.data

	sv := f[fSchemaVersion]
	svPresent := sv.set && sv.kind != kindNull
	svInteger := false
	if svPresent {
		var n int64
		n, svInteger = intLiteral(sv, d)
		if svInteger && n != SchemaVersion {
			return Event{}, &DecodeError{Reason: ReasonUnsupportedSchemaVersion, Field: eventFieldNames[fSchemaVersion],
				Detail: fmt.Sprintf("unsupported schema version %s, this worker knows %d", describeJSONValue(sv, d), SchemaVersion)}
		}
	}

	// Unescape the needed strings into one buffer, turned into a string
	// once: every string of the Event shares that one allocation.
	var (
		sbuf [512]byte
		off  [eventFieldCount + 1][2]int // field i's text is buf[off[i][0]:off[i][1]]; eventFieldCount is data.error
	)
	const offError = eventFieldCount
	buf := sbuf[:0]
	for i := fEventID; i <= fTimestamp; i++ {
		if f[i].kind == kindString {
			off[i][0] = len(buf)
			buf = appendStringValue(buf, f[i], d)
			off[i][1] = len(buf)
		}
	}
	isStep, isFailed := false, false
	if f[fEventType].kind == kindString {
		t := buf[off[fEventType][0]:off[fEventType][1]]
		isStep = stepType(t)
		// data.error is captured for both failure types: run.failed (the
		// run's error) and step.failed (the step's error).
		isFailed = string(t) == TypeRunFailed || string(t) == TypeStepFailed
	}

	// missing_field, in the fixed order.
	for i := fEventID; i <= fTimestamp; i++ {
		if !f[i].set || f[i].kind == kindNull {
			return Event{}, missingFieldError(i, f[i], "")
		}
	}
	if isStep && (!f[fStepID].set || f[fStepID].kind == kindNull) {
		return Event{}, missingFieldError(fStepID, f[fStepID], " for step.* events")
	}

	if isStep && f[fStepID].kind == kindString {
		off[fStepID][0] = len(buf)
		buf = appendStringValue(buf, f[fStepID], d)
		off[fStepID][1] = len(buf)
	}
	hasError := isFailed && f[fData].kind == kindObject && s.dataError.set && s.dataError.kind == kindString
	if hasError {
		off[offError][0] = len(buf)
		buf = appendStringValue(buf, s.dataError, d)
		off[offError][1] = len(buf)
	}
	str := string(buf)
	text := func(i int) string { return str[off[i][0]:off[i][1]] }

	// invalid_field, in the fixed order.
	for i := fEventID; i <= fWorkflowRunID; i++ {
		limit := maxIDBytes
		if i == fEventType {
			limit = maxEventTypeBytes
		}
		if err := checkStringField(i, f[i], text(i), limit); err != nil {
			return Event{}, err
		}
	}
	if f[fTimestamp].kind != kindString {
		return Event{}, invalidFieldError(fTimestamp, "must be an RFC 3339 timestamp string, got "+f[fTimestamp].kind.describe())
	}
	ts, problem := parseTimestamp(text(fTimestamp))
	if problem != "" {
		return Event{}, invalidFieldError(fTimestamp, problem)
	}
	attempt := int64(1)
	if sp := f[fAttempt]; sp.set && sp.kind != kindNull {
		n, ok := intLiteral(sp, d)
		if !ok || n < minAttempt || n > maxAttempt {
			return Event{}, invalidFieldError(fAttempt, fmt.Sprintf("must be an integer from %d to %d, got %s", minAttempt, maxAttempt, describeJSONValue(sp, d)))
		}
		attempt = n
	}
	if isStep {
		if err := checkStringField(fStepID, f[fStepID], text(fStepID), maxIDBytes); err != nil {
			return Event{}, err
		}
	}
	if sp := f[fData]; sp.set && sp.kind != kindNull && sp.kind != kindObject {
		return Event{}, invalidFieldError(fData, "must be an object, got "+sp.kind.describe())
	}
	if svPresent && !svInteger {
		return Event{}, invalidFieldError(fSchemaVersion, "must be an integer, got "+describeJSONValue(sv, d))
	}

	ev := Event{
		EventID:       text(fEventID),
		EventType:     text(fEventType),
		Source:        text(fSource),
		WorkflowID:    text(fWorkflowID),
		WorkflowRunID: text(fWorkflowRunID),
		Timestamp:     ts,
		Attempt:       int32(attempt),
		Payload:       d,
	}
	if isStep {
		ev.StepID = text(fStepID)
	}
	if hasError {
		ev.Error = text(offError)
		ev.HasError = true
	}
	return ev, nil
}

func missingFieldError(i int, sp jsonSpan, suffix string) *DecodeError {
	detail := "is required" + suffix
	if sp.set {
		detail += ", got null"
	}
	return &DecodeError{Reason: ReasonMissingField, Field: eventFieldNames[i], Detail: detail}
}

func invalidFieldError(i int, detail string) *DecodeError {
	return &DecodeError{Reason: ReasonInvalidField, Field: eventFieldNames[i], Detail: detail}
}

// checkStringField checks a required string member (present and not null).
func checkStringField(i int, sp jsonSpan, text string, limit int) *DecodeError {
	switch {
	case sp.kind != kindString:
		return invalidFieldError(i, "must be a string, got "+sp.kind.describe())
	case len(text) == 0:
		return invalidFieldError(i, "must not be empty")
	case len(text) > limit:
		return invalidFieldError(i, fmt.Sprintf("must be at most %d bytes, got %d", limit, len(text)))
	}
	return nil
}

// intLiteral returns the value of a number written as an integer (no
// fraction, no exponent). Values beyond ±2^62 saturate: they are out of
// every range Decode checks.
func intLiteral(sp jsonSpan, data []byte) (int64, bool) {
	if sp.kind != kindNumber {
		return 0, false
	}
	raw := data[sp.start:sp.end]
	neg := raw[0] == '-'
	if neg {
		raw = raw[1:]
	}
	var n int64
	for _, c := range raw {
		if c < '0' || c > '9' {
			return 0, false // '.', 'e' or 'E'
		}
		if n < 1<<62/10 {
			n = n*10 + int64(c-'0')
		} else {
			n = 1 << 62
		}
	}
	if neg {
		n = -n
	}
	return n, true
}

// describeJSONValue shows a member's value in an error text: the JSON text of
// a scalar, cut to a readable length, or its type for a container.
func describeJSONValue(sp jsonSpan, data []byte) string {
	if sp.kind == kindObject || sp.kind == kindArray {
		return sp.kind.describe()
	}
	const limit = 40
	raw := data[sp.start:sp.end]
	if len(raw) <= limit {
		return string(raw)
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(raw[cut]) {
		cut--
	}
	return string(raw[:cut]) + "..."
}

const timestampHint = "must be an RFC 3339 timestamp with a zone, like 2006-01-02T15:04:05.999999Z or 2006-01-02T15:04:05+02:00"

// parseTimestamp parses an RFC 3339 timestamp with a zone into UTC,
// truncated to whole microseconds, or says what is wrong with it.
func parseTimestamp(v string) (time.Time, string) {
	if !rfc3339(v) {
		hint := ""
		if strings.ContainsAny(v, "tz") {
			hint = " (T and Z must be upper case)"
		}
		return time.Time{}, fmt.Sprintf("%s, got %s%s", timestampHint, quoteTrunc([]byte(v)), hint)
	}
	if v[:4] == "0000" {
		return time.Time{}, fmt.Sprintf("year 0000 is out of range, got %q", v)
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		why := ""
		var pe *time.ParseError
		if errors.As(err, &pe) && pe.Message != "" {
			why = " (" + strings.TrimPrefix(pe.Message, ": ") + ")"
		}
		return time.Time{}, fmt.Sprintf("must be a valid RFC 3339 timestamp, got %s%s", quoteTrunc([]byte(v)), why)
	}
	t = t.UTC()
	// Floor to microseconds: Nanosecond is within the second, always >= 0.
	return t.Add(-time.Duration(t.Nanosecond() % 1000)), ""
}

// rfc3339 checks the RFC 3339 date-time grammar (section 5.6) with
// upper-case T and Z: YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM), with hour ≤ 23
// and minute ≤ 59 in the offset. Ranges of the date and time fields are
// left to time.Parse.
func rfc3339(v string) bool {
	const digits = "dddd-dd-ddTdd:dd:dd"
	if len(v) < len(digits)+1 {
		return false
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] == 'd' {
			if !isDecDigit(v[i]) {
				return false
			}
		} else if v[i] != digits[i] {
			return false
		}
	}
	i := len(digits)
	if v[i] == '.' {
		i++
		j := i
		for i < len(v) && isDecDigit(v[i]) {
			i++
		}
		if i == j {
			return false
		}
	}
	rest := v[i:]
	if rest == "Z" {
		return true
	}
	if len(rest) != 6 || (rest[0] != '+' && rest[0] != '-') || rest[3] != ':' ||
		!isDecDigit(rest[1]) || !isDecDigit(rest[2]) || !isDecDigit(rest[4]) || !isDecDigit(rest[5]) {
		return false
	}
	hh := (rest[1]-'0')*10 + rest[2] - '0'
	mm := (rest[4]-'0')*10 + rest[5] - '0'
	return hh <= 23 && mm <= 59
}
