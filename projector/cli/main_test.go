package cli

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/projector-run/projector/migrations"

	"github.com/stretchr/testify/require"

	"github.com/projector-run/projector/projector/eventgen"
	"github.com/projector-run/projector/projector/kafkatest"
	"github.com/projector-run/projector/store"
	"github.com/projector-run/projector/store/storetest"
)

// runCLI runs the command line in-process and returns its exit code, stdout
// and stderr.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return runCLIWith(t, nil, args...)
}

// runCLIWith runs the command line in-process as a user's binary that
// loads these projections does (projector.Main(projections...)), and
// returns its exit code, stdout and stderr.
func runCLIWith(t *testing.T, projections []store.Projection, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code := Run(ctx, append([]string{"projector"}, args...), &stdout, &stderr, projections...)
	return code, stdout.String(), stderr.String()
}

func TestUsageErrorsExitTwoWithOneLine(t *testing.T) {
	t.Parallel()
	url := storetest.URL(t)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"run", "--nope"}, "nope"},
		{"bad log level", []string{"--log-level", "loud", "migrate", "status"}, "--log-level"},
		{"bad log format", []string{"--log-format", "xml", "migrate", "status"}, "--log-format"},
		{"bad batch size", []string{"--database-url", url, "run", "--batch-size", "0"}, "batch-size"},
		{"bad broker", []string{"--database-url", url, "--brokers", "nohost", "run"}, "brokers"},
		{"bad topic", []string{"--database-url", url, "--topics", "a b", "run"}, "topics"},
		{"bad batch wait", []string{"--database-url", url, "run", "--batch-wait", "soon"}, "batch-wait"},
		{"bad group instance id", []string{"--database-url", url, "run", "--group-instance-id", "pod 1"}, "group-instance-id"},
		{"group instance id on old kafka", []string{"--database-url", url, "run", "--group-instance-id", "pod-1", "--kafka-version", "2.2.0"}, "group-instance-id"},
		{"bad database url", []string{"--database-url", "postgres://u:secret@host:notaport/db", "migrate", "status"}, "--database-url"},
		{"stray argument", []string{"--database-url", url, "run", "extra"}, "extra"},
		{"no parallelism", []string{"--database-url", url, "run", "--parallelism", "0"}, "--parallelism"},
		{"fewer connections than parallelism", []string{"--database-url", url, "run", "--parallelism", "8", "--db-max-conns", "4"}, "--db-max-conns"},
		{"negative connections", []string{"--database-url", url, "run", "--db-max-conns", "-1"}, "--db-max-conns"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, _, stderr := runCLI(t, tc.args...)
			require.Equal(t, 2, code, stderr)
			require.Contains(t, stderr, tc.want)
			require.NotContains(t, stderr, "secret", "a password is never printed")
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			require.True(t, strings.HasPrefix(lines[len(lines)-1], "projector: "), stderr)
		})
	}
}

// TestConnectionsSizeEachOther: --parallelism alone sizes the pool,
// --db-max-conns alone bounds the parallelism, and both set must agree.
func TestConnectionsSizeEachOther(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		par, conns int
		parSet     bool
		wantPar    int
		wantConns  int
	}{
		{4, 0, false, 4, 8},   // the defaults
		{16, 0, true, 16, 20}, // parallelism alone
		{4, 4, false, 3, 4},   // a pool alone leaves one connection beside the batches
		{4, 1, false, 1, 1},   // a pool of one serializes everything
		{4, 30, false, 4, 30},
		{3, 3, true, 3, 3}, // both set: as many connections as batches is allowed
	} {
		par, conns, err := connections(tc.par, tc.conns, tc.parSet)
		require.NoError(t, err)
		require.Equal(t, [2]int{tc.wantPar, tc.wantConns}, [2]int{par, conns}, "%+v", tc)
	}
	_, _, err := connections(5, 4, true)
	require.ErrorContains(t, err, "must be at least --parallelism")
}

func TestRunRefusesUnmigratedDatabase(t *testing.T) {
	t.Parallel()
	code, _, stderr := runCLI(t, "--database-url", storetest.EmptyURL(t), "--brokers", "127.0.0.1:1", "run")
	require.Equal(t, 2, code, stderr)
	require.Contains(t, stderr, "projector migrate up")
}

func TestMigrateUpStatusDown(t *testing.T) {
	t.Parallel()
	url := storetest.EmptyURL(t)
	code, out, stderr := runCLI(t, "--database-url", url, "migrate", "status")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, out, "pending")

	code, out, stderr = runCLI(t, "--database-url", url, "migrate", "up")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, out, "applied 00001_init.sql")
	code, out, _ = runCLI(t, "--database-url", url, "migrate", "up")
	require.Equal(t, 0, code)
	require.Contains(t, out, "up to date")

	code, out, _ = runCLI(t, "--database-url", url, "migrate", "status")
	require.Equal(t, 0, code)
	require.Contains(t, out, "applied")

	code, out, stderr = runCLI(t, "--database-url", url, "migrate", "down")
	require.Equal(t, 0, code, stderr)
	files, err := fs.Glob(migrations.FS, "*.sql")
	require.NoError(t, err)
	require.Contains(t, out, "rolled back "+slices.Max(files), "down rolls back the latest migration")
}

func TestHelpNamesEveryFlagAndVariable(t *testing.T) {
	t.Parallel()
	code, out, _ := runCLI(t, "--help")
	require.Equal(t, 0, code)
	for _, s := range []string{"--brokers", "KAFKA_BROKERS", "--topics", "KAFKA_TOPICS", "--group", "KAFKA_GROUP_ID",
		"--database-url", "DATABASE_URL", "--log-level", "LOG_LEVEL", "--log-format", "LOG_FORMAT", "migrate", "run"} {
		require.Contains(t, out, s)
	}
	code, out, _ = runCLI(t, "run", "--help")
	require.Equal(t, 0, code)
	for _, s := range []string{"--until-caught-up", "--batch-size", "BATCH_SIZE", "--batch-wait"} {
		require.Contains(t, out, s)
	}
}

// TestRunUntilCaughtUpFromEnvironment runs the worker as a user would,
// configured by environment variables, with a flag overriding one of them.
func TestRunUntilCaughtUpFromEnvironment(t *testing.T) {
	cluster := kafkatest.New(t, "events-a", 3)
	wl := eventgen.Generate(eventgen.Config{Seed: 9, Runs: 100, DuplicateRate: 0.1, MalformedRate: 0.05})
	kafkatest.Produce(t, cluster, "events-a", wl.Messages)
	url := storetest.URL(t)

	t.Setenv("KAFKA_BROKERS", cluster.ListenAddrs()[0])
	t.Setenv("KAFKA_TOPICS", "no-such-topic")
	t.Setenv("DATABASE_URL", url)
	t.Setenv("KAFKA_GROUP_ID", "env-group")
	t.Setenv("LOG_FORMAT", "json")
	code, _, stderr := runCLI(t, "--topics", "events-a", "run", "--until-caught-up")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, `"msg":"caught up`)
	require.NotContains(t, stderr, "no-such-topic", "the flag wins over the environment")

	st := storetest.Open(t, url)
	var events, dead int
	var group string
	require.NoError(t, st.Pool().QueryRow(context.Background(),
		`SELECT (SELECT count(*) FROM workflow_events), (SELECT count(*) FROM dead_letters), (SELECT min(group_id) FROM consumer_offsets)`).Scan(&events, &dead, &group))
	require.Equal(t, wl.Valid, events)
	require.Equal(t, wl.Invalid, dead)
	require.Equal(t, "env-group", group)
}

// TestMain lets the test binary act as the projector binary, so tests can
// run it as a separate process and signal it.
func TestMain(m *testing.M) {
	if os.Getenv("PROJECTOR_TEST_AS_MAIN") == "1" {
		os.Exit(Run(context.Background(), os.Args, os.Stdout, os.Stderr))
		return
	}
	os.Exit(m.Run())
}

func TestSIGTERMStopsTheWorkerWithExitZero(t *testing.T) {
	t.Parallel()
	cluster := kafkatest.New(t, "workflow-events", 2)
	wl := eventgen.Generate(eventgen.Config{Seed: 11, Runs: 50})
	kafkatest.Produce(t, cluster, "workflow-events", wl.Messages)
	url := storetest.URL(t)

	for _, sig := range []os.Signal{syscall.SIGTERM, syscall.SIGINT} {
		cmd := exec.Command(os.Args[0], "run")
		cmd.Env = append(os.Environ(), "PROJECTOR_TEST_AS_MAIN=1", "DATABASE_URL="+url,
			"KAFKA_BROKERS="+cluster.ListenAddrs()[0], "LOG_LEVEL=debug")
		stderr := &lockedBuffer{}
		cmd.Stderr = stderr
		require.NoError(t, cmd.Start())
		waitUntil(t, time.Minute, func() bool { return strings.Contains(stderr.String(), "claimed partition") },
			"the worker never claimed its partitions")
		require.NoError(t, cmd.Process.Signal(sig))
		err := cmd.Wait()
		require.NoError(t, err, "exit status after %v; stderr:\n%s", sig, stderr.String())
		require.Contains(t, stderr.String(), "msg=stopped")
	}
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

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
