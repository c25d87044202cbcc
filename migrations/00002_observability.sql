-- +goose Up

-- Observability in plain SQL: the lag of every partition, and the views
-- and functions behind the dashboards (README, "Dashboards"). Hours are
-- UTC hours: date_bin is immutable, so the hourly buckets can be indexed
-- and a filter on them (Grafana's $__timeFilter(hour)) reads only the
-- hours it asks for.

-- Each claimed partition's high watermark, and when the partition last
-- committed a batch, as the worker holding the lease last stored them (at
-- most every few seconds, outside the batch transactions; never used to
-- position).
ALTER TABLE consumer_offsets
    ADD COLUMN high_watermark bigint,
    ADD COLUMN high_watermark_at timestamptz,
    ADD COLUMN last_applied_at timestamptz;

-- How far behind each partition is. lag counts the messages between
-- next_offset and the high watermark stored at high_watermark_at (NULL until
-- a worker has stored one; never below next_offset, which batches may have
-- moved past it since); a high_watermark_at that grows old means no worker
-- holds the partition, and its lag is stale. last_applied_at is when the
-- partition last committed a batch (its events and dead letters), as of
-- high_watermark_at.
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

-- Runs per status per hour: the hour of a run's first event.
CREATE INDEX workflow_runs_hour_idx ON workflow_runs
    (date_bin('1 hour', first_event_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'), status);

CREATE VIEW runs_per_hour AS
SELECT date_bin('1 hour', first_event_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS hour,
       status,
       count(*) AS runs
FROM workflow_runs
GROUP BY 1, 2;

-- Per workflow, the runs that finished in [since, until): how many, how
-- they ended, the share that succeeded, and the median and 95th percentile
-- duration (of those with a run.started). The redundant condition on
-- last_event_at (never before finished_at) lets workflow_runs_status_idx
-- find the window.
-- +goose StatementBegin
CREATE FUNCTION workflow_stats_between(since timestamptz, until timestamptz DEFAULT now())
RETURNS TABLE (
    workflow_id      text,
    finished         bigint,
    succeeded        bigint,
    failed           bigint,
    cancelled        bigint,
    success_rate     numeric,
    p50_duration_ms  bigint,
    p95_duration_ms  bigint,
    last_finished_at timestamptz
)
LANGUAGE sql STABLE
AS $$
SELECT r.workflow_id,
       count(*),
       count(*) FILTER (WHERE r.status = 'succeeded'),
       count(*) FILTER (WHERE r.status = 'failed'),
       count(*) FILTER (WHERE r.status = 'cancelled'),
       round(count(*) FILTER (WHERE r.status = 'succeeded')::numeric / count(*), 4),
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY r.duration_ms))::bigint,
       round(percentile_cont(0.95) WITHIN GROUP (ORDER BY r.duration_ms))::bigint,
       max(r.finished_at)
FROM workflow_runs AS r
WHERE r.status IN ('succeeded', 'failed', 'cancelled')
  AND r.last_event_at >= since
  AND r.finished_at >= since
  AND r.finished_at < until
GROUP BY r.workflow_id
$$;
-- +goose StatementEnd

CREATE VIEW workflow_stats AS
SELECT * FROM workflow_stats_between(now() - interval '24 hours', now());

-- Runs running now, and for how long: since their run.started (or their
-- first event when that has not arrived), and since their latest event.
CREATE VIEW running_runs AS
SELECT r.workflow_run_id,
       r.workflow_id,
       r.source,
       r.attempt,
       COALESCE(r.started_at, r.first_event_at) AS running_since,
       floor(extract(epoch FROM now() - COALESCE(r.started_at, r.first_event_at)))::bigint AS running_seconds,
       r.steps_succeeded,
       r.steps_failed,
       r.steps_skipped,
       r.last_event_at,
       floor(extract(epoch FROM now() - r.last_event_at))::bigint AS seconds_since_last_event
FROM workflow_runs AS r
WHERE r.status = 'running';

-- Per workflow with failed runs in [since, until): how many failed, out of
-- how many finished, how many different errors, when it last failed, and
-- the latest error (of the latest failed run that has one) and its run.
-- +goose StatementBegin
CREATE FUNCTION failing_workflows_between(since timestamptz, until timestamptz DEFAULT now())
RETURNS TABLE (
    workflow_id          text,
    failed               bigint,
    finished             bigint,
    failure_rate         numeric,
    distinct_errors      bigint,
    last_failed_at       timestamptz,
    latest_error         text,
    latest_error_run_id  text
)
LANGUAGE sql STABLE
AS $$
SELECT r.workflow_id,
       count(*) FILTER (WHERE r.status = 'failed'),
       count(*),
       round(count(*) FILTER (WHERE r.status = 'failed')::numeric / count(*), 4),
       count(DISTINCT r.error) FILTER (WHERE r.status = 'failed'),
       max(r.finished_at) FILTER (WHERE r.status = 'failed'),
       (array_agg(r.error ORDER BY r.finished_at DESC, r.workflow_run_id DESC)
           FILTER (WHERE r.status = 'failed' AND r.error IS NOT NULL))[1],
       (array_agg(r.workflow_run_id ORDER BY r.finished_at DESC, r.workflow_run_id DESC)
           FILTER (WHERE r.status = 'failed' AND r.error IS NOT NULL))[1]
FROM workflow_runs AS r
WHERE r.status IN ('succeeded', 'failed', 'cancelled')
  AND r.last_event_at >= since
  AND r.finished_at >= since
  AND r.finished_at < until
GROUP BY r.workflow_id
HAVING count(*) FILTER (WHERE r.status = 'failed') > 0
ORDER BY 2 DESC, 1
$$;
-- +goose StatementEnd

CREATE VIEW failing_workflows AS
SELECT * FROM failing_workflows_between(now() - interval '24 hours', now());

-- Dead letters per reason per hour they were stored.
CREATE INDEX dead_letters_hour_idx ON dead_letters
    (date_bin('1 hour', received_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'), reason);

CREATE VIEW dead_letters_per_hour AS
SELECT date_bin('1 hour', received_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS hour,
       reason,
       count(*) AS dead_letters
FROM dead_letters
GROUP BY 1, 2;

-- +goose Down
DROP VIEW dead_letters_per_hour;
DROP INDEX dead_letters_hour_idx;
DROP VIEW failing_workflows;
DROP FUNCTION failing_workflows_between(timestamptz, timestamptz);
DROP VIEW running_runs;
DROP VIEW workflow_stats;
DROP FUNCTION workflow_stats_between(timestamptz, timestamptz);
DROP VIEW runs_per_hour;
DROP INDEX workflow_runs_hour_idx;
DROP VIEW consumer_lag;
ALTER TABLE consumer_offsets
    DROP COLUMN last_applied_at,
    DROP COLUMN high_watermark_at,
    DROP COLUMN high_watermark;
