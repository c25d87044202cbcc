package storetest

import (
	"context"
	"testing"

	"github.com/projector-run/projector/store"
)

// snapshotQueries render every row of the tables SQL users read as text,
// without what differs when the same messages are applied again: the
// wall-clock columns (updated_at, received_at), dead_letters.id (a
// sequence) and the lease columns of consumer_offsets.
var snapshotQueries = map[string]string{
	"workflow_events": `SELECT format('%s|%s|%s|%s|%s|%s|%s|%s|%s', event_id, workflow_run_id, workflow_id, event_type, source,
		occurred_at, attempt, step_id, payload) FROM workflow_events ORDER BY event_id`,
	"workflow_event_positions": `SELECT format('%s|%s|%s|%s', event_id, topic, partition, "offset") FROM workflow_events ORDER BY event_id`,
	"workflow_runs": `SELECT format('%s', (r.workflow_run_id, r.workflow_id, r.source, r.attempt, r.status, r.queued_at,
		r.started_at, r.finished_at, r.duration_ms, r.error, r.steps_succeeded, r.steps_failed, r.steps_skipped,
		r.event_count, r.first_event_at, r.last_event_at, r.latest_event_id, r.deciding_event_id))
		FROM workflow_runs r ORDER BY workflow_run_id`,
	"workflow_steps": `SELECT format('%s', (s.workflow_run_id, s.attempt, s.step_id, s.workflow_id, s.source, s.status,
		s.started_at, s.finished_at, s.duration_ms, s.error, s.event_count, s.first_event_at, s.last_event_at,
		s.latest_event_id, s.deciding_event_id))
		FROM workflow_steps s ORDER BY workflow_run_id, attempt, step_id`,
	"dead_letters": `SELECT format('%s|%s|%s|%s|%s|%s|%s|%s', topic, partition, "offset", key, value, headers, reason, error)
		FROM dead_letters ORDER BY topic, partition, "offset"`,
	"consumer_offsets": `SELECT format('%s|%s|%s|%s', group_id, topic, partition, next_offset)
		FROM consumer_offsets ORDER BY group_id, topic, partition`,
}

// Snapshot returns the rows of workflow_events, workflow_runs,
// workflow_steps, dead_letters and consumer_offsets as text, keyed by table, leaving out
// the columns that applying the same messages again changes (wall-clock
// times, sequence ids, leases). The topic, partition and offset of each
// event are under the separate key "workflow_event_positions": which copy
// of an event repeated on two partitions is applied first depends on
// timing, so tests that consume several partitions concurrently may
// delete that key before comparing.
func Snapshot(t testing.TB, st *store.Store) map[string][]string {
	t.Helper()
	out := make(map[string][]string, len(snapshotQueries))
	for name, q := range snapshotQueries {
		rows, err := st.Pool().Query(context.Background(), q)
		if err != nil {
			t.Fatalf("snapshot %s: %v", name, err)
		}
		out[name] = []string{}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatalf("snapshot %s: %v", name, err)
			}
			out[name] = append(out[name], s)
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("snapshot %s: %v", name, err)
		}
	}
	return out
}
