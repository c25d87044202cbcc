package store

import (
	"testing"

	"github.com/projector-run/projector/projector/model"
)

// The events' way and the merges' pause are one partition's memory but
// two decisions: neither's outcome moves the other.
func TestWaysKeepEventsAndMergesApart(t *testing.T) {
	var w ways
	tp := model.TopicPartition{Topic: "t", Partition: 3}
	other := model.TopicPartition{Topic: "t", Partition: 4}

	w.eventsMet(tp, true)
	w.mergesConflicted(tp)
	if !w.safeEvents(tp) {
		t.Fatal("a merge conflict ended the events' safe way")
	}
	if w.fastMerges(tp) {
		t.Fatal("the batch after a merge conflict merged the fast way")
	}
	if w.safeEvents(other) || !w.fastMerges(other) {
		t.Fatal("another partition inherited the memory")
	}
	w.mergesSucceeded(tp)
	if !w.safeEvents(tp) {
		t.Fatal("a fast merge that succeeded ended the events' safe way")
	}
	if !w.fastMerges(tp) {
		t.Fatal("the merges stayed paused after a fast merge succeeded")
	}
	w.mergesConflicted(tp)
	w.eventsMet(tp, false)
	if w.fastMerges(tp) {
		t.Fatal("a batch without stored event_ids ended the merges' pause")
	}
	w.mergesSucceeded(tp)
	if len(w.m) != 0 {
		t.Fatalf("%d partitions remembered with nothing to remember", len(w.m))
	}

	// The pause doubles with each failed try, up to fastPause batches.
	for _, want := range []int{1, 2, 4, 8, fastPause} {
		w.mergesConflicted(tp)
		paused := 0
		for !w.fastMerges(tp) {
			paused++
		}
		if paused != want {
			t.Fatalf("paused %d batches, want %d", paused, want)
		}
	}
}
