package store_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store"
)

// BenchmarkCopyStream measures building a batch's binary COPY stream
// (store.appendEventsCopy), the client side of the fast way, for a batch
// of 2000 events into a buffer reused from the batch before, as the
// store does.
func BenchmarkCopyStream(b *testing.B) {
	const n = 2000
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var vs [][]byte
	for i := range n {
		vs = append(vs, eventJSON(fmt.Sprintf("run-%06d-%02d", i/10, i%10), "step.succeeded", fmt.Sprintf("run-%06d", i/10),
			t0.Add(time.Duration(i)*time.Second), 1, `,"data":{"runner":"ubuntu-24.04","trigger":"push","commit":"9f1c2ab"}`))
	}
	batch := batchOf(model.Lease{Topic: topic}, vs...)
	recs := batch.UniqueRecords()
	buf := store.AppendEventsCopy(nil, topic, 0, recs)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = store.AppendEventsCopy(buf[:0], topic, 0, recs)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
}
