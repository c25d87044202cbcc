package consumer_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/projector-run/projector/projector/consumer"
	"github.com/projector-run/projector/projector/eventgen"
	"github.com/projector-run/projector/projector/kafkatest"
	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/projector/projectiontest"
	"github.com/projector-run/projector/store"
	"github.com/projector-run/projector/store/storetest"
)

const topic = "workflow-events"

// pipeline is one end-to-end test's world: an in-process broker, a fresh
// database, and everything produced so far.
type pipeline struct {
	t        *testing.T
	cluster  *kfake.Cluster
	st       *store.Store
	group    string
	produced []model.Message
}

// newPipeline makes a test's world. Its store has, besides the built-in
// projections, two of a user's kind (projectiontest: an aggregate, pc, and
// a table per run, pr), which verify checks too: every worker test runs
// them through its path.
func newPipeline(t *testing.T, partitions int32) *pipeline {
	t.Helper()
	return &pipeline{
		t:       t,
		cluster: kafkatest.New(t, topic, partitions),
		st:      storetest.OpenWith(t, storetest.URL(t), projectiontest.Counts{N: "pc"}, projectiontest.PerRun{N: "pr"}),
		group:   "projector-test",
	}
}

func (p *pipeline) produce(msgs []model.Message) {
	p.t.Helper()
	kafkatest.Produce(p.t, p.cluster, topic, msgs)
	p.produced = append(p.produced, msgs...)
}

// testLogger sends the worker's logs to the test log, shown on failure.
func testLogger(t *testing.T, name string) logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(testWriter{t})
	l.SetLevel(logrus.InfoLevel)
	return l.WithField("worker", name)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

func (p *pipeline) config(untilCaughtUp bool) consumer.Config {
	cfg := consumer.DefaultConfig()
	cfg.Brokers = p.cluster.ListenAddrs()
	cfg.Topics = []string{topic}
	cfg.Group = p.group
	cfg.BatchSize = 50
	cfg.BatchWait = 5 * time.Millisecond
	cfg.RetryMin = 20 * time.Millisecond
	cfg.RetryMax = 500 * time.Millisecond
	cfg.UntilCaughtUp = untilCaughtUp
	return cfg
}

// running is a worker running in the background.
type running struct {
	w      *consumer.Worker
	cancel context.CancelFunc
	done   chan error
}

func (p *pipeline) start(name string, cfg consumer.Config) *running {
	p.t.Helper()
	return p.startWith(name, cfg, p.st)
}

// startWith starts a worker that applies its batches to sink.
func (p *pipeline) startWith(name string, cfg consumer.Config, sink consumer.Sink) *running {
	p.t.Helper()
	cfg.Owner = name
	w, err := consumer.NewWorker(cfg, sink, testLogger(p.t, name))
	require.NoError(p.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{w: w, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- w.Run(ctx) }()
	p.t.Cleanup(func() { r.stop(p.t) })
	return r
}

// wait waits for a worker started with UntilCaughtUp to exit by itself.
func (r *running) wait(t *testing.T) {
	t.Helper()
	select {
	case err := <-r.done:
		require.NoError(t, err)
		r.done <- nil
	case <-time.After(2 * time.Minute):
		t.Fatal("worker did not catch up in 2 minutes")
	}
}

func (r *running) stop(t *testing.T) {
	r.cancel()
	select {
	case err := <-r.done:
		require.NoError(t, err)
		r.done <- nil
	case <-time.After(30 * time.Second):
		t.Error("worker did not stop within 30s of its context ending")
	}
}

// verify checks the tables against what was produced: every distinct valid
// event stored once, every run equal to the projection computed from
// scratch from the produced events, every invalid message exactly one
// dead letter with its exact bytes, and every stored offset at its
// partition's high watermark.
func (p *pipeline) verify() {
	t := p.t
	t.Helper()
	ctx := context.Background()

	seen := map[string]bool{}
	byRun := map[string][]model.Event{}
	var invalid [][]byte
	reasons := map[string]int{}
	for _, m := range p.produced {
		ev, err := model.Decode(m.Value)
		if err != nil {
			invalid = append(invalid, m.Value)
			reasons[err.(*model.DecodeError).Reason]++
			continue
		}
		if !seen[ev.EventID] {
			seen[ev.EventID] = true
			byRun[ev.WorkflowRunID] = append(byRun[ev.WorkflowRunID], ev)
		}
	}

	var events int
	require.NoError(t, p.st.Pool().QueryRow(ctx, `SELECT count(*) FROM workflow_events`).Scan(&events))
	require.Equal(t, len(seen), events, "distinct valid events stored")

	rows, err := p.st.ListRuns(ctx)
	require.NoError(t, err)
	require.Len(t, rows, len(byRun), "runs")
	var mismatches []string
	for _, row := range rows {
		want := model.Project(byRun[row.WorkflowRunID])
		if !want.Equal(row.Run) {
			mismatches = append(mismatches, fmt.Sprintf("%s:\n got  %+v\n want %+v", row.WorkflowRunID, row.Run, want))
		}
	}
	require.Empty(t, mismatches, "runs that differ from the projection of the produced events")

	var all []model.Event
	for _, evs := range byRun {
		all = append(all, evs...)
	}
	wantSteps := model.ProjectSteps(all)
	gotSteps, err := p.st.ListSteps(ctx)
	require.NoError(t, err)
	require.Len(t, gotSteps, len(wantSteps), "steps")
	for i, row := range gotSteps { // both in key order
		if !wantSteps[i].Equal(row.Step) {
			mismatches = append(mismatches, fmt.Sprintf("step %d:\n got  %+v\n want %+v", i, row.Step, wantSteps[i]))
		}
	}
	require.Empty(t, mismatches, "steps that differ from the projection of the produced events")

	got, err := projectiontest.Tables(ctx, p.st.Pool(), "pc", "pr")
	require.NoError(t, err)
	require.Equal(t, projectiontest.Want(all), got, "the tables of the user's projections")

	dlRows, err := p.st.Pool().Query(ctx, `SELECT value, reason FROM dead_letters ORDER BY partition, "offset"`)
	require.NoError(t, err)
	var dead [][]byte
	gotReasons := map[string]int{}
	for dlRows.Next() {
		var v []byte
		var reason string
		require.NoError(t, dlRows.Scan(&v, &reason))
		dead = append(dead, v)
		gotReasons[reason]++
	}
	require.NoError(t, dlRows.Err())
	sortBytes(dead)
	sortBytes(invalid)
	require.Equal(t, len(invalid), len(dead), "dead letters")
	require.True(t, slices.EqualFunc(invalid, dead, bytes.Equal), "dead letters keep the exact bytes of the invalid messages")
	require.Equal(t, reasons, gotReasons)

	stored, err := p.st.StoredOffsets(ctx, p.group)
	require.NoError(t, err)
	for part, hwm := range kafkatest.HighWatermarks(p.cluster, topic) {
		require.Equal(t, hwm, stored[model.TopicPartition{Topic: topic, Partition: part}], "next_offset of partition %d", part)
	}
}

func sortBytes(bs [][]byte) {
	sort.Slice(bs, func(i, j int) bool { return bytes.Compare(bs[i], bs[j]) < 0 })
}

func workload(seed uint64, runs int) eventgen.Workload {
	return eventgen.Generate(eventgen.Config{
		Seed: seed, Runs: runs, DuplicateRate: 0.05, ShuffleRate: 0.2,
		MalformedRate: 0.02, RetryRate: 0.1, UnkeyedRate: 0.05,
	})
}

func TestEndToEndCatchUp(t *testing.T) {
	t.Parallel()
	p := newPipeline(t, 4)
	wl := workload(1, 300)
	p.produce(wl.Messages)
	r := p.start("w1", p.config(true))
	r.wait(t)
	p.verify()
	s := r.w.Stats()
	require.Equal(t, int64(len(wl.Messages)), s.Messages.Load(), "every message consumed once")
	require.Equal(t, int64(wl.Valid), s.Events.Load())
	require.Equal(t, int64(wl.Invalid), s.DeadLetters.Load())
	require.Zero(t, s.Fenced.Load())
}

// TestRestartMidway stops a worker mid-stream, with batches in flight,
// and starts another: together they apply every event exactly once. The
// first worker's sink lets a fixed number of batches through, so that it
// stops before the end however fast this machine is.
func TestRestartMidway(t *testing.T) {
	t.Parallel()
	p := newPipeline(t, 4)
	wl := workload(2, 400)
	p.produce(wl.Messages)
	const batches = 8
	cfg := p.config(false)
	require.Less(t, batches*cfg.BatchSize, wl.Valid, "the gate must hold back part of the workload")
	gate := newGatedSink(p.st)
	gate.set(false, batches)
	r := p.startWith("first", cfg, gate)
	waitUntil(t, time.Minute, func() bool { return r.w.Stats().Batches.Load() >= batches/2 })
	r.stop(t) // with batches in their transaction or held at the gate
	applied := r.w.Stats().Events.Load()
	require.LessOrEqual(t, r.w.Stats().Batches.Load(), int64(batches))
	require.Less(t, applied, int64(wl.Valid), "the first worker stopped before the end")

	r2 := p.start("second", p.config(true))
	r2.wait(t)
	p.verify()
	require.Equal(t, int64(wl.Valid), applied+r2.w.Stats().Events.Load(), "0 lost and 0 applied twice across the restart")
}

func TestTwoWorkersWithRebalance(t *testing.T) {
	t.Parallel()
	p := newPipeline(t, 6)
	wl := workload(3, 600)
	half := len(wl.Messages) / 2
	p.produce(wl.Messages[:half])
	a := p.start("a", p.config(false))
	require.Eventually(t, func() bool { return a.w.Stats().Events.Load() > 100 }, time.Minute, time.Millisecond)
	b := p.start("b", p.config(false)) // joins: the group rebalances midway
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := p.cluster.WaitGroupStable(ctx, p.group, 2)
	require.NoError(t, err, "the second worker never joined the group")
	p.produce(wl.Messages[half:])
	require.Eventually(t, func() bool {
		return a.w.Stats().Events.Load()+b.w.Stats().Events.Load() == int64(wl.Valid) &&
			a.w.Stats().DeadLetters.Load()+b.w.Stats().DeadLetters.Load() == int64(wl.Invalid)
	}, 2*time.Minute, 10*time.Millisecond)
	waitUntil(t, time.Minute, func() bool { return caughtUp(t, p) })
	a.stop(t)
	b.stop(t)
	require.Positive(t, b.w.Stats().Messages.Load(), "the second worker took partitions")
	require.GreaterOrEqual(t, a.w.Stats().Rebalances.Load(), int64(2), "the first worker went through a rebalance")
	p.verify()
}

// waitUntil calls cond every 10 ms until it returns true, and fails the
// test if that takes longer than timeout. cond runs on the test's own
// goroutine, so it may fail the test with require: an error or a wrong
// value ends the test at once, where a require inside an Eventually
// condition would hang until the timeout.
func waitUntil(t testing.TB, timeout time.Duration, cond func() bool, msgAndArgs ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			require.Fail(t, "condition not met within "+timeout.String(), msgAndArgs...)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// caughtUp reports whether every partition's stored offset is at its
// high watermark.
func caughtUp(t *testing.T, p *pipeline) bool {
	stored, err := p.st.StoredOffsets(context.Background(), p.group)
	require.NoError(t, err)
	for part, hwm := range kafkatest.HighWatermarks(p.cluster, topic) {
		if stored[model.TopicPartition{Topic: topic, Partition: part}] != hwm {
			return false
		}
	}
	return true
}

func TestOffsetMovedByHandRestartsRunningWorker(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := newPipeline(t, 2)
	wl := workload(4, 200)
	p.produce(wl.Messages)
	r := p.start("w", p.config(false))
	waitUntil(t, time.Minute, func() bool { return caughtUp(t, p) })
	p.verify()
	consumed := r.w.Stats().Messages.Load()
	hwm := kafkatest.HighWatermarks(p.cluster, topic)[0]

	_, err := p.st.Pool().Exec(ctx, `UPDATE consumer_offsets SET next_offset = 0 WHERE partition = 0`)
	require.NoError(t, err)
	waitUntil(t, time.Minute, func() bool {
		return r.w.Stats().Messages.Load() == consumed+hwm && caughtUp(t, p)
	}, "the worker consumes partition 0 again from offset 0")
	require.Positive(t, r.w.Stats().Fenced.Load(), "the worker noticed the moved offset through the fence")
	require.Equal(t, int64(wl.Valid), r.w.Stats().Events.Load(), "re-read events are recognised, not applied again")
	p.verify()
}

func TestStoredOffsetBelowLogStartIsReportedAndSkippedForward(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := newPipeline(t, 1)
	wl := workload(5, 60)
	p.produce(wl.Messages)
	// Retention deleted the first 100 messages before any was applied.
	require.NoError(t, p.cluster.DeleteRecords(topic, 0, 100))
	_, err := p.st.Claim(ctx, p.group, topic, 0, 0, "earlier-worker")
	require.NoError(t, err)

	r := p.start("w", p.config(true))
	r.wait(t)
	require.Equal(t, int64(1), r.w.Stats().Incidents.Load())
	var kind string
	var expected, actual int64
	require.NoError(t, p.st.Pool().QueryRow(ctx,
		`SELECT kind, expected_offset, actual_offset FROM consumer_incidents`).Scan(&kind, &expected, &actual))
	require.Equal(t, model.IncidentOffsetOutOfRange, kind)
	require.Equal(t, int64(0), expected)
	require.Equal(t, int64(100), actual)
	require.Equal(t, int64(len(wl.Messages)-100), r.w.Stats().Messages.Load(), "consumed from the log start on")
	p.produced = p.produced[100:] // what the broker still had
	p.verify()
}

func TestStoredOffsetAboveHighWatermarkIsReported(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := newPipeline(t, 1)
	wl := workload(6, 40)
	p.produce(wl.Messages)
	// The topic was recreated: the stored offset is past its end.
	_, err := p.st.Claim(ctx, p.group, topic, 0, 0, "earlier-worker")
	require.NoError(t, err)
	_, err = p.st.Pool().Exec(ctx, `UPDATE consumer_offsets SET next_offset = 1000000`)
	require.NoError(t, err)

	r := p.start("w", p.config(true))
	r.wait(t)
	require.Equal(t, int64(1), r.w.Stats().Incidents.Load())
	var detail string
	require.NoError(t, p.st.Pool().QueryRow(ctx, `SELECT detail FROM consumer_incidents`).Scan(&detail))
	require.Contains(t, detail, "recreated")
	p.verify()
}

// rejecting wraps the real store and refuses, as PostgreSQL refuses bad
// data, every batch that holds the event "poison".
type rejecting struct{ *store.Store }

func (r rejecting) Apply(ctx context.Context, b *model.Batch) (model.Applied, error) {
	for _, rec := range b.Records {
		if rec.Event.EventID == "poison" {
			return model.Applied{}, fmt.Errorf("%w: invalid input syntax", model.ErrRejected)
		}
	}
	return r.Store.Apply(ctx, b)
}

func TestRejectedEventIsIsolatedAsUnstorableDeadLetter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := newPipeline(t, 1)
	wl := workload(7, 30)
	poison := []byte(`{"event_id":"poison","event_type":"run.queued","source":"s","workflow_id":"w","workflow_run_id":"r","timestamp":"2026-01-01T00:00:00Z"}`)
	msgs := slices.Insert(slices.Clone(wl.Messages), 37, model.Message{Key: []byte("r"), Value: poison})
	p.produce(msgs)

	cfg := p.config(true)
	cfg.Owner = "w"
	w, err := consumer.NewWorker(cfg, rejecting{p.st}, testLogger(t, "w"))
	require.NoError(t, err)
	require.NoError(t, w.Run(ctx))

	var reason, errText string
	var value []byte
	require.NoError(t, p.st.Pool().QueryRow(ctx,
		`SELECT reason, error, value FROM dead_letters WHERE "offset" = 37`).Scan(&reason, &errText, &value))
	require.Equal(t, model.ReasonUnstorable, reason)
	require.Contains(t, errText, "invalid input syntax")
	require.Equal(t, poison, value)
	var events int
	require.NoError(t, p.st.Pool().QueryRow(ctx, `SELECT count(*) FROM workflow_events`).Scan(&events))
	require.Equal(t, wl.Valid, events, "every other event applied")
	require.Equal(t, int64(len(msgs)), w.Stats().Messages.Load())
	require.Equal(t, kafkatest.HighWatermarks(p.cluster, topic)[0], mustStored(t, p)[model.TopicPartition{Topic: topic, Partition: 0}])
}

func mustStored(t *testing.T, p *pipeline) map[model.TopicPartition]int64 {
	stored, err := p.st.StoredOffsets(context.Background(), p.group)
	require.NoError(t, err)
	return stored
}

// TestDatabaseConnectionsKilledAreRetried ends the sessions of the
// worker's batch transactions midway, round after round: every batch is
// retried, none becomes a dead letter, nothing is lost or applied twice.
// Each round holds every offset row locked (as a long transaction of
// someone else would), produces more messages, waits until batch
// transactions wait on the lock, ends their sessions, and lets go.
func TestDatabaseConnectionsKilledAreRetried(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const partitions, rounds = 4, 5
	p := newPipeline(t, partitions)
	wl := workload(8, 400)
	chunk := len(wl.Messages) / (rounds + 1)
	p.produce(wl.Messages[:chunk])
	cc := p.st.Pool().Config().ConnConfig.Copy()
	cc.RuntimeParams["idle_in_transaction_session_timeout"] = "0"
	locker, err := pgx.ConnectConfig(ctx, cc)
	require.NoError(t, err)
	defer locker.Close(ctx)

	r := p.start("w", p.config(false))
	waitUntil(t, time.Minute, func() bool {
		var n int
		require.NoError(t, p.st.Pool().QueryRow(ctx, `SELECT count(*) FROM consumer_offsets`).Scan(&n))
		return n == partitions
	}, "the worker never claimed every partition")
	killed := 0
	for i := 1; i <= rounds; i++ {
		tx, err := locker.Begin(ctx)
		require.NoError(t, err)
		_, err = tx.Exec(ctx, `SELECT 1 FROM consumer_offsets FOR UPDATE`)
		require.NoError(t, err)
		end := (i + 1) * chunk
		if i == rounds {
			end = len(wl.Messages)
		}
		p.produce(wl.Messages[i*chunk : end])
		var n int
		waitUntil(t, time.Minute, func() bool {
			// One session all along: a killed batch is retried by its
			// claim, not given up with the claim and the session.
			require.Equal(t, int64(1), r.w.Stats().Rebalances.Load(), "the worker's session ended")
			require.NoError(t, p.st.Pool().QueryRow(ctx, `
SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE $1::int = ANY(pg_blocking_pids(pid)) AND query LIKE '-- name: LockOffset %'`, locker.PgConn().PID()).Scan(&n))
			return n > 0
		}, "round %d: no batch transaction waited on the locked offsets", i)
		killed += n
		require.NoError(t, tx.Rollback(ctx))
	}
	waitUntil(t, time.Minute, func() bool { return caughtUp(t, p) })
	r.stop(t)
	t.Logf("killed %d batch transactions; %d retries", killed, r.w.Stats().Retries.Load())
	require.GreaterOrEqual(t, r.w.Stats().Retries.Load(), int64(killed), "every killed batch was retried")
	require.Equal(t, int64(wl.Invalid), r.w.Stats().DeadLetters.Load(), "no batch became a dead letter")
	p.verify()
}
