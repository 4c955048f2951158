-- +goose Up
-- A failed change keeps its own copy of the payload, so it never holds back retention (partition upkeep only
-- asks about parked changes) and `errors retry` still works after its staging partition is gone: the copy is
-- stored again into staging. Rows recorded before this migration have no copy (body IS NULL) and are retried
-- from staging as before.
ALTER TABLE fanout.failed_changes
    ADD COLUMN delivery_id          text,
    ADD COLUMN content_type         text,
    ADD COLUMN headers              jsonb,
    ADD COLUMN body                 bytea,
    -- when the delivery first arrived (the staging row's original_received_at, or its received_at for an original)
    ADD COLUMN original_received_at timestamptz;

-- +goose Down
ALTER TABLE fanout.failed_changes
    DROP COLUMN delivery_id,
    DROP COLUMN content_type,
    DROP COLUMN headers,
    DROP COLUMN body,
    DROP COLUMN original_received_at;
