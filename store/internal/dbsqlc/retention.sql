-- name: Horizon :one
-- The retention horizon; NULL when nothing was ever pruned.
SELECT (SELECT horizon FROM retention_horizon)::timestamptz AS horizon;

-- name: MoveHorizon :one
-- Moves the horizon forward to @horizon (never back) and returns it.
INSERT INTO retention_horizon (horizon) VALUES (@horizon::timestamptz)
ON CONFLICT (only_row) DO UPDATE
    SET horizon = GREATEST(retention_horizon.horizon, excluded.horizon),
        set_at = CASE WHEN excluded.horizon > retention_horizon.horizon
                      THEN now() ELSE retention_horizon.set_at END
RETURNING horizon;

-- name: EventBlocks :one
-- How many blocks workflow_events has: prune deletes block range by block
-- range (a TID range scan each), so that each chunk reads only its own.
SELECT (pg_relation_size('workflow_events') / current_setting('block_size')::bigint)::bigint AS blocks;

-- name: PruneEventBlocks :execrows
-- Deletes the events in [@first_tid, @end_tid) (whole blocks) that occurred
-- before @horizon.
DELETE FROM workflow_events
WHERE ctid >= @first_tid::tid
  AND ctid < @end_tid::tid
  AND occurred_at < @horizon::timestamptz;

-- name: CountEventsBefore :one
SELECT count(*) FROM workflow_events WHERE occurred_at < @horizon::timestamptz;

-- name: CountDeadLettersBefore :one
SELECT count(*) FROM dead_letters WHERE received_at < @horizon::timestamptz;

-- name: PruneDeadLetters :execrows
-- Deletes up to @max_rows dead letters received before @horizon.
DELETE FROM dead_letters
WHERE (topic, partition, "offset") IN (
    SELECT topic, partition, "offset" FROM dead_letters
    WHERE received_at < @horizon::timestamptz
    LIMIT @max_rows::integer);

-- name: PrunedRuns :many
-- Up to @max_runs runs of @run_ids (all when NULL) whose history was
-- pruned in part: an event before the horizon was applied to them.
SELECT workflow_run_id FROM workflow_runs
WHERE first_event_at < @horizon::timestamptz
  AND (sqlc.narg(run_ids)::text[] IS NULL OR workflow_run_id = ANY(sqlc.narg(run_ids)::text[]))
ORDER BY workflow_run_id
LIMIT @max_runs::integer;
