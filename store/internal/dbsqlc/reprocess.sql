-- Reprocessing: offsets show and reset, rebuild of workflow_runs from the
-- stored events. See store/reprocess.go.

-- name: LockOffsetsTable :exec
-- Reset and rebuild take this first. Every batch transaction starts by
-- locking its partition's row (SELECT ... FOR UPDATE, a ROW SHARE table
-- lock) and a claim inserts or updates a row (ROW EXCLUSIVE); EXCLUSIVE
-- conflicts with both, so this waits for the batches in flight to commit
-- and holds every new one until this transaction ends. Plain reads
-- (CheckLease, StoredOffsets) go on.
LOCK TABLE consumer_offsets IN EXCLUSIVE MODE;

-- name: SetLockTimeout :exec
-- How long this transaction waits for a lock before it fails.
SELECT set_config('lock_timeout', @timeout::text, true);

-- name: OffsetsOfGroup :many
SELECT topic, partition, next_offset, lease_epoch, lease_owner, updated_at
FROM consumer_offsets
WHERE group_id = @group_id
ORDER BY topic, partition;

-- name: ResetOffsets :exec
-- Moves the offsets of a group and bumps their lease epoch, so that a
-- worker holding one fails its fence and re-positions from the new offset.
-- A partition with no row yet gets one.
INSERT INTO consumer_offsets AS o (group_id, topic, partition, next_offset)
SELECT @group_id::text, u.topic, u.partition, u.next_offset
FROM (SELECT
    unnest(@topics::text[]) AS topic,
    unnest(@partitions::integer[]) AS partition,
    unnest(@offsets::bigint[]) AS next_offset
) AS u
ORDER BY u.topic, u.partition
ON CONFLICT (group_id, topic, partition) DO UPDATE
SET next_offset = excluded.next_offset, lease_epoch = o.lease_epoch + 1, updated_at = now();

-- The positions a reset removes: for each (topic, partition, from_offset)
-- given, the messages of that partition at or after from_offset.

-- name: CountEventsFrom :many
SELECT e.topic, e.partition, count(*)::bigint AS events
FROM workflow_events AS e
JOIN (SELECT
    unnest(@topics::text[]) AS topic,
    unnest(@partitions::integer[]) AS partition,
    unnest(@from_offsets::bigint[]) AS from_offset
) AS x ON e.topic = x.topic AND e.partition = x.partition AND e."offset" >= x.from_offset
GROUP BY e.topic, e.partition;

-- name: CountDeadLettersFrom :many
SELECT d.topic, d.partition, count(*)::bigint AS dead_letters
FROM dead_letters AS d
JOIN (SELECT
    unnest(@topics::text[]) AS topic,
    unnest(@partitions::integer[]) AS partition,
    unnest(@from_offsets::bigint[]) AS from_offset
) AS x ON d.topic = x.topic AND d.partition = x.partition AND d."offset" >= x.from_offset
GROUP BY d.topic, d.partition;

-- name: RunsOfEventsFrom :many
-- The runs that removing those events touches, in workflow_run_id order.
SELECT DISTINCT e.workflow_run_id
FROM workflow_events AS e
JOIN (SELECT
    unnest(@topics::text[]) AS topic,
    unnest(@partitions::integer[]) AS partition,
    unnest(@from_offsets::bigint[]) AS from_offset
) AS x ON e.topic = x.topic AND e.partition = x.partition AND e."offset" >= x.from_offset
ORDER BY e.workflow_run_id;

-- name: DeleteEventsFrom :execrows
DELETE FROM workflow_events AS e
USING (SELECT
    unnest(@topics::text[]) AS topic,
    unnest(@partitions::integer[]) AS partition,
    unnest(@from_offsets::bigint[]) AS from_offset
) AS x
WHERE e.topic = x.topic AND e.partition = x.partition AND e."offset" >= x.from_offset;

-- name: DeleteDeadLettersFrom :execrows
DELETE FROM dead_letters AS d
USING (SELECT
    unnest(@topics::text[]) AS topic,
    unnest(@partitions::integer[]) AS partition,
    unnest(@from_offsets::bigint[]) AS from_offset
) AS x
WHERE d.topic = x.topic AND d.partition = x.partition AND d."offset" >= x.from_offset;

-- name: EventsOfRuns :many
-- The stored events of some runs, leaving out those at the positions a
-- reset removes (none when the arrays are empty), each partition's in
-- offset order.
SELECT e.workflow_run_id, e.event_id, e.payload, e.topic, e.partition, e."offset"
FROM workflow_events AS e
WHERE e.workflow_run_id = ANY(@run_ids::text[])
  AND NOT EXISTS (
    SELECT 1
    FROM (SELECT
        unnest(@except_topics::text[]) AS topic,
        unnest(@except_partitions::integer[]) AS partition,
        unnest(@except_from_offsets::bigint[]) AS from_offset
    ) AS x
    WHERE e.topic = x.topic AND e.partition = x.partition AND e."offset" >= x.from_offset)
ORDER BY e.topic, e.partition, e."offset";

-- name: RunsByID :many
SELECT *
FROM workflow_runs
WHERE workflow_run_id = ANY(@run_ids::text[])
ORDER BY workflow_run_id;

-- name: RunIDsWithEventsAfter :many
-- The next @max_runs runs that have events, after @after in
-- workflow_run_id order: one chunk of a rebuild. A skip scan (one index
-- probe per run) rather than DISTINCT, whose plan may read the whole
-- table when the statistics are stale, as after a bulk load.
WITH RECURSIVE ids AS (
    (SELECT e.workflow_run_id
     FROM workflow_events AS e
     WHERE e.workflow_run_id > @after::text
     ORDER BY e.workflow_run_id
     LIMIT 1)
    UNION ALL
    SELECT (SELECT e.workflow_run_id
            FROM workflow_events AS e
            WHERE e.workflow_run_id > ids.workflow_run_id
            ORDER BY e.workflow_run_id
            LIMIT 1)
    FROM ids
    WHERE ids.workflow_run_id IS NOT NULL
)
SELECT ids.workflow_run_id::text AS workflow_run_id
FROM ids
WHERE ids.workflow_run_id IS NOT NULL
LIMIT @max_runs;

-- name: RunsInRange :many
-- The stored rows in (@after, @through], workflow_run_id order.
SELECT *
FROM workflow_runs
WHERE workflow_run_id > @after::text AND workflow_run_id <= @through::text
ORDER BY workflow_run_id;

-- name: RunsAfter :many
SELECT *
FROM workflow_runs
WHERE workflow_run_id > @after::text
ORDER BY workflow_run_id
LIMIT @max_runs;

-- name: DeleteRuns :execrows
DELETE FROM workflow_runs
WHERE workflow_run_id = ANY(@run_ids::text[]);

-- name: CountEvents :one
SELECT count(*) FROM workflow_events;
