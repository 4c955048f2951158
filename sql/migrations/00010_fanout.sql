-- +goose Up
-- The fanout's durable state in the application database. Parked changes are staging rows an org database
-- could not take in time (unreachable, too slow, or its replicator failed); they are retried in order, and
-- while an org has any, its new changes queue here behind them. Failed changes can never be applied
-- (malformed payloads); they are kept for the org to see and never block anything.
CREATE SCHEMA fanout;

CREATE TABLE fanout.parked_changes (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id          bigint NOT NULL,
    integration_id  bigint NOT NULL,
    -- the staging row (staging.webhooks primary key): partition upkeep keeps partitions that parked rows point into
    received_at     timestamptz NOT NULL,
    webhook_id      bigint NOT NULL,
    -- stream position: commit LSN of the staging transaction and the row's place in it; drains go in this order
    commit_lsn      pg_lsn NOT NULL,
    seq             integer NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text NOT NULL,
    parked_at       timestamptz NOT NULL DEFAULT now(),
    -- a transaction replayed after a crash parks its rows again: they must not be parked twice
    UNIQUE (webhook_id, received_at)
);
CREATE INDEX parked_changes_org_position_idx ON fanout.parked_changes (org_id, commit_lsn, seq);

CREATE TABLE fanout.failed_changes (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id         bigint NOT NULL,
    integration_id bigint NOT NULL,
    received_at    timestamptz NOT NULL,
    webhook_id     bigint NOT NULL,
    commit_lsn     pg_lsn NOT NULL,
    seq            integer NOT NULL,
    error          text NOT NULL,
    failed_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (webhook_id, received_at)
);
CREATE INDEX failed_changes_org_failed_at_idx ON fanout.failed_changes (org_id, failed_at DESC);
CREATE INDEX failed_changes_integration_failed_at_idx ON fanout.failed_changes (integration_id, failed_at DESC);

-- +goose Down
DROP SCHEMA fanout CASCADE;
