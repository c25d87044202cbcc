package cli

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/projector-run/projector/projector/kafkatest"
	"github.com/projector-run/projector/store/storetest"
)

// TestRebuildRepairsCorruptedRuns damages workflow_runs by hand, checks
// that a dry run counts exactly the damaged rows and changes nothing, and
// that a rebuild, with no broker at all, restores the table.
func TestRebuildRepairsCorruptedRuns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, 3)
	wl := keyedWorkload(51, 150)
	kafkatest.Produce(t, w.cluster, testTopic, wl.Messages)
	w.consume()
	before := storetest.Snapshot(t, w.st)

	exec := func(q string) int64 {
		tag, err := w.st.Pool().Exec(ctx, q)
		require.NoError(t, err)
		return tag.RowsAffected()
	}
	updated := exec(`UPDATE workflow_runs SET status = 'cancelled', steps_failed = steps_failed + 3
		WHERE workflow_run_id IN (SELECT workflow_run_id FROM workflow_runs ORDER BY workflow_run_id LIMIT 5)`)
	deleted := exec(`DELETE FROM workflow_runs
		WHERE workflow_run_id IN (SELECT workflow_run_id FROM workflow_runs ORDER BY workflow_run_id DESC LIMIT 2)`)
	ghosts := exec(`INSERT INTO workflow_runs (workflow_run_id, workflow_id, source, attempt, status, steps_succeeded,
		steps_failed, steps_skipped, event_count, first_event_at, last_event_at, latest_event_id)
		VALUES ('ghost', 'w', 's', 1, 'queued', 0, 0, 0, 1, now(), now(), 'x')`)
	corrupted := storetest.Snapshot(t, w.st)
	noBroker := []string{"--database-url", w.url, "--brokers", "127.0.0.1:1"}

	code, out, stderr := runCLI(t, append(noBroker, "rebuild", "--dry-run")...)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, out, fmt.Sprintf("dry run: %d of 151 runs would change (%d updated, %d inserted, %d deleted); nothing was changed",
		updated+deleted+ghosts, updated, deleted, ghosts))
	require.Contains(t, out, "update ")
	require.Contains(t, out, "steps_failed: ")
	require.Contains(t, out, "... and 3 more")
	require.Equal(t, corrupted, storetest.Snapshot(t, w.st), "a dry run changes nothing")

	code, out, stderr = runCLI(t, append(noBroker, "rebuild")...)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, out, fmt.Sprintf("rebuilt workflow_runs from %d events of 150 runs in ", wl.Valid))
	require.Contains(t, out, fmt.Sprintf(": %d updated, %d inserted, 1 deleted, %d unchanged", updated, deleted, 150-updated-deleted))
	require.Contains(t, stderr, "rebuild progress", "progress is logged when stderr is not a terminal")
	require.Equal(t, before, storetest.Snapshot(t, w.st))

	code, out, stderr = runCLI(t, append(noBroker, "rebuild", "--dry-run")...)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, out, "dry run: 0 of 150 runs would change")
}

func TestRebuildErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no database", []string{"--database-url", "postgres://postgres:secret@127.0.0.1:1/none", "rebuild"}, 1, "connect to database postgres://postgres:xxxxx@127.0.0.1:1/none"},
		{"not migrated", []string{"--database-url", storetest.EmptyURL(t), "rebuild"}, 2, "projector migrate up"},
		{"stray argument", []string{"--database-url", storetest.URL(t), "rebuild", "now"}, 2, `unexpected argument "now"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, _, stderr := runCLI(t, tc.args...)
			requireOneLineError(t, tc.code, tc.want, code, stderr)
			require.NotContains(t, stderr, "secret")
		})
	}
}
