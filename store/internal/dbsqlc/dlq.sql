-- Dead letters: list, show, replay. See store/dlq.go.

-- name: ListDeadLetters :many
-- Dead letters after a position, in (topic, partition, offset) order,
-- optionally of one reason only (@reason '' means every reason).
SELECT *
FROM dead_letters
WHERE (topic, partition, "offset") > (@after_topic::text, @after_partition::integer, @after_offset::bigint)
  AND (@reason::text = '' OR reason = @reason::text)
ORDER BY topic, partition, "offset"
LIMIT @max_rows;

-- name: CountDeadLetters :one
SELECT count(*)
FROM dead_letters
WHERE @reason::text = '' OR reason = @reason::text;

-- name: GetDeadLetter :one
SELECT *
FROM dead_letters
WHERE topic = @topic AND partition = @partition AND "offset" = @offset_at;

-- name: LockPartitionOffsets :many
-- A replay writes effects of a partition's messages, so it holds the
-- partition's offset rows of every group, as a batch does: it serializes
-- with batches of that partition and with offset resets.
SELECT group_id
FROM consumer_offsets
WHERE topic = @topic AND partition = @partition
ORDER BY group_id
FOR UPDATE;

-- name: LockDeadLetters :many
-- The dead letters still there among @ids, locked; one replayed or removed
-- meanwhile is missing from the result.
SELECT *
FROM dead_letters
WHERE id = ANY(@ids::bigint[])
ORDER BY id
FOR UPDATE;

-- name: DeleteDeadLettersByID :execrows
DELETE FROM dead_letters
WHERE id = ANY(@ids::bigint[]);

-- name: UpdateDeadLetters :exec
-- Records what today's validation says of dead letters that stay.
UPDATE dead_letters AS d
SET reason = u.reason, error = u.error
FROM (SELECT
    unnest(@ids::bigint[]) AS id,
    unnest(@reasons::text[]) AS reason,
    unnest(@errors::text[]) AS error
) AS u
WHERE d.id = u.id;

-- name: StoredEventIDs :many
-- Which of @event_ids are stored.
SELECT event_id
FROM workflow_events
WHERE event_id = ANY(@event_ids::text[]);
