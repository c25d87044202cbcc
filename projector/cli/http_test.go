package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	promodel "github.com/prometheus/common/model"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"

	"github.com/projector-run/projector/projector/consumer"
	"github.com/projector-run/projector/projector/eventgen"
	"github.com/projector-run/projector/projector/kafkatest"
	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/projector/projectiontest"
	"github.com/projector-run/projector/store"
	"github.com/projector-run/projector/store/storetest"
)

// get fetches a URL and returns its status code and body.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// scrape fetches /metrics and parses it.
func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	p := expfmt.NewTextParser(promodel.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	return families
}

// samples returns a family's values by the value of one label ("" for
// none): counters and gauges by value, histograms by sample count.
func samples(families map[string]*dto.MetricFamily, name, label string) map[string]float64 {
	out := map[string]float64{}
	f, ok := families[name]
	if !ok {
		return nil
	}
	for _, m := range f.GetMetric() {
		key := ""
		for _, l := range m.GetLabel() {
			if l.GetName() == label {
				key = l.GetValue()
			}
		}
		switch {
		case m.Counter != nil:
			out[key] += m.GetCounter().GetValue()
		case m.Gauge != nil:
			out[key] += m.GetGauge().GetValue()
		case m.Histogram != nil:
			out[key] += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return out
}

func total(m map[string]float64) (s float64) {
	for _, v := range m {
		s += v
	}
	return s
}

var servingAddr = regexp.MustCompile(`msg="serving /metrics[^"]*" addr="?([0-9.]+:[0-9]+)`)

// TestRunServesMetricsHealthAndReadiness runs the worker with --http-addr
// and reads its endpoints: the metrics count what was applied, the lag of
// every partition is 0 once caught up, and /readyz fails while PostgreSQL
// refuses connections and recovers when it accepts them again.
func TestRunServesMetricsHealthAndReadiness(t *testing.T) {
	t.Parallel()
	const topic = "workflow-events"
	cluster := kafkatest.New(t, topic, 3)
	wl := eventgen.Generate(eventgen.Config{Seed: 31, Runs: 150, DuplicateRate: 0.05, MalformedRate: 0.05})
	kafkatest.Produce(t, cluster, topic, wl.Messages)
	url := storetest.URL(t)
	st := storetest.Open(t, url)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr := &lockedBuffer{}
	exit := make(chan int, 1)
	go func() {
		exit <- Run(ctx, []string{"projector", "--database-url", url, "--brokers", cluster.ListenAddrs()[0],
			"run", "--http-addr", "127.0.0.1:0"}, io.Discard, stderr)
	}()
	var base string
	waitUntil(t, time.Minute, func() bool {
		m := servingAddr.FindStringSubmatch(stderr.String())
		if m != nil {
			base = "http://" + m[1]
		}
		return m != nil
	}, "the server never said where it listens:\n%s", stderr)

	hwms := kafkatest.HighWatermarks(cluster, topic)
	waitUntil(t, time.Minute, func() bool {
		stored, err := st.StoredOffsets(ctx, "workflow-projector")
		require.NoError(t, err)
		for p, hwm := range hwms {
			if stored[model.TopicPartition{Topic: topic, Partition: p}] != hwm {
				return false
			}
		}
		return true
	}, "the worker never caught up")

	code, body := get(t, base+"/healthz")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok\n", body)
	code, body = get(t, base+"/readyz")
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "postgresql: ok\nkafka: ok\nworker: ok\n", body)

	var families map[string]*dto.MetricFamily
	waitUntil(t, time.Minute, func() bool {
		families = scrape(t, base)
		lag := samples(families, "projector_partition_lag", "partition")
		return len(lag) == len(hwms) && total(lag) == 0
	}, "the lag of every partition never read 0")
	for p, hwm := range hwms {
		require.Equal(t, float64(hwm), samples(families, "projector_partition_high_watermark", "partition")[fmt.Sprint(p)])
		require.Equal(t, float64(hwm), samples(families, "projector_partition_next_offset", "partition")[fmt.Sprint(p)])
	}
	require.Equal(t, float64(wl.Valid), total(samples(families, "projector_events_applied_total", "event_type")))
	reasons := samples(families, "projector_dead_letters_total", "reason")
	for reason, n := range wl.Reasons {
		require.Equal(t, float64(n), reasons[reason], reason)
	}
	require.Equal(t, float64(len(wl.Messages)), total(samples(families, "projector_messages_total", "")))
	require.Positive(t, total(samples(families, "projector_batch_messages", "")))
	require.Positive(t, total(samples(families, "projector_batch_transaction_seconds", "")))
	require.GreaterOrEqual(t, total(samples(families, "projector_rebalances_total", "")), 1.0)
	require.Equal(t, 3.0, total(samples(families, "projector_claimed_partitions", "")))
	var sharedBuffers float64
	require.NoError(t, st.Pool().QueryRow(ctx, `SELECT pg_size_bytes(current_setting('shared_buffers'))::float8`).Scan(&sharedBuffers))
	require.Equal(t, sharedBuffers, total(samples(families, "projector_shared_buffers_bytes", "")))
	require.Positive(t, total(samples(families, "projector_index_bytes", "")))
	for _, name := range []string{"projector_fence_rejections_total", "projector_incidents_total",
		"go_goroutines", "go_gc_duration_seconds", "go_memstats_heap_alloc_bytes", "process_resident_memory_bytes"} {
		require.Contains(t, families, name)
	}

	// PostgreSQL refuses the worker's database: not ready, until it
	// accepts connections again.
	db, err := pgx.ParseConfig(url)
	require.NoError(t, err)
	admin := storetest.Open(t, storetest.ServerURL(t))
	allow := func(ok bool) {
		_, err := admin.Pool().Exec(context.Background(),
			fmt.Sprintf("ALTER DATABASE %s ALLOW_CONNECTIONS %t", pgx.Identifier{db.Database}.Sanitize(), ok))
		require.NoError(t, err)
	}
	allow(false)
	t.Cleanup(func() { allow(true) })
	_, err = admin.Pool().Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1`, db.Database)
	require.NoError(t, err)
	waitUntil(t, time.Minute, func() bool {
		code, body = get(t, base+"/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "not currently accepting connections")
	}, "last /readyz: %d %s", code, body)
	t.Logf("/readyz while PostgreSQL refuses connections:\n%s", body)
	require.Contains(t, body, "postgresql: unreachable")
	require.Contains(t, body, "kafka: ok")
	code, _ = get(t, base+"/healthz")
	require.Equal(t, http.StatusOK, code, "alive all the same")

	allow(true)
	waitUntil(t, time.Minute, func() bool {
		code, body = get(t, base+"/readyz")
		return code == http.StatusOK
	}, "never ready again: %s", body)

	cancel()
	require.Equal(t, 0, <-exit, stderr.String())
	_, err = net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	require.Error(t, err, "the server stopped with the worker")
	// Each partition's last progress line, logged as its claim ends.
	logged := regexp.MustCompile(`level=info msg="applied batches" [^\n]*`).FindAllString(stderr.String(), -1)
	require.NotEmpty(t, logged, stderr.String())
	for _, field := range []string{"offset=", "end_offset=", "events=", "dead_letters=", "duration_ms=", "topic=workflow-events"} {
		require.Contains(t, logged[0], field)
	}
}

// TestReadyzReportsBrokerDownAndStuckWorker: a worker that cannot reach its
// broker retries, and once it has retried for longer than the limit
// without progress, /readyz says so, beside the broker check.
func TestReadyzReportsBrokerDownAndStuckWorker(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := ln.Addr().String()
	require.NoError(t, ln.Close())
	live := kafkatest.New(t, "workflow-events", 1)
	st := storetest.New(t)

	cfg := consumer.DefaultConfig()
	cfg.Brokers = []string{dead}
	cfg.RetryMin, cfg.RetryMax = 10*time.Millisecond, 50*time.Millisecond
	log := logrus.New()
	log.SetOutput(io.Discard)
	w, err := consumer.NewWorker(cfg, st, log)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()

	liveCfg := cfg
	liveCfg.Brokers = live.ListenAddrs()
	srv := httptest.NewServer(newHTTPHandler(newRegistry(consumer.NewMetrics()), []readyCheck{
		databaseCheck(st),
		kafkaCheck(cfg),
		kafkaCheck(liveCfg),
		workerCheck(w, 200*time.Millisecond),
	}))
	defer srv.Close()
	var body string
	waitUntil(t, time.Minute, func() bool {
		var code int
		code, body = get(t, srv.URL+"/readyz")
		require.Equal(t, http.StatusServiceUnavailable, code)
		return strings.Contains(body, "worker: retrying")
	})
	lines := strings.Split(strings.TrimSpace(body), "\n")
	require.Len(t, lines, 4, body)
	require.Equal(t, "postgresql: ok", lines[0])
	require.True(t, strings.HasPrefix(lines[1], "kafka: unreachable: connect to kafka at "+dead), lines[1])
	require.Equal(t, "kafka: ok", lines[2])
	require.Regexp(t, `^worker: retrying transient failures for \d+s without progress`, lines[3])
}

func TestHTTPAddrErrors(t *testing.T) {
	t.Parallel()
	url := storetest.URL(t)
	code, _, stderr := runCLI(t, "--database-url", url, "run", "--http-addr", "8080")
	require.Equal(t, 2, code, stderr)
	require.Contains(t, stderr, "projector: --http-addr: \"8080\" is not host:port")

	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	code, _, stderr = runCLI(t, "--database-url", url, "run", "--http-addr", taken.Addr().String())
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "projector: --http-addr: listen tcp "+taken.Addr().String())

	code, out, _ := runCLI(t, "run", "--help")
	require.Equal(t, 0, code)
	for _, s := range []string{"--http-addr", "HTTP_ADDR", "--mirror-offsets", "MIRROR_OFFSETS"} {
		require.Contains(t, out, s)
	}
}

// TestReadyzUnreadyWhileAProjectionFails runs a user's binary (the command
// line with its projections) whose projection pc refuses every row: /readyz
// is unready at once, naming the projection, and the metrics count its
// errors; once it is mended, the worker catches up, /readyz is ready
// again, and the projection's tables hold every event once.
func TestReadyzUnreadyWhileAProjectionFails(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cluster := kafkatest.New(t, testTopic, 2)
	wl := keyedWorkload(33, 60)
	kafkatest.Produce(t, cluster, testTopic, wl.Messages)
	url := storetest.URL(t)
	st := storetest.OpenWith(t, url, userProjections()...)
	_, err := st.Pool().Exec(ctx, `ALTER TABLE pc_counts ADD CONSTRAINT refuse_all CHECK (events < 0)`)
	require.NoError(t, err)

	stderr := &lockedBuffer{}
	exit := make(chan int, 1)
	go func() {
		exit <- Run(ctx, []string{"projector", "--database-url", url, "--brokers", cluster.ListenAddrs()[0],
			"run", "--http-addr", "127.0.0.1:0"}, io.Discard, stderr, userProjections()...)
	}()
	var base string
	waitUntil(t, time.Minute, func() bool {
		m := servingAddr.FindStringSubmatch(stderr.String())
		if m != nil {
			base = "http://" + m[1]
		}
		return m != nil
	}, "the server never said where it listens:\n%s", stderr)

	var code int
	var body string
	failing := regexp.MustCompile(`(?m)^worker: apply batch workflow-events/\d \[0, \d+\): projection pc: apply: .*violates check constraint "refuse_all"`)
	waitUntil(t, time.Minute, func() bool {
		code, body = get(t, base+"/readyz")
		return code == http.StatusServiceUnavailable && failing.MatchString(body)
	}, "/readyz never named the failing projection")
	t.Logf("/readyz while pc fails:\n%s", body)
	require.Contains(t, body, "postgresql: ok")
	require.Contains(t, body, "kafka: ok")
	require.GreaterOrEqual(t, samples(scrape(t, base), "projector_projection_errors_total", "projection")["pc"], 1.0)
	require.Zero(t, count(t, st, `SELECT count(*) FROM workflow_events`), "nothing stored while pc fails")
	require.Zero(t, count(t, st, `SELECT count(*) FROM dead_letters`), "no dead letter while pc fails")

	_, err = st.Pool().Exec(ctx, `ALTER TABLE pc_counts DROP CONSTRAINT refuse_all`)
	require.NoError(t, err)
	hwms := kafkatest.HighWatermarks(cluster, testTopic)
	waitUntil(t, time.Minute, func() bool {
		stored, err := st.StoredOffsets(ctx, "workflow-projector")
		require.NoError(t, err)
		for p, hwm := range hwms {
			if stored[model.TopicPartition{Topic: testTopic, Partition: p}] != hwm {
				return false
			}
		}
		return true
	}, "the worker never caught up once pc was mended")
	waitUntil(t, time.Minute, func() bool {
		code, body = get(t, base+"/readyz")
		return code == http.StatusOK
	}, "never ready again: %d %s", code, body)
	require.Equal(t, "postgresql: ok\nkafka: ok\nworker: ok\n", body)
	got, err := projectiontest.Tables(ctx, st.Pool(), "pc", "pr")
	require.NoError(t, err)
	require.Equal(t, projectiontest.Want(distinctEvents(wl.Messages)), got)

	cancel()
	require.Equal(t, 0, <-exit, stderr.String())
	require.Regexp(t, `level=error msg="apply batch failed: projection pc returned an error[^\n]* projection=pc`, stderr.String())
}

func count(t *testing.T, st *store.Store, q string) int64 {
	t.Helper()
	var n int64
	require.NoError(t, st.Pool().QueryRow(context.Background(), q).Scan(&n))
	return n
}
