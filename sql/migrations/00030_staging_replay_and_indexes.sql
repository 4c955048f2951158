-- +goose Up
-- Replays, retries and resyncs are stored with a fresh received_at, in today's partition, so upkeep cannot
-- drop them before the fanout has read them; original_received_at keeps when the delivery first arrived, which
-- replicators read as its time (Twilio's date_updated is the receive time: an old replayed callback must not
-- overwrite a newer status). NULL on original deliveries.
ALTER TABLE staging.webhooks ADD COLUMN original_received_at timestamptz;

-- Webhook lists and gets of one org use an index instead of scanning every tenant's partitions.
CREATE INDEX webhooks_org_received_idx ON staging.webhooks (org_id, received_at DESC, id DESC);
CREATE INDEX webhooks_org_id_idx ON staging.webhooks (org_id, id);

-- A resync re-applies the accepted deliveries received since a time (after a lost slot, say) by storing them
-- again, page by page, with a checkpoint after each page. While one is pending, upkeep keeps every partition
-- it still has to read.
CREATE TABLE staging.resyncs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    since       timestamptz NOT NULL,
    -- the original deliveries received before this are not part of it (copies made by the resync are newer)
    until       timestamptz NOT NULL DEFAULT now(),
    -- keyset checkpoint: the last original copied
    after_received_at timestamptz,
    after_id    bigint,
    copied      bigint NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    CHECK (since < until)
);

-- +goose Down
DROP TABLE staging.resyncs;
DROP INDEX staging.webhooks_org_id_idx;
DROP INDEX staging.webhooks_org_received_idx;
ALTER TABLE staging.webhooks DROP COLUMN original_received_at;
