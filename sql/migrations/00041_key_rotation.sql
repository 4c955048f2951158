-- +goose Up
-- The local keyring's versions, with when this deployment first saw each: the keyring file says nothing of a
-- key's age, and the server cannot add a version itself, so scheduled rotation warns (and exports the age)
-- when the newest version was first seen longer ago than --key-rotation-period. A version in use before this
-- migration counts from the first start after it.
CREATE TABLE keyring_versions (
    version int PRIMARY KEY CHECK (version > 0),
    first_seen_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE keyring_versions;
