-- +goose Up
-- fanout.failed_changes is read by id, and a lower id can commit after a higher one was read: the ids
-- skipped are kept, with the snapshot horizon past which nothing can fill them (fanout.FailedCursor).
ALTER TABLE alert_cursors ADD COLUMN holes jsonb NOT NULL DEFAULT '[]';

-- Which handlers an alert reached: a retry goes only to those it did not.
CREATE TABLE alert_sends (
    alert_id   bigint NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    handler_id bigint NOT NULL REFERENCES alert_handlers (id) ON DELETE CASCADE,
    sent_at    timestamptz NOT NULL,
    PRIMARY KEY (alert_id, handler_id)
);

-- +goose Down
DROP TABLE alert_sends;
ALTER TABLE alert_cursors DROP COLUMN holes;
