-- +goose Up

-- Retention (contract 6.1): `projector prune` deletes the events whose
-- occurred_at is before a horizon, and the dead letters received before
-- it, and records the horizon here (one row once anything was pruned).
-- The horizon only moves forward. A batch reads it under a shared
-- advisory lock that prune takes exclusively to move it, so that a batch
-- never applies, by an older horizon, an event whose duplicate a prune
-- is deleting: an event before the horizon whose event_id is not stored
-- may be such a duplicate, and becomes a before_horizon dead letter.
CREATE TABLE retention_horizon (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    -- Events that occurred before it were pruned (or are being pruned).
    horizon  timestamptz NOT NULL,
    -- When a prune last moved it.
    set_at   timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE retention_horizon;
