package cli

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/projector-run/projector/projector/eventgen"
	"github.com/projector-run/projector/projector/kafkatest"
	"github.com/projector-run/projector/store/storetest"
)

// TestWorkerRoleOwnsNothing: migrate runs as the owner; with exactly the
// README's GRANTs, the worker and every other command run as a role that
// owns nothing, and that role cannot alter, drop, truncate or create a
// table.
func TestWorkerRoleOwnsNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	roles := storetest.NewRoles(t)
	code, _, stderr := runCLI(t, "--database-url", roles.OwnerURL, "migrate", "up")
	require.Equal(t, 0, code, stderr)
	owner, err := pgx.Connect(ctx, roles.OwnerURL)
	require.NoError(t, err)
	defer owner.Close(ctx)
	_, err = owner.Exec(ctx, roles.READMEGrants(t))
	require.NoError(t, err, "the README's GRANTs")

	cluster := kafkatest.New(t, "lp-events", 2)
	wl := eventgen.Generate(eventgen.Config{Seed: 51, Runs: 80, DuplicateRate: 0.1, MalformedRate: 0.05})
	kafkatest.Produce(t, cluster, "lp-events", wl.Messages)
	asWorker := func(args ...string) string {
		t.Helper()
		code, out, stderr := runCLI(t, append([]string{"--database-url", roles.WorkerURL, "--brokers", cluster.ListenAddrs()[0], "--topics", "lp-events"}, args...)...)
		require.Equal(t, 0, code, "%v as the worker role: %s", args, stderr)
		return out
	}
	worker, err := pgx.Connect(ctx, roles.WorkerURL)
	require.NoError(t, err)
	defer worker.Close(ctx)
	counts := func() (events, dead int) {
		t.Helper()
		require.NoError(t, worker.QueryRow(ctx, `SELECT (SELECT count(*) FROM workflow_events), (SELECT count(*) FROM dead_letters)`).Scan(&events, &dead))
		return events, dead
	}

	asWorker("run", "--until-caught-up")
	events, dead := counts()
	require.Equal(t, wl.Valid, events)
	require.Equal(t, wl.Invalid, dead)
	require.Contains(t, asWorker("offsets", "show"), "lp-events")
	asWorker("dlq", "list")
	asWorker("dlq", "replay")
	asWorker("rebuild")
	asWorker("projections", "list")
	asWorker("offsets", "reset", "--to", "earliest")
	events, _ = counts()
	require.Zero(t, events, "the reset removed what it will consume again")
	asWorker("run", "--until-caught-up")
	events, dead = counts()
	require.Equal(t, wl.Valid, events)
	require.Equal(t, wl.Invalid, dead)
	asWorker("prune", "--before", "1970-01-02T00:00:00Z")
	asWorker("prune", "--older-than", "1h", "--dry-run")

	var owned int
	require.NoError(t, worker.QueryRow(ctx, `SELECT count(*) FROM pg_class WHERE relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)`).Scan(&owned))
	require.Zero(t, owned, "the worker role owns nothing")
	for _, stmt := range []string{
		"ALTER TABLE workflow_runs ADD COLUMN x int",
		"ALTER TABLE consumer_offsets DROP COLUMN next_offset",
		"DROP TABLE workflow_events",
		"DROP VIEW consumer_lag",
		"TRUNCATE workflow_events",
		"CREATE TABLE sneaky (x int)",
		"CREATE INDEX sneaky_idx ON workflow_runs (status)",
		"DELETE FROM goose_db_version",
	} {
		_, err := worker.Exec(ctx, stmt)
		var pgErr *pgconn.PgError
		require.True(t, errors.As(err, &pgErr), "%s: %v", stmt, err)
		require.Equal(t, pgerrcode.InsufficientPrivilege, pgErr.Code, "%s: %v", stmt, err)
	}
	code, _, stderr = runCLI(t, "--database-url", roles.WorkerURL, "migrate", "down")
	require.NotEqual(t, 0, code, "the worker role cannot roll a migration back: %s", stderr)
	require.NotContains(t, stderr, "worker-Pa55")
}

// TestPrivilegeRevokedWhileRunningIsRetriedLoudly: a refusal that would
// stop the worker at start (a missing privilege) is retried once the
// worker has run, logged at error level, with /readyz unready, and the
// worker goes on once the privilege is back, each event applied once.
func TestPrivilegeRevokedWhileRunningIsRetriedLoudly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	roles := storetest.NewRoles(t)
	code, _, stderr := runCLI(t, "--database-url", roles.OwnerURL, "migrate", "up")
	require.Equal(t, 0, code, stderr)
	owner, err := pgx.Connect(ctx, roles.OwnerURL)
	require.NoError(t, err)
	defer owner.Close(ctx)
	_, err = owner.Exec(ctx, roles.READMEGrants(t))
	require.NoError(t, err)

	cluster := kafkatest.New(t, "revoke-events", 1)
	first := eventgen.Generate(eventgen.Config{Seed: 61, Runs: 20})
	second := eventgen.Generate(eventgen.Config{Seed: 62, Runs: 20})
	kafkatest.Produce(t, cluster, "revoke-events", first.Messages)

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	stderrBuf := &lockedBuffer{}
	exited := make(chan int, 1)
	go func() {
		exited <- Run(runCtx, []string{"projector", "--database-url", roles.WorkerURL, "--brokers", cluster.ListenAddrs()[0],
			"--topics", "revoke-events", "run", "--http-addr", "127.0.0.1:0"}, io.Discard, stderrBuf)
	}()
	var addr string
	waitUntil(t, time.Minute, func() bool {
		m := addrField.FindStringSubmatch(stderrBuf.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	}, "the worker never served HTTP: %s", stderrBuf)
	events := func() int {
		var n int
		require.NoError(t, owner.QueryRow(ctx, `SELECT count(*) FROM workflow_events`).Scan(&n))
		return n
	}
	waitUntil(t, time.Minute, func() bool { return events() == first.Valid }, "the first events were not applied: %s", stderrBuf)

	_, err = owner.Exec(ctx, "REVOKE INSERT ON workflow_events FROM "+pgx.Identifier{roles.Worker}.Sanitize())
	require.NoError(t, err)
	kafkatest.Produce(t, cluster, "revoke-events", second.Messages)
	waitUntil(t, time.Minute, func() bool {
		return strings.Contains(stderrBuf.String(), "level=error") && strings.Contains(stderrBuf.String(), "refuse the configuration")
	}, "the refusal was not logged at error level: %s", stderrBuf)
	var readyz string
	waitUntil(t, time.Minute, func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		readyz = string(b)
		return resp.StatusCode == http.StatusServiceUnavailable
	}, "/readyz stayed ready while the worker retried a refusal")
	require.Contains(t, readyz, "permission denied for table workflow_events", "/readyz names the refusal at once, not after a retry limit")

	_, err = owner.Exec(ctx, "GRANT INSERT ON workflow_events TO "+pgx.Identifier{roles.Worker}.Sanitize())
	require.NoError(t, err)
	waitUntil(t, time.Minute, func() bool { return events() == first.Valid+second.Valid }, "the worker did not go on: %s", stderrBuf)
	stop()
	require.Equal(t, 0, <-exited, stderrBuf.String())
}
