//go:build faults

package faults_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projector-run/projector/projector/model"
)

// hostile is a message built to hurt, and the dead-letter reason it must
// get ("" for a valid event).
type hostile struct {
	name   string
	reason string
	msg    model.Message
}

// hostileEvent returns a valid event with members replaced or added (raw
// JSON values; "-" removes one), in order.
func hostileEvent(id string, kv ...string) []byte {
	members := [][2]string{
		{"event_id", fmt.Sprintf("%q", id)},
		{"event_type", `"run.started"`},
		{"source", `"hostile"`},
		{"workflow_id", `"wf-hostile"`},
		{"workflow_run_id", `"run-hostile-` + id + `"`},
		{"timestamp", `"2026-03-04T05:06:07.123456Z"`},
	}
	for i := 0; i < len(kv); i += 2 {
		found := false
		for j := range members {
			if members[j][0] == kv[i] {
				members[j][1], found = kv[i+1], true
			}
		}
		if !found {
			members = append(members, [2]string{kv[i], kv[i+1]})
		}
	}
	var b strings.Builder
	b.WriteByte('{')
	first := true
	for _, m := range members {
		if m[1] == "-" {
			continue
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		b.WriteString(`"` + m[0] + `":` + m[1])
	}
	b.WriteByte('}')
	return []byte(b.String())
}

func nested(depth int, inner string) string {
	return strings.Repeat("[", depth) + inner + strings.Repeat("]", depth)
}

// hostileMessages covers every dead-letter reason of the contract (§2)
// and, beyond it, values over 1 MiB, 10,000 levels of nesting, 1,000-digit
// numbers, duplicate keys, invalid UTF-8, NUL bytes, huge arrays, empty
// and null keys and values, and binary headers; big ones repeated, so that
// memory would show if it grew with the volume.
func hostileMessages(rng *rand.Rand) []hostile {
	var hs []hostile
	n := 0
	add := func(name, reason string, key, value []byte, headers ...model.Header) {
		hs = append(hs, hostile{name, reason, model.Message{Key: key, Value: value, Headers: headers}})
	}
	id := func() string { n++; return fmt.Sprintf("hostile-%04d", n) }
	ev := func(kv ...string) []byte { return hostileEvent(id(), kv...) }
	key := []byte("hostile")
	digits := strings.Repeat("9", 1000)
	binaryHeader := model.Header{Key: []byte("x-\xff\x00bin"), Value: []byte{0, 0xff, 0xfe, 0x80, 0x01}}

	// too_large, and big: memory must not grow with these.
	padded := func(size int) []byte {
		v := ev("pad", `""`)
		v = v[:len(v)-2]
		return append(append(v, strings.Repeat("x", size-len(v)-2)...), '"', '}')
	}
	add("1 MiB exactly, valid", "", key, padded(model.MaxValueBytes))
	add("1 MiB + 1", model.ReasonTooLarge, key, padded(model.MaxValueBytes+1))
	random := func(n int) []byte {
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		return b
	}
	for i := range 10 {
		add(fmt.Sprintf("2 MiB of random bytes #%d", i), model.ReasonTooLarge, nil, random(2<<20), binaryHeader)
	}
	for i := range 3 {
		add(fmt.Sprintf("8 MiB of [ #%d", i), model.ReasonTooLarge, key, []byte(strings.Repeat("[", 8<<20)))
	}
	bigArray := "[" + strings.Repeat("123456789,", 400_000) + "0]"
	add("4 MiB array in data", model.ReasonTooLarge, key, ev("data", `{"xs":`+bigArray+`}`))
	add("huge array in data, under 1 MiB", "", key, ev("data", `{"xs":[`+strings.Repeat("1,", 450_000)+`1]}`))

	// invalid_json
	add("empty value", model.ReasonInvalidJSON, key, []byte{})
	add("null value (tombstone)", model.ReasonInvalidJSON, key, nil)
	add("empty key and empty value", model.ReasonInvalidJSON, []byte{}, []byte{})
	full := ev()
	add("cut short", model.ReasonInvalidJSON, key, full[:len(full)/2])
	add("trailing comma", model.ReasonInvalidJSON, key, append(full[:len(full)-1:len(full)-1], ",}"...))
	add("byte order mark", model.ReasonInvalidJSON, key, append([]byte("\xef\xbb\xbf"), ev()...))
	add("NaN", model.ReasonInvalidJSON, key, ev("data", `{"p":NaN}`))
	add("single quotes", model.ReasonInvalidJSON, key, []byte(strings.ReplaceAll(string(ev()), `"`, `'`)))
	add("two objects", model.ReasonInvalidJSON, key, append(append(ev(), '\n'), ev()...))
	add("raw newline in a string", model.ReasonInvalidJSON, key, ev("data", "{\"log\":\"a\nb\"}"))
	add("raw NUL byte in a string", model.ReasonInvalidJSON, key, ev("data", "{\"log\":\"a\x00b\"}"))
	add("NUL byte between tokens", model.ReasonInvalidJSON, key, ev("data", "{\"a\":1,\x00\"b\":2}"))
	add("invalid UTF-8 in a string", model.ReasonInvalidJSON, key, ev("source", "\"caf\xe9\""))
	add("invalid UTF-8 in a key", model.ReasonInvalidJSON, key, ev("data", "{\"k\xff\":1}"))
	add("overlong UTF-8", model.ReasonInvalidJSON, key, ev("data", "{\"k\":\"\xc0\xaf\"}"))
	add("UTF-8 encoded surrogate", model.ReasonInvalidJSON, key, ev("data", "{\"k\":\"\xed\xa0\x80\"}"))
	add("duplicate top-level key", model.ReasonInvalidJSON, key, ev("event_type", `"run.started","event_type":"run.failed"`))
	add("duplicate key in data", model.ReasonInvalidJSON, key, ev("data", `{"a":1,"a":2}`))
	add("duplicate key after unescaping", model.ReasonInvalidJSON, key, ev("data", `{"a":1,"\u0061":2}`))
	add("10,000 levels, unterminated", model.ReasonInvalidJSON, key, []byte(strings.Repeat(`{"a":`, 10_000)))
	add("binary garbage", model.ReasonInvalidJSON, []byte{0xff, 0xfe}, []byte{0x00, 0x01, 0xff, 0x80}, binaryHeader)

	// not_object
	add("array", model.ReasonNotObject, key, []byte(`[`+string(ev())+`]`))
	add("string", model.ReasonNotObject, key, []byte(`"run.started"`))
	add("number", model.ReasonNotObject, key, []byte(digits))
	add("null", model.ReasonNotObject, key, []byte(`null`))
	add("true", model.ReasonNotObject, key, []byte(`true`))
	add("10,000 nested arrays", model.ReasonNotObject, key, []byte(nested(10_000, "1")))

	// missing_field
	for _, f := range []string{"event_id", "event_type", "source", "workflow_id", "workflow_run_id", "timestamp"} {
		add("no "+f, model.ReasonMissingField, key, ev(f, "-"))
		add(f+" null", model.ReasonMissingField, key, ev(f, "null"))
	}
	add("step event without step_id", model.ReasonMissingField, key, ev("event_type", `"step.failed"`))

	// invalid_field
	add("event_id empty", model.ReasonInvalidField, key, ev("event_id", `""`))
	add("event_id 201 bytes", model.ReasonInvalidField, key, ev("event_id", `"`+strings.Repeat("e", 201)+`"`))
	add("event_id a number", model.ReasonInvalidField, key, ev("event_id", "42"))
	add("event_type 101 bytes", model.ReasonInvalidField, key, ev("event_type", `"`+strings.Repeat("t", 101)+`"`))
	add("workflow_run_id an object", model.ReasonInvalidField, key, ev("workflow_run_id", `{"id":1}`))
	for _, ts := range []string{`"2026-03-04T05:06:07"`, `"2026-03-04t05:06:07Z"`, `"2026-03-04T24:00:00Z"`,
		`"2026-12-31T23:59:60Z"`, `"0000-01-01T00:00:00Z"`, `"2026-02-30T00:00:00Z"`, `1772600767`, `"yesterday"`} {
		add("timestamp "+ts, model.ReasonInvalidField, key, ev("timestamp", ts))
	}
	for _, a := range []string{"0", "1001", `"1"`, "1.0", "1e2", "-1", digits, "true"} {
		add("attempt "+a[:min(len(a), 12)], model.ReasonInvalidField, key, ev("attempt", a))
	}
	add("step_id empty", model.ReasonInvalidField, key, ev("event_type", `"step.started"`, "step_id", `""`))
	add("step_id a number", model.ReasonInvalidField, key, ev("event_type", `"step.started"`, "step_id", "3"))
	for _, d := range []string{`[1,2]`, `"{}"`, `42`, `true`} {
		add("data "+d, model.ReasonInvalidField, key, ev("data", d))
	}
	add("schema_version a string", model.ReasonInvalidField, key, ev("schema_version", `"1"`))
	add("schema_version 1.5", model.ReasonInvalidField, key, ev("schema_version", `1.5`))

	// unsupported_schema_version
	for _, v := range []string{"2", "0", "-1", digits} {
		add("schema_version "+v[:min(len(v), 12)], model.ReasonUnsupportedSchemaVersion, key, ev("schema_version", v))
	}

	// unstorable: valid JSON that jsonb refuses.
	add(`\u0000 in a value`, model.ReasonUnstorable, key, ev("data", `{"log":"core dumped\u0000"}`))
	add(`\u0000 in a key`, model.ReasonUnstorable, key, ev("data", `{"env\u0000PATH":"/bin"}`))
	add("lone high surrogate", model.ReasonUnstorable, key, ev("data", `{"s":"\ud800"}`))
	add("lone low surrogate", model.ReasonUnstorable, key, ev("data", `{"s":"\udc00x"}`))
	add("exponent beyond numeric", model.ReasonUnstorable, key, ev("data", `{"n":1e1000000000}`))
	add("data nested 10,000 levels", model.ReasonUnstorable, key, ev("data", `{"deep":`+nested(10_000, "0")+`}`))

	// Valid, however odd.
	add("1,000-digit number in data", "", key, ev("data", `{"n":`+digits+`,"m":-0.`+digits+`e-5}`))
	add("unicode and escapes", "", key, ev("source", `"ソース 🚀 \"q\" \\ \n\t"`, "data", `{"s":"\ud83d\ude00 é"}`))
	add("event_id of 200 bytes", "", key, ev("event_id", `"`+strings.Repeat("i", 200)+`"`))
	add("unknown event type", "", key, ev("event_type", `"run.retried"`))
	add("data nested 100 levels", "", key, ev("data", `{"deep":`+nested(100, "0")+`}`))
	add("run.failed with an error", "", key, ev("event_type", `"run.failed"`, "data", `{"error":"exit 1 \u00e9"}`))
	add("empty key", "", []byte{}, ev())
	add("null key", "", nil, ev())
	add("binary headers", "", key, ev(), binaryHeader, model.Header{Key: []byte(""), Value: nil})
	add("attempt 1000 and schema_version 1", "", key, ev("attempt", "1000", "schema_version", "1"))
	// One event_id twice with other bytes, in one partition (one key):
	// the first one applied wins.
	add("repeated event_id, first", "", []byte("same-id"), hostileEvent("hostile-same", "source", `"first"`))
	add("repeated event_id, second", "", []byte("same-id"), hostileEvent("hostile-same", "source", `"second"`))
	return hs
}

// burst is a run of consecutive large invalid messages in one partition:
// far more than one batch may hold in memory.
func burst(rng *rand.Rand) []hostile {
	var hs []hostile
	for i := range 600 {
		v := make([]byte, 256<<10)
		for j := range v {
			v[j] = byte(rng.Uint32())
		}
		hs = append(hs, hostile{fmt.Sprintf("burst #%d", i), model.ReasonInvalidJSON, model.Message{Key: []byte("burst"), Value: v}})
	}
	return hs
}

// TestHostileInput feeds one worker every kind of invalid message and
// then some, mixed into a normal workload, produced while it runs. Each
// invalid one must become exactly one dead letter with its exact bytes
// and the reason the contract gives; the worker must never stop, crash
// or loop (it reads each message exactly once), and its memory must stay
// bounded (VmHWM, read from /proc while it runs): a burst of large
// messages in one partition adds up to more than the bound, and one batch
// at the default batch size could hold all of them.
func TestHostileInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{partitions: 2})
	rng := rand.New(rand.NewPCG(7, 7))
	hs := hostileMessages(rng)
	total := 0
	for _, h := range hs {
		_, err := model.Decode(h.msg.Value)
		var de *model.DecodeError
		got := ""
		if errors.As(err, &de) {
			got = de.Reason
		}
		require.Equal(t, h.reason, got, "%s: %v", h.name, err)
		total += len(h.msg.Value)
	}
	// Interleave them with a normal workload, in random order, then a
	// burst of 150 MiB in one partition, with the default batch size.
	msgs := workload(6, 800)
	for _, h := range hs {
		i := rng.IntN(len(msgs) + 1)
		msgs = append(msgs[:i], append([]model.Message{h.msg}, msgs[i:]...)...)
	}
	bursts := burst(rng)
	for _, h := range bursts {
		msgs = append(msgs, h.msg)
		total += len(h.msg.Value)
	}
	w := e.startWorker("w", "--batch-size", "1000", "--batch-wait", "20ms")
	waitProduced := e.produceOver(msgs, 8*time.Second)
	waitProduced()
	e.waitCaughtUp(2 * time.Minute)
	require.True(t, w.running(), "the worker exited: %v", w.exit)
	e.stopAll()

	stats, ok := w.stoppedStats()
	require.True(t, ok, "the worker logged its counters")
	require.Equal(t, float64(len(msgs)), stats["messages"], "every message read exactly once: nothing loops")
	require.Zero(t, e.countLogs(isRetry), "nothing is retried")
	require.Zero(t, e.countLogs(isRejected), "the decoder, not PostgreSQL, finds every unstorable value")
	require.Zero(t, e.countLogs(isFenced))
	peak := w.peakKiB.Load()
	e.verify("hostile", verifyOptions{}, fmt.Sprintf("hostile messages=%d and a burst of %d (%d MiB in all), worker peak RSS %.0f MiB",
		len(hs), len(bursts), total>>20, float64(peak)/1024))
	require.Positive(t, peak)
	require.Less(t, peak, int64(maxWorkerKiB), "the worker's peak RSS (VmHWM) is bounded")
}

// maxWorkerKiB bounds a worker's peak RSS under hostile input. Live data:
// sarama buffers up to 256 messages per partition (64 MiB of the burst's),
// a batch holds at most model.MaxBatchBytes and the driver encodes a
// copy of it; the Go runtime lets the heap grow to twice that between
// collections. Measured: about 330 MiB; 660 MiB when a batch was capped by
// count only and held a third of the burst.
const maxWorkerKiB = 448 << 10
