-- +goose Up

-- The steps projection (contract 3.1): one row per step of a run's
-- attempt, a pure function of the set of the step's distinct known
-- step.* events, merged batch by batch as projector.CombineSteps says
-- (the MergeSteps query). Columns have the types of workflow_runs'
-- columns of the same name; identifiers that the merge compares use
-- COLLATE "C", so SQL orders them as Go does.
CREATE TABLE workflow_steps (
    workflow_run_id   text COLLATE "C" NOT NULL,
    attempt           integer NOT NULL,
    step_id           text COLLATE "C" NOT NULL,
    workflow_id       text NOT NULL,
    source            text NOT NULL,
    status            text NOT NULL
        CHECK (status IN ('running', 'succeeded', 'failed', 'skipped')),
    started_at        timestamptz,
    finished_at       timestamptz,
    duration_ms       bigint GENERATED ALWAYS AS
        (floor(extract(epoch FROM finished_at - started_at) * 1000)::bigint) STORED,
    error             text,
    event_count       bigint NOT NULL,
    first_event_at    timestamptz NOT NULL,
    last_event_at     timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    -- The event_id of the latest event, which ties last_event_at.
    latest_event_id   text COLLATE "C" NOT NULL,
    -- The event_id of the terminal event that decides status, if any.
    deciding_event_id text COLLATE "C",
    PRIMARY KEY (workflow_run_id, attempt, step_id)
);

-- The dashboards read the steps that finished in a window. Steps are
-- written about when they finish, so finished_at follows the table's
-- physical order and a BRIN index finds a window's pages: measured, a
-- B-tree here cost the batches 7 to 10% of their throughput (four step
-- rows a run, each an index entry), a BRIN next to nothing.
CREATE INDEX workflow_steps_finished_idx ON workflow_steps USING brin (finished_at);

-- Per workflow and step, the steps that succeeded or failed in [since,
-- until): how many, the median, 95th percentile and longest duration (of
-- those with a step.started), and the step's rank by p95 among the steps
-- of its workflow (1: its slowest). A skipped step did not run, so it is
-- left out.
-- +goose StatementBegin
CREATE FUNCTION step_durations_between(since timestamptz, until timestamptz DEFAULT now())
RETURNS TABLE (
    workflow_id      text,
    step_id          text,
    finished         bigint,
    failed           bigint,
    p50_duration_ms  bigint,
    p95_duration_ms  bigint,
    max_duration_ms  bigint,
    rank_in_workflow bigint,
    last_finished_at timestamptz
)
LANGUAGE sql STABLE
AS $$
SELECT d.workflow_id, d.step_id, d.finished, d.failed, d.p50_duration_ms,
       d.p95_duration_ms, d.max_duration_ms,
       rank() OVER (PARTITION BY d.workflow_id ORDER BY d.p95_duration_ms DESC NULLS LAST),
       d.last_finished_at
FROM (
    SELECT s.workflow_id,
           s.step_id::text,
           count(*),
           count(*) FILTER (WHERE s.status = 'failed'),
           round(percentile_cont(0.5) WITHIN GROUP (ORDER BY s.duration_ms))::bigint,
           round(percentile_cont(0.95) WITHIN GROUP (ORDER BY s.duration_ms))::bigint AS p95_duration_ms,
           max(s.duration_ms),
           max(s.finished_at)
    FROM workflow_steps AS s
    WHERE s.finished_at >= since
      AND s.finished_at < until
      AND s.status IN ('succeeded', 'failed')
    GROUP BY s.workflow_id, s.step_id
) AS d (workflow_id, step_id, finished, failed, p50_duration_ms, p95_duration_ms, max_duration_ms, last_finished_at)
$$;
-- +goose StatementEnd

-- The step durations of the last 24 hours (ORDER BY p95_duration_ms DESC
-- for the slowest).
CREATE VIEW step_durations AS
SELECT * FROM step_durations_between(now() - interval '24 hours', now());

-- Per workflow and step with failures among the steps that finished in
-- [since, until): how many failed out of how many finished, the failure
-- rate, the runs in which the step failed and then succeeded in a later
-- attempt of the same run (flaky: a retry fixed it), when it last failed,
-- and the latest error (of the latest failed step that has one) and its
-- run. Most flaky first.
-- +goose StatementBegin
CREATE FUNCTION flaky_steps_between(since timestamptz, until timestamptz DEFAULT now())
RETURNS TABLE (
    workflow_id         text,
    step_id             text,
    failed              bigint,
    finished            bigint,
    failure_rate        numeric,
    flaky_runs          bigint,
    last_failed_at      timestamptz,
    latest_error        text,
    latest_error_run_id text
)
LANGUAGE sql STABLE
AS $$
SELECT f.workflow_id,
       f.step_id::text,
       count(*) FILTER (WHERE f.status = 'failed'),
       count(*),
       round(count(*) FILTER (WHERE f.status = 'failed')::numeric / count(*), 4),
       count(DISTINCT f.workflow_run_id) FILTER (WHERE f.status = 'succeeded' AND f.failed_before),
       max(f.finished_at) FILTER (WHERE f.status = 'failed'),
       (array_agg(f.error ORDER BY f.finished_at DESC, f.workflow_run_id DESC, f.attempt DESC)
           FILTER (WHERE f.status = 'failed' AND f.error IS NOT NULL))[1],
       (array_agg(f.workflow_run_id::text ORDER BY f.finished_at DESC, f.workflow_run_id DESC, f.attempt DESC)
           FILTER (WHERE f.status = 'failed' AND f.error IS NOT NULL))[1]
FROM (
    SELECT s.*,
           -- Whether an earlier attempt of the same run's step failed.
           bool_or(s.status = 'failed') OVER (
               PARTITION BY s.workflow_run_id, s.step_id ORDER BY s.attempt
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS failed_before
    FROM workflow_steps AS s
    WHERE s.finished_at >= since
      AND s.finished_at < until
) AS f
GROUP BY f.workflow_id, f.step_id
HAVING count(*) FILTER (WHERE f.status = 'failed') > 0
ORDER BY 6 DESC, 3 DESC, 1, 2
$$;
-- +goose StatementEnd

-- The flaky and failing steps of the last 24 hours.
CREATE VIEW flaky_steps AS
SELECT * FROM flaky_steps_between(now() - interval '24 hours', now());

-- +goose Down
DROP VIEW flaky_steps;
DROP FUNCTION flaky_steps_between(timestamptz, timestamptz);
DROP VIEW step_durations;
DROP FUNCTION step_durations_between(timestamptz, timestamptz);
DROP TABLE workflow_steps;
