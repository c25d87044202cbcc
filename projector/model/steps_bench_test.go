package model

import (
	"math/rand/v2"
	"strconv"
	"testing"
	"time"
)

func BenchmarkCombineSteps(b *testing.B) {
	// Both sides with a terminal: the longest path.
	x := ProjectSteps([]Event{sev("a1", TypeStepStarted, 0, 1, "s"), sev("a2", TypeStepSucceeded, time.Second, 1, "s")})[0]
	y := ProjectSteps([]Event{withError(sev("b1", TypeStepFailed, time.Second, 1, "s"), "boom")})[0]
	b.ReportAllocs()
	var sink Step
	for b.Loop() {
		sink = CombineSteps(x, y)
	}
	_ = sink
}

// BenchmarkFoldSteps folds a batch of 1000 step-heavy events of 100 runs
// into one partial row per step, as a batch does before its upsert.
func BenchmarkFoldSteps(b *testing.B) {
	const runs, perRun = 100, 10
	r := rand.New(rand.NewPCG(7, 8))
	recs := make([]*Record, 0, runs*perRun)
	for i := range runs {
		runID := "run-" + strconv.Itoa(i)
		for j, e := range genEvents(r, perRun, genMode{maxAttempt: 2, tsSlots: 8, stepHeavy: true}) {
			e.WorkflowRunID = runID
			e.EventID = runID + "-" + strconv.Itoa(j)
			e.Timestamp = e.Timestamp.Add(time.Duration(i) * time.Second)
			recs = append(recs, &Record{Offset: int64(len(recs)), Event: e})
		}
	}
	r.Shuffle(len(recs), func(i, j int) { recs[i], recs[j] = recs[j], recs[i] })
	b.ReportAllocs()
	for b.Loop() {
		if got := FoldSteps(recs); len(got) == 0 {
			b.Fatal("no steps")
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recs)), "ns/event")
}
