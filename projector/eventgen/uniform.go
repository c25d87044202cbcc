package eventgen

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"time"

	"github.com/projector-run/projector/projector/model"
)

// Uniform makes n events of runs of ten events each (queued, started,
// three steps started and succeeded, one skipped, and the end: one run in
// seven fails), keyed by run, with ids prefixed by seed: the bench's
// steady, identical runs, where Generate makes varied and hostile ones.
// The ids of runs and events are sequential (they sort as they are made).
func Uniform(n int, seed string) []model.Message { return UniformIDs(n, seed, false) }

// UniformIDs is Uniform with random UUIDs (version 4, drawn from a
// generator seeded by seed) for the ids of runs and events when random is
// set, as real producers send them: they land all over an index instead
// of at its end.
func UniformIDs(n int, seed string, random bool) []model.Message {
	rng := rand.New(rand.NewPCG(uint64(len(seed)), uint64(crc32.ChecksumIEEE([]byte(seed)))))
	uuid := func() string {
		var b [16]byte
		binary.LittleEndian.PutUint64(b[:8], rng.Uint64())
		binary.LittleEndian.PutUint64(b[8:], rng.Uint64())
		b[6] = b[6]&0x0f | 0x40
		b[8] = b[8]&0x3f | 0x80
		return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
	}
	msgs := make([]model.Message, 0, n)
	t0 := time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC)
	sources := []string{"github-actions", "airflow", "argo", "jenkins"}
	flows := []string{"build-and-test", "nightly-etl", "deploy-prod", "lint", "integration"}
	for run := 0; len(msgs) < n; run++ {
		id := fmt.Sprintf("%s-run-%08d", seed, run)
		if random {
			id = uuid()
		}
		src, wf := sources[run%len(sources)], flows[run%len(flows)]
		ts := t0.Add(time.Duration(run) * time.Second)
		seq := 0
		add := func(typ, step, data string) {
			if len(msgs) == n {
				return
			}
			stepField := ""
			if step != "" {
				stepField = `,"step_id":"` + step + `"`
			}
			if data == "" {
				data = `{"runner":"ubuntu-24.04","trigger":"push","commit":"9f1c2ab"}`
			}
			eventID := fmt.Sprintf("%s-%02d", id, seq)
			if random {
				eventID = uuid()
			}
			v := fmt.Appendf(nil, `{"event_id":%q,"event_type":%q,"source":%q,"workflow_id":%q,"workflow_run_id":%q,"timestamp":%q,"attempt":1%s,"data":%s}`,
				eventID, typ, src, wf, id, ts.Add(time.Duration(seq)*1500*time.Millisecond).Format(time.RFC3339Nano), stepField, data)
			msgs = append(msgs, model.Message{Key: []byte(id), Value: v})
			seq++
		}
		add(model.TypeRunQueued, "", "")
		add(model.TypeRunStarted, "", "")
		for _, step := range []string{"checkout", "build", "test"} {
			add(model.TypeStepStarted, step, "")
			add(model.TypeStepSucceeded, step, "")
		}
		add(model.TypeStepSkipped, "deploy", "")
		if run%7 == 0 {
			add(model.TypeRunFailed, "", `{"error":"exit code 1 in step test"}`)
		} else {
			add(model.TypeRunSucceeded, "", "")
		}
	}
	return msgs
}
