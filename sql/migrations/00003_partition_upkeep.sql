-- +goose Up
-- A day's partition is closed once its day is over (plus a margin for transactions still committing); the WAL
-- position at closing tells upkeep when the fanout has read past every row in it, so retention never drops a
-- partition holding rows the fanout has not applied yet.
CREATE TABLE staging.partitions (
    name        text PRIMARY KEY,
    day         date NOT NULL UNIQUE,
    closed_lsn  pg_lsn,
    closed_at   timestamptz
);

-- +goose Down
DROP TABLE staging.partitions;
