-- name: ListProjections :many
SELECT name, kind, state, built_at
FROM projections
ORDER BY name;

-- name: UnknownProjections :many
-- The projections the database has that are not among @loaded.
SELECT name
FROM projections
WHERE NOT (name = ANY(@loaded::text[]))
ORDER BY name;

-- name: StartBuild :exec
-- Registers a projection, or restarts its build: its state is building
-- until FinishBuild.
INSERT INTO projections AS p (name, kind, state, batch_events_at_build)
VALUES (@name, @kind, 'building', @batch_events)
ON CONFLICT (name) DO UPDATE
SET state = 'building', kind = excluded.kind, batch_events_at_build = excluded.batch_events_at_build,
    other_events = 0, updated_at = now();

-- name: FinishBuild :exec
-- A projection's build from the stored events (first run or rebuild) is
-- done: it applied @events events, and the batches' since
-- @batch_events.
UPDATE projections
SET state = 'ready', built_at = now(), built_events = @events, batch_events_at_build = @batch_events,
    other_events = 0, updated_at = now()
WHERE name = @name;

-- name: BatchEvents :one
-- Events applied by every partition's batches so far.
SELECT coalesce(sum(events_applied), 0)::bigint
FROM consumer_offsets;

-- name: AddOtherEvents :exec
-- Counts events that a reset or a replay applied to @names.
UPDATE projections
SET other_events = other_events + @events::bigint, updated_at = now()
WHERE name = ANY(@names::text[]);

-- name: DropProjection :execrows
DELETE FROM projections
WHERE name = @name;

-- name: ProjectionStatus :many
SELECT name, kind, state, set_up_at, built_at, events_applied, updated_at
FROM projection_status
ORDER BY name;

-- name: BuildingProjections :many
SELECT name
FROM projections
WHERE state = 'building'
ORDER BY name;
