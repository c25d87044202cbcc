package model

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// decOmit removes a member in decEvent.
const decOmit = "\x00omit"

// decBase is a valid run.started event, member by member (raw JSON values).
var decBase = [][2]string{
	{"event_id", `"evt-1"`},
	{"event_type", `"run.started"`},
	{"source", `"github-actions"`},
	{"workflow_id", `"wf-1"`},
	{"workflow_run_id", `"run-1"`},
	{"timestamp", `"2024-05-06T07:08:09.123456Z"`},
}

// decEvent returns decBase with members replaced (key, raw value pairs;
// decOmit removes) and unknown ones appended, in order.
func decEvent(kv ...string) string {
	if len(kv)%2 != 0 {
		panic("decEvent: odd arguments")
	}
	members := append([][2]string(nil), decBase...)
	for i := 0; i < len(kv); i += 2 {
		k, v := kv[i], kv[i+1]
		found := false
		for j := range members {
			if members[j][0] == k {
				members[j][1] = v
				found = true
			}
		}
		if !found {
			members = append(members, [2]string{k, v})
		}
	}
	var b strings.Builder
	b.WriteByte('{')
	first := true
	for _, m := range members {
		if m[1] == decOmit {
			continue
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		b.WriteString(`"` + m[0] + `":` + m[1])
	}
	b.WriteByte('}')
	return b.String()
}

// decNest returns depth levels of arrays around inner.
func decNest(depth int, inner string) string {
	return strings.Repeat("[", depth) + inner + strings.Repeat("]", depth)
}

// decPadTo pads a valid event with a "pad" member to exactly n bytes.
func decPadTo(n int) []byte {
	prefix := decEvent("pad", `""`)
	prefix = prefix[:len(prefix)-2] // drop `"}`
	pad := n - len(prefix) - 2
	return []byte(prefix + strings.Repeat("x", pad) + `"}`)
}

func decStr(n int) string { return `"` + strings.Repeat("a", n) + `"` }

func decDigits(n int) string { return "1" + strings.Repeat("0", n-1) }

type decodeCase struct {
	name   string
	in     []byte
	reason string // "" when the event is valid
	field  string // DecodeError.Field, checked when reason != ""
	detail string // a substring of Error(), when set
	check  func(t *testing.T, e Event)
}

func decTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

// decodeCases is the table of TestDecode, also the fuzz seeds.
func decodeCases() []decodeCase {
	S := func(s string) []byte { return []byte(s) }
	E := func(kv ...string) []byte { return []byte(decEvent(kv...)) }
	var cases []decodeCase
	add := func(reason, field string, c ...decodeCase) {
		for _, x := range c {
			x.reason, x.field = reason, field
			cases = append(cases, x)
		}
	}

	// too_large
	add(ReasonTooLarge, "",
		decodeCase{name: "valid event of 1 MiB + 1", in: decPadTo(MaxValueBytes + 1), detail: "1048577 bytes"},
		decodeCase{name: "garbage of 1 MiB + 1", in: bytes.Repeat([]byte{0xff}, MaxValueBytes+1)},
		decodeCase{name: "array of 2 MiB", in: S("[" + strings.Repeat("0,", MaxValueBytes) + "0]")},
	)

	// invalid_json
	add(ReasonInvalidJSON, "",
		decodeCase{name: "empty", in: S(""), detail: "empty value"},
		decodeCase{name: "nil", in: nil, detail: "empty value"},
		decodeCase{name: "whitespace only", in: S(" \t\r\n"), detail: "unexpected end of input at byte 4"},
		decodeCase{name: "open brace", in: S("{"), detail: "unexpected end of input at byte 1"},
		decodeCase{name: "close brace", in: S("}"), detail: "invalid character '}' at byte 0"},
		decodeCase{name: "key without value", in: S(`{"a"}`), detail: "invalid character '}' at byte 4"},
		decodeCase{name: "missing value", in: S(`{"a":}`)},
		decodeCase{name: "trailing comma in object", in: S(`{"a":1,}`), detail: "at byte 7"},
		decodeCase{name: "trailing comma in array", in: S(`{"a":[1,]}`)},
		decodeCase{name: "missing comma", in: S(`{"a":1 "b":2}`)},
		decodeCase{name: "unquoted key", in: S(`{a:1}`)},
		decodeCase{name: "single quotes", in: S(`{'a':1}`)},
		decodeCase{name: "invalid character in value", in: S(`{"a":x}`), detail: "invalid character 'x' at byte 5"},
		decodeCase{name: "trailing garbage", in: S(`{"a":1}x`), detail: "invalid character 'x' at byte 7"},
		decodeCase{name: "two objects", in: S(`{"a":1}{"a":1}`)},
		decodeCase{name: "trailing NUL", in: S("{\"a\":1}\x00"), detail: "invalid byte 0x00 at byte 7"},
		decodeCase{name: "byte order mark", in: append([]byte{0xEF, 0xBB, 0xBF}, E()...), detail: "byte order mark"},
		decodeCase{name: "raw newline in string", in: S("{\"a\":\"x\ny\"}"), detail: "control character 0x0a"},
		decodeCase{name: "raw tab in string", in: S("{\"a\":\"x\ty\"}")},
		decodeCase{name: "raw 0x01 in key", in: S("{\"\x01\":1}")},
		decodeCase{name: "raw NUL in string", in: S("{\"a\":\"\x00\"}")},
		decodeCase{name: "invalid UTF-8 in string", in: S("{\"a\":\"\xff\"}"), detail: "invalid UTF-8 in string at byte 6"},
		decodeCase{name: "invalid UTF-8 in key", in: S("{\"\xc3\":1}")},
		decodeCase{name: "overlong UTF-8", in: S("{\"a\":\"\xc0\xaf\"}")},
		decodeCase{name: "UTF-8 encoded surrogate", in: S("{\"a\":\"\xed\xa0\x80\"}")},
		decodeCase{name: "UTF-8 beyond U+10FFFF", in: S("{\"a\":\"\xf4\x90\x80\x80\"}")},
		decodeCase{name: "truncated UTF-8 at end of string", in: S("{\"a\":\"\xe2\x82\"}")},
		decodeCase{name: "invalid UTF-8 outside strings", in: S("{\"a\":1}\xff"), detail: "invalid byte 0xff at byte 7"},
		decodeCase{name: "latin-1 outside strings", in: S("{\"a\":\xe9}")},
		decodeCase{name: "binary garbage", in: []byte{0x00, 0x01, 0x02, 0xfe, 0xff, 0x80}},
		decodeCase{name: "binary garbage after brace", in: []byte{'{', 0x9c, 0x00, 0x13}},
		decodeCase{name: "truncated true", in: S(`{"a":tru}`)},
		decodeCase{name: "truncated null", in: S(`{"a":nul`)},
		decodeCase{name: "capitalized literal", in: S(`{"a":True}`)},
		decodeCase{name: "leading zero", in: S(`{"a":01}`)},
		decodeCase{name: "minus alone", in: S(`{"a":-}`)},
		decodeCase{name: "plus sign", in: S(`{"a":+1}`)},
		decodeCase{name: "dot without digits", in: S(`{"a":1.}`)},
		decodeCase{name: "dot first", in: S(`{"a":.5}`)},
		decodeCase{name: "empty exponent", in: S(`{"a":1e}`)},
		decodeCase{name: "exponent sign only", in: S(`{"a":1e+}`)},
		decodeCase{name: "hex number", in: S(`{"a":0x10}`)},
		decodeCase{name: "NaN", in: S(`{"a":NaN}`)},
		decodeCase{name: "Infinity", in: S(`{"a":-Infinity}`)},
		decodeCase{name: "comment", in: S(`{"a":1 /* c */}`)},
		decodeCase{name: "invalid escape", in: S(`{"a":"\x"}`), detail: `invalid escape '\x'`},
		decodeCase{name: "short unicode escape", in: S(`{"a":"\u12"}`)},
		decodeCase{name: "non-hex unicode escape", in: S(`{"a":"\u12G4"}`)},
		decodeCase{name: "backslash at end", in: S(`{"a":"\`)},
		decodeCase{name: "unterminated string", in: S(`{"a":"abc`)},
		decodeCase{name: "unterminated object", in: S(`{"a":1`)},
		decodeCase{name: "unclosed nesting 10000 deep", in: S(`{"a":` + strings.Repeat("[", 10000))},
		decodeCase{name: "mismatched brackets 10000 deep", in: S(`{"a":` + strings.Repeat("[", 10000) + strings.Repeat("]", 9999) + "}}")},
		decodeCase{name: "mismatched brackets", in: S(`{"a":[}]`)},
		decodeCase{name: "duplicate key", in: S(`{"a":1,"a":2}`), detail: `duplicate key "a" at byte 7`},
		decodeCase{name: "duplicate key spelled with escape", in: S(`{"a":1,"\u0061":2}`)},
		decodeCase{name: "duplicate key raw and surrogate pair", in: S(`{"😀":1,"\ud83d\ude00":2}`)},
		decodeCase{name: "duplicate key among many", in: S(`{` + decManyKeys(100) + `,"k42":0}`), detail: `duplicate key "k42"`},
		decodeCase{name: "duplicate key 1000 levels deep", in: S(`{"a":` + decNest(999, `{"b":1,"b":1}`) + `}`)},
		decodeCase{name: "duplicate keys beat unstorable", in: S(`{"\u0000":1,"\u0000":2}`)},
		decodeCase{name: "duplicate lone surrogates, hex case differs", in: S(`{"\ud800":1,"\uD800":2}`)},
		decodeCase{name: "syntax error after unstorable", in: S(`{"a":"\u0000",}`)},
		decodeCase{name: "syntax error after deep nesting", in: S(decNest(1000, "") + "x")},
		decodeCase{name: "broken pair escape", in: S(`{"a":"\ud800\u00zz"}`)},
	)
	add(ReasonInvalidJSON, "event_id",
		decodeCase{name: "duplicate event_id", in: S(`{"event_id":"a","event_id":"b"}`), detail: `event_id: duplicate key "event_id"`},
		decodeCase{name: "control character in event_id", in: E("event_id", "\"a\x01\"")},
	)
	add(ReasonInvalidJSON, "data",
		decodeCase{name: "duplicate key in data", in: E("data", `{"x":1,"x":2}`), detail: "data: duplicate key"},
		decodeCase{name: "duplicate key nested in array", in: E("data", `{"list":[{"x":1},{"x":1,"y":2,"x":3}]}`)},
	)

	// not_object
	add(ReasonNotObject, "",
		decodeCase{name: "null", in: S("null"), detail: "top-level value is null, not an object"},
		decodeCase{name: "empty array", in: S("[]"), detail: "is an array"},
		decodeCase{name: "string", in: S(`"str"`), detail: "is a string"},
		decodeCase{name: "number", in: S("123")},
		decodeCase{name: "boolean", in: S(" true ")},
		decodeCase{name: "array of events", in: S("[" + decEvent() + "]")},
		decodeCase{name: "array beats unstorable", in: S(`["\u0000"]`)},
		decodeCase{name: "huge number", in: S(`1e1000000`)},
	)

	// unstorable
	add(ReasonUnstorable, "",
		decodeCase{name: "NUL escape in an extra member", in: E("extra", `"a\u0000b"`), detail: `\u0000 escape at byte`},
		decodeCase{name: "NUL escape in a key", in: E("a\\u0000b", `1`)},
		decodeCase{name: "lone high surrogate", in: E("extra", `"\ud800"`), detail: `unpaired UTF-16 surrogate escape \ud800`},
		decodeCase{name: "lone low surrogate", in: E("extra", `"x\uDC00y"`)},
		decodeCase{name: "reversed surrogate pair", in: E("extra", `"\udc00\ud800"`)},
		decodeCase{name: "high surrogate then BMP escape", in: E("extra", `"\ud800\u0041"`)},
		decodeCase{name: "two high surrogates", in: E("extra", `"\ud800\ud800\udc00"`)},
		decodeCase{name: "lone surrogate in a key", in: E("\\udbff", `1`)},
		decodeCase{name: "nesting MaxDepth+1", in: E("extra", decNest(MaxDepth, "")), detail: "nesting deeper than 512 levels"},
		decodeCase{name: "nesting 10000 deep", in: E("extra", decNest(9999, "1"))},
		decodeCase{name: "top-level-only nesting 100000 deep", in: S(`{"a":` + decNest(100000, "") + `}`)},
		decodeCase{name: "missing fields do not matter", in: S(`{"x":1e131072}`), detail: "outside the range of PostgreSQL numeric"},
	)
	for _, n := range []string{"1e131072", "1E131072", "-1e131072", "1e1000000", "1e-1000000", "1e-16384", "10e-16384",
		"0e-16384", "0.0e-16384", "1.5e-16383", "0e1073741823", "0e-1073741823", "0e99999999999999999999999",
		"1e+0000000000000000000000000000131072", decDigits(131073), "0." + strings.Repeat("0", 16384), "1." + strings.Repeat("5", 16384)} {
		name := n
		if len(name) > 40 {
			name = fmt.Sprintf("%s... (%d bytes)", n[:20], len(n))
		}
		add(ReasonUnstorable, "", decodeCase{name: "number " + name, in: E("extra", n)})
	}
	add(ReasonUnstorable, "data",
		decodeCase{name: "NUL escape in data", in: E("data", `{"a":["x\u0000"]}`), detail: `data: \u0000 escape`},
		decodeCase{name: "NUL escape in a data key", in: E("data", `{"\u0000":1}`)},
		decodeCase{name: "huge number in data", in: E("data", `{"a":-1e1000000}`)},
		decodeCase{name: "nesting MaxDepth+1 in data", in: E("data", `{"a":`+decNest(MaxDepth-1, "")+`}`)},
	)
	add(ReasonUnstorable, "event_id",
		decodeCase{name: "NUL escape in event_id", in: E("event_id", `"\u0000"`)},
	)
	add(ReasonUnstorable, "attempt",
		decodeCase{name: "unstorable attempt beats invalid_field", in: E("attempt", "1e1000000")},
	)
	add(ReasonUnstorable, "schema_version",
		decodeCase{name: "unstorable schema_version beats unsupported", in: E("schema_version", "2e1000000")},
	)

	// unsupported_schema_version
	add(ReasonUnsupportedSchemaVersion, "schema_version",
		decodeCase{name: "schema_version 2", in: E("schema_version", "2"), detail: "schema_version: unsupported schema version 2"},
		decodeCase{name: "schema_version 0", in: E("schema_version", "0")},
		decodeCase{name: "schema_version -1", in: E("schema_version", "-1")},
		decodeCase{name: "schema_version -0", in: E("schema_version", "-0")},
		decodeCase{name: "schema_version huge", in: E("schema_version", "100000000000000000000000000001")},
		decodeCase{name: "schema_version 2 beats missing fields", in: S(`{"schema_version":2}`)},
		decodeCase{name: "schema_version 2 beats invalid fields", in: E("schema_version", "2", "attempt", "0", "event_id", "5")},
	)

	// missing_field
	for _, f := range []string{"event_id", "event_type", "source", "workflow_id", "workflow_run_id", "timestamp"} {
		add(ReasonMissingField, f,
			decodeCase{name: f + " absent", in: E(f, decOmit), detail: f + ": is required"},
			decodeCase{name: f + " null", in: E(f, "null"), detail: f + ": is required, got null"},
		)
	}
	for _, typ := range []string{TypeStepStarted, TypeStepSucceeded, TypeStepFailed, TypeStepSkipped} {
		add(ReasonMissingField, "step_id",
			decodeCase{name: typ + " without step_id", in: E("event_type", `"`+typ+`"`), detail: "step_id: is required for step.* events"},
			decodeCase{name: typ + " with null step_id", in: E("event_type", `"`+typ+`"`, "step_id", "null")},
		)
	}
	add(ReasonMissingField, "step_id",
		decodeCase{name: "escaped step type without step_id", in: E("event_type", `"step\u002estarted"`)},
	)
	add(ReasonMissingField, "event_id",
		decodeCase{name: "empty object", in: S("{}")},
		decodeCase{name: "first missing field in order", in: E("event_id", decOmit, "timestamp", decOmit)},
	)
	add(ReasonMissingField, "timestamp",
		decodeCase{name: "missing beats invalid", in: E("event_id", "5", "attempt", "0", "timestamp", decOmit)},
	)

	// invalid_field
	for _, f := range []string{"event_id", "event_type", "source", "workflow_id", "workflow_run_id"} {
		limit := 200
		if f == "event_type" {
			limit = 100
		}
		add(ReasonInvalidField, f,
			decodeCase{name: f + " number", in: E(f, "5"), detail: f + ": must be a string, got a number"},
			decodeCase{name: f + " boolean", in: E(f, "true")},
			decodeCase{name: f + " object", in: E(f, `{"a":"b"}`), detail: "got an object"},
			decodeCase{name: f + " array", in: E(f, `["a"]`)},
			decodeCase{name: f + " empty", in: E(f, `""`), detail: f + ": must not be empty"},
			decodeCase{name: f + " too long", in: E(f, decStr(limit+1)), detail: fmt.Sprintf("%s: must be at most %d bytes, got %d", f, limit, limit+1)},
			decodeCase{name: f + " too long in UTF-8 bytes", in: E(f, `"`+strings.Repeat("é", limit/2)+`a"`)},
			decodeCase{name: f + " too long after unescaping", in: E(f, `"`+strings.Repeat(`\u00e9`, limit/2)+`a"`)},
		)
	}
	add(ReasonInvalidField, "timestamp",
		decodeCase{name: "timestamp number", in: E("timestamp", "1714979289"), detail: "got a number"},
		decodeCase{name: "timestamp empty", in: E("timestamp", `""`)},
		decodeCase{name: "timestamp without zone", in: E("timestamp", `"2024-05-06T07:08:09"`), detail: `got "2024-05-06T07:08:09"`},
		decodeCase{name: "timestamp date only", in: E("timestamp", `"2024-05-06"`)},
		decodeCase{name: "timestamp lowercase t", in: E("timestamp", `"2024-05-06t07:08:09Z"`), detail: "upper case"},
		decodeCase{name: "timestamp lowercase z", in: E("timestamp", `"2024-05-06T07:08:09z"`)},
		decodeCase{name: "timestamp space separator", in: E("timestamp", `"2024-05-06 07:08:09Z"`)},
		decodeCase{name: "timestamp comma fraction", in: E("timestamp", `"2024-05-06T07:08:09,5Z"`)},
		decodeCase{name: "timestamp empty fraction", in: E("timestamp", `"2024-05-06T07:08:09.Z"`)},
		decodeCase{name: "timestamp one-digit hour", in: E("timestamp", `"2024-05-06T7:08:09Z"`)},
		decodeCase{name: "timestamp offset without colon", in: E("timestamp", `"2024-05-06T07:08:09+0200"`)},
		decodeCase{name: "timestamp offset hour 24", in: E("timestamp", `"2024-05-06T07:08:09+24:00"`)},
		decodeCase{name: "timestamp offset minute 60", in: E("timestamp", `"2024-05-06T07:08:09+01:60"`)},
		decodeCase{name: "timestamp offset hours only", in: E("timestamp", `"2024-05-06T07:08:09+02"`)},
		decodeCase{name: "timestamp trailing garbage", in: E("timestamp", `"2024-05-06T07:08:09Zx"`)},
		decodeCase{name: "timestamp leading space", in: E("timestamp", `" 2024-05-06T07:08:09Z"`)},
		decodeCase{name: "timestamp day out of range", in: E("timestamp", `"2024-02-30T07:08:09Z"`), detail: "day out of range"},
		decodeCase{name: "timestamp month 13", in: E("timestamp", `"2024-13-06T07:08:09Z"`)},
		decodeCase{name: "timestamp hour 24", in: E("timestamp", `"2024-05-06T24:00:00Z"`)},
		decodeCase{name: "timestamp leap second", in: E("timestamp", `"2016-12-31T23:59:60Z"`), detail: "second out of range"},
		decodeCase{name: "timestamp year 0000", in: E("timestamp", `"0000-01-01T00:00:00Z"`), detail: "year 0000"},
		decodeCase{name: "timestamp unix epoch number string", in: E("timestamp", `"1714979289"`)},
	)
	for _, v := range []string{"0", "1001", "-1", "-0", "1.5", "1.0", "1e2", "1E0", `"1"`, "true", "{}", "[1]", "100000000000000000000000000001", "-100000000000000000000000000001"} {
		got := v
		switch v[0] {
		case '{':
			got = "an object"
		case '[':
			got = "an array"
		}
		if len(got) > 40 {
			got = got[:40] + "..."
		}
		add(ReasonInvalidField, "attempt",
			decodeCase{name: "attempt " + v, in: E("attempt", v), detail: "attempt: must be an integer from 1 to 1000, got " + got})
	}
	add(ReasonInvalidField, "step_id",
		decodeCase{name: "step_id number", in: E("event_type", `"step.started"`, "step_id", "7"), detail: "step_id: must be a string, got a number"},
		decodeCase{name: "step_id empty", in: E("event_type", `"step.failed"`, "step_id", `""`)},
		decodeCase{name: "step_id too long", in: E("event_type", `"step.skipped"`, "step_id", decStr(201))},
	)
	for _, v := range []string{"[]", `"x"`, "1", "false", `[{"error":"x"}]`} {
		add(ReasonInvalidField, "data",
			decodeCase{name: "data " + v, in: E("data", v), detail: "data: must be an object, got "})
	}
	for _, v := range []string{`"1"`, "1.0", "1e0", "true", "{}", "[]"} {
		add(ReasonInvalidField, "schema_version",
			decodeCase{name: "schema_version " + v, in: E("schema_version", v), detail: "schema_version: must be an integer, got "})
	}
	add(ReasonInvalidField, "event_id",
		decodeCase{name: "first invalid field in order", in: E("event_id", "1", "attempt", "0", "data", "[]")},
	)
	add(ReasonInvalidField, "attempt",
		decodeCase{name: "attempt before step_id and data", in: E("event_type", `"step.started"`, "step_id", "7", "attempt", "0", "data", "[]")},
	)
	add(ReasonInvalidField, "step_id",
		decodeCase{name: "step_id before data", in: E("event_type", `"step.started"`, "step_id", "7", "data", "[]")},
	)
	add(ReasonInvalidField, "data",
		decodeCase{name: "data before schema_version", in: E("data", "[]", "schema_version", `"1"`)},
	)
	add(ReasonInvalidField, "event_type",
		decodeCase{name: "event_type wrong type, no step check", in: E("event_type", "1", "step_id", decOmit)},
	)

	// Valid events.
	valid := func(c ...decodeCase) { add("", "", c...) }
	valid(
		decodeCase{name: "minimal", in: E(), check: func(t *testing.T, e Event) {
			require.Equal(t, Event{
				EventID: "evt-1", EventType: TypeRunStarted, Source: "github-actions", WorkflowID: "wf-1",
				WorkflowRunID: "run-1", Timestamp: decTime("2024-05-06T07:08:09.123456Z"), Attempt: 1,
				Payload: e.Payload,
			}, e)
		}},
		decodeCase{name: "whitespace everywhere", in: S(" \r\n\t{ \"event_id\" :\t\"a\" ,\n\"event_type\":\"x\",\"source\":\"s\",\"workflow_id\":\"w\"," +
			"\"workflow_run_id\":\"r\",\"timestamp\" : \"2024-05-06T07:08:09Z\" , \"data\" : { } } \n")},
		decodeCase{name: "unknown event type", in: E("event_type", `"run.paused"`), check: func(t *testing.T, e Event) {
			require.Equal(t, "run.paused", e.EventType)
		}},
		decodeCase{name: "extra members kept", in: E("extra", `{"nested":[1,2,{"x":null}]}`, "z", `"last"`)},
		decodeCase{name: "escaped key names", in: S(`{"event\u005fid":"e","event_type":"run.queued","source":"s","workflow_id":"w","workflow_run_id":"r","timestamp":"2024-05-06T07:08:09Z"}`),
			check: func(t *testing.T, e Event) { require.Equal(t, "e", e.EventID) }},
		decodeCase{name: "escapes unescaped", in: E("event_id", `"a\n\t\"\\\/\b\f\r\u00e9\u20AC\ud83d\ude00z"`), check: func(t *testing.T, e Event) {
			require.Equal(t, "a\n\t\"\\/\b\f\ré€😀z", e.EventID)
		}},
		decodeCase{name: "raw UTF-8 and DEL", in: E("source", "\"é€😀\x7f\""), check: func(t *testing.T, e Event) {
			require.Equal(t, "é€😀\x7f", e.Source)
		}},
		decodeCase{name: "escaped backslash before u0000 is text", in: E("extra", `"\\u0000"`)},
		decodeCase{name: "noncharacters U+FFFE U+FFFF", in: E("extra", `"\ufffe\uffff"`)},
		decodeCase{name: "200-byte strings", in: E("event_id", decStr(200), "source", decStr(200), "workflow_id", decStr(200),
			"workflow_run_id", decStr(200), "event_type", decStr(100))},
		decodeCase{name: "200 bytes of UTF-8", in: E("event_id", `"`+strings.Repeat("é", 100)+`"`)},
		decodeCase{name: "200 bytes after unescaping", in: E("event_id", `"`+strings.Repeat(`\u00e9`, 100)+`"`), check: func(t *testing.T, e Event) {
			require.Equal(t, strings.Repeat("é", 100), e.EventID)
		}},
		decodeCase{name: "1-byte strings", in: E("event_id", `"a"`, "event_type", `"b"`)},
		decodeCase{name: "timestamp truncated to microseconds", in: E("timestamp", `"2024-05-06T07:08:09.123456789Z"`), check: func(t *testing.T, e Event) {
			require.Equal(t, decTime("2024-05-06T07:08:09.123456Z"), e.Timestamp)
		}},
		decodeCase{name: "timestamp with 12 fraction digits", in: E("timestamp", `"2024-05-06T07:08:09.999999999999Z"`), check: func(t *testing.T, e Event) {
			require.Equal(t, decTime("2024-05-06T07:08:09.999999Z"), e.Timestamp)
		}},
		decodeCase{name: "timestamp before 1970 floored", in: E("timestamp", `"1969-12-31T23:59:59.9999999Z"`), check: func(t *testing.T, e Event) {
			require.Equal(t, decTime("1969-12-31T23:59:59.999999Z"), e.Timestamp)
		}},
		decodeCase{name: "timestamp positive offset to UTC", in: E("timestamp", `"2024-05-06T07:08:09.5+05:30"`), check: func(t *testing.T, e Event) {
			require.Equal(t, decTime("2024-05-06T01:38:09.5Z"), e.Timestamp)
			require.Equal(t, time.UTC, e.Timestamp.Location())
		}},
		decodeCase{name: "timestamp negative offset to UTC", in: E("timestamp", `"2024-12-31T20:00:00-08:00"`), check: func(t *testing.T, e Event) {
			require.Equal(t, decTime("2025-01-01T04:00:00Z"), e.Timestamp)
		}},
		decodeCase{name: "timestamp -00:00", in: E("timestamp", `"2024-05-06T07:08:09-00:00"`)},
		decodeCase{name: "timestamp +23:59", in: E("timestamp", `"2024-05-06T07:08:09+23:59"`)},
		decodeCase{name: "timestamp year 0001 east of UTC", in: E("timestamp", `"0001-01-01T00:00:00+01:00"`), check: func(t *testing.T, e Event) {
			require.Equal(t, 0, e.Timestamp.Year())
		}},
		decodeCase{name: "timestamp year 9999", in: E("timestamp", `"9999-12-31T23:59:59.999999999Z"`)},
		decodeCase{name: "timestamp escaped", in: E("timestamp", `"2024\u002d05-06T07:08:09Z"`)},
		decodeCase{name: "timestamp leap day", in: E("timestamp", `"2024-02-29T00:00:00Z"`)},
		decodeCase{name: "attempt 1", in: E("attempt", "1"), check: func(t *testing.T, e Event) { require.EqualValues(t, 1, e.Attempt) }},
		decodeCase{name: "attempt 1000", in: E("attempt", "1000"), check: func(t *testing.T, e Event) { require.EqualValues(t, 1000, e.Attempt) }},
		decodeCase{name: "attempt 7", in: E("attempt", "7"), check: func(t *testing.T, e Event) { require.EqualValues(t, 7, e.Attempt) }},
		decodeCase{name: "attempt null", in: E("attempt", "null"), check: func(t *testing.T, e Event) { require.EqualValues(t, 1, e.Attempt) }},
		decodeCase{name: "schema_version 1", in: E("schema_version", "1")},
		decodeCase{name: "schema_version null", in: E("schema_version", "null")},
		decodeCase{name: "data null", in: E("data", "null")},
		decodeCase{name: "step event", in: E("event_type", `"step.succeeded"`, "step_id", `"build"`, "attempt", "2"), check: func(t *testing.T, e Event) {
			require.Equal(t, "build", e.StepID)
			require.EqualValues(t, 2, e.Attempt)
		}},
		decodeCase{name: "step_id ignored on run events", in: E("step_id", "5"), check: func(t *testing.T, e Event) { require.Empty(t, e.StepID) }},
		decodeCase{name: "step_id on unknown step-like type ignored", in: E("event_type", `"step.paused"`), check: func(t *testing.T, e Event) { require.Empty(t, e.StepID) }},
		decodeCase{name: "run.failed with data.error", in: E("event_type", `"run.failed"`, "data", `{"code":3,"error":"boom \"x\"\n\u00e9"}`), check: func(t *testing.T, e Event) {
			require.True(t, e.HasError)
			require.Equal(t, "boom \"x\"\né", e.Error)
		}},
		decodeCase{name: "run.failed with empty data.error", in: E("event_type", `"run.failed"`, "data", `{"error":""}`), check: func(t *testing.T, e Event) {
			require.True(t, e.HasError)
			require.Equal(t, "", e.Error)
		}},
		decodeCase{name: "run.failed with long data.error", in: E("event_type", `"run.failed"`, "data", `{"error":`+decStr(5000)+`}`), check: func(t *testing.T, e Event) {
			require.True(t, e.HasError)
			require.Len(t, e.Error, 5000)
		}},
		decodeCase{name: "run.failed with numeric data.error", in: E("event_type", `"run.failed"`, "data", `{"error":42}`), check: decNoError},
		decodeCase{name: "run.failed with null data.error", in: E("event_type", `"run.failed"`, "data", `{"error":null}`), check: decNoError},
		decodeCase{name: "run.failed with object data.error", in: E("event_type", `"run.failed"`, "data", `{"error":{"error":"x"}}`), check: decNoError},
		decodeCase{name: "run.failed with nested error only", in: E("event_type", `"run.failed"`, "data", `{"x":{"error":"x"},"y":[{"error":"y"}]}`), check: decNoError},
		decodeCase{name: "run.failed without data", in: E("event_type", `"run.failed"`), check: decNoError},
		decodeCase{name: "run.failed with null data", in: E("event_type", `"run.failed"`, "data", "null"), check: decNoError},
		decodeCase{name: "run.failed with top-level error", in: E("event_type", `"run.failed"`, "error", `"x"`), check: decNoError},
		decodeCase{name: "data.error ignored on run.succeeded", in: E("event_type", `"run.succeeded"`, "data", `{"error":"x"}`), check: decNoError},
		decodeCase{name: "step.failed with data.error", in: E("event_type", `"step.failed"`, "step_id", `"test"`, "data", `{"error":"exit \u0031"}`), check: func(t *testing.T, e Event) {
			require.True(t, e.HasError)
			require.Equal(t, "exit 1", e.Error)
			require.Equal(t, "test", e.StepID)
		}},
		decodeCase{name: "step.failed with numeric data.error", in: E("event_type", `"step.failed"`, "step_id", `"test"`, "data", `{"error":1}`), check: decNoError},
		decodeCase{name: "step.failed without data", in: E("event_type", `"step.failed"`, "step_id", `"test"`), check: decNoError},
		decodeCase{name: "data.error ignored on step.succeeded", in: E("event_type", `"step.succeeded"`, "step_id", `"test"`, "data", `{"error":"x"}`), check: decNoError},
		decodeCase{name: "data.error ignored on step.skipped", in: E("event_type", `"step.skipped"`, "step_id", `"test"`, "data", `{"error":"x"}`), check: decNoError},
		decodeCase{name: "escaped error key", in: E("event_type", `"run.failed"`, "data", `{"\u0065rror":"x"}`), check: func(t *testing.T, e Event) {
			require.True(t, e.HasError)
			require.Equal(t, "x", e.Error)
		}},
		decodeCase{name: "1000-digit integer", in: E("data", `{"n":`+decDigits(1000)+`,"m":-`+decDigits(1000)+`.5e-3}`)},
		decodeCase{name: "131072-digit integer", in: E("extra", decDigits(131072))},
		decodeCase{name: "16383 fraction digits", in: E("extra", "0."+strings.Repeat("0", 16382)+"1")},
		decodeCase{name: "numeric limits", in: E("data", `{"a":[1e131071,9.99e131071,-1e131071,1e-16383,0e-16383,0.5e-16382,0e1073741822,-0,0.0,1E+2,1e-400]}`)},
		decodeCase{name: "huge array in data", in: E("data", `{"a":[`+strings.Repeat("1,", 100000)+`1]}`)},
		decodeCase{name: "many keys in data", in: E("data", `{`+decManyKeys(2000)+`}`)},
		decodeCase{name: "same keys in sibling and nested objects", in: E("data", `{"a":{"a":{"a":1},"b":{"a":2}},"b":[{"a":1},{"a":1}],"c":{`+decManyKeys(40)+`},"d":{`+decManyKeys(40)+`}}`)},
		decodeCase{name: "nesting exactly MaxDepth", in: E("extra", decNest(MaxDepth-1, ""))},
		decodeCase{name: "nesting exactly MaxDepth with objects", in: E("data", strings.Repeat(`{"a":`, MaxDepth-1)+"1"+strings.Repeat("}", MaxDepth-1))},
		decodeCase{name: "valid surrogate pairs", in: E("extra", `"\ud83d\ude00\uDBFF\uDFFF"`)},
		decodeCase{name: "empty key", in: E("", `""`)},
		decodeCase{name: "exactly 1 MiB", in: decPadTo(MaxValueBytes)},
	)
	return cases
}

func decNoError(t *testing.T, e Event) {
	require.False(t, e.HasError)
	require.Empty(t, e.Error)
}

// decManyKeys returns n distinct members "k0":0,...
func decManyKeys(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf(`"k%d":%d`, i, i)
	}
	return strings.Join(parts, ",")
}

func TestDecode(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	reasons := map[string]int{}
	for _, tc := range decodeCases() {
		require.False(t, seen[tc.name], "duplicate case name %q", tc.name)
		seen[tc.name] = true
		reasons[tc.reason]++
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e, err := Decode(tc.in)
			if tc.reason == "" {
				require.NoError(t, err)
				require.Equal(t, len(tc.in), len(e.Payload))
				if len(tc.in) > 0 {
					require.Same(t, &tc.in[0], &e.Payload[0], "Payload must alias the value")
				}
				decCheckContract(t, e)
				if tc.check != nil {
					tc.check(t, e)
				}
				return
			}
			require.Error(t, err)
			var de *DecodeError
			require.ErrorAs(t, err, &de)
			require.Equal(t, tc.reason, de.Reason, "error: %v", err)
			require.Equal(t, tc.field, de.Field, "error: %v", err)
			require.Equal(t, Event{}, e)
			decCheckErrorText(t, de)
			if tc.detail != "" {
				require.Contains(t, err.Error(), tc.detail)
			}
		})
	}
	for _, r := range []string{"", ReasonTooLarge, ReasonInvalidJSON, ReasonNotObject, ReasonUnstorable,
		ReasonUnsupportedSchemaVersion, ReasonMissingField, ReasonInvalidField} {
		require.GreaterOrEqual(t, reasons[r], 3, "too few cases for reason %q", r)
	}
}

// decCheckContract checks the contract's rules on a decoded event.
func decCheckContract(t testing.TB, e Event) {
	t.Helper()
	for _, f := range []struct {
		name  string
		v     string
		limit int
	}{
		{"event_id", e.EventID, 200}, {"event_type", e.EventType, 100}, {"source", e.Source, 200},
		{"workflow_id", e.WorkflowID, 200}, {"workflow_run_id", e.WorkflowRunID, 200},
	} {
		require.NotEmpty(t, f.v, f.name)
		require.LessOrEqual(t, len(f.v), f.limit, f.name)
		require.True(t, utf8.ValidString(f.v), f.name)
		require.NotContains(t, f.v, "\x00", f.name)
	}
	require.Equal(t, IsStep(e.EventType), e.StepID != "")
	if e.StepID != "" {
		require.LessOrEqual(t, len(e.StepID), 200)
		require.True(t, utf8.ValidString(e.StepID))
	}
	require.GreaterOrEqual(t, e.Attempt, int32(1))
	require.LessOrEqual(t, e.Attempt, int32(1000))
	require.Equal(t, time.UTC, e.Timestamp.Location())
	require.Zero(t, e.Timestamp.Nanosecond()%1000)
	if e.HasError {
		require.Contains(t, []string{TypeRunFailed, TypeStepFailed}, e.EventType)
		require.True(t, utf8.ValidString(e.Error))
	} else {
		require.Empty(t, e.Error)
	}
}

// decCheckErrorText checks the shape of an error text.
func decCheckErrorText(t testing.TB, de *DecodeError) {
	t.Helper()
	msg := de.Error()
	require.NotEmpty(t, de.Detail)
	require.NotContains(t, msg, "\n")
	require.True(t, utf8.ValidString(msg), msg)
	r, _ := utf8.DecodeRuneInString(msg)
	require.False(t, unicode.IsUpper(r), "error text must start in lower case: %q", msg)
	if de.Field != "" {
		require.True(t, strings.HasPrefix(msg, de.Field+": "), msg)
	} else {
		require.Equal(t, de.Detail, msg)
	}
	require.Less(t, len(msg), 400, "error text too long")
}

func TestDecodeErrorText(t *testing.T) {
	t.Parallel()
	require.Equal(t, "attempt: must be an integer from 1 to 1000, got 0",
		(&DecodeError{Reason: ReasonInvalidField, Field: "attempt", Detail: "must be an integer from 1 to 1000, got 0"}).Error())
	require.Equal(t, "empty value", (&DecodeError{Reason: ReasonInvalidJSON, Detail: "empty value"}).Error())

	_, err := Decode([]byte(decEvent("attempt", "0")))
	require.EqualError(t, err, "attempt: must be an integer from 1 to 1000, got 0")
	var de *DecodeError
	require.True(t, errors.As(err, &de))
	require.Equal(t, DecodeError{Reason: ReasonInvalidField, Field: "attempt", Detail: "must be an integer from 1 to 1000, got 0"}, *de)

	_, err = Decode([]byte(`{"a":x}`))
	require.EqualError(t, err, "invalid character 'x' at byte 5 (looking for beginning of value)")
	_, err = Decode([]byte(`{"timestamp":"2024-05-06T07:08:09",}`))
	require.EqualError(t, err, "invalid character '}' at byte 35 (expected '\"' to begin an object key)")
	_, err = Decode([]byte(decEvent("attempt", "[1]")))
	require.EqualError(t, err, "attempt: must be an integer from 1 to 1000, got an array")
	_, err = Decode([]byte(decEvent("attempt", `"`+strings.Repeat("9", 100)+`"`)))
	require.EqualError(t, err, `attempt: must be an integer from 1 to 1000, got "`+strings.Repeat("9", 39)+"...")
	_, err = Decode([]byte(decEvent("event_id", decOmit)))
	require.EqualError(t, err, "event_id: is required")
	_, err = Decode([]byte(decEvent("event_type", `"step.started"`)))
	require.EqualError(t, err, "step_id: is required for step.* events")
	_, err = Decode([]byte(decEvent("schema_version", "3")))
	require.EqualError(t, err, "schema_version: unsupported schema version 3, this worker knows 1")
	_, err = Decode([]byte(`{"a":"\u0000"}`))
	require.EqualError(t, err, `\u0000 escape at byte 6: PostgreSQL jsonb cannot store NUL`)
	_, err = Decode([]byte(`[]`))
	require.EqualError(t, err, "top-level value is an array, not an object")
	_, err = Decode([]byte(`{"` + strings.Repeat("k", 1000) + `":1,"` + strings.Repeat("k", 1000) + `":1}`))
	require.ErrorContains(t, err, `duplicate key "`+strings.Repeat("k", 64)+`"... at byte 1006`)
}

// TestDecodeDeepNestingIsCheap: a value nested as deep as 1 MiB allows is
// scanned without recursion, fast.
// TestDecodeDeepNestingIsRefused feeds 1 MiB of nesting: the scanner keeps
// its own stack, so this neither overflows the goroutine stack nor
// succeeds. (How fast it is belongs to BenchmarkDecode, not here.)
func TestDecodeDeepNestingIsRefused(t *testing.T) {
	t.Parallel()
	half := (MaxValueBytes - 16) / 2
	for _, in := range []string{
		`{"a":` + decNest(half-4, "") + `}`,
		`{"a":` + strings.Repeat(`[`, MaxValueBytes-6),
		`{"a":` + strings.Repeat(`{"a":`, (MaxValueBytes-6)/5),
	} {
		_, err := Decode([]byte(in))
		require.Error(t, err)
	}
}

// TestDecodeConcurrent runs Decode from many goroutines (the scanner pool
// must not share state), for the race detector.
func TestDecodeConcurrent(t *testing.T) {
	t.Parallel()
	cases := decodeCases()
	done := make(chan struct{})
	for g := 0; g < 8; g++ {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range cases {
				tc := cases[(i+g*7)%len(cases)]
				if len(tc.in) > 1<<16 {
					continue
				}
				_, err := Decode(tc.in)
				var de *DecodeError
				if tc.reason == "" {
					if err != nil {
						t.Errorf("%s: %v", tc.name, err)
					}
				} else if !errors.As(err, &de) || de.Reason != tc.reason {
					t.Errorf("%s: got %v, want %s", tc.name, err, tc.reason)
				}
			}
		}()
	}
	for g := 0; g < 8; g++ {
		<-done
	}
}
