//go:build faults

package faults_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/projector-run/projector/store/storetest"
	"github.com/stretchr/testify/require"
)

// isRetry matches a worker's "... failed; retrying" and "consumer group
// session failed; rejoining" warnings.
func isRetry(l logLine) bool {
	return l.Level == "warning" && (strings.HasSuffix(l.Msg, "failed; retrying") || strings.HasSuffix(l.Msg, "failed; rejoining"))
}

// isRejected matches the worker isolating a message that PostgreSQL
// refused: never right for a connectivity error.
func isRejected(l logLine) bool { return strings.HasPrefix(l.Msg, "postgresql rejected") }

// TestPostgresConnectionsKilledAndStatementTimeouts works two workers
// through PostgreSQL trouble on the shared server, confined to the
// scenario's own database: their connections killed every 50 to 300ms
// (pg_terminate_backend) for 6 seconds, then every statement of their
// sessions cancelled after 5ms (statement_timeout set on the database,
// while a lock makes batches wait) for 6 seconds, then killed again while a long lock on the offset table
// holds every batch. The workers retry, never turn a failure into a dead
// letter, never exit, and end with everything applied exactly once.
func TestPostgresConnectionsKilledAndStatementTimeouts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, envConfig{partitions: 4})
	msgs := workload(3, 3000)
	e.produce(msgs[:len(msgs)/4])
	workers := []*worker{e.startWorker("w1"), e.startWorker("w2")}
	waitProduced := e.produceOver(msgs[len(msgs)/4:], 20*time.Second)
	waitFor(t, time.Minute, "the workers to claim partitions", func() bool {
		next, _, err := e.storedOffsets()
		return err == nil && len(next) == 4
	})

	admin := adminPool(t)
	db := e.database()
	kills := 0
	killFor := func(d time.Duration) {
		for end := time.Now().Add(d); time.Now().Before(end); {
			n, err := terminate(ctx, admin, db, "")
			require.NoError(t, err)
			kills += n
			time.Sleep(50*time.Millisecond + time.Duration(rand.Int64N(int64(250*time.Millisecond))))
		}
	}
	killFor(6 * time.Second)

	// Every new session of the database gets a 5ms statement timeout;
	// killing the current ones makes the workers reconnect into it. A
	// batch's statements are mostly faster than that, so a session opened
	// before (which keeps no timeout) holds the offset table's lock for
	// 200ms of every 500ms: every batch that starts then waits on it, and
	// times out.
	locker, err := pgx.Connect(ctx, e.dbURL)
	require.NoError(t, err)
	defer locker.Close(ctx)
	dbIdent := pgx.Identifier{db}.Sanitize()
	_, err = admin.Pool().Exec(ctx, "ALTER DATABASE "+dbIdent+" SET statement_timeout = '5ms'")
	require.NoError(t, err)
	n, err := terminate(ctx, admin, db, "")
	require.NoError(t, err)
	kills += n
	for end := time.Now().Add(6 * time.Second); time.Now().Before(end); {
		ltx, err := locker.Begin(ctx)
		require.NoError(t, err)
		_, err = ltx.Exec(ctx, "LOCK TABLE consumer_offsets IN EXCLUSIVE MODE")
		require.NoError(t, err)
		time.Sleep(200 * time.Millisecond)
		require.NoError(t, ltx.Commit(ctx))
		time.Sleep(300 * time.Millisecond)
	}
	_, err = admin.Pool().Exec(ctx, "ALTER DATABASE "+dbIdent+" RESET statement_timeout")
	require.NoError(t, err)
	n, err = terminate(ctx, admin, db, "")
	require.NoError(t, err)
	kills += n
	e.st.Pool().Reset() // the test's own sessions of that window

	// A lock that holds every batch (as a rebuild does) while sessions die.
	tx, err := e.st.Pool().Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, "LOCK TABLE consumer_offsets IN EXCLUSIVE MODE")
	require.NoError(t, err)
	killFor(3 * time.Second)
	require.NoError(t, tx.Commit(ctx))

	waitProduced()
	e.waitCaughtUp(2 * time.Minute)
	for _, w := range workers {
		require.True(t, w.running(), "worker %s exited: %v", w.name, w.exit)
	}
	e.stopAll()
	timeouts := e.countLogs(func(l logLine) bool { return strings.Contains(l.Error, "statement timeout") })
	retries := e.countLogs(isRetry)
	require.Zero(t, e.countLogs(isRejected), "no connectivity error is taken for bad data")
	require.Positive(t, kills)
	require.Positive(t, timeouts, "statements timed out")
	e.verify("pg-kill", verifyOptions{}, fmt.Sprintf("connections killed=%d statement timeouts=%d retries=%d fence_rejections=%d",
		kills, timeouts, retries, e.countLogs(isFenced)))
}

// TestPostgresServerRestart runs two workers against a PostgreSQL server
// of the test's own and, while events are produced, restarts it (fast
// shutdown), crashes it (immediate shutdown: no checkpoint, crash
// recovery; asynchronous commits not yet written are lost, offsets
// included) and stops it for 3 seconds, during which /readyz must report
// PostgreSQL down (and 200 once it is back). The workers retry until it
// is back, re-read whatever a lost commit had applied, and end with
// everything applied exactly once.
func TestPostgresServerRestart(t *testing.T) {
	t.Parallel()
	// The WAL writer wakes rarely, so a crash loses the latest commits.
	pg := startPostgres(t, "wal_writer_delay=10000")
	e := newEnv(t, envConfig{partitions: 4, dbURL: pg.createDatabase("projector")})
	msgs := workload(4, 3000)
	e.produce(msgs[:len(msgs)/4])
	httpAddr := fmt.Sprintf("127.0.0.1:%d", storetest.FreePort(t))
	workers := []*worker{e.startWorker("w1", "--http-addr", httpAddr), e.startWorker("w2")}
	waitProduced := e.produceOver(msgs[len(msgs)/4:], 20*time.Second)
	readyz := func() (int, string) {
		resp, err := (&http.Client{Timeout: 2 * time.Second}).Get("http://" + httpAddr + "/readyz")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	waitFor(t, time.Minute, "/readyz to answer 200", func() bool { code, _ := readyz(); return code == http.StatusOK })

	// storedSum is the sum of the stored offsets, retried while the
	// server is coming back.
	storedSum := func() int64 {
		var sum int64
		waitFor(t, time.Minute, "the database to answer", func() bool {
			next, _, err := e.storedOffsets()
			if err != nil {
				return false
			}
			sum = 0
			for _, n := range next {
				sum += n
			}
			return true
		})
		return sum
	}
	progress := func(what string) {
		from := storedSum()
		waitFor(t, time.Minute, "progress "+what, func() bool { return storedSum() > from+500 })
	}
	progress("before the restart")
	pg.stop("fast")
	pg.start()
	progress("after the restart")
	pg.stop("immediate")
	pg.start()
	progress("after the crash")
	pg.stop("fast")
	down := time.Now()
	var unready string
	waitFor(t, 3*time.Second, "/readyz to report PostgreSQL down", func() bool {
		code, body := readyz()
		unready = body
		return code == http.StatusServiceUnavailable && strings.Contains(body, "postgresql")
	})
	time.Sleep(3*time.Second - time.Since(down))
	pg.start()
	waitFor(t, 30*time.Second, "/readyz to answer 200 again", func() bool { code, _ := readyz(); return code == http.StatusOK })
	t.Logf("while the server was down, /readyz said: %s", strings.TrimSpace(unready))

	waitProduced()
	e.waitCaughtUp(2 * time.Minute)
	for _, w := range workers {
		require.True(t, w.running(), "worker %s exited: %v", w.name, w.exit)
	}
	e.stopAll()
	require.Zero(t, e.countLogs(isRejected), "no connectivity error is taken for bad data")
	applied := 0
	for _, w := range workers {
		s, ok := w.stoppedStats()
		require.True(t, ok, "worker %s logged its counters", w.name)
		applied += int(s["events"])
	}
	e.st.Pool().Reset()
	// With no worker killed, an event is applied twice only when the
	// crash lost the commit that had applied it (and moved its offset).
	valid := e.expectedValid()
	e.verify("pg-restart", verifyOptions{}, fmt.Sprintf("restarts=1 crashes=1 outages=1 (3s); events whose commit the crash lost, applied again: %d; retries=%d fence_rejections=%d",
		applied-valid, e.countLogs(isRetry), e.countLogs(isFenced)))
	require.GreaterOrEqual(t, applied, valid)
}
