package consumer

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/projector-run/projector/projector/model"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/sirupsen/logrus"
)

// Observer is told what a worker does, for metrics. Set it as
// Config.Observer. The worker calls it from its goroutines, concurrently,
// on the consume path: every method must be quick and must not block.
type Observer interface {
	// Rebalanced: a consumer group session started (after a rebalance).
	Rebalanced()
	// ClaimStarted: a session's claim of a partition starts, its next
	// message at next. hwm returns the partition's high watermark as of
	// the claim's latest fetch; it may be called until ClaimEnded.
	ClaimStarted(tp model.TopicPartition, next int64, hwm func() int64)
	// ClaimProgressed: the claim's stored offset is next, after a batch
	// committed or an idle lease check.
	ClaimProgressed(tp model.TopicPartition, next int64)
	// ClaimEnded: the claim ended (rebalance, fence, shutdown).
	ClaimEnded(tp model.TopicPartition)
	// Fenced: a claim ended because its partition's lease or offset moved.
	Fenced()
	// Retried: what failed transiently and will be tried again.
	Retried(what string, err error)
	// Incident: something about a partition an operator must see.
	Incident(tp model.TopicPartition, inc model.Incident)
}

// WatermarkRecorder is implemented by a Sink that stores each claimed
// partition's high watermark and last stable offset (lso, -1 when
// unknown; below the high watermark while a transaction is open) beside
// its offset, and when the partition last committed a batch (the zero
// time: not since the claim started), for the consumer_lag view. The
// worker calls it from the claim's goroutine between batches, at most
// every Config.HighWatermarkInterval, never inside a batch transaction.
type WatermarkRecorder interface {
	RecordHighWatermark(ctx context.Context, l model.Lease, hwm, lso int64, lastApplied time.Time) error
}

// RetryingSince returns when the worker's current streak of transient
// failures began: its first retry since the last sign of progress (a
// session started, a partition claimed, a batch committed). It is zero
// when the worker is not retrying.
func (w *Worker) RetryingSince() time.Time {
	if ns := w.mon.retryingSince.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// Stuck returns what the worker is retrying that will not heal by itself:
// a broken schema (a *SchemaError: a table dropped or renamed under it) or
// a failing projection (a *ProjectionError). It is nil when the worker's
// latest retries, if any, were for neither, and stays set until the
// worker makes progress. /readyz is unready while it is set.
func (w *Worker) Stuck() error {
	if e := w.mon.stuck.Load(); e != nil {
		return *e
	}
	return nil
}

// hwmWriteTimeout bounds a high watermark write, so that a database that
// hangs delays a claim's loop by at most this much; the last write, as the
// claim ends, gets hwmFinalTimeout.
const (
	hwmWriteTimeout = 5 * time.Second
	hwmFinalTimeout = time.Second
)

// monitor is the worker's side of observation: the claimed partitions
// (their high watermarks stored for consumer_lag, their progress logged at
// info), the streak of retries behind readiness, and the Observer.
type monitor struct {
	obs      Observer          // nil when none is configured
	recorder WatermarkRecorder // nil when the sink stores no high watermarks
	hwmEvery time.Duration
	logEvery time.Duration

	mu     sync.Mutex
	claims map[model.TopicPartition]*claimWatch

	// retryingSince is the start of the current retry streak in Unix
	// nanoseconds, 0 when none.
	retryingSince atomic.Int64
	// stuck is the latest SchemaError or ProjectionError of the current
	// retry streak, nil when none (Worker.Stuck).
	stuck atomic.Pointer[error]
}

func newMonitor(cfg Config, sink Sink) *monitor {
	m := &monitor{
		obs:      cfg.Observer,
		hwmEvery: cfg.HighWatermarkInterval,
		logEvery: cfg.LogInterval,
		claims:   map[model.TopicPartition]*claimWatch{},
	}
	m.recorder, _ = sink.(WatermarkRecorder)
	return m
}

func (m *monitor) progress() {
	m.retryingSince.Store(0)
	m.stuck.Store(nil)
}

func (m *monitor) rebalanced() {
	m.progress()
	if m.obs != nil {
		m.obs.Rebalanced()
	}
}

func (m *monitor) retried(what string, err error) {
	m.retryingSince.CompareAndSwap(0, time.Now().UnixNano())
	if stuck(err) {
		m.stuck.Store(&err)
	}
	if m.obs != nil {
		m.obs.Retried(what, err)
	}
}

func (m *monitor) fenced() {
	if m.obs != nil {
		m.obs.Fenced()
	}
}

func (m *monitor) incident(tp model.TopicPartition, inc model.Incident) {
	if m.obs != nil {
		m.obs.Incident(tp, inc)
	}
}

// batchApplied is called once a batch has committed.
func (m *monitor) batchApplied(b *model.Batch, res model.Applied, took time.Duration) {
	m.progress()
	tp := model.TopicPartition{Topic: b.Lease.Topic, Partition: b.Lease.Partition}
	m.mu.Lock()
	if c := m.claims[tp]; c != nil {
		c.sum.add(b, res, took)
		c.appliedAt = time.Now()
	}
	m.mu.Unlock()
}

// startClaim registers a claim that starts at lease.NextOffset and stores
// its high watermark at once. Then progressed is called after each commit
// (by the claim's applier goroutine) and each idle lease check (by the
// claim's goroutine, only while no batch is in flight), and end when the
// claim returns, after its applier stopped. lso looks the partition's last
// stable offset up (-1 when it cannot).
func (m *monitor) startClaim(ctx context.Context, lease model.Lease, hwm, lso func() int64, log logrus.FieldLogger) *claimWatch {
	tp := model.TopicPartition{Topic: lease.Topic, Partition: lease.Partition}
	c := &claimWatch{m: m, tp: tp, lease: lease, hwm: hwm, lso: lso, log: log, loggedAt: time.Now()}
	m.mu.Lock()
	m.claims[tp] = c
	m.mu.Unlock()
	m.progress()
	if m.obs != nil {
		m.obs.ClaimStarted(tp, lease.NextOffset, hwm)
	}
	c.recordHighWatermark(ctx, hwmWriteTimeout)
	return c
}

// claimWatch follows one claim. Its fields other than sum and appliedAt
// belong to whichever of the claim's two goroutines holds the claim's one
// batch slot: the applier while a batch is in flight, the claim's
// goroutine otherwise (the hand-over on the applier's channels orders
// their accesses). sum and appliedAt are guarded by the monitor's mutex.
type claimWatch struct {
	m     *monitor
	tp    model.TopicPartition
	lease model.Lease
	hwm   func() int64
	lso   func() int64
	log   logrus.FieldLogger

	hwmAt    time.Time // last high watermark write
	loggedAt time.Time // last progress log line

	sum       batchSummary
	appliedAt time.Time // last committed batch
}

// progressed says that the claim's stored offset is next: a batch up to it
// committed, or an idle lease check found it unchanged. The high watermark
// is stored and a progress line logged when they are due.
func (c *claimWatch) progressed(ctx context.Context, next int64) {
	c.lease.NextOffset = next
	if c.m.obs != nil {
		c.m.obs.ClaimProgressed(c.tp, next)
	}
	now := time.Now()
	if now.Sub(c.hwmAt) >= c.m.hwmEvery {
		c.recordHighWatermark(ctx, hwmWriteTimeout)
	}
	if now.Sub(c.loggedAt) >= c.m.logEvery {
		c.logProgress(now)
	}
}

// end stores the claim's last high watermark and time of its last commit
// (the session's ctx may be over by now), logs what is left to log, and
// unregisters the claim.
func (c *claimWatch) end(ctx context.Context) {
	c.recordHighWatermark(context.WithoutCancel(ctx), hwmFinalTimeout)
	c.logProgress(time.Now())
	c.m.mu.Lock()
	if c.m.claims[c.tp] == c {
		delete(c.m.claims, c.tp)
	}
	c.m.mu.Unlock()
	if c.m.obs != nil {
		c.m.obs.ClaimEnded(c.tp)
	}
}

// recordHighWatermark stores the claim's high watermark beside its offset.
// It is advisory: a failure is logged at debug level and tried again at the
// next interval (a database that is down makes the batches fail loudly).
func (c *claimWatch) recordHighWatermark(ctx context.Context, timeout time.Duration) {
	c.hwmAt = time.Now()
	hwm := c.hwm()
	if c.m.recorder == nil || hwm < 0 {
		return
	}
	lso := c.lso()
	if lso > hwm {
		hwm = lso // sarama's high watermark is as of its last fetch with records
	}
	c.m.mu.Lock()
	applied := c.appliedAt
	c.m.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := c.m.recorder.RecordHighWatermark(ctx, c.lease, hwm, lso, applied); err != nil && ctx.Err() == nil {
		c.log.WithError(err).Debug("record high watermark")
	}
}

// logProgress logs at info what the claim applied since its last line, if
// anything: one line per partition at most every Config.LogInterval.
func (c *claimWatch) logProgress(now time.Time) {
	c.m.mu.Lock()
	s := c.sum
	c.sum = batchSummary{}
	c.m.mu.Unlock()
	c.loggedAt = now
	if s.batches == 0 {
		return
	}
	fields := logrus.Fields{
		"offset": s.from, "end_offset": s.end, "batches": s.batches, "messages": s.messages,
		"events": s.events, "duplicates": s.duplicates, "dead_letters": s.deadLetters,
		"duration_ms": s.took.Milliseconds(), "max_batch_ms": s.slowest.Milliseconds(),
	}
	if hwm := c.hwm(); hwm >= 0 {
		fields["lag"] = max(hwm-s.end, 0)
	}
	c.log.WithFields(fields).Info("applied batches")
}

// batchSummary adds up the batches a claim committed since its last
// progress line.
type batchSummary struct {
	batches, messages, events, duplicates, deadLetters int
	from, end                                          int64
	took, slowest                                      time.Duration
}

func (s *batchSummary) add(b *model.Batch, res model.Applied, took time.Duration) {
	if s.batches == 0 {
		s.from = b.Lease.NextOffset
	}
	s.end = b.End
	s.batches++
	s.messages += b.Len()
	s.events += res.Events
	s.duplicates += res.Duplicates
	s.deadLetters += res.DeadLetters
	s.took += took
	s.slowest = max(s.slowest, took)
}

// mirror copies an offset that the database has committed to the
// session's Kafka-side offset, when Config.MirrorOffsets is on, for lag
// tools that read Kafka's committed offsets. It is advisory: Setup
// positions every claim from the database. ResetOffset moves sarama's
// mark only back and MarkOffset only forward; together they set it
// exactly. next is never negative (a stored offset), so sarama never
// commits one of its sentinels. Auto-commit, on only when mirroring,
// sends the mark within a second.
func (h *handler) mirror(sess sarama.ConsumerGroupSession, tp model.TopicPartition, next int64) {
	if !h.w.cfg.MirrorOffsets || next < 0 {
		return
	}
	sess.ResetOffset(tp.Topic, tp.Partition, next, "")
	sess.MarkOffset(tp.Topic, tp.Partition, next, "")
}

// Metrics exports a worker's activity in Prometheus format. It is an
// Observer, and its Measure a Middleware around the apply step: set them
// as Config.Observer and in Config.Middleware, and register it with a
// registry.
type Metrics struct {
	messages      prometheus.Counter
	events        *prometheus.CounterVec
	duplicates    prometheus.Counter
	deadLetters   *prometheus.CounterVec
	batchSize     prometheus.Histogram
	batchTime     prometheus.Histogram
	fenced        prometheus.Counter
	retries       *prometheus.CounterVec
	rebalances    prometheus.Counter
	incidents     *prometheus.CounterVec
	inserts       *prometheus.CounterVec
	conflicts     prometheus.Counter
	stepConflicts prometheus.Counter
	schema        *prometheus.CounterVec
	projections   *prometheus.CounterVec

	lag, hwm, next, claimed *prometheus.Desc

	mu     sync.Mutex
	claims map[model.TopicPartition]*claimGauge
}

type claimGauge struct {
	next atomic.Int64
	hwm  func() int64
}

// Label values for what cannot be told apart: an event type the contract
// does not know (an unbounded set, so one label value for them all), and
// events or dead letters a batch stored when the sink did not say which
// (see countEventTypes).
const (
	labelOther        = "other"
	labelUnattributed = "unattributed"
)

// NewMetrics returns the metrics of one worker, all at zero.
func NewMetrics() *Metrics {
	m := &Metrics{
		messages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "projector_messages_total",
			Help: "Kafka messages applied (valid events, duplicates and dead letters) in committed batches.",
		}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "projector_events_applied_total",
			Help: "New events stored, by event_type (other: a type the contract does not list).",
		}, []string{"event_type"}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "projector_duplicate_events_total",
			Help: "Valid events skipped because their event_id was already stored.",
		}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "projector_dead_letters_total",
			Help: "Invalid messages stored as dead letters, by reason.",
		}, []string{"reason"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "projector_batch_messages",
			Help:    "Messages per committed batch transaction.",
			Buckets: []float64{1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000},
		}),
		batchTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "projector_batch_transaction_seconds",
			Help: "Duration of each committed batch transaction, from BEGIN to COMMIT's answer (the attempt that committed).",
			// 1 ms to about 30 s in steps of 25%, fine enough for the
			// quantiles of BatchQuantile.
			Buckets: prometheus.ExponentialBuckets(0.001, 1.25, 47),
		}),
		fenced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "projector_fence_rejections_total",
			Help: "Claims ended because the partition's lease or stored offset moved (another owner, or an operator).",
		}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "projector_retries_total",
			Help: "Transient failures retried with backoff, by operation.",
		}, []string{"operation"}),
		rebalances: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "projector_rebalances_total",
			Help: "Consumer group sessions started (one per rebalance).",
		}),
		incidents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "projector_incidents_total",
			Help: "Incidents recorded in consumer_incidents, by kind.",
		}, []string{"kind"}),
		inserts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "projector_batches_total",
			Help: "Committed batch transactions, by how their events went in: copy (COPY, the fast way) or insert_skip_stored (an insert that skips event_ids already stored, after a COPY met one).",
		}, []string{"insert"}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "projector_copy_conflicts_total",
			Help: "Batches whose COPY met an event_id already stored and were applied again with insert_skip_stored; the partition stays on that way until a batch finds no stored event_id.",
		}),
		stepConflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "projector_step_insert_conflicts_total",
			Help: "Batches whose plain insert of workflow_steps rows met a step already stored, so that the steps were merged again with the upsert; the partition then upserts for up to 8 batches before it tries the plain insert again.",
		}),
		projections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "projector_projection_errors_total",
			Help: "Failed attempts because a projection's Apply or Forget returned an error, by projection; the batch is retried, never skipped or dead-lettered.",
		}, []string{"projection"}),
		schema: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "projector_schema_errors_total",
			Help: "Failed attempts because something of the database schema is missing (a table dropped or renamed under the worker), by the relation PostgreSQL named; retried until it is restored.",
		}, []string{"relation"}),
		lag: prometheus.NewDesc("projector_partition_lag",
			"Messages of a claimed partition not yet applied: its high watermark as of the latest fetch minus its stored next_offset.",
			[]string{"topic", "partition"}, nil),
		hwm: prometheus.NewDesc("projector_partition_high_watermark",
			"High watermark of a claimed partition as of the latest fetch.",
			[]string{"topic", "partition"}, nil),
		next: prometheus.NewDesc("projector_partition_next_offset",
			"Stored next_offset of a claimed partition.",
			[]string{"topic", "partition"}, nil),
		claimed: prometheus.NewDesc("projector_claimed_partitions",
			"Partitions this worker holds now.", nil, nil),
		claims: map[model.TopicPartition]*claimGauge{},
	}
	for _, t := range append(slices.Clone(model.KnownEventTypes), labelOther) {
		m.events.WithLabelValues(t)
	}
	for _, r := range model.Reasons {
		m.deadLetters.WithLabelValues(r)
	}
	m.incidents.WithLabelValues(model.IncidentOffsetOutOfRange)
	m.inserts.WithLabelValues(model.InsertCopy)
	m.inserts.WithLabelValues(model.InsertSkipStored)
	return m
}

func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.messages, m.events, m.duplicates, m.deadLetters, m.batchSize,
		m.batchTime, m.fenced, m.retries, m.rebalances, m.incidents, m.inserts, m.conflicts, m.stepConflicts, m.schema, m.projections}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors() {
		c.Describe(ch)
	}
	ch <- m.lag
	ch <- m.hwm
	ch <- m.next
	ch <- m.claimed
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.collectors() {
		c.Collect(ch)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(m.claimed, prometheus.GaugeValue, float64(len(m.claims)))
	for tp, c := range m.claims {
		p := strconv.Itoa(int(tp.Partition))
		next, hwm := c.next.Load(), c.hwm()
		ch <- prometheus.MustNewConstMetric(m.next, prometheus.GaugeValue, float64(next), tp.Topic, p)
		if hwm < 0 {
			continue
		}
		ch <- prometheus.MustNewConstMetric(m.hwm, prometheus.GaugeValue, float64(hwm), tp.Topic, p)
		ch <- prometheus.MustNewConstMetric(m.lag, prometheus.GaugeValue, float64(max(hwm-next, 0)), tp.Topic, p)
	}
}

// BatchQuantile estimates quantile q (0 to 1) of the committed batch
// transactions' durations from projector_batch_transaction_seconds, by
// linear interpolation within its bucket as PromQL's histogram_quantile
// does; 0 when no batch committed.
func (m *Metrics) BatchQuantile(q float64) time.Duration {
	var d dto.Metric
	if err := m.batchTime.Write(&d); err != nil {
		return 0
	}
	h := d.GetHistogram()
	total := float64(h.GetSampleCount())
	if total == 0 {
		return 0
	}
	rank := q * total
	lower, below := 0.0, 0.0
	for _, b := range h.GetBucket() {
		n, upper := float64(b.GetCumulativeCount()), b.GetUpperBound()
		if n >= rank {
			if n == below {
				return seconds(upper)
			}
			return seconds(lower + (upper-lower)*(rank-below)/(n-below))
		}
		lower, below = upper, n
	}
	return seconds(lower) // past the last bucket: its bound
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// Rebalanced implements Observer.
func (m *Metrics) Rebalanced() { m.rebalances.Inc() }

// ClaimStarted implements Observer.
func (m *Metrics) ClaimStarted(tp model.TopicPartition, next int64, hwm func() int64) {
	c := &claimGauge{hwm: hwm}
	c.next.Store(next)
	m.mu.Lock()
	m.claims[tp] = c
	m.mu.Unlock()
}

// ClaimProgressed implements Observer.
func (m *Metrics) ClaimProgressed(tp model.TopicPartition, next int64) {
	m.mu.Lock()
	c := m.claims[tp]
	m.mu.Unlock()
	if c != nil {
		c.next.Store(next)
	}
}

// ClaimEnded implements Observer.
func (m *Metrics) ClaimEnded(tp model.TopicPartition) {
	m.mu.Lock()
	delete(m.claims, tp)
	m.mu.Unlock()
}

// Measure is a Middleware: it counts what each batch that commits applied
// (messages, events by type, duplicates, dead letters by reason, how the
// events went in) and how long its transaction took, without the failed
// attempts before it.
func (m *Metrics) Measure(next ApplyFunc) ApplyFunc {
	return func(ctx context.Context, b *model.Batch) (model.Applied, error) {
		t0 := time.Now()
		res, err := next(ctx, b)
		if err == nil {
			took := res.Took // the transaction alone, without waiting for a turn
			if took <= 0 {
				took = time.Since(t0)
			}
			m.batchApplied(b, res, took)
		}
		return res, err
	}
}

func (m *Metrics) batchApplied(b *model.Batch, res model.Applied, took time.Duration) {
	m.messages.Add(float64(b.Len()))
	m.batchSize.Observe(float64(b.Len()))
	m.batchTime.Observe(took.Seconds())
	m.duplicates.Add(float64(res.Duplicates))
	if res.Insert != "" {
		m.inserts.WithLabelValues(res.Insert).Inc()
	}
	m.conflicts.Add(float64(res.CopyConflicts))
	m.stepConflicts.Add(float64(res.StepConflicts))
	for t, n := range countEventTypes(res) {
		m.events.WithLabelValues(t).Add(float64(n))
	}
	m.deadLetters.WithLabelValues(model.ReasonBeforeHorizon).Add(float64(res.BeforeHorizon))
	if invalid := res.DeadLetters - res.BeforeHorizon; invalid == len(b.DeadLetters) {
		for _, d := range b.DeadLetters {
			m.deadLetters.WithLabelValues(d.Reason).Inc()
		}
	} else if invalid > 0 {
		// Some were stored before (the offset was moved back by hand):
		// which ones is not known.
		m.deadLetters.WithLabelValues(labelUnattributed).Add(float64(invalid))
	}
}

// Fenced implements Observer.
func (m *Metrics) Fenced() { m.fenced.Inc() }

// Retried implements Observer.
func (m *Metrics) Retried(what string, err error) {
	m.retries.WithLabelValues(what).Inc()
	if se := (*model.SchemaError)(nil); errors.As(err, &se) {
		m.schema.WithLabelValues(se.Relation).Inc()
	}
	if pe := (*model.ProjectionError)(nil); errors.As(err, &pe) {
		m.projections.WithLabelValues(pe.Projection).Inc()
	}
}

// Incident implements Observer.
func (m *Metrics) Incident(_ model.TopicPartition, inc model.Incident) {
	m.incidents.WithLabelValues(inc.Kind).Inc()
}

// countEventTypes counts the new events of a committed batch by event type
// label, as the sink counted them in res.EventTypes (the store always
// does). A sink that does not count them has its events counted as
// unattributed.
func countEventTypes(res model.Applied) map[string]int {
	out := make(map[string]int, len(res.EventTypes)+1)
	for t, n := range res.EventTypes {
		out[eventTypeLabel(t)] += n
	}
	if res.EventTypes == nil && res.Events > 0 {
		out[labelUnattributed] = res.Events
	}
	return out
}

func eventTypeLabel(t string) string {
	if model.IsKnown(t) {
		return t
	}
	return labelOther
}
