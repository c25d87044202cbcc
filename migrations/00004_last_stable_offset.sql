-- +goose Up

-- Transactional producers: an open transaction holds a partition's last
-- stable offset (LSO), the first offset of its oldest open transaction
-- (the high watermark when none is open). A read-committed consumer reads
-- nothing at or past it until the transaction ends, so lag is measured
-- against it: a partition whose every readable message is applied has lag
-- 0, even while a transaction is open. Stored by the worker that holds the
-- partition, beside the high watermark (NULL until one has stored it, or
-- when it could not look it up: lag then counts to the high watermark).
ALTER TABLE consumer_offsets ADD COLUMN last_stable_offset bigint;

-- consumer_lag as in 00002, lag counted to the last stable offset, and the
-- last stable offset itself as a new last column (never below next_offset,
-- which batches may have moved past it since; never above high_watermark).
CREATE OR REPLACE VIEW consumer_lag AS
SELECT o.group_id,
       o.topic,
       o.partition,
       o.next_offset,
       CASE WHEN o.high_watermark IS NOT NULL THEN GREATEST(o.high_watermark, o.next_offset) END AS high_watermark,
       CASE WHEN o.high_watermark IS NOT NULL
            THEN GREATEST(LEAST(COALESCE(o.last_stable_offset, o.high_watermark), o.high_watermark) - o.next_offset, 0) END AS lag,
       o.last_applied_at,
       floor(extract(epoch FROM now() - o.last_applied_at))::bigint AS seconds_since_last_applied,
       o.high_watermark_at,
       o.updated_at,
       o.lease_owner,
       CASE WHEN o.high_watermark IS NOT NULL
            THEN GREATEST(LEAST(COALESCE(o.last_stable_offset, o.high_watermark), o.high_watermark), o.next_offset) END AS last_stable_offset
FROM consumer_offsets AS o;

-- +goose Down
DROP VIEW consumer_lag;
CREATE VIEW consumer_lag AS
SELECT o.group_id,
       o.topic,
       o.partition,
       o.next_offset,
       CASE WHEN o.high_watermark IS NOT NULL THEN GREATEST(o.high_watermark, o.next_offset) END AS high_watermark,
       CASE WHEN o.high_watermark IS NOT NULL THEN GREATEST(o.high_watermark - o.next_offset, 0) END AS lag,
       o.last_applied_at,
       floor(extract(epoch FROM now() - o.last_applied_at))::bigint AS seconds_since_last_applied,
       o.high_watermark_at,
       o.updated_at,
       o.lease_owner
FROM consumer_offsets AS o;
ALTER TABLE consumer_offsets DROP COLUMN last_stable_offset;
