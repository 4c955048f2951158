-- +goose Up
-- Where a staged row came from: a delivery (webhook), a page of a vendor's API (backfill), or a copy made by a
-- replay or a resync. The fanout carries it to what it applies, so subscribers can choose the sources they hear
-- about and deliveries lists can leave backfill pages out. A retried failed change keeps its original's source.
ALTER TABLE staging.webhooks
    ADD COLUMN source text NOT NULL DEFAULT 'webhook'
        CONSTRAINT webhooks_source_check CHECK (source IN ('webhook', 'backfill', 'replay', 'resync')),
    -- the backfill job whose page stored the row (no foreign key: staging is partitioned and jobs may be purged)
    ADD COLUMN backfill_job_id bigint;

-- +goose Down
ALTER TABLE staging.webhooks DROP COLUMN backfill_job_id, DROP COLUMN source;
