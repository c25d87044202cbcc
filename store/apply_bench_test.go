package store_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store/storetest"
)

// BenchmarkApply measures the apply transaction alone, against real
// PostgreSQL: 8 partitions applying batches of 1000 to 5000 events (10 per run)
// in parallel, as the worker does, with four steps a run. Reported as
// events/s. BENCH_SETUP_SQL, when set, runs first (to try a schema change).
func BenchmarkApply(b *testing.B) {
	for _, size := range []int{1000, 2000, 5000} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			st := storetest.New(b)
			if q := os.Getenv("BENCH_SETUP_SQL"); q != "" {
				if _, err := st.Pool().Exec(context.Background(), q); err != nil {
					b.Fatal(err)
				}
			}
			ctx := context.Background()
			const partitions = 8
			t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			values := func(p, batch int) [][]byte {
				out := make([][]byte, size)
				for i := range out {
					run := fmt.Sprintf("p%d-b%d-r%d", p, batch, i/10)
					step := ""
					typ := []string{"run.queued", "run.started", "step.started", "step.succeeded", "step.started",
						"step.succeeded", "step.started", "step.succeeded", "step.skipped", "run.succeeded"}[i%10]
					if name := []string{"", "", "checkout", "checkout", "build", "build", "test", "test", "deploy", ""}[i%10]; name != "" {
						step = `,"step_id":"` + name + `"` // four steps a run, as the end-to-end bench
					}
					out[i] = fmt.Appendf(nil, `{"event_id":"%s-%d","event_type":%q,"source":"github-actions","workflow_id":"build-and-test","workflow_run_id":%q,"timestamp":%q%s,"data":{"runner":"ubuntu-24.04","trigger":"push","commit":"9f1c2ab"}}`,
						run, i%10, typ, run, t0.Add(time.Duration(i)*time.Second).Format(time.RFC3339Nano), step)
				}
				return out
			}
			batches := make([][]*model.Batch, partitions)
			for p := range partitions {
				lease := claim(b, st, int32(p))
				for i := range b.N {
					bt := batchOf(lease, values(p, i)...)
					batches[p] = append(batches[p], bt)
					lease.NextOffset = bt.End
				}
			}
			b.ResetTimer()
			start := time.Now()
			var g errgroup.Group
			for p := range partitions {
				g.Go(func() error {
					for _, bt := range batches[p] {
						if _, err := st.Apply(ctx, bt); err != nil {
							return err
						}
					}
					return nil
				})
			}
			if err := g.Wait(); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(partitions*size*b.N)/time.Since(start).Seconds(), "events/s")
		})
	}
}
