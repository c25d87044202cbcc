package cli

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/projector-run/projector/projector/eventgen"
	"github.com/projector-run/projector/projector/kafkatest"
	"github.com/projector-run/projector/store/storetest"
)

// TestRunWarnsWhenIndexesOutgrowSharedBuffers: run says at start, once,
// when the indexes every batch writes have outgrown the server's
// shared_buffers, and not before. The test grows them past the test
// server's shared_buffers for real: an index on workflow_events of its
// own, with one key of 900 incompressible bytes to a page (fillfactor
// 10), as many keys as shared_buffers has pages.
func TestRunWarnsWhenIndexesOutgrowSharedBuffers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cluster := kafkatest.New(t, "events-m", 2)
	kafkatest.Produce(t, cluster, "events-m", eventgen.Generate(eventgen.Config{Seed: 5, Runs: 20}).Messages)
	url := storetest.URL(t)
	args := []string{"--brokers", cluster.ListenAddrs()[0], "--topics", "events-m", "--database-url", url,
		"--log-format", "json", "run", "--until-caught-up"}
	const warning = "outgrow shared_buffers"

	code, _, stderr := runCLI(t, args...)
	require.Equal(t, 0, code, stderr)
	require.NotContains(t, stderr, warning, "a small database fits")

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

	code, _, stderr = runCLI(t, args...)
	require.Equal(t, 0, code, stderr)
	require.Equal(t, 1, strings.Count(stderr, warning), stderr)
	require.Contains(t, stderr, `"level":"warning"`)
	require.Contains(t, stderr, `"shared_buffers_mb":`)
}
