-- name: MergeSteps :exec
-- Combines each step's stored row with the projection of a batch's new
-- events for that step: model.CombineSteps in SQL, field by field.
-- Every expression on the right reads the row as stored before this
-- statement. Event ids compare bytewise (COLLATE "C"), as in Go. Rows are
-- written in key order, so that concurrent batches lock them in the same
-- order.
INSERT INTO workflow_steps AS s (
    workflow_run_id, attempt, step_id, workflow_id, source, status,
    started_at, finished_at, error, event_count, first_event_at,
    last_event_at, latest_event_id, deciding_event_id, updated_at
)
SELECT u.workflow_run_id, u.attempt, u.step_id, u.workflow_id, u.source,
       u.status, u.started_at, u.finished_at,
       CASE WHEN u.has_error THEN u.error END, u.event_count,
       u.first_event_at, u.last_event_at, u.latest_event_id,
       NULLIF(u.deciding_event_id, ''), now()
FROM (SELECT
    unnest(@workflow_run_ids::text[]) AS workflow_run_id,
    unnest(@attempts::integer[]) AS attempt,
    unnest(@step_ids::text[]) AS step_id,
    unnest(@workflow_ids::text[]) AS workflow_id,
    unnest(@sources::text[]) AS source,
    unnest(@statuses::text[]) AS status,
    unnest(@started_ats::timestamptz[]) AS started_at,
    unnest(@finished_ats::timestamptz[]) AS finished_at,
    unnest(@errors::text[]) AS error,
    unnest(@has_errors::boolean[]) AS has_error,
    unnest(@event_counts::bigint[]) AS event_count,
    unnest(@first_event_ats::timestamptz[]) AS first_event_at,
    unnest(@last_event_ats::timestamptz[]) AS last_event_at,
    unnest(@latest_event_ids::text[]) AS latest_event_id,
    unnest(@deciding_event_ids::text[]) AS deciding_event_id
) AS u
ORDER BY u.workflow_run_id COLLATE "C", u.attempt, u.step_id COLLATE "C"
ON CONFLICT (workflow_run_id, attempt, step_id) DO UPDATE SET
    -- The latest event gives workflow_id and source.
    workflow_id = CASE
        WHEN (excluded.last_event_at, excluded.latest_event_id COLLATE "C") > (s.last_event_at, s.latest_event_id COLLATE "C")
        THEN excluded.workflow_id ELSE s.workflow_id END,
    source = CASE
        WHEN (excluded.last_event_at, excluded.latest_event_id COLLATE "C") > (s.last_event_at, s.latest_event_id COLLATE "C")
        THEN excluded.source ELSE s.source END,
    latest_event_id = CASE
        WHEN (excluded.last_event_at, excluded.latest_event_id COLLATE "C") > (s.last_event_at, s.latest_event_id COLLATE "C")
        THEN excluded.latest_event_id ELSE s.latest_event_id END,
    last_event_at = GREATEST(s.last_event_at, excluded.last_event_at),
    first_event_at = LEAST(s.first_event_at, excluded.first_event_at),
    event_count = s.event_count + excluded.event_count,
    started_at = LEAST(s.started_at, excluded.started_at),
    -- The deciding terminal event: the greatest (finished_at,
    -- deciding_event_id); its status, finished_at and error go with it.
    -- Without one on either side, the step is running.
    deciding_event_id = CASE
        WHEN excluded.deciding_event_id IS NOT NULL AND (s.deciding_event_id IS NULL
            OR (excluded.finished_at, excluded.deciding_event_id COLLATE "C") > (s.finished_at, s.deciding_event_id COLLATE "C"))
        THEN excluded.deciding_event_id ELSE s.deciding_event_id END,
    finished_at = CASE
        WHEN excluded.deciding_event_id IS NOT NULL AND (s.deciding_event_id IS NULL
            OR (excluded.finished_at, excluded.deciding_event_id COLLATE "C") > (s.finished_at, s.deciding_event_id COLLATE "C"))
        THEN excluded.finished_at ELSE s.finished_at END,
    error = CASE
        WHEN excluded.deciding_event_id IS NOT NULL AND (s.deciding_event_id IS NULL
            OR (excluded.finished_at, excluded.deciding_event_id COLLATE "C") > (s.finished_at, s.deciding_event_id COLLATE "C"))
        THEN excluded.error ELSE s.error END,
    status = CASE
        WHEN excluded.deciding_event_id IS NOT NULL AND (s.deciding_event_id IS NULL
            OR (excluded.finished_at, excluded.deciding_event_id COLLATE "C") > (s.finished_at, s.deciding_event_id COLLATE "C"))
        THEN excluded.status ELSE s.status END,
    updated_at = now();

-- name: ListSteps :many
SELECT * FROM workflow_steps ORDER BY workflow_run_id, attempt, step_id;
