//go:build faults

package faults_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/projector-run/projector/projector/eventgen"
	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/projector/sqlprojections"
	"github.com/projector-run/projector/store"
	"github.com/projector-run/projector/store/storetest"
)

const (
	topic = "workflow-events"
	group = "projector-faults"
	// maxMessageBytes is the broker's and the producer's limit: hostile
	// input holds values far over Kafka's default of 1 MiB.
	maxMessageBytes = 32 << 20
)

// broker is a scenario's in-process Kafka-protocol broker. It lives in the
// test process, so it survives the workers. A restartable one keeps its
// data in a directory and listens on a fixed port, so it can be stopped
// and started again: a real outage, open connections cut.
type broker struct {
	t    testing.TB
	mu   sync.Mutex
	c    *kfake.Cluster // nil while stopped
	opts []kfake.Opt    // set when restartable
	addr string
}

func newBroker(t testing.TB, partitions int32, restartable bool) *broker {
	t.Helper()
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.SeedTopics(partitions, topic),
		kfake.BrokerConfigs(map[string]string{"message.max.bytes": strconv.Itoa(maxMessageBytes)}),
	}
	if restartable {
		opts = append(opts, kfake.DataDir(filepath.Join(t.TempDir(), "kfake")))
	}
	c, err := kfake.NewCluster(opts...)
	require.NoError(t, err)
	b := &broker{t: t, c: c, addr: c.ListenAddrs()[0]}
	if restartable {
		_, port, err := net.SplitHostPort(b.addr)
		require.NoError(t, err)
		p, err := strconv.Atoi(port)
		require.NoError(t, err)
		b.opts = append(opts, kfake.Ports(p))
	}
	t.Cleanup(b.stop)
	return b
}

// cluster returns the running cluster, or nil while it is stopped.
func (b *broker) cluster() *kfake.Cluster {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.c
}

// stop closes the broker: listeners and every open connection.
func (b *broker) stop() {
	b.mu.Lock()
	c := b.c
	b.c = nil
	b.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// restart starts a stopped restartable broker again on the same port,
// from its data directory.
func (b *broker) restart() {
	b.t.Helper()
	require.NotNil(b.t, b.opts, "the broker is not restartable")
	var c *kfake.Cluster
	var err error
	for range 100 { // the port may take a moment to be free again
		if c, err = kfake.NewCluster(b.opts...); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	require.NoError(b.t, err, "restart the broker")
	b.mu.Lock()
	b.c = c
	b.mu.Unlock()
}

// partitionInfos returns the partitions of the topic by number, or nil
// while the broker is stopped.
func (b *broker) partitionInfos() map[int32]kfake.PartitionInfo {
	c := b.cluster()
	if c == nil {
		return nil
	}
	out := map[int32]kfake.PartitionInfo{}
	for _, pi := range c.PartitionInfos(topic) {
		out[pi.Partition] = *pi
	}
	return out
}

// sentMsg is a produced message where the broker acknowledged it.
type sentMsg struct {
	// Gen is the incarnation of the topic (bumped when it is recreated).
	Gen       int
	Partition int32
	Offset    int64
	model.Message
}

// producer produces with a real Kafka client (franz-go, idempotent, so
// retries through a broker outage add no copies) and records where each
// message landed: the expectation is computed from that record.
type producer struct {
	t    testing.TB
	addr string
	mu   sync.Mutex
	cl   *kgo.Client
	gen  int
	sent []sentMsg
}

func newProducer(t testing.TB, addr string) *producer {
	t.Helper()
	p := &producer{t: t, addr: addr}
	p.cl = p.connect()
	t.Cleanup(func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.cl.Close()
	})
	return p
}

func (p *producer) connect() *kgo.Client {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(p.addr),
		kgo.DefaultProduceTopic(topic),
		kgo.ProducerBatchMaxBytes(maxMessageBytes),
		kgo.ProducerLinger(2*time.Millisecond),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
	)
	require.NoError(p.t, err)
	return cl
}

// produce sends msgs in order and records where the broker put them.
func (p *producer) produce(ctx context.Context, msgs []model.Message) error {
	recs := make([]*kgo.Record, len(msgs))
	index := make(map[*kgo.Record]int, len(msgs))
	for i, m := range msgs {
		r := &kgo.Record{Key: m.Key, Value: m.Value}
		for _, h := range m.Headers {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: string(h.Key), Value: h.Value})
		}
		recs[i] = r
		index[r] = i
	}
	// The results come in the order the broker acknowledged them.
	p.mu.Lock()
	cl := p.cl
	p.mu.Unlock()
	res := cl.ProduceSync(ctx, recs...)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range res {
		if r.Err == nil {
			p.sent = append(p.sent, sentMsg{Gen: p.gen, Partition: r.Record.Partition, Offset: r.Record.Offset, Message: msgs[index[r.Record]]})
		}
	}
	if err := res.FirstErr(); err != nil {
		return fmt.Errorf("produce: %w", err)
	}
	return nil
}

// newGeneration marks every message produced from now on as belonging to
// a new incarnation of the topic, produced by a new client (the old one
// knows the old topic ID).
func (p *producer) newGeneration() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cl.Close()
	p.cl = p.connect()
	p.gen++
}

func (p *producer) messages() []sentMsg {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]sentMsg(nil), p.sent...)
}

// workload is a generated workload with duplicates, out-of-order runs,
// re-runs, unkeyed and malformed messages of every reason. A scenario uses
// one workload (in parts): workloads of different seeds may reuse an
// event_id with other bytes, and which of those is applied first is up to
// timing when they land on different partitions.
func workload(seed uint64, runs int) []model.Message {
	return eventgen.Generate(eventgen.Config{
		Seed: seed, Runs: runs, DuplicateRate: 0.05, ShuffleRate: 0.2,
		MalformedRate: 0.02, RetryRate: 0.1, UnkeyedRate: 0.05,
	}).Messages
}

// env is one scenario's world: a broker, a producer, a fresh database and
// the worker processes started so far.
type env struct {
	t      *testing.T
	dir    string // worker logs
	broker *broker
	prod   *producer
	dbURL  string
	st     *store.Store
	// runArgs are extra flags of `projector run` for every worker.
	runArgs []string
	// sqlExamples: every worker loads the examples of projections in SQL
	// (sqlprojections), and verify checks their tables.
	sqlExamples bool
	logLevel    string

	mu           sync.Mutex
	workers      []*worker
	incarnations map[string]int
}

type envConfig struct {
	partitions        int32
	restartableBroker bool
	// dbURL is a migrated database; default a fresh one from storetest.
	dbURL string
	// sqlExamples: the workers load the examples of projections in SQL.
	sqlExamples bool
}

func newEnv(t *testing.T, cfg envConfig) *env {
	t.Helper()
	e := &env{
		t:            t,
		dir:          t.TempDir(),
		logLevel:     "info",
		incarnations: map[string]int{},
	}
	// Cleanups run last first: logs are saved after the workers are gone.
	t.Cleanup(e.saveLogsOnFailure)
	t.Cleanup(e.killAll)
	e.broker = newBroker(t, cfg.partitions, cfg.restartableBroker)
	e.prod = newProducer(t, e.broker.addr)
	e.dbURL = cfg.dbURL
	if e.dbURL == "" {
		e.dbURL = storetest.URL(t)
	}
	e.st = storetest.Open(t, e.dbURL)
	e.installAudit()
	if cfg.sqlExamples {
		e.sqlExamples = true
		e.runArgs = append(e.runArgs, "--projections-dir", sqlprojections.Dir())
	}
	return e
}

// installAudit records every committed change of consumer_offsets, with
// the application_name of the session that made it (each worker process
// connects with its own name), so that verify can prove that no offset
// moved, and so nothing was written, by a worker that did not hold the
// partition's lease. The trigger runs while the row is locked, so the
// audit ids of one partition are in commit order.
func (e *env) installAudit() {
	_, err := e.st.Pool().Exec(context.Background(), `
CREATE TABLE faults_offset_audit (
    id        bigserial PRIMARY KEY,
    app       text NOT NULL DEFAULT current_setting('application_name'),
    topic     text NOT NULL,
    partition integer NOT NULL,
    old_next  bigint,
    new_next  bigint NOT NULL,
    old_epoch bigint,
    new_epoch bigint NOT NULL
);
CREATE FUNCTION faults_offset_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO faults_offset_audit (topic, partition, new_next, new_epoch)
        VALUES (NEW.topic, NEW.partition, NEW.next_offset, NEW.lease_epoch);
    ELSE
        INSERT INTO faults_offset_audit (topic, partition, old_next, new_next, old_epoch, new_epoch)
        VALUES (NEW.topic, NEW.partition, OLD.next_offset, NEW.next_offset, OLD.lease_epoch, NEW.lease_epoch);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER faults_offset_audit AFTER INSERT OR UPDATE ON consumer_offsets
    FOR EACH ROW EXECUTE FUNCTION faults_offset_audit();`)
	require.NoError(e.t, err, "install the offset audit")
}

// produceOver produces msgs in the background, in chunks spread evenly
// over d; the returned function waits for the last chunk.
func (e *env) produceOver(msgs []model.Message, d time.Duration) (wait func()) {
	const tick = 100 * time.Millisecond
	chunks := max(1, int(d/tick))
	size := (len(msgs) + chunks - 1) / chunks
	done := make(chan error, 1)
	go func() {
		t := time.NewTicker(tick)
		defer t.Stop()
		for i := 0; i < len(msgs); i += size {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			err := e.prod.produce(ctx, msgs[i:min(i+size, len(msgs))])
			cancel()
			if err != nil {
				done <- err
				return
			}
			<-t.C
		}
		done <- nil
	}()
	return func() {
		e.t.Helper()
		require.NoError(e.t, <-done)
	}
}

func (e *env) produce(msgs []model.Message) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	require.NoError(e.t, e.prod.produce(ctx, msgs))
}

// worker is one projector process.
type worker struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	exit    error // set before done is closed
	// peakKiB is the process's VmHWM, read from /proc while it runs
	// (ru_maxrss would carry the test process's peak over the exec).
	peakKiB atomic.Int64
}

// startWorker starts `projector run` as a new process in slot (the name
// of a role, e.g. "w1"); each start of a slot is a new incarnation with
// its own log and its own PostgreSQL application_name.
func (e *env) startWorker(slot string, extra ...string) *worker {
	e.t.Helper()
	e.mu.Lock()
	e.incarnations[slot]++
	name := fmt.Sprintf("%s.%d", slot, e.incarnations[slot])
	e.mu.Unlock()
	args := []string{
		"--brokers", e.broker.addr, "--topics", topic, "--group", group,
		"--database-url", withAppName(e.t, e.dbURL, name),
		"--log-format", "json", "--log-level", e.logLevel,
		"run", "--batch-size", "100", "--batch-wait", "5ms", "--db-max-conns", "4",
	}
	args = append(append(args, e.runArgs...), extra...)
	logPath := filepath.Join(e.dir, name+".log")
	f, err := os.Create(logPath)
	require.NoError(e.t, err)
	cmd := exec.Command(projectorBin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	require.NoError(e.t, cmd.Start())
	w := &worker{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		w.exit = cmd.Wait()
		f.Close()
		close(w.done)
	}()
	go w.pollMemory()
	e.mu.Lock()
	e.workers = append(e.workers, w)
	e.mu.Unlock()
	return w
}

func withAppName(t testing.TB, raw, name string) string {
	u, err := url.Parse(raw)
	require.NoError(t, err)
	q := u.Query()
	q.Set("application_name", name)
	u.RawQuery = q.Encode()
	return u.String()
}

func (w *worker) pollMemory() {
	path := fmt.Sprintf("/proc/%d/status", w.cmd.Process.Pid)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if b, err := os.ReadFile(path); err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
					if kib, err := strconv.ParseInt(f[1], 10, 64); err == nil && kib > w.peakKiB.Load() {
						w.peakKiB.Store(kib)
					}
				}
			}
		}
		select {
		case <-w.done:
			return
		case <-t.C:
		}
	}
}

func (w *worker) running() bool {
	select {
	case <-w.done:
		return false
	default:
		return true
	}
}

func (w *worker) signal(sig syscall.Signal) {
	_ = w.cmd.Process.Signal(sig)
}

// kill sends SIGKILL and waits for the process to be gone.
func (w *worker) kill() {
	w.signal(syscall.SIGKILL)
	<-w.done
}

// stop sends SIGTERM and requires exit code 0 within 30 seconds.
func (w *worker) stop(t testing.TB) {
	t.Helper()
	w.signal(syscall.SIGTERM)
	select {
	case <-w.done:
	case <-time.After(30 * time.Second):
		w.kill()
		t.Fatalf("worker %s did not stop within 30s of SIGTERM", w.name)
	}
	require.NoError(t, w.exit, "worker %s exit status after SIGTERM", w.name)
}

// wait waits for a worker to exit by itself and requires exit code 0.
func (w *worker) wait(t testing.TB, timeout time.Duration) {
	t.Helper()
	select {
	case <-w.done:
	case <-time.After(timeout):
		t.Fatalf("worker %s did not exit within %s", w.name, timeout)
	}
	require.NoError(t, w.exit, "worker %s exit status", w.name)
}

func (e *env) killAll() {
	e.mu.Lock()
	ws := append([]*worker(nil), e.workers...)
	e.mu.Unlock()
	for _, w := range ws {
		if w.running() {
			w.kill()
		}
	}
}

// stopAll stops every running worker with SIGTERM; each must exit 0.
func (e *env) stopAll() {
	e.t.Helper()
	var running []*worker
	for _, w := range e.allWorkers() {
		// A process signalled before main installs its handler dies of
		// the signal: wait for its first line, logged after that.
		waitFor(e.t, 30*time.Second, w.name+" to start", func() bool { return !w.running() || len(w.lines()) > 0 })
		if w.running() {
			running = append(running, w)
			w.signal(syscall.SIGTERM)
		}
	}
	for _, w := range running {
		w.stop(e.t)
	}
}

// logLine is one line of a worker's JSON log.
type logLine struct {
	Level, Msg, Error string
	Fields            map[string]any
	Raw               string
}

// lines reads the worker's log so far.
func (w *worker) lines() []logLine {
	f, err := os.Open(w.logPath)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []logLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		l := logLine{Raw: sc.Text()}
		if json.Unmarshal(sc.Bytes(), &l.Fields) == nil {
			l.Level, _ = l.Fields["level"].(string)
			l.Msg, _ = l.Fields["msg"].(string)
			l.Error, _ = l.Fields["error"].(string)
		}
		out = append(out, l)
	}
	return out
}

func (e *env) allWorkers() []*worker {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*worker(nil), e.workers...)
}

// countLogs counts the log lines of every worker that match.
func (e *env) countLogs(match func(logLine) bool) int {
	n := 0
	for _, w := range e.allWorkers() {
		for _, l := range w.lines() {
			if match(l) {
				n++
			}
		}
	}
	return n
}

// isFenced matches the worker's fence rejection: "fenced: ..." at warn.
func isFenced(l logLine) bool { return l.Level == "warning" && strings.HasPrefix(l.Msg, "fenced:") }

// stoppedStats returns the counters of the worker's final "stopped" line.
func (w *worker) stoppedStats() (map[string]float64, bool) {
	for _, l := range w.lines() {
		if l.Msg == "stopped" {
			out := map[string]float64{}
			for k, v := range l.Fields {
				if f, ok := v.(float64); ok {
					out[k] = f
				}
			}
			return out, true
		}
	}
	return nil, false
}

// storedOffsets returns the stored next_offset of each partition of the
// group, and the lease owner.
func (e *env) storedOffsets() (map[int32]int64, map[int32]string, error) {
	rows, err := e.st.Pool().Query(context.Background(),
		`SELECT partition, next_offset, lease_owner FROM consumer_offsets WHERE group_id = $1 AND topic = $2`, group, topic)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	next, owner := map[int32]int64{}, map[int32]string{}
	for rows.Next() {
		var p int32
		var n int64
		var o string
		if err := rows.Scan(&p, &n, &o); err != nil {
			return nil, nil, err
		}
		next[p], owner[p] = n, o
	}
	return next, owner, rows.Err()
}

// caughtUp reports whether every partition's stored offset equals its
// high watermark (an empty partition needs no row), and if not, why.
func (e *env) caughtUp() (bool, string) {
	parts := e.broker.partitionInfos()
	if parts == nil {
		return false, "the broker is stopped"
	}
	next, _, err := e.storedOffsets()
	if err != nil {
		return false, err.Error()
	}
	var behind []string
	for p, pi := range parts {
		n, ok := next[p]
		if (!ok && pi.HighWatermark == pi.LogStartOffset) || n == pi.HighWatermark {
			continue
		}
		behind = append(behind, fmt.Sprintf("partition %d at %d of [%d, %d)", p, n, pi.LogStartOffset, pi.HighWatermark))
	}
	sort.Strings(behind)
	return len(behind) == 0, strings.Join(behind, "; ")
}

// waitCaughtUp waits until every partition's stored offset is at its high
// watermark.
func (e *env) waitCaughtUp(timeout time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := e.caughtUp()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("not caught up after %s: %s", timeout, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitFor polls cond every 20ms until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// saveLogsOnFailure keeps the worker logs of a failed scenario, or of
// every scenario with FAULTS_KEEP_LOGS=1 (the test's temporary directory
// is removed), and shows the warnings and errors of a failed one.
func (e *env) saveLogsOnFailure() {
	if !e.t.Failed() && os.Getenv("FAULTS_KEEP_LOGS") == "" {
		return
	}
	keep := filepath.Join(os.TempDir(), "projector-faults", strings.ReplaceAll(e.t.Name(), "/", "_")+"-"+time.Now().Format("150405"))
	if err := os.MkdirAll(keep, 0o755); err != nil {
		e.t.Logf("keep logs: %v", err)
		return
	}
	for _, w := range e.allWorkers() {
		if err := copyFile(w.logPath, filepath.Join(keep, filepath.Base(w.logPath))); err != nil {
			e.t.Logf("keep log of %s: %v", w.name, err)
		}
		if !e.t.Failed() {
			continue
		}
		var shown []string
		for _, l := range w.lines() {
			if l.Level == "warning" || l.Level == "error" || l.Level == "fatal" || l.Fields == nil {
				shown = append(shown, l.Raw)
			}
		}
		if len(shown) > 15 {
			shown = append([]string{fmt.Sprintf("... %d earlier lines", len(shown)-15)}, shown[len(shown)-15:]...)
		}
		e.t.Logf("worker %s (exit %v), last warnings and errors:\n%s", w.name, w.exit, strings.Join(shown, "\n"))
	}
	e.t.Logf("worker logs kept in %s", keep)
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// adminPool opens the shared server as its superuser, as the tests find it
// (pg_terminate_backend of another role's sessions and ALTER DATABASE need
// it).
func adminPool(t testing.TB) *store.Store {
	t.Helper()
	return storetest.Open(t, storetest.ServerURL(t))
}

// terminate kills the backends of the database whose application_name
// starts with prefix (every worker's, with ""), and returns how many.
func terminate(ctx context.Context, admin *store.Store, db, prefix string) (int, error) {
	var n int
	err := admin.Pool().QueryRow(ctx, `
SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
FROM pg_stat_activity
WHERE datname = $1 AND pid <> pg_backend_pid() AND application_name LIKE $2 || '%' AND application_name <> ''`,
		db, prefix).Scan(&n)
	return n, err
}

func (e *env) database() string {
	var db string
	require.NoError(e.t, e.st.Pool().QueryRow(context.Background(), `SELECT current_database()`).Scan(&db))
	return db
}
