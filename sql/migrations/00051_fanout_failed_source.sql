-- +goose Up
-- A failed change keeps its staging row's source and backfill job, so a retry stores it again as what it was.
ALTER TABLE fanout.failed_changes
    ADD COLUMN source          text,
    ADD COLUMN backfill_job_id bigint;

-- +goose Down
ALTER TABLE fanout.failed_changes DROP COLUMN source, DROP COLUMN backfill_job_id;
