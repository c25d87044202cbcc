package model

import (
	"math/rand/v2"
	"strconv"
	"testing"
	"time"
)

func BenchmarkCombine(b *testing.B) {
	// Equal attempts, both sides with a terminal: the longest path.
	r := rand.New(rand.NewPCG(1, 2))
	events := genEvents(r, 20, genMode{sameAttempt: true, maxAttempt: 1, tsSlots: 8})
	x, y := Project(events[:10]), Project(events[10:])
	b.ReportAllocs()
	var sink Run
	for b.Loop() {
		sink = Combine(x, y)
	}
	_ = sink
}

func BenchmarkProject(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 4))
	events := genEvents(r, 10, genMode{maxAttempt: 2, tsSlots: 8})
	b.ReportAllocs()
	var sink Run
	for b.Loop() {
		sink = Project(events)
	}
	_ = sink
}

// BenchmarkFoldBatch folds a batch of 10k events of 1k runs into one
// partial row per run, as the worker does before its upsert.
func BenchmarkFoldBatch(b *testing.B) {
	const runs, perRun = 100, 10 // a batch of 1000 events
	r := rand.New(rand.NewPCG(5, 6))
	recs := make([]*Record, 0, runs*perRun)
	for i := range runs {
		runID := "run-" + strconv.Itoa(i)
		for j, e := range genEvents(r, perRun, genMode{maxAttempt: 2, tsSlots: 8}) {
			e.WorkflowRunID = runID
			e.EventID = runID + "-" + strconv.Itoa(j)
			e.Timestamp = e.Timestamp.Add(time.Duration(i) * time.Second)
			recs = append(recs, &Record{Offset: int64(len(recs)), Event: e})
		}
	}
	r.Shuffle(len(recs), func(i, j int) { recs[i], recs[j] = recs[j], recs[i] })
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if got := FoldRecords(recs); len(got) != runs {
			b.Fatalf("%d runs, want %d", len(got), runs)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recs)), "ns/event")
}
