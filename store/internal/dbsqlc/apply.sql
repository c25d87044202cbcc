-- name: LockOffset :one
-- The fence: the batch transaction locks its partition's offset row first.
SELECT next_offset, lease_epoch
FROM consumer_offsets
WHERE group_id = @group_id AND topic = @topic AND partition = @partition
FOR UPDATE;

-- Several arrays unnested in one select list are zipped row by row.
-- name: InsertEvents :many
-- Stores new events; an event_id already stored is skipped (the first one
-- applied wins). Returns the event_ids that were new.
INSERT INTO workflow_events (
    event_id, workflow_run_id, workflow_id, event_type, source, occurred_at,
    attempt, step_id, topic, partition, "offset", payload
)
SELECT u.event_id, u.workflow_run_id, u.workflow_id, u.event_type, u.source,
       u.occurred_at, u.attempt, NULLIF(u.step_id, ''), @topic::text,
       @partition::integer, u.offset, u.payload::jsonb
FROM (SELECT
    unnest(@event_ids::text[]) AS event_id,
    unnest(@workflow_run_ids::text[]) AS workflow_run_id,
    unnest(@workflow_ids::text[]) AS workflow_id,
    unnest(@event_types::text[]) AS event_type,
    unnest(@sources::text[]) AS source,
    unnest(@occurred_ats::timestamptz[]) AS occurred_at,
    unnest(@attempts::integer[]) AS attempt,
    unnest(@step_ids::text[]) AS step_id,
    unnest(@offsets::bigint[]) AS "offset",
    unnest(@payloads::text[]) AS payload
) AS u
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id;

-- name: MergeRuns :exec
-- Combines each run's stored row with the projection of the batch's new
-- events for that run: model.Combine in SQL, field by field. Every
-- expression on the right reads the row as stored before this statement.
INSERT INTO workflow_runs AS r (
    workflow_run_id, workflow_id, source, attempt, status, queued_at,
    started_at, finished_at, error, steps_succeeded, steps_failed,
    steps_skipped, event_count, first_event_at, last_event_at,
    latest_event_id, deciding_event_id, updated_at
)
SELECT u.workflow_run_id, u.workflow_id, u.source, u.attempt, u.status,
       u.queued_at, u.started_at, u.finished_at,
       CASE WHEN u.has_error THEN u.error END, u.steps_succeeded,
       u.steps_failed, u.steps_skipped, u.event_count, u.first_event_at,
       u.last_event_at, u.latest_event_id, NULLIF(u.deciding_event_id, ''), now()
FROM (SELECT
    unnest(@workflow_run_ids::text[]) AS workflow_run_id,
    unnest(@workflow_ids::text[]) AS workflow_id,
    unnest(@sources::text[]) AS source,
    unnest(@attempts::integer[]) AS attempt,
    unnest(@statuses::text[]) AS status,
    unnest(@queued_ats::timestamptz[]) AS queued_at,
    unnest(@started_ats::timestamptz[]) AS started_at,
    unnest(@finished_ats::timestamptz[]) AS finished_at,
    unnest(@errors::text[]) AS error,
    unnest(@has_errors::boolean[]) AS has_error,
    unnest(@steps_succeeded::bigint[]) AS steps_succeeded,
    unnest(@steps_failed::bigint[]) AS steps_failed,
    unnest(@steps_skipped::bigint[]) AS steps_skipped,
    unnest(@event_counts::bigint[]) AS event_count,
    unnest(@first_event_ats::timestamptz[]) AS first_event_at,
    unnest(@last_event_ats::timestamptz[]) AS last_event_at,
    unnest(@latest_event_ids::text[]) AS latest_event_id,
    unnest(@deciding_event_ids::text[]) AS deciding_event_id
) AS u
ORDER BY u.workflow_run_id
ON CONFLICT (workflow_run_id) DO UPDATE SET
    -- Global fields: every attempt counts.
    workflow_id = CASE
        WHEN (excluded.last_event_at, excluded.latest_event_id) > (r.last_event_at, r.latest_event_id)
        THEN excluded.workflow_id ELSE r.workflow_id END,
    source = CASE
        WHEN (excluded.last_event_at, excluded.latest_event_id) > (r.last_event_at, r.latest_event_id)
        THEN excluded.source ELSE r.source END,
    latest_event_id = CASE
        WHEN (excluded.last_event_at, excluded.latest_event_id) > (r.last_event_at, r.latest_event_id)
        THEN excluded.latest_event_id ELSE r.latest_event_id END,
    last_event_at = GREATEST(r.last_event_at, excluded.last_event_at),
    first_event_at = LEAST(r.first_event_at, excluded.first_event_at),
    event_count = r.event_count + excluded.event_count,
    queued_at = LEAST(r.queued_at, excluded.queued_at),
    -- Per-attempt fields: the larger attempt wins outright; equal attempts
    -- combine.
    attempt = GREATEST(r.attempt, excluded.attempt),
    started_at = CASE
        WHEN excluded.attempt > r.attempt THEN excluded.started_at
        WHEN excluded.attempt < r.attempt THEN r.started_at
        ELSE LEAST(r.started_at, excluded.started_at) END,
    steps_succeeded = CASE
        WHEN excluded.attempt > r.attempt THEN excluded.steps_succeeded
        WHEN excluded.attempt < r.attempt THEN r.steps_succeeded
        ELSE r.steps_succeeded + excluded.steps_succeeded END,
    steps_failed = CASE
        WHEN excluded.attempt > r.attempt THEN excluded.steps_failed
        WHEN excluded.attempt < r.attempt THEN r.steps_failed
        ELSE r.steps_failed + excluded.steps_failed END,
    steps_skipped = CASE
        WHEN excluded.attempt > r.attempt THEN excluded.steps_skipped
        WHEN excluded.attempt < r.attempt THEN r.steps_skipped
        ELSE r.steps_skipped + excluded.steps_skipped END,
    -- The deciding terminal event: the greatest (finished_at,
    -- deciding_event_id) of the attempt.
    deciding_event_id = CASE
        WHEN excluded.attempt > r.attempt THEN excluded.deciding_event_id
        WHEN excluded.attempt < r.attempt THEN r.deciding_event_id
        WHEN excluded.deciding_event_id IS NOT NULL AND (r.deciding_event_id IS NULL
            OR (excluded.finished_at, excluded.deciding_event_id) > (r.finished_at, r.deciding_event_id))
        THEN excluded.deciding_event_id ELSE r.deciding_event_id END,
    finished_at = CASE
        WHEN excluded.attempt > r.attempt THEN excluded.finished_at
        WHEN excluded.attempt < r.attempt THEN r.finished_at
        WHEN excluded.deciding_event_id IS NOT NULL AND (r.deciding_event_id IS NULL
            OR (excluded.finished_at, excluded.deciding_event_id) > (r.finished_at, r.deciding_event_id))
        THEN excluded.finished_at ELSE r.finished_at END,
    error = CASE
        WHEN excluded.attempt > r.attempt THEN excluded.error
        WHEN excluded.attempt < r.attempt THEN r.error
        WHEN excluded.deciding_event_id IS NOT NULL AND (r.deciding_event_id IS NULL
            OR (excluded.finished_at, excluded.deciding_event_id) > (r.finished_at, r.deciding_event_id))
        THEN excluded.error ELSE r.error END,
    status = CASE
        WHEN excluded.attempt > r.attempt THEN excluded.status
        WHEN excluded.attempt < r.attempt THEN r.status
        WHEN excluded.deciding_event_id IS NOT NULL AND (r.deciding_event_id IS NULL
            OR (excluded.finished_at, excluded.deciding_event_id) > (r.finished_at, r.deciding_event_id))
        THEN excluded.status
        WHEN r.deciding_event_id IS NOT NULL THEN r.status
        WHEN 'running' IN (r.status, excluded.status) THEN 'running'
        ELSE 'queued' END,
    updated_at = now();

-- name: InsertDeadLetters :execrows
-- A message already stored as a dead letter (read again after an offset was
-- moved back by hand) is skipped.
INSERT INTO dead_letters (topic, partition, "offset", key, value, headers, reason, error)
SELECT @topic::text, @partition::integer, u.offset, u.key, u.value,
       u.headers::jsonb, u.reason, u.error
FROM (SELECT
    unnest(@offsets::bigint[]) AS "offset",
    unnest(@keys::bytea[]) AS key,
    unnest(@vals::bytea[]) AS value,
    unnest(@headers::text[]) AS headers,
    unnest(@reasons::text[]) AS reason,
    unnest(@errors::text[]) AS error
) AS u
ON CONFLICT (topic, partition, "offset") DO NOTHING;

-- name: AdvanceOffset :exec
-- Moves the stored offset, counting the events the move applied.
UPDATE consumer_offsets
SET next_offset = @next_offset, events_applied = events_applied + @events::bigint, updated_at = now()
WHERE group_id = @group_id AND topic = @topic AND partition = @partition;

-- name: ClaimOffset :one
-- Takes the lease of a partition for a new consumer session: creates the
-- row at @initial_offset when there is none, and bumps the epoch, which
-- fences every earlier owner.
INSERT INTO consumer_offsets AS o (group_id, topic, partition, next_offset, lease_epoch, lease_owner)
VALUES (@group_id, @topic, @partition, @initial_offset, 1, @owner)
ON CONFLICT (group_id, topic, partition) DO UPDATE
SET lease_epoch = o.lease_epoch + 1, lease_owner = excluded.lease_owner, updated_at = now()
RETURNING next_offset, lease_epoch;

-- name: InsertIncident :exec
INSERT INTO consumer_incidents (group_id, topic, partition, kind, expected_offset, actual_offset, detail)
VALUES (@group_id, @topic, @partition, @kind, @expected_offset, @actual_offset, @detail);

-- name: ListOffsets :many
SELECT group_id, topic, partition, next_offset, lease_epoch, lease_owner, updated_at
FROM consumer_offsets
WHERE group_id = @group_id
ORDER BY topic, partition;

-- name: GetOffset :one
SELECT next_offset, lease_epoch
FROM consumer_offsets
WHERE group_id = @group_id AND topic = @topic AND partition = @partition;
