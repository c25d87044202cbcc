package consumer_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/projector-run/projector/projector/consumer"
	"github.com/projector-run/projector/projector/kafkatest"
	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store"
)

// gatedSink is the real store behind a gate: Apply waits until the gate is
// open or holds a token (one batch each).
type gatedSink struct {
	*store.Store
	mu      sync.Mutex
	open    bool
	tokens  int
	changed chan struct{} // closed and replaced when open or tokens change
}

func newGatedSink(st *store.Store) *gatedSink {
	return &gatedSink{Store: st, changed: make(chan struct{})}
}

func (g *gatedSink) Apply(ctx context.Context, b *model.Batch) (model.Applied, error) {
	for {
		g.mu.Lock()
		if g.open || g.tokens > 0 {
			if !g.open {
				g.tokens--
			}
			g.mu.Unlock()
			return g.Store.Apply(ctx, b)
		}
		ch := g.changed
		g.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return model.Applied{}, ctx.Err()
		}
	}
}

// pending returns the tokens not yet taken.
func (g *gatedSink) pending() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.tokens
}

func (g *gatedSink) set(open bool, tokens int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.open = open
	g.tokens += tokens
	close(g.changed)
	g.changed = make(chan struct{})
}

// lagRow is one row of the consumer_lag view.
type lagRow struct {
	next, lag, hwm, seconds *int64
	hwmAt, lastApplied      *time.Time
}

func consumerLag(t *testing.T, st *store.Store, group string) map[int32]lagRow {
	t.Helper()
	rows, err := st.Pool().Query(context.Background(),
		`SELECT partition, next_offset, high_watermark, lag, seconds_since_last_applied, high_watermark_at, last_applied_at
		 FROM consumer_lag WHERE group_id = $1`, group)
	require.NoError(t, err)
	defer rows.Close()
	out := map[int32]lagRow{}
	for rows.Next() {
		var p int32
		var r lagRow
		require.NoError(t, rows.Scan(&p, &r.next, &r.hwm, &r.lag, &r.seconds, &r.hwmAt, &r.lastApplied))
		out[p] = r
	}
	require.NoError(t, rows.Err())
	return out
}

// TestConsumerLagView follows the lag view through a backlog: before any
// batch commits it shows the whole backlog, while the worker works through
// a second backlog it shows what is left, and once caught up it reads 0.
func TestConsumerLagView(t *testing.T) {
	t.Parallel()
	p := newPipeline(t, 3)
	wl := workload(21, 200)
	half := len(wl.Messages) / 2
	p.produce(wl.Messages[:half])
	gate := newGatedSink(p.st)
	cfg := p.config(false)
	cfg.Owner = "w"
	cfg.HighWatermarkInterval = 20 * time.Millisecond
	cfg.LeaseCheckInterval = 20 * time.Millisecond
	w, err := consumer.NewWorker(cfg, gate, testLogger(t, "w"))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		gate.set(true, 0)
		cancel()
		require.NoError(t, <-done)
	}()

	// Nothing applied yet: the stored high watermarks are the backlog.
	hwms := kafkatest.HighWatermarks(p.cluster, topic)
	waitUntil(t, time.Minute, func() bool {
		lag := consumerLag(t, p.st, p.group)
		for part, hwm := range hwms {
			r, ok := lag[part]
			if !ok || r.hwm == nil || *r.hwm != hwm {
				return false
			}
			require.Zero(t, *r.next)
			require.Equal(t, hwm, *r.lag)
			require.Nil(t, r.lastApplied, "nothing applied")
			require.Nil(t, r.seconds)
		}
		return true
	}, "the high watermarks were never stored")

	gate.set(true, 0)
	waitUntil(t, time.Minute, func() bool { return caughtUp(t, p) })
	waitUntil(t, time.Minute, func() bool {
		lag := consumerLag(t, p.st, p.group)
		for part, hwm := range hwms {
			r := lag[part]
			require.Equal(t, hwm, *r.next)
			require.Zero(t, *r.lag, "caught up")
			if r.lastApplied == nil { // stored with the next high watermark
				return false
			}
			require.Less(t, *r.seconds, int64(60))
		}
		return true
	})

	// A second backlog, applied one batch at a time (a token is given
	// once the last one was taken): once a batch has committed after the
	// messages were fetched, the view shows the new high watermark and
	// what is left of the backlog.
	gate.set(false, 0)
	p.produce(wl.Messages[half:])
	hwms = kafkatest.HighWatermarks(p.cluster, topic)
	behind := false
	waitUntil(t, time.Minute, func() bool {
		if gate.pending() == 0 {
			gate.set(false, 1)
		}
		lag := consumerLag(t, p.st, p.group)
		for part, hwm := range hwms {
			r := lag[part]
			if *r.hwm != hwm {
				return false
			}
			require.Equal(t, max(hwm-*r.next, 0), *r.lag)
			behind = behind || *r.lag > 0
		}
		return true
	}, "the new high watermarks were never stored")
	require.True(t, behind, "the view showed the backlog while the worker was behind")

	gate.set(true, 0)
	waitUntil(t, time.Minute, func() bool { return caughtUp(t, p) })
	for part, r := range consumerLag(t, p.st, p.group) {
		require.Equal(t, hwms[part], *r.hwm)
		require.Zero(t, *r.lag, "caught up again")
	}
	p.verify()
}

// scrape gathers c from a registry of its own (linting it) and returns
// every sample by metric name and labels ("k=v,k=v", "" for none):
// counters and gauges by value, histograms by sample count, and their
// sums under the name with "_sum".
func scrape(t *testing.T, c prometheus.Collector) map[string]map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))
	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	require.Empty(t, problems)
	families, err := reg.Gather()
	require.NoError(t, err)
	out := map[string]map[string]float64{}
	for _, f := range families {
		samples := map[string]float64{}
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			key := strings.Join(labels, ",")
			switch {
			case m.Counter != nil:
				samples[key] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				samples[key] = m.GetGauge().GetValue()
			case m.Histogram != nil:
				samples[key] = float64(m.GetHistogram().GetSampleCount())
			}
		}
		out[f.GetName()] = samples
		if f.GetType() == dto.MetricType_HISTOGRAM {
			sums := map[string]float64{}
			for _, m := range f.GetMetric() {
				var labels []string
				for _, l := range m.GetLabel() {
					labels = append(labels, l.GetName()+"="+l.GetValue())
				}
				sums[strings.Join(labels, ",")] = m.GetHistogram().GetSampleSum()
			}
			out[f.GetName()+"_sum"] = sums
		}
	}
	return out
}

func sum(samples map[string]float64) (s float64) {
	for _, v := range samples {
		s += v
	}
	return s
}

// TestMetricsCountWhatWasApplied runs a workload through a worker with
// Metrics and checks what a scrape shows against what the input and the
// database say: events by type and dead letters by reason as the tables
// count them, every message once, the duplicates the workload holds.
func TestMetricsCountWhatWasApplied(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := newPipeline(t, 4)
	wl := workload(22, 300)
	p.produce(wl.Messages)
	m := consumer.NewMetrics()
	cfg := p.config(true)
	cfg.Observer = m
	cfg.Middleware = []consumer.Middleware{m.Measure}
	r := p.start("w", cfg)
	r.wait(t)
	p.verify()
	got := scrape(t, m)

	// count returns a query's (label, count) rows; label maps the label.
	count := func(q string, label func(string) string) map[string]float64 {
		rows, err := p.st.Pool().Query(ctx, q)
		require.NoError(t, err)
		defer rows.Close()
		out := map[string]float64{}
		for rows.Next() {
			var k string
			var n int64
			require.NoError(t, rows.Scan(&k, &n))
			out[label(k)] += float64(n)
		}
		require.NoError(t, rows.Err())
		return out
	}
	nonZero := func(samples map[string]float64, prefix string) map[string]float64 {
		out := map[string]float64{}
		for k, v := range samples {
			if v != 0 {
				out[strings.TrimPrefix(k, prefix)] = v
			}
		}
		return out
	}
	known := map[string]bool{}
	for _, typ := range []string{model.TypeRunQueued, model.TypeRunStarted, model.TypeRunSucceeded,
		model.TypeRunFailed, model.TypeRunCancelled, model.TypeStepStarted, model.TypeStepSucceeded,
		model.TypeStepFailed, model.TypeStepSkipped} {
		known[typ] = true
	}
	typeLabel := func(typ string) string {
		if known[typ] {
			return typ
		}
		return "other"
	}
	stored := count(`SELECT event_type, count(*) FROM workflow_events GROUP BY event_type`, typeLabel)
	require.Len(t, stored, 10, "the workload has every known event type, and others")
	require.Equal(t, stored, nonZero(got["projector_events_applied_total"], "event_type="), "events by type")
	dead := count(`SELECT reason, count(*) FROM dead_letters GROUP BY reason`, func(s string) string { return s })
	require.NotEmpty(t, dead)
	require.Equal(t, dead, nonZero(got["projector_dead_letters_total"], "reason="), "dead letters by reason")

	require.Equal(t, float64(len(wl.Messages)), got["projector_messages_total"][""])
	require.Equal(t, float64(len(wl.Messages)), got["projector_batch_messages_sum"][""], "every message in one batch")
	require.Equal(t, float64(wl.Duplicates), got["projector_duplicate_events_total"][""])
	batches := got["projector_batch_messages"][""]
	require.GreaterOrEqual(t, batches, float64(len(wl.Messages))/float64(cfg.BatchSize))
	require.Equal(t, batches, got["projector_batch_transaction_seconds"][""])
	require.Equal(t, batches, sum(got["projector_batches_total"]))
	// The workload repeats events in later batches: some COPYs meet them,
	// and each such batch is applied again the safe way.
	require.Positive(t, got["projector_batches_total"]["insert=copy"])
	require.Positive(t, got["projector_copy_conflicts_total"][""])
	require.GreaterOrEqual(t, got["projector_batches_total"]["insert=insert_skip_stored"], got["projector_copy_conflicts_total"][""])
	// The shuffled runs' steps span batches: some plain inserts of steps
	// meet stored ones.
	require.Positive(t, got["projector_step_insert_conflicts_total"][""])
	require.Equal(t, float64(r.w.Stats().StepConflicts.Load()), got["projector_step_insert_conflicts_total"][""])
	require.Positive(t, got["projector_rebalances_total"][""])
	require.Zero(t, got["projector_fence_rejections_total"][""])
	require.Zero(t, got["projector_claimed_partitions"][""], "the claims ended with the run")
	require.Empty(t, got["projector_partition_lag"])
}

// TestMirroredOffsetsNeverPosition: with MirrorOffsets, Kafka's committed
// offsets follow the stored ones, and when they disagree (someone committed
// to the group by hand) the claims still start at the stored offsets:
// nothing is skipped, nothing read twice.
func TestMirroredOffsetsNeverPosition(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := newPipeline(t, 3)
	wl := workload(23, 300)
	half := len(wl.Messages) / 2
	cl, err := kgo.NewClient(kgo.SeedBrokers(p.cluster.ListenAddrs()...))
	require.NoError(t, err)
	defer cl.Close()
	adm := kadm.NewClient(cl)
	committed := func() map[int32]int64 {
		resps, err := adm.FetchOffsets(ctx, p.group)
		require.NoError(t, err)
		out := map[int32]int64{}
		for _, r := range resps[topic] {
			require.NoError(t, r.Err)
			out[r.Partition] = r.At
		}
		return out
	}

	// Without the option, nothing is committed to Kafka.
	p.produce(wl.Messages[:half/2])
	p.start("plain", p.config(true)).wait(t)
	require.Empty(t, committed())

	// With it, Kafka's committed offsets follow the stored ones.
	p.produce(wl.Messages[half/2 : half])
	cfg := p.config(true)
	cfg.MirrorOffsets = true
	p.start("mirror-1", cfg).wait(t)
	p.verify()
	hwms := kafkatest.HighWatermarks(p.cluster, topic)
	require.Equal(t, hwms, committed())

	// Someone commits offsets to the group by hand: far ahead, back at
	// the start, and at the end of what is about to be produced (trusting
	// it would silently skip the new messages).
	p.produce(wl.Messages[half:])
	hwms = kafkatest.HighWatermarks(p.cluster, topic)
	bogus := kadm.Offsets{}
	bogus.Add(kadm.Offset{Topic: topic, Partition: 0, At: hwms[0] + 1_000_000, LeaderEpoch: -1})
	bogus.Add(kadm.Offset{Topic: topic, Partition: 1, At: 0, LeaderEpoch: -1})
	bogus.Add(kadm.Offset{Topic: topic, Partition: 2, At: hwms[2], LeaderEpoch: -1})
	require.NoError(t, adm.CommitAllOffsets(ctx, p.group, bogus))

	r := p.start("mirror-2", cfg)
	r.wait(t)
	require.Equal(t, int64(len(wl.Messages)-half), r.w.Stats().Messages.Load(),
		"consumed exactly the messages after the stored offsets")
	require.Zero(t, r.w.Stats().Incidents.Load())
	p.verify()
	require.Equal(t, hwms, committed(), "the mirror overwrote the offsets committed by hand")
}

// failingSink is the real store, whose Apply fails transiently while fail
// is set.
type failingSink struct {
	*store.Store
	fail atomic.Bool
}

func (f *failingSink) Apply(ctx context.Context, b *model.Batch) (model.Applied, error) {
	if f.fail.Load() {
		return model.Applied{}, errors.New("connection reset by peer")
	}
	return f.Store.Apply(ctx, b)
}

// TestRetryingSinceFollowsRetries: a worker whose batches fail reports
// since when it has been retrying, counts the retries, and reports nothing
// once a batch commits.
func TestRetryingSinceFollowsRetries(t *testing.T) {
	t.Parallel()
	p := newPipeline(t, 1)
	wl := workload(24, 50)
	p.produce(wl.Messages)
	sink := &failingSink{Store: p.st}
	sink.fail.Store(true)
	m := consumer.NewMetrics()
	cfg := p.config(true)
	cfg.Owner = "w"
	cfg.Observer = m
	cfg.Middleware = []consumer.Middleware{m.Measure}
	w, err := consumer.NewWorker(cfg, sink, testLogger(t, "w"))
	require.NoError(t, err)
	require.True(t, w.RetryingSince().IsZero())
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- w.Run(context.Background()) }()

	waitUntil(t, time.Minute, func() bool { return w.Stats().Retries.Load() >= 3 })
	since := w.RetryingSince()
	require.False(t, since.IsZero())
	require.WithinRange(t, since, start, time.Now())
	require.True(t, since.Equal(w.RetryingSince()), "the streak keeps its start")
	require.GreaterOrEqual(t, scrape(t, m)["projector_retries_total"]["operation=apply batch"], 3.0)

	sink.fail.Store(false)
	require.NoError(t, <-done)
	require.True(t, w.RetryingSince().IsZero(), "a committed batch ends the streak")
	p.verify()
}
