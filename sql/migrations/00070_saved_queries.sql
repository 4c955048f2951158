-- +goose Up
-- Saved queries (internal/savedquery): one read-only statement per row, run on the org's own service login.
-- A public one has a token of its own, never an API token; only the token's SHA-256 is stored, so the URL is
-- shown once (at publish or roll) and a leaked database gives no working URL.
CREATE TABLE saved_queries (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id            bigint NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name              text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    sql               text NOT NULL CHECK (octet_length(sql) BETWEEN 1 AND 65536),
    -- who saved it (no foreign key: the query outlives its author's account)
    created_by        bigint,
    public_token_hash bytea UNIQUE CHECK (length(public_token_hash) = 32),
    -- the token's first characters, so admins can tell which URL is current
    public_token_hint text,
    published_at      timestamptz,
    -- the last execution (a member's run or a public fetch that missed the cache) and why it failed, if it did
    last_run_at       timestamptz,
    last_error        text CHECK (octet_length(last_error) <= 2048),
    created_at        timestamptz NOT NULL DEFAULT now(),
    CHECK ((public_token_hash IS NULL) = (public_token_hint IS NULL) AND (public_token_hash IS NULL) = (published_at IS NULL))
);
CREATE UNIQUE INDEX saved_queries_org_name_key ON saved_queries (org_id, name);

-- +goose Down
DROP TABLE saved_queries;
