-- Observability: the high watermarks behind the consumer_lag view (see
-- migrations/00002_observability.sql).

-- name: RecordHighWatermark :execrows
-- Stores a claimed partition's high watermark and last stable offset
-- (NULL: unknown) beside its offset, and when it last committed a batch
-- (@applied_ago_ms before now, on the server's clock; NULL: keep), outside
-- any batch transaction, only while the lease is the caller's. It changes
-- neither next_offset nor lease_epoch, so no fence notices it.
UPDATE consumer_offsets
SET high_watermark = @high_watermark::bigint,
    last_stable_offset = sqlc.narg(last_stable_offset)::bigint,
    high_watermark_at = now(),
    last_applied_at = GREATEST(last_applied_at, now() - sqlc.narg(applied_ago_ms)::bigint * interval '1 millisecond')
WHERE group_id = @group_id AND topic = @topic AND partition = @partition
  AND lease_epoch = @lease_epoch;

-- name: IndexMemory :one
-- The bytes of the indexes of the tables every batch writes, and of
-- shared_buffers. Once the first outgrow the second, batches read index
-- pages from outside PostgreSQL's cache and throughput falls as the
-- history grows (README, "PostgreSQL server settings").
SELECT
    (SELECT coalesce(sum(pg_indexes_size(c.oid)), 0)
     FROM pg_catalog.pg_class AS c
     WHERE c.oid IN ('workflow_events'::regclass, 'workflow_runs'::regclass, 'workflow_steps'::regclass))::bigint AS indexes,
    (SELECT s.setting::bigint * pg_size_bytes(s.unit)
     FROM pg_catalog.pg_settings AS s
     WHERE s.name = 'shared_buffers')::bigint AS shared_buffers;
