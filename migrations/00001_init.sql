-- +goose Up

-- Identifiers that the projection compares ("latest" ties are broken by
-- event_id bytewise) use COLLATE "C", so SQL orders them as Go does.

CREATE TABLE workflow_events (
    event_id        text COLLATE "C" PRIMARY KEY,
    workflow_run_id text COLLATE "C" NOT NULL,
    workflow_id     text NOT NULL,
    event_type      text NOT NULL,
    source          text NOT NULL,
    occurred_at     timestamptz NOT NULL,
    attempt         integer NOT NULL,
    step_id         text,
    topic           text NOT NULL,
    partition       integer NOT NULL,
    "offset"        bigint NOT NULL,
    payload         jsonb NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX workflow_events_run_idx ON workflow_events (workflow_run_id);
-- Offsets reset removes the effects of every message at or after an offset.
-- Rows arrive roughly in offset order, so a BRIN index finds them at a
-- fraction of a B-tree's cost on every insert.
CREATE INDEX workflow_events_offset_brin ON workflow_events USING brin ("offset");

CREATE TABLE workflow_runs (
    workflow_run_id   text COLLATE "C" PRIMARY KEY,
    workflow_id       text NOT NULL,
    source            text NOT NULL,
    attempt           integer NOT NULL,
    status            text NOT NULL
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    queued_at         timestamptz,
    started_at        timestamptz,
    finished_at       timestamptz,
    duration_ms       bigint GENERATED ALWAYS AS
        (floor(extract(epoch FROM finished_at - started_at) * 1000)::bigint) STORED,
    error             text,
    steps_succeeded   bigint NOT NULL,
    steps_failed      bigint NOT NULL,
    steps_skipped     bigint NOT NULL,
    event_count       bigint NOT NULL,
    first_event_at    timestamptz NOT NULL,
    last_event_at     timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    -- The event_id of the latest event, which ties last_event_at.
    latest_event_id   text COLLATE "C" NOT NULL,
    -- The event_id of the terminal event that decides status, if any.
    deciding_event_id text COLLATE "C"
);

CREATE INDEX workflow_runs_workflow_idx ON workflow_runs (workflow_id, first_event_at);
CREATE INDEX workflow_runs_status_idx ON workflow_runs (status, last_event_at);

CREATE TABLE dead_letters (
    id          bigserial PRIMARY KEY,
    topic       text NOT NULL,
    partition   integer NOT NULL,
    "offset"    bigint NOT NULL,
    key         bytea,
    value       bytea,
    headers     jsonb NOT NULL DEFAULT '[]',
    reason      text NOT NULL,
    error       text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (topic, partition, "offset")
);

CREATE INDEX dead_letters_reason_idx ON dead_letters (reason, received_at);

CREATE TABLE consumer_offsets (
    group_id    text NOT NULL,
    topic       text NOT NULL,
    partition   integer NOT NULL,
    -- The offset of the next message to apply.
    next_offset bigint NOT NULL CHECK (next_offset >= 0),
    -- Bumped each time a consumer session claims the partition; a batch
    -- commits only while the epoch it claimed is still current (the fence).
    lease_epoch bigint NOT NULL DEFAULT 0,
    -- Which worker holds the lease (informational).
    lease_owner text NOT NULL DEFAULT '',
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);

-- Things an operator must see: a stored offset that the broker no longer
-- has (retention deleted it, or the topic was recreated).
CREATE TABLE consumer_incidents (
    id              bigserial PRIMARY KEY,
    group_id        text NOT NULL,
    topic           text NOT NULL,
    partition       integer NOT NULL,
    kind            text NOT NULL,
    expected_offset bigint NOT NULL,
    actual_offset   bigint NOT NULL,
    detail          text NOT NULL,
    occurred_at     timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE consumer_incidents;
DROP TABLE consumer_offsets;
DROP TABLE dead_letters;
DROP TABLE workflow_runs;
DROP TABLE workflow_events;
