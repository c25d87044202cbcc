package model

import (
	"fmt"
	"testing"
)

// benchRunEvent is a realistic run.failed event of about 400 bytes.
var benchRunEvent = []byte(`{"event_id":"0b6f3c1e-6a55-4a1f-9d0b-5f6b8e2d7c41","event_type":"run.failed",` +
	`"source":"github-actions","workflow_id":"acme/payments/.github/workflows/ci.yml",` +
	`"workflow_run_id":"gha-9876543210","timestamp":"2024-05-06T07:08:09.123456789+02:00",` +
	`"attempt":2,"schema_version":1,"data":{"error":"exit code 1: \"make test\" failed",` +
	`"runner":"ubuntu-22.04","labels":["linux","x64"],"duration_ms":123456,"retryable":false,` +
	`"commit":"4f2a9c8e1b7d","actor":{"login":"octocat","id":583231}}}`)

// benchStepEvent is a step event without data.
var benchStepEvent = []byte(`{"event_id":"c2f1e0d9-1111-4b2a-8c3d-9e8f7a6b5c4d","event_type":"step.succeeded",` +
	`"source":"airflow","workflow_id":"etl_daily","workflow_run_id":"scheduled__2024-05-06T00:00:00+00:00",` +
	`"step_id":"extract_orders","timestamp":"2024-05-06T00:12:34.567Z","attempt":1}`)

// benchStepFailedEvent is a step.failed event with a data.error.
var benchStepFailedEvent = []byte(`{"event_id":"d3a2f1e0-2222-4c3b-9d4e-0f9a8b7c6d5e","event_type":"step.failed",` +
	`"source":"airflow","workflow_id":"etl_daily","workflow_run_id":"scheduled__2024-05-06T00:00:00+00:00",` +
	`"step_id":"load_orders","timestamp":"2024-05-06T00:13:01.002Z","attempt":1,` +
	`"data":{"error":"psycopg2.OperationalError: server closed the connection unexpectedly","try_number":3}}`)

func BenchmarkDecode(b *testing.B) {
	for _, bc := range []struct {
		name  string
		value []byte
	}{
		{"run_event", benchRunEvent},
		{"step_event", benchStepEvent},
		{"step_failed_event", benchStepFailedEvent},
	} {
		b.Run(bc.name, func(b *testing.B) {
			if _, err := Decode(bc.value); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.value)))
			for b.Loop() {
				if _, err := Decode(bc.value); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecodeInvalid measures dead letters: a syntax error late in the
// value, and a missing field.
func BenchmarkDecodeInvalid(b *testing.B) {
	late := append(append([]byte(nil), benchRunEvent[:len(benchRunEvent)-1]...), ',')
	missing := []byte(decEvent("event_id", decOmit, "data", `{"a":[1,2,3]}`))
	for _, bc := range []struct {
		name  string
		value []byte
	}{
		{"invalid_json", late},
		{"missing_field", missing},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.value)))
			for b.Loop() {
				if _, err := Decode(bc.value); err == nil {
					b.Fatal("no error")
				}
			}
		})
	}
}

// BenchmarkBatchBuild measures what a claim does with each message before
// the batch goes to the store: decoding it into the batch (Batch.Add),
// then ordering the batch by event_id without repeats (UniqueRecords) and
// folding its events into runs (FoldRecords), for batches of 2000
// messages of 200 runs, one of them repeated.
func BenchmarkBatchBuild(b *testing.B) {
	const n = 2000
	msgs := make([]Message, n)
	for i := range msgs {
		typ, step := "step.succeeded", `,"step_id":"build"`
		if i%10 == 0 {
			typ, step = "run.queued", ""
		}
		msgs[i] = Message{Offset: int64(i), Key: []byte("k"), Value: fmt.Appendf(nil,
			`{"event_id":"run-%06d-%02d","event_type":%q,"source":"github-actions","workflow_id":"build-and-test","workflow_run_id":"run-%06d","timestamp":"2026-11-01T08:00:%02d.123Z"%s,"data":{"runner":"ubuntu-24.04","trigger":"push","commit":"9f1c2ab"}}`,
			i/10, i%10, typ, i/10, i%60, step)}
	}
	msgs[n-1] = msgs[0] // a repeat
	batch := &Batch{}
	b.ReportAllocs()
	for b.Loop() {
		batch.Reset()
		for _, m := range msgs {
			batch.Add(m)
		}
		if runs := FoldRecords(batch.UniqueRecords()); len(runs) != n/10 {
			b.Fatalf("%d runs", len(runs))
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
}
