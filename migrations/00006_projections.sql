-- +goose Up

-- The projections the database has (contract 7.1): one row per projection,
-- built-in or the user's. A command that removes or re-applies events,
-- and a worker, refuse to run while a projection listed here is not loaded
-- in their process: its table would silently go wrong.
CREATE TABLE projections (
    name          text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    -- builtin, go or sql.
    kind          text NOT NULL,
    -- building: being built from the stored events (the batches apply
    -- the new ones meanwhile); ready: kept by every batch.
    state         text NOT NULL CHECK (state IN ('building', 'ready')),
    set_up_at     timestamptz NOT NULL DEFAULT now(),
    -- When its last build from the stored events (first run, rebuild)
    -- finished, and how many events it applied.
    built_at      timestamptz,
    built_events  bigint NOT NULL DEFAULT 0,
    -- consumer_offsets.events_applied summed over every partition when the
    -- last build began: the batches' events since then are the difference.
    batch_events_at_build bigint NOT NULL DEFAULT 0,
    -- Events applied by resets and dead-letter replays since the last
    -- build.
    other_events  bigint NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Events stored by each partition's batches (so applied to every ready
-- projection), for projection_status.
ALTER TABLE consumer_offsets ADD COLUMN events_applied bigint NOT NULL DEFAULT 0;

-- workflow_runs has been kept by every batch since the first migration;
-- workflow_steps (00005) is new to a database that may hold events, so it
-- is left for the first worker to build from them.
INSERT INTO projections (name, kind, state, built_at, built_events)
SELECT 'workflow_runs', 'builtin', 'ready', now(), count(*) FROM workflow_events;

-- Per projection: its state, when it was set up and last built, and how
-- many events it has applied since (its build's, the batches', resets'
-- and replays').
CREATE VIEW projection_status AS
SELECT p.name, p.kind, p.state, p.set_up_at, p.built_at,
       (p.built_events + p.other_events
         + greatest(coalesce((SELECT sum(o.events_applied) FROM consumer_offsets AS o), 0) - p.batch_events_at_build, 0))::bigint
         AS events_applied,
       p.updated_at
FROM projections AS p;

-- +goose Down
DROP VIEW projection_status;
ALTER TABLE consumer_offsets DROP COLUMN events_applied;
DROP TABLE projections;
