-- Per workflow, its latest run's status and when it changed: the run of the
-- workflow's latest run.* event ("latest": the greatest (occurred_at,
-- event_id), event_id compared bytewise), and that event's status. An
-- order-insensitive merge: a batch's candidate replaces the row only if it
-- is later, whatever order the events come in. A "latest" cannot be
-- subtracted, so Forget recomputes the rows whose run it forgets from the
-- events that remain.

-- +projector Setup
CREATE TABLE IF NOT EXISTS latest_run_per_workflow (
    workflow_id     text PRIMARY KEY,
    workflow_run_id text NOT NULL,
    status          text NOT NULL,
    changed_at      timestamptz NOT NULL,
    event_id        text COLLATE "C" NOT NULL
);
CREATE INDEX IF NOT EXISTS latest_run_per_workflow_run_idx ON latest_run_per_workflow (workflow_run_id);

-- +projector Apply
INSERT INTO latest_run_per_workflow AS t (workflow_id, workflow_run_id, status, changed_at, event_id)
SELECT DISTINCT ON (workflow_id) workflow_id, workflow_run_id, substr(event_type, 5), occurred_at, event_id
FROM new_events
WHERE event_type IN ('run.queued', 'run.started', 'run.succeeded', 'run.failed', 'run.cancelled')
ORDER BY workflow_id, occurred_at DESC, event_id DESC
ON CONFLICT (workflow_id) DO UPDATE
SET workflow_run_id = excluded.workflow_run_id, status = excluded.status,
    changed_at = excluded.changed_at, event_id = excluded.event_id
WHERE (excluded.changed_at, excluded.event_id) > (t.changed_at, t.event_id);

-- +projector Forget
-- A row whose run is forgotten takes the latest event of the workflow's
-- other runs; one with none left goes. (The forgotten runs' remaining
-- events are applied again afterwards.)
INSERT INTO latest_run_per_workflow AS t (workflow_id, workflow_run_id, status, changed_at, event_id)
SELECT DISTINCT ON (e.workflow_id) e.workflow_id, e.workflow_run_id, substr(e.event_type, 5), e.occurred_at, e.event_id
FROM latest_run_per_workflow c
JOIN forgotten_runs f ON f.workflow_run_id = c.workflow_run_id
JOIN workflow_events e ON e.workflow_id = c.workflow_id
WHERE e.event_type IN ('run.queued', 'run.started', 'run.succeeded', 'run.failed', 'run.cancelled')
  AND NOT EXISTS (SELECT FROM forgotten_runs r WHERE r.workflow_run_id = e.workflow_run_id)
ORDER BY e.workflow_id, e.occurred_at DESC, e.event_id DESC
ON CONFLICT (workflow_id) DO UPDATE
SET workflow_run_id = excluded.workflow_run_id, status = excluded.status,
    changed_at = excluded.changed_at, event_id = excluded.event_id;
DELETE FROM latest_run_per_workflow AS t USING forgotten_runs f WHERE t.workflow_run_id = f.workflow_run_id;
