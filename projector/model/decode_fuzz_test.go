package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzDecode checks Decode against encoding/json on arbitrary bytes:
//   - it never panics, and every failure is a *DecodeError with a known
//     reason and a one-line text;
//   - what json.Valid or utf8.Valid refuses is invalid_json (json.Valid
//     accepts invalid UTF-8 in strings and duplicate keys, so the converse
//     holds only for valid UTF-8 and with an independent duplicate-key
//     check);
//   - an accepted event is valid JSON, an object, obeys the contract's
//     rules, and its fields equal what encoding/json decodes.
func FuzzDecode(f *testing.F) {
	for _, tc := range decodeCases() {
		if len(tc.in) <= 1<<12 { // big seeds slow the fuzzer down; TestDecode covers them
			f.Add(tc.in)
		}
	}
	f.Add([]byte(decEvent("event_type", `"run.failed"`, "attempt", "3", "data", `{"error":"x\u00e9","k":[1,{"a":null}]}`)))
	f.Add([]byte(decEvent("event_type", `"step.started"`, "step_id", `"s\ud83d\ude00"`, "schema_version", "1")))
	f.Fuzz(func(t *testing.T, value []byte) {
		orig := bytes.Clone(value)
		e, err := Decode(value)
		if !bytes.Equal(orig, value) {
			t.Fatal("Decode modified its input")
		}
		valid := json.Valid(value)
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error is %T, not *DecodeError: %v", err, err)
			}
			decCheckErrorText(t, de)
			if e.Payload != nil || e.EventID != "" || !e.Timestamp.IsZero() {
				t.Fatalf("an error came with a non-zero event: %+v", e)
			}
			switch de.Reason {
			case ReasonTooLarge:
				if len(value) <= MaxValueBytes {
					t.Fatalf("too_large for %d bytes", len(value))
				}
				return
			case ReasonInvalidJSON, ReasonNotObject, ReasonUnstorable, ReasonUnsupportedSchemaVersion,
				ReasonMissingField, ReasonInvalidField:
			default:
				t.Fatalf("unknown reason %q", de.Reason)
			}
			if !valid && de.Reason != ReasonInvalidJSON {
				t.Fatalf("json.Valid refuses the value but the reason is %s: %v", de.Reason, err)
			}
			if !utf8.Valid(value) && de.Reason != ReasonInvalidJSON {
				t.Fatalf("invalid UTF-8 but the reason is %s: %v", de.Reason, err)
			}
			if valid && utf8.Valid(value) && de.Reason == ReasonInvalidJSON && !strings.Contains(de.Detail, "duplicate key") {
				t.Fatalf("json.Valid accepts the value but Decode says: %v", err)
			}
			if de.Reason == ReasonNotObject && fuzzTopIsObject(value) {
				t.Fatalf("not_object for an object")
			}
			if valid && de.Reason != ReasonNotObject && de.Reason != ReasonInvalidJSON && !fuzzTopIsObject(value) {
				t.Fatalf("%s for a non-object", de.Reason)
			}
		} else {
			if !valid || !utf8.Valid(value) {
				t.Fatalf("accepted, but json.Valid or utf8.Valid refuses it")
			}
			if !fuzzTopIsObject(value) {
				t.Fatalf("accepted a non-object")
			}
			if len(value) == 0 || &e.Payload[0] != &value[0] || len(e.Payload) != len(value) {
				t.Fatalf("Payload does not alias the value")
			}
			decCheckContract(t, e)
			fuzzCompareWithEncodingJSON(t, value, e)
		}
		if valid && utf8.Valid(value) && len(value) <= MaxValueBytes {
			if dup, ok := fuzzHasDuplicateKey(value); ok {
				gotDup := err != nil && strings.Contains(err.Error(), "duplicate key")
				if dup != gotDup {
					t.Fatalf("duplicate keys: reference %v, Decode %v (%v)", dup, gotDup, err)
				}
			}
		}
	})
}

func fuzzTopIsObject(value []byte) bool {
	v := bytes.TrimLeft(value, " \t\r\n")
	return len(v) > 0 && v[0] == '{'
}

// fuzzCompareWithEncodingJSON checks an accepted event's fields against
// encoding/json's reading of the same value.
func fuzzCompareWithEncodingJSON(t *testing.T, value []byte, e Event) {
	dec := json.NewDecoder(bytes.NewReader(value))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("encoding/json cannot decode an accepted event: %v", err)
	}
	for k, want := range map[string]string{
		"event_id": e.EventID, "event_type": e.EventType, "source": e.Source,
		"workflow_id": e.WorkflowID, "workflow_run_id": e.WorkflowRunID,
	} {
		if got, _ := m[k].(string); got != want {
			t.Fatalf("%s: encoding/json reads %q, Decode %q", k, got, want)
		}
	}
	ts, _ := m["timestamp"].(string)
	pt, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		t.Fatalf("timestamp %q accepted but time.Parse says %v", ts, err)
	}
	if !pt.Add(-time.Duration(pt.Nanosecond() % 1000)).Equal(e.Timestamp) {
		t.Fatalf("timestamp %q decoded as %v", ts, e.Timestamp)
	}
	switch a := m["attempt"].(type) {
	case nil:
		if e.Attempt != 1 {
			t.Fatalf("attempt absent, decoded %d", e.Attempt)
		}
	case json.Number:
		if a.String() != strconv.Itoa(int(e.Attempt)) {
			t.Fatalf("attempt %s decoded as %d", a, e.Attempt)
		}
	default:
		t.Fatalf("attempt %v accepted", a)
	}
	if IsStep(e.EventType) {
		if got, _ := m["step_id"].(string); got != e.StepID {
			t.Fatalf("step_id: encoding/json reads %q, Decode %q", got, e.StepID)
		}
	}
	var wantErr *string
	if d, ok := m["data"].(map[string]any); ok && (e.EventType == TypeRunFailed || e.EventType == TypeStepFailed) {
		if s, ok := d["error"].(string); ok {
			wantErr = &s
		}
	}
	if (wantErr != nil) != e.HasError || wantErr != nil && *wantErr != e.Error {
		t.Fatalf("data.error: encoding/json %v, Decode %v %q", wantErr, e.HasError, e.Error)
	}
	switch sv := m["schema_version"].(type) {
	case nil:
	case json.Number:
		if sv.String() != "1" {
			t.Fatalf("schema_version %s accepted", sv)
		}
	default:
		t.Fatalf("schema_version %v accepted", sv)
	}
}

// surrogateEscape matches an escape of a UTF-16 surrogate, which
// encoding/json turns into U+FFFD when unpaired.
var surrogateEscape = regexp.MustCompile(`\\u[dD][89a-fA-F]`)

// fuzzHasDuplicateKey is an independent duplicate-key check on valid JSON,
// with encoding/json's tokenizer. ok is false when it cannot tell.
func fuzzHasDuplicateKey(value []byte) (dup, ok bool) {
	if surrogateEscape.Match(value) {
		return false, false
	}
	type level struct {
		keys      map[string]bool // nil for an array
		expectKey bool
	}
	var stack []*level
	valueDone := func() {
		if n := len(stack); n > 0 && stack[n-1].keys != nil {
			stack[n-1].expectKey = true
		}
	}
	dec := json.NewDecoder(bytes.NewReader(value))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return false, true
		}
		if err != nil {
			return false, false
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{':
				stack = append(stack, &level{keys: map[string]bool{}, expectKey: true})
			case '[':
				stack = append(stack, &level{})
			default:
				stack = stack[:len(stack)-1]
				valueDone()
			}
		case string:
			if n := len(stack); n > 0 && stack[n-1].keys != nil && stack[n-1].expectKey {
				top := stack[n-1]
				if top.keys[v] {
					return true, true
				}
				top.keys[v] = true
				top.expectKey = false
				continue
			}
			valueDone()
		default:
			valueDone()
		}
	}
}
