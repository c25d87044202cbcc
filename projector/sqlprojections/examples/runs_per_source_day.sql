-- Runs queued per source and day (UTC): a counter. Each run.queued event
-- adds one (a run queued again for a new attempt counts again), so Apply
-- adds and Forget subtracts what the forgotten runs' stored events added.

-- +projector Setup
CREATE TABLE IF NOT EXISTS runs_per_source_day (
    source text NOT NULL,
    day    date NOT NULL,
    runs   bigint NOT NULL CHECK (runs > 0),
    PRIMARY KEY (source, day)
);

-- +projector Apply
-- Sorted, so that concurrent batches lock the rows in one order.
INSERT INTO runs_per_source_day AS t (source, day, runs)
SELECT source, (occurred_at AT TIME ZONE 'UTC')::date, count(*)
FROM new_events
WHERE event_type = 'run.queued'
GROUP BY 1, 2
ORDER BY 1, 2
ON CONFLICT (source, day) DO UPDATE SET runs = t.runs + excluded.runs;

-- +projector Forget
-- Rows that fall to zero go, rather than break the CHECK.
DELETE FROM runs_per_source_day AS t
USING (SELECT e.source, (e.occurred_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n
       FROM workflow_events e JOIN forgotten_runs USING (workflow_run_id)
       WHERE e.event_type = 'run.queued'
       GROUP BY 1, 2) AS f
WHERE t.source = f.source AND t.day = f.day AND t.runs = f.n;
UPDATE runs_per_source_day AS t SET runs = t.runs - f.n
FROM (SELECT e.source, (e.occurred_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n
      FROM workflow_events e JOIN forgotten_runs USING (workflow_run_id)
      WHERE e.event_type = 'run.queued'
      GROUP BY 1, 2) AS f
WHERE t.source = f.source AND t.day = f.day;
