package cli

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"github.com/stretchr/testify/require"

	"github.com/projector-run/projector/projector/eventgen"
	"github.com/projector-run/projector/projector/kafkatest"
	"github.com/projector-run/projector/store"
	"github.com/projector-run/projector/store/storetest"
)

const indexMemoryWarning = "outgrow shared_buffers"

// growIndexesPastSharedBuffers grows the indexes of workflow_events past
// the test server's shared_buffers for real: an index of its own, with one
// key of 900 incompressible bytes to a page (fillfactor 10), as many keys
// as shared_buffers has pages.
func growIndexesPastSharedBuffers(t *testing.T, url string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var pages int64
	require.NoError(t, conn.QueryRow(ctx, `SELECT pg_size_bytes(current_setting('shared_buffers')) / 8192`).Scan(&pages))
	require.LessOrEqual(t, pages, int64(1<<16), "the test server's shared_buffers is over 512MB: this test would write as many bytes of index")
	_, err = conn.Exec(ctx, `
		INSERT INTO workflow_events (event_id, workflow_run_id, workflow_id, event_type, source, occurred_at, attempt, topic, partition, "offset", payload)
		SELECT 'pad-' || g, 'pad-run', 'wf', 'run.queued', 'ci', now(), 1, 'padding', 0, g,
		       jsonb_build_object('pad', (SELECT string_agg(md5(g::text || '/' || i), '') FROM generate_series(1, 28) AS i))
		FROM generate_series(1, $1::bigint + 1000) AS g`, pages)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `CREATE INDEX workflow_events_pad_idx ON workflow_events ((payload->>'pad')) WITH (fillfactor = 10)`)
	require.NoError(t, err)
}

// TestRunWarnsWhenIndexesOutgrowSharedBuffers: run says at start, once,
// when the indexes every batch writes have outgrown the server's
// shared_buffers, and not before.
func TestRunWarnsWhenIndexesOutgrowSharedBuffers(t *testing.T) {
	t.Parallel()
	cluster := kafkatest.New(t, "events-m", 2)
	kafkatest.Produce(t, cluster, "events-m", eventgen.Generate(eventgen.Config{Seed: 5, Runs: 20}).Messages)
	url := storetest.URL(t)
	args := []string{"--brokers", cluster.ListenAddrs()[0], "--topics", "events-m", "--database-url", url,
		"--log-format", "json", "run", "--until-caught-up"}

	code, _, stderr := runCLI(t, args...)
	require.Equal(t, 0, code, stderr)
	require.NotContains(t, stderr, indexMemoryWarning, "a small database fits")

	growIndexesPastSharedBuffers(t, url)
	code, _, stderr = runCLI(t, args...)
	require.Equal(t, 0, code, stderr)
	requireOneIndexMemoryWarning(t, stderr)
}

// requireOneIndexMemoryWarning checks that the JSON log lines in stderr
// hold one warning that the indexes outgrow shared_buffers, with sizes
// that say so.
func requireOneIndexMemoryWarning(t *testing.T, stderr string) {
	t.Helper()
	var warnings []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(stderr), "\n") {
		var l map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &l), line)
		if msg, _ := l["msg"].(string); strings.Contains(msg, indexMemoryWarning) {
			warnings = append(warnings, l)
		}
	}
	require.Len(t, warnings, 1, stderr)
	w := warnings[0]
	require.Equal(t, "warning", w["level"])
	require.Greater(t, w["indexes_mb"], w["shared_buffers_mb"])
	require.Positive(t, w["shared_buffers_mb"])
}

// TestRunningWorkerWarnsWhenIndexesOutgrowSharedBuffers: a worker that
// runs while its history grows says so, once, when a later check finds
// the indexes grown past shared_buffers. Not parallel: it shortens the
// interval between checks for the whole package.
func TestRunningWorkerWarnsWhenIndexesOutgrowSharedBuffers(t *testing.T) {
	every := indexMemoryEvery
	indexMemoryEvery = 50 * time.Millisecond
	t.Cleanup(func() { indexMemoryEvery = every })
	cluster := kafkatest.New(t, "events-w", 2)
	kafkatest.Produce(t, cluster, "events-w", eventgen.Generate(eventgen.Config{Seed: 6, Runs: 20}).Messages)
	url := storetest.URL(t)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr := &lockedBuffer{}
	exit := make(chan int, 1)
	go func() {
		exit <- Run(ctx, []string{"projector", "--brokers", cluster.ListenAddrs()[0], "--topics", "events-w",
			"--database-url", url, "--log-format", "json", "--log-level", "debug", "run"}, io.Discard, stderr)
	}()
	stopped := false
	t.Cleanup(func() { // also when a check below fails: no worker outlives the test
		cancel()
		if stopped {
			return
		}
		select {
		case <-exit:
		case <-time.After(time.Minute):
			t.Error("the worker did not stop within a minute of its context's end")
		}
	})
	checks := func() int { return strings.Count(stderr.String(), "compared the indexes with shared_buffers") }
	waitUntil(t, time.Minute, func() bool { return checks() >= 3 }, "the worker never checked the indexes again:\n%s", stderr)
	require.NotContains(t, stderr.String(), indexMemoryWarning, "a small database fits")

	growIndexesPastSharedBuffers(t, url)
	waitUntil(t, time.Minute, func() bool { return strings.Contains(stderr.String(), indexMemoryWarning) },
		"the worker never warned:\n%s", stderr)
	after := checks()
	waitUntil(t, time.Minute, func() bool { return checks() >= after+3 }, "the worker stopped checking:\n%s", stderr)
	requireOneIndexMemoryWarning(t, stderr.String()) // once, not at every check

	cancel()
	select {
	case code := <-exit:
		stopped = true
		require.Equal(t, 0, code, stderr.String())
	case <-time.After(time.Minute):
		t.Fatal("the worker did not stop within a minute of its context's end")
	}
}

// TestIndexMemoryWarnsOnEachCrossing: a check warns when the indexes
// have grown past shared_buffers since the last answered check, not at
// every check while they stay past it, again after they fit for a while,
// and a check that fails changes nothing. (The numbers are given; the
// query behind them is TestIndexMemory's, against the server.)
func TestIndexMemoryWarnsOnEachCrossing(t *testing.T) {
	t.Parallel()
	log, hook := logtest.NewNullLogger()
	fits := store.IndexMemory{Indexes: 1 << 20, SharedBuffers: 128 << 20}
	outgrown := store.IndexMemory{Indexes: 129 << 20, SharedBuffers: 128 << 20}
	failed := store.IndexMemory{Indexes: -1}
	var next store.IndexMemory
	im := newIndexMemory(log, func(context.Context) (store.IndexMemory, error) {
		if next == failed {
			return store.IndexMemory{}, errors.New("canceling statement due to lock timeout")
		}
		return next, nil
	})
	require.True(t, math.IsNaN(testutil.ToFloat64(im.indexes)), "unknown until a check is answered")
	last := fits
	for i, step := range []struct {
		read store.IndexMemory
		warn bool
	}{
		{fits, false},
		{outgrown, true},
		{outgrown, false},
		{failed, false},
		{outgrown, false},
		{fits, false},
		{failed, false},
		{outgrown, true},
	} {
		hook.Reset()
		next = step.read
		im.check(context.Background())
		warned := false
		for _, e := range hook.AllEntries() {
			if e.Level == logrus.WarnLevel && strings.Contains(e.Message, indexMemoryWarning) {
				warned = true
				require.Equal(t, int64(129), e.Data["indexes_mb"])
				require.Equal(t, int64(128), e.Data["shared_buffers_mb"])
			}
		}
		require.Equal(t, step.warn, warned, "check %d", i)
		if step.read != failed {
			last = step.read
		}
		require.Equal(t, float64(last.Indexes), testutil.ToFloat64(im.indexes), "check %d: the last answered check's", i)
		require.Equal(t, float64(last.SharedBuffers), testutil.ToFloat64(im.sharedBuffers), "check %d", i)
	}
}
