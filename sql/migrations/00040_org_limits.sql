-- +goose Up
-- Limits the maintenance pass enforces on an org's read-only logins from outside (a login may SET its own
-- timeouts, even ALTER ROLE CURRENT_USER SET them): a query running longer than query_limit, or a session idle
-- in a transaction longer than idle_in_transaction_limit, is terminated. 30 minutes is long enough for pg_dump
-- of a typical org database (pg_dump turns its own session timeouts off).
ALTER TABLE organizations
    ADD COLUMN query_limit               interval NOT NULL DEFAULT '30 minutes' CHECK (query_limit >= '1 second'),
    ADD COLUMN idle_in_transaction_limit interval NOT NULL DEFAULT '10 minutes' CHECK (idle_in_transaction_limit >= '1 second');

-- +goose Down
ALTER TABLE organizations DROP COLUMN query_limit, DROP COLUMN idle_in_transaction_limit;
