-- Per event type and hour (UTC): events, and distinct runs. The events
-- are a count: Apply adds, Forget subtracts. The distinct runs are not:
-- whether a batch's run is new to an hour depends on the runs seen
-- before. So the (type, hour, run) keys are kept in a table of their own,
-- whose unique key decides, even between concurrent batches, which batch
-- brings a run to an hour first; and Forget removes the forgotten runs'
-- keys and recomputes the hours they touched from the keys that remain,
-- rather than subtract.

-- +projector Setup
CREATE TABLE IF NOT EXISTS events_per_type_hour (
    event_type text NOT NULL,
    hour       timestamptz NOT NULL,
    events     bigint NOT NULL,
    runs       bigint NOT NULL,
    PRIMARY KEY (event_type, hour)
);
CREATE TABLE IF NOT EXISTS events_per_type_hour_runs (
    event_type      text NOT NULL,
    hour            timestamptz NOT NULL,
    workflow_run_id text COLLATE "C" NOT NULL,
    PRIMARY KEY (event_type, hour, workflow_run_id)
);
CREATE INDEX IF NOT EXISTS events_per_type_hour_runs_run_idx ON events_per_type_hour_runs (workflow_run_id);

-- +projector Apply
-- The keys that are new count as new runs of their hour.
WITH ins AS (
    INSERT INTO events_per_type_hour_runs (event_type, hour, workflow_run_id)
    SELECT DISTINCT event_type, date_trunc('hour', occurred_at, 'UTC'), workflow_run_id
    FROM new_events
    ORDER BY 1, 2, 3
    ON CONFLICT DO NOTHING
    RETURNING event_type, hour)
INSERT INTO events_per_type_hour AS t (event_type, hour, events, runs)
SELECT event_type, hour, 0, count(*) FROM ins GROUP BY 1, 2 ORDER BY 1, 2
ON CONFLICT (event_type, hour) DO UPDATE SET runs = t.runs + excluded.runs;
-- The events add up.
INSERT INTO events_per_type_hour AS t (event_type, hour, events, runs)
SELECT event_type, date_trunc('hour', occurred_at, 'UTC'), count(*), 0
FROM new_events GROUP BY 1, 2 ORDER BY 1, 2
ON CONFLICT (event_type, hour) DO UPDATE SET events = t.events + excluded.events;

-- +projector Forget
-- The events subtract: the forgotten runs' events are still stored.
UPDATE events_per_type_hour AS t SET events = t.events - f.n
FROM (SELECT e.event_type, date_trunc('hour', e.occurred_at, 'UTC') AS hour, count(*) AS n
      FROM workflow_events e JOIN forgotten_runs USING (workflow_run_id) GROUP BY 1, 2) AS f
WHERE t.event_type = f.event_type AND t.hour = f.hour;
-- The runs are recomputed, for the hours the forgotten runs touched, from
-- the keys left.
DELETE FROM events_per_type_hour_runs AS r USING forgotten_runs f WHERE r.workflow_run_id = f.workflow_run_id;
UPDATE events_per_type_hour AS t SET runs = c.runs
FROM (SELECT DISTINCT e.event_type, date_trunc('hour', e.occurred_at, 'UTC') AS hour
      FROM workflow_events e JOIN forgotten_runs USING (workflow_run_id)) AS k
CROSS JOIN LATERAL (
      SELECT count(*) AS runs FROM events_per_type_hour_runs r
      WHERE r.event_type = k.event_type AND r.hour = k.hour) AS c
WHERE t.event_type = k.event_type AND t.hour = k.hour;
DELETE FROM events_per_type_hour WHERE runs = 0;
