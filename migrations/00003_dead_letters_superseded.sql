-- +goose Up

-- Dead letters of a log that started over. A topic deleted and created
-- again numbers its offsets from the start again, so the invalid messages
-- of its new log take positions (topic, partition, offset) that dead
-- letters of the old log hold, and dead_letters keeps one per position.
-- When a worker finds its stored offset past the end of a partition's log
-- and consumes it again from the log's start, the same transaction that
-- records the incident moves the old log's dead letters from there on to
-- this table, as they were, so that neither is lost.
CREATE TABLE dead_letters_superseded (
    -- The row's id in dead_letters.
    id            bigint PRIMARY KEY,
    topic         text NOT NULL,
    partition     integer NOT NULL,
    "offset"      bigint NOT NULL,
    key           bytea,
    value         bytea,
    headers       jsonb NOT NULL,
    reason        text NOT NULL,
    error         text NOT NULL,
    received_at   timestamptz NOT NULL,
    -- The consumer_incidents row that says why.
    incident_id   bigint NOT NULL REFERENCES consumer_incidents (id),
    superseded_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX dead_letters_superseded_position_idx ON dead_letters_superseded (topic, partition, "offset");

-- +goose Down
DROP TABLE dead_letters_superseded;
