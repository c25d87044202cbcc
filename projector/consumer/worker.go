// Package consumer is the Kafka side of the projector: a consumer-group
// worker that batches the messages of each claimed partition, applies them
// to a Sink (the store) exactly once behind the stored offset's lease, and
// reports its progress as metrics. The types it shares with the store are
// in projector/model.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/projector-run/projector/projector/model"

	"github.com/IBM/sarama"
	"github.com/cenkalti/backoff/v5"
	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"
)

// Sink is where batches go: the store, in production.
type Sink interface {
	// Claim takes the lease of a partition for a new session, creating
	// its offset row at initialOffset when there is none.
	Claim(ctx context.Context, group, topic string, partition int32, initialOffset int64, owner string) (model.Lease, error)
	// Apply writes a batch and moves the offset behind the fence; it
	// returns an error wrapping ErrFenced or ErrRejected for those cases.
	Apply(ctx context.Context, b *model.Batch) (model.Applied, error)
	// Reposition moves a leased partition's offset and records why.
	Reposition(ctx context.Context, l model.Lease, to int64, inc model.Incident) (model.Lease, error)
	// CheckLease returns an error wrapping ErrFenced when the lease is no
	// longer current: an idle claim notices a moved offset this way.
	CheckLease(ctx context.Context, l model.Lease) error
	// StoredOffsets returns the stored next_offset of the group's
	// partitions.
	StoredOffsets(ctx context.Context, group string) (map[model.TopicPartition]int64, error)
}

// Reaper is a Sink that can end the sessions of frozen workers that hold
// the locks of partitions (store.Store.ReapStalledCopies). A worker calls
// it every ReapInterval.
type Reaper interface {
	ReapStalledCopies(ctx context.Context) ([]model.StalledSession, error)
}

// ReapInterval is how often a worker looks for frozen workers' sessions.
const ReapInterval = 3 * time.Second

// Stats counts a worker's work since it started. Safe for concurrent use.
type Stats struct {
	Messages, Events, Duplicates, DeadLetters, Batches atomic.Int64
	Fenced, Retries, Rebalances, Incidents             atomic.Int64
	// Reaped counts frozen workers' sessions this worker ended.
	Reaped atomic.Int64
	// CopiedBatches counts batches whose events went in by COPY,
	// CopyConflicts the COPYs that met a stored event_id, and
	// StepConflicts the steps' plain inserts that met a stored step
	// (Applied).
	CopiedBatches, CopyConflicts, StepConflicts atomic.Int64
}

// Worker consumes the topics with a Kafka consumer group and applies them
// to a Sink exactly once.
type Worker struct {
	cfg  Config
	sink Sink
	// apply is the sink's Apply inside cfg.Middleware.
	apply ApplyFunc
	log   logrus.FieldLogger
	stats Stats
	mon   *monitor // metrics.go
}

// NewWorker checks the configuration and returns a worker.
func NewWorker(cfg Config, sink Sink, log logrus.FieldLogger) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Owner == "" {
		host, _ := os.Hostname()
		cfg.Owner = host + ":" + strconv.Itoa(os.Getpid())
	}
	apply := ApplyFunc(sink.Apply)
	for _, mw := range slices.Backward(cfg.Middleware) {
		apply = mw(apply)
	}
	return &Worker{cfg: cfg, sink: sink, apply: apply, log: log, mon: newMonitor(cfg, sink)}, nil
}

// Stats returns the worker's live counters.
func (w *Worker) Stats() *Stats { return &w.stats }

// Run consumes until ctx ends (then it returns nil), or, with
// UntilCaughtUp, until every partition's stored offset has reached its high
// watermark. Transient failures of the broker or PostgreSQL are retried.
func (w *Worker) Run(ctx context.Context) error {
	ctx, stop := context.WithCancelCause(ctx)
	cancel := func() { stop(nil) }
	defer cancel()
	log := w.log.WithField("group", w.cfg.Group)

	// The look-ups (caught-up check, last stable offsets, the reads past
	// transaction markers) go on a client of their own (Cluster).
	probe, err := retry(ctx, w, log, "connect to kafka", func() (*Cluster, error) {
		return DialCluster(w.cfg)
	})
	if err != nil {
		return ignoreCanceled(ctx, err)
	}
	defer probe.Close() // after the group: ending claims store the last one
	if _, err := retry(ctx, w, log, "look up topics", func() (struct{}, error) {
		return struct{}{}, probe.CheckTopics(w.cfg.Topics)
	}); err != nil {
		return ignoreCanceled(ctx, err)
	}
	client, err := retry(ctx, w, log, "connect to kafka", func() (sarama.Client, error) {
		return sarama.NewClient(w.cfg.Brokers, NewSaramaConfig(w.cfg, ConsumerClient))
	})
	if err != nil {
		return ignoreCanceled(ctx, err)
	}
	defer client.Close()

	group, err := sarama.NewConsumerGroupFromClient(w.cfg.Group, client)
	if err != nil {
		return fmt.Errorf("create consumer group: %w", err)
	}
	errsDone := make(chan struct{})
	go func() {
		defer close(errsDone)
		for err := range group.Errors() {
			log.WithError(err).Warn("consumer error")
		}
	}()
	defer func() { _ = group.Close(); <-errsDone }()

	h := &handler{w: w, probe: probe, stop: stop, leases: map[model.TopicPartition]model.Lease{}, nudge: make(chan struct{}, 1)}
	g, gctx := errgroup.WithContext(ctx)
	if r, ok := w.sink.(Reaper); ok {
		g.Go(func() error {
			w.reap(gctx, log, r)
			return nil
		})
	}
	g.Go(func() error {
		bo := w.backoff()
		for gctx.Err() == nil {
			err := group.Consume(gctx, w.cfg.Topics, h)
			switch {
			case errors.Is(err, sarama.ErrClosedConsumerGroup):
				return nil
			case err != nil && gctx.Err() == nil:
				next := bo.NextBackOff()
				w.retried(log, "consumer group session", err, next)
				sleep(gctx, next)
			default:
				bo.Reset()
			}
		}
		return nil
	})
	if w.cfg.UntilCaughtUp {
		g.Go(func() error {
			defer cancel()
			return w.waitCaughtUp(gctx, log, probe, h.nudge)
		})
	}
	err = g.Wait()
	if cause := context.Cause(ctx); errors.Is(cause, model.ErrProjectionNotLoaded) {
		return cause
	}
	return ignoreCanceled(ctx, err)
}

// reap ends, every ReapInterval until ctx ends, the sessions of workers
// that froze in the middle of a batch: they hold their partitions' locks
// and would keep the partitions' new owners from claiming them.
func (w *Worker) reap(ctx context.Context, log logrus.FieldLogger, r Reaper) {
	t := time.NewTicker(ReapInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ended, err := r.ReapStalledCopies(ctx)
		if err != nil && ctx.Err() == nil {
			log.WithError(err).Debug("look for frozen workers' sessions")
		}
		for _, s := range ended {
			w.stats.Reaped.Add(1)
			log.WithFields(logrus.Fields{
				"pid": s.PID, "application_name": s.ApplicationName, "client_addr": s.ClientAddr,
				"since": s.Since.UTC().Format(time.RFC3339Nano), "bytes": s.Bytes,
			}).Warn("ended a database session whose batch had waited on its worker with no progress (a frozen worker); its transaction rolls back")
		}
	}
}

func ignoreCanceled(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// waitCaughtUp returns nil once every partition of the topics has its
// stored offset at its high watermark (an empty partition with no stored
// row counts as caught up). A stored offset past the high watermark is
// not caught up: the broker lost messages, and the claim must reposition
// and report it first. A partition with an open transaction is not caught
// up either: its last stable offset is below its high watermark, and what
// the transaction wrote, and everything after it, is read once it ends.
// That wait is logged once per partition and last stable offset.
func (w *Worker) waitCaughtUp(ctx context.Context, log logrus.FieldLogger, probe *Cluster, nudge <-chan struct{}) error {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	var logged behind // the open transaction last logged
	for {
		ok, b, err := w.caughtUp(ctx, probe)
		switch {
		case err != nil && ctx.Err() == nil:
			log.WithError(err).Warn("check whether caught up")
		case ok:
			log.WithField("events", w.stats.Events.Load()).Info("caught up with every partition's high watermark")
			return nil
		case b.openTxn() && (b.tp != logged.tp || b.lso != logged.lso):
			logged = b
			log.WithFields(logrus.Fields{
				"topic": b.tp.Topic, "partition": b.tp.Partition, "offset": b.next,
				"last_stable_offset": b.lso, "high_watermark": b.hwm,
			}).Info("waiting on an open transaction: everything before its first offset (the last stable offset) is applied; what follows is read once it commits or aborts")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-nudge:
		}
	}
}

// behind is a partition that is not caught up: where its stored offset
// is (the log start when it has none), its last stable offset and its
// high watermark.
type behind struct {
	tp             model.TopicPartition
	next, lso, hwm int64
}

// openTxn reports whether the partition waits on an open transaction:
// everything a read-committed consumer can read is applied.
func (b behind) openTxn() bool { return b.lso < b.hwm && b.next >= b.lso }

// caughtUp reports whether every partition is caught up, and if not, the
// first partition found behind.
func (w *Worker) caughtUp(ctx context.Context, probe *Cluster) (bool, behind, error) {
	stored, err := w.sink.StoredOffsets(ctx, w.cfg.Group)
	if err != nil {
		return false, behind{}, err
	}
	for _, t := range w.cfg.Topics {
		parts, err := probe.Partitions(t)
		if err != nil {
			return false, behind{}, err
		}
		for _, p := range parts {
			hwm, err := probe.HighWatermark(t, p)
			if err != nil {
				return false, behind{}, err
			}
			next, ok := stored[model.TopicPartition{Topic: t, Partition: p}]
			if ok && next == hwm {
				continue
			}
			if !ok {
				if next, err = probe.LogStart(t, p); err != nil {
					return false, behind{}, err
				}
				if next == hwm {
					continue
				}
			}
			lso, err := probe.LastStableOffset(t, p)
			if err != nil {
				return false, behind{}, err
			}
			return false, behind{tp: model.TopicPartition{Topic: t, Partition: p}, next: next, lso: lso, hwm: hwm}, nil
		}
	}
	return true, behind{}, nil
}

// handler is the sarama consumer-group handler: Setup takes the leases and
// positions every claim at its stored offset, ConsumeClaim batches one
// partition's messages and applies them.
type handler struct {
	w *Worker
	// probe answers the look-ups: log starts, high watermarks, last
	// stable offsets and the reads past transaction markers (skipPast).
	probe *Cluster
	// stop ends the worker's Run with an error that retrying cannot mend.
	stop context.CancelCauseFunc

	mu     sync.Mutex
	leases map[model.TopicPartition]model.Lease
	// nudge asks the caught-up check to look now: a claim applied a batch
	// up to the high watermark it knows of.
	nudge chan struct{}
	// waiting, set by tests only, is called each time a claim's loop is
	// about to wait: whether it would read a message, and that message's
	// offset.
	waiting func(reading bool, next int64)
}

func (h *handler) Setup(sess sarama.ConsumerGroupSession) error {
	w := h.w
	ctx := sess.Context()
	w.stats.Rebalances.Add(1)
	w.mon.rebalanced()
	h.mu.Lock()
	clear(h.leases)
	h.mu.Unlock()
	for topic, parts := range sess.Claims() {
		for _, p := range parts {
			log := w.log.WithFields(logrus.Fields{"topic": topic, "partition": p})
			oldest, err := retry(ctx, w, log, "look up oldest offset", func() (int64, error) {
				return h.probe.LogStart(topic, p)
			})
			if err != nil {
				return fmt.Errorf("look up oldest offset of %s/%d: %w", topic, p, err)
			}
			lease, err := retry(ctx, w, log, "claim partition", func() (model.Lease, error) {
				return w.sink.Claim(ctx, w.cfg.Group, topic, p, oldest, w.cfg.Owner)
			})
			if err != nil {
				return fmt.Errorf("claim %s/%d: %w", topic, p, err)
			}
			// ResetOffset only moves back and MarkOffset only forward:
			// both together position exactly at the stored offset.
			sess.ResetOffset(topic, p, lease.NextOffset, "")
			sess.MarkOffset(topic, p, lease.NextOffset, "")
			h.mu.Lock()
			h.leases[model.TopicPartition{Topic: topic, Partition: p}] = lease
			h.mu.Unlock()
			log.WithFields(logrus.Fields{"offset": lease.NextOffset, "lease_epoch": lease.Epoch}).Info("claimed partition")
		}
	}
	return nil
}

func (h *handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (h *handler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	w := h.w
	ctx := sess.Context()
	tp := model.TopicPartition{Topic: claim.Topic(), Partition: claim.Partition()}
	log := w.log.WithFields(logrus.Fields{"topic": tp.Topic, "partition": tp.Partition})
	h.mu.Lock()
	lease, ok := h.leases[tp]
	h.mu.Unlock()
	if !ok {
		return fmt.Errorf("claim of %s/%d without a lease", tp.Topic, tp.Partition)
	}
	if start := claim.InitialOffset(); start != lease.NextOffset {
		var err error
		if lease, err = h.reposition(ctx, log, lease, start); err != nil {
			return h.endClaim(log, err)
		}
		h.mirror(sess, tp, lease.NextOffset)
	}
	lso := func() int64 {
		off, err := h.probe.LastStableOffset(tp.Topic, tp.Partition)
		if err != nil {
			log.WithError(err).Debug("look up last stable offset")
			return -1
		}
		return off
	}
	watch := w.mon.startClaim(ctx, lease, claim.HighWaterMarkOffset, lso, log)
	defer watch.end(ctx)

	// Two batches take turns: while one is applied in the background, the
	// next fills from the claim's messages, so fetching and decoding go on
	// during the transaction. At most one batch is in flight: each moves
	// the stored offset from where the one before it ended.
	ap := newApplier(h, sess, claim, watch, log)
	defer ap.stop()
	b := &model.Batch{Lease: lease}
	spare := &model.Batch{}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var timerC <-chan time.Time
	waited := false // the batch has waited BatchWait, or need not
	leaseTick := time.NewTicker(w.cfg.LeaseCheckInterval)
	defer leaseTick.Stop()
	msgs := claim.Messages()
	for {
		in := msgs
		if b.Full(w.cfg.BatchSize) {
			in = nil // wait for the batch in flight instead
		}
		if h.waiting != nil {
			next := b.Lease.NextOffset
			if b.Len() > 0 {
				next = b.End
			}
			h.waiting(in != nil, next)
		}
		select {
		case <-ctx.Done():
			return nil
		case r := <-ap.done:
			if r.err != nil {
				return h.endClaim(log, r.err)
			}
			if r.skip {
				// The batch filling now starts where the skip ended.
				b.Lease.NextOffset = r.b.End
			}
			r.b.Reset()
			spare = r.b
		case <-leaseTick.C:
			if b.Len() > 0 || spare == nil {
				continue // a batch's own transaction checks the fence
			}
			err := w.sink.CheckLease(ctx, b.Lease)
			if errors.Is(err, model.ErrFenced) {
				return h.endClaim(log, err)
			}
			if err != nil {
				log.WithError(err).Debug("check lease")
				continue
			}
			watch.progressed(ctx, b.Lease.NextOffset)
			if len(msgs) == 0 && b.Lease.NextOffset < claim.HighWaterMarkOffset() {
				// Idle below the high watermark: what sarama fetched
				// past the stored offset may be transaction markers
				// and aborted messages, which it does not deliver.
				// The applier looks, in turn with the batches, and
				// moves the offset past them (skipPast).
				spare.Lease = b.Lease
				spare.End = b.Lease.NextOffset
				ap.todo <- pending{b: spare, skip: true}
				spare = nil
			}
		case m, ok := <-in:
			if !ok {
				return nil
			}
			b.Add(convert(m))
		fill:
			for !b.Full(w.cfg.BatchSize) {
				select {
				case m, ok := <-msgs:
					if !ok {
						return nil
					}
					b.Add(convert(m))
				default:
					break fill
				}
			}
			if w.cfg.BatchWait == 0 {
				waited = true
			} else if timerC == nil && !waited {
				timer.Reset(w.cfg.BatchWait)
				timerC = timer.C
			}
		case <-timerC:
			timerC = nil
			waited = true
		}
		if b.Len() == 0 || spare == nil || !(waited || b.Full(w.cfg.BatchSize)) {
			continue
		}
		if timerC != nil {
			timer.Stop()
			timerC = nil
		}
		waited = false
		ap.todo <- pending{b: b}
		next := spare
		spare = nil
		next.Lease = b.Lease
		next.Lease.NextOffset = b.End
		b = next
	}
}

// applier applies a claim's batches in order, one at a time, in a
// goroutine of its own.
type applier struct {
	todo chan pending
	// done returns each batch once applied, with the error that ends the
	// claim if it failed; after an error the applier takes no more.
	done chan applied
	quit chan struct{}
	wg   sync.WaitGroup
}

type applied struct {
	b    *model.Batch
	skip bool
	err  error
}

// pending is a batch for the applier to apply, or, with skip, an empty
// batch at the claim's stored offset for it to move past transaction
// markers and aborted messages (skipPast), ending at the new offset.
type pending struct {
	b    *model.Batch
	skip bool
}

func newApplier(h *handler, sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim, watch *claimWatch, log logrus.FieldLogger) *applier {
	ap := &applier{todo: make(chan pending, 1), done: make(chan applied, 1), quit: make(chan struct{})}
	ctx := sess.Context()
	tp := model.TopicPartition{Topic: claim.Topic(), Partition: claim.Partition()}
	ap.wg.Go(func() {
		for {
			var p pending
			select {
			case <-ap.quit:
				return
			case p = <-ap.todo:
			}
			b := p.b
			from := b.Lease.NextOffset
			var err error
			if p.skip {
				err = h.skipPast(ctx, log, b)
			} else {
				err = h.apply(ctx, log, b)
			}
			if err == nil && b.End > from {
				h.mirror(sess, tp, b.End)
				watch.progressed(ctx, b.End)
				if b.End >= claim.HighWaterMarkOffset() {
					select {
					case h.nudge <- struct{}{}:
					default:
					}
				}
			}
			ap.done <- applied{b, p.skip, err}
			if err != nil {
				return
			}
		}
	})
	return ap
}

// stop waits for the batch in flight, if any, to commit or fail (the
// session's end cancels it), and ends the goroutine.
func (ap *applier) stop() {
	close(ap.quit)
	ap.wg.Wait()
}

// endClaim ends a claim after a failure that retrying cannot mend: the
// fence (another owner, or an operator, moved the partition) or the end
// of the session. Returning ends the whole session, so the group rejoins
// and Setup positions every partition at its stored offset again.
func (h *handler) endClaim(log logrus.FieldLogger, err error) error {
	if errors.Is(err, model.ErrProjectionNotLoaded) {
		log.WithError(err).Error("stopping: a projection of the database is not loaded in this worker")
		if h.stop != nil {
			h.stop(err)
		}
		return nil
	}
	if errors.Is(err, model.ErrFenced) {
		h.w.stats.Fenced.Add(1)
		h.w.mon.fenced()
		log.WithError(err).Warn("fenced: ending the claim and rejoining the group")
		return nil
	}
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// reposition handles a claim that sarama could not start at the stored
// offset because the broker no longer has it: the claim started at the
// partition's oldest offset instead. That is recorded as an incident, and
// the stored offset moves to where consumption really starts.
func (h *handler) reposition(ctx context.Context, log logrus.FieldLogger, lease model.Lease, start int64) (model.Lease, error) {
	w := h.w
	if start < 0 { // sarama's OffsetOldest or OffsetNewest: the log's start or end
		var err error
		start, err = retry(ctx, w, log, "look up start offset", func() (int64, error) {
			if start == sarama.OffsetNewest {
				return h.probe.HighWatermark(lease.Topic, lease.Partition)
			}
			return h.probe.LogStart(lease.Topic, lease.Partition)
		})
		if err != nil {
			return lease, err
		}
	}
	hwm, err := retry(ctx, w, log, "look up high watermark", func() (int64, error) {
		return h.probe.HighWatermark(lease.Topic, lease.Partition)
	})
	if err != nil {
		return lease, err
	}
	detail := fmt.Sprintf("stored next_offset %d is outside the partition's log [%d, %d]: ", lease.NextOffset, start, hwm)
	if lease.NextOffset < start {
		detail += fmt.Sprintf("%d messages were deleted before they were applied (retention); consuming from %d", start-lease.NextOffset, start)
	} else {
		detail += fmt.Sprintf("the topic was recreated or truncated; consuming from its oldest offset %d (events already stored are skipped by event_id; the old log's dead letters from there on move to dead_letters_superseded)", start)
	}
	w.stats.Incidents.Add(1)
	log.WithFields(logrus.Fields{"offset": lease.NextOffset, "log_start": start, "high_watermark": hwm}).Error(detail)
	inc := model.Incident{Kind: model.IncidentOffsetOutOfRange, ExpectedOffset: lease.NextOffset, ActualOffset: start, Detail: detail}
	w.mon.incident(model.TopicPartition{Topic: lease.Topic, Partition: lease.Partition}, inc)
	return retry(ctx, w, log, "record offset incident", func() (model.Lease, error) {
		l, err := w.sink.Reposition(ctx, lease, start, inc)
		if errors.Is(err, model.ErrFenced) || ctx.Err() != nil {
			return l, backoff.Permanent(err)
		}
		return l, err
	})
}

// skipPast moves the stored offset of an idle claim, b's lease, past the
// transaction markers and aborted messages that follow it, if any: it reads
// the partition from there as a read-committed consumer does
// (NextDeliverable) and applies b, with no messages, up to the first
// message that such a consumer delivers, or up to where the markers and
// aborted messages end (at most the last stable offset). The move is
// fenced like any batch. b.End is the claim's offset afterwards. A read
// that fails is logged and tried at the next idle lease check.
//
// sarama delivers that message later, and the batch that holds it then
// moves the offset on from b.End: at most one batch of the claim is in
// flight, and each starts where the one before it ended.
func (h *handler) skipPast(ctx context.Context, log logrus.FieldLogger, b *model.Batch) error {
	from := b.Lease.NextOffset
	b.End = from
	next, lso, err := h.probe.NextDeliverable(b.Lease.Topic, b.Lease.Partition, from)
	if err != nil {
		log.WithError(err).WithField("offset", from).Debug("read past transaction markers")
		return nil
	}
	if next <= from {
		return nil
	}
	b.End = next
	log.WithFields(logrus.Fields{"offset": from, "end_offset": next, "last_stable_offset": lso}).
		Debug("moving the offset past transaction markers and aborted messages")
	return h.apply(ctx, log, b)
}

// apply applies a batch, retrying transient failures. A batch that
// PostgreSQL rejects is split until the message to blame is alone, and
// that message becomes an unstorable dead letter.
func (h *handler) apply(ctx context.Context, log logrus.FieldLogger, b *model.Batch) error {
	w := h.w
	blog := log.WithFields(logrus.Fields{"offset": b.Lease.NextOffset, "end_offset": b.End, "messages": b.Len()})
	start := time.Now()
	var took time.Duration // the last attempt: the transaction that committed
	res, err := retry(ctx, w, blog, "apply batch", func() (model.Applied, error) {
		t0 := time.Now()
		res, err := w.apply(ctx, b)
		took = time.Since(t0)
		if err != nil && (errors.Is(err, model.ErrFenced) || errors.Is(err, model.ErrRejected) || errors.Is(err, model.ErrProjectionNotLoaded) || ctx.Err() != nil) {
			return res, backoff.Permanent(err)
		}
		return res, err
	})
	if errors.Is(err, model.ErrRejected) {
		return h.applyRejected(ctx, log, b, err)
	}
	if err != nil {
		return err
	}
	w.stats.Batches.Add(1)
	w.stats.Messages.Add(int64(b.Len()))
	w.stats.Events.Add(int64(res.Events))
	w.stats.Duplicates.Add(int64(res.Duplicates))
	w.stats.DeadLetters.Add(int64(res.DeadLetters))
	if res.Insert == model.InsertCopy {
		w.stats.CopiedBatches.Add(1)
	}
	w.stats.CopyConflicts.Add(int64(res.CopyConflicts))
	w.stats.StepConflicts.Add(int64(res.StepConflicts))
	if res.Took > 0 {
		took = res.Took // the transaction alone, without waiting for a turn
	}
	w.mon.batchApplied(b, res, took)
	blog.WithFields(logrus.Fields{
		"events": res.Events, "duplicates": res.Duplicates, "dead_letters": res.DeadLetters,
		"runs": res.Runs, "duration_ms": time.Since(start).Milliseconds(),
	}).Debug("applied batch")
	return nil
}

func (h *handler) applyRejected(ctx context.Context, log logrus.FieldLogger, b *model.Batch, cause error) error {
	if b.Len() > 1 {
		first, second := b.Split()
		if err := h.apply(ctx, log, first); err != nil {
			return err
		}
		return h.apply(ctx, log, second)
	}
	if len(b.Records) == 0 {
		// A lone dead letter that PostgreSQL refuses cannot be narrowed
		// down further; it must not be skipped either.
		return fmt.Errorf("store dead letter at offset %d: %w", b.DeadLetters[0].Offset, cause)
	}
	r := b.Records[0]
	log.WithFields(logrus.Fields{"offset": r.Offset, "event_id": r.Event.EventID}).WithError(cause).
		Warn("postgresql rejected an event; storing it as an unstorable dead letter")
	dead := &model.Batch{Lease: b.Lease}
	dead.AddDeadLetter(model.Message{Offset: r.Offset, Key: r.Key, Value: r.Event.Payload, Headers: r.Headers},
		&model.DecodeError{Reason: model.ReasonUnstorable, Detail: "postgresql refused it: " + cause.Error()})
	dead.End = b.End
	return h.apply(ctx, log, dead)
}

func convert(m *sarama.ConsumerMessage) model.Message {
	var hs []model.Header
	if len(m.Headers) > 0 {
		hs = make([]model.Header, len(m.Headers))
		for i, rh := range m.Headers {
			hs[i] = model.Header{Key: rh.Key, Value: rh.Value}
		}
	}
	return model.Message{Offset: m.Offset, Key: m.Key, Value: m.Value, Headers: hs}
}
