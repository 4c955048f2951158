-- +goose Up
-- Org databases and their read-only credentials (internal/orgdb, pgroles, vault).

-- Provisioning an org is a sequence of idempotent steps on its database server; each records itself here, so
-- an operator can see where a run stopped and the next run resumes (every step converges, whatever exists).
CREATE TABLE org_provisioning (
    org_id      bigint PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    steps_done  text[] NOT NULL DEFAULT '{}',
    last_error  text,
    started_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Read-only credentials issued for an org (by Vault or directly). At most one is current per org; a
-- superseded one is revoked at revoke_after (at once after roll-credentials, at its expiry after a reissue).
CREATE TABLE org_credentials (
    -- random, so the ciphertext binding (org_credentials/url_enc/<id>) is known before the insert
    id                 text PRIMARY KEY CHECK (id ~ '^crd_[a-z0-9]{26}$'),
    org_id             bigint NOT NULL REFERENCES organizations (id),
    database_server_id bigint NOT NULL REFERENCES database_servers (id),
    mode               text NOT NULL CHECK (mode IN ('vault', 'postgres')),
    username           text NOT NULL,
    -- the whole read-only URL, password included (encrypted)
    url_enc            text NOT NULL,
    -- Vault's lease id, or postgres:<username> for credentials issued directly
    lease_id           text NOT NULL,
    issued_at          timestamptz NOT NULL DEFAULT now(),
    expires_at         timestamptz NOT NULL,
    max_expires_at     timestamptz NOT NULL,
    superseded_at      timestamptz,
    revoke_after       timestamptz,
    revoked_at         timestamptz,
    last_error         text,
    CHECK (revoke_after IS NULL OR superseded_at IS NOT NULL)
);
CREATE UNIQUE INDEX org_credentials_current_key ON org_credentials (org_id)
    WHERE superseded_at IS NULL AND revoked_at IS NULL;
-- the maintenance pass looks for credentials to revoke or renew
CREATE INDEX org_credentials_live_idx ON org_credentials (expires_at) WHERE revoked_at IS NULL;

-- The fanout's login per server (webhookdb_fanout) when webhookdb issues it itself (--credentials=postgres);
-- with Vault a static role holds it and this table stays empty. Rotated on a period by the maintenance pass.
CREATE TABLE server_writer_credentials (
    server_id    bigint PRIMARY KEY REFERENCES database_servers (id) ON DELETE CASCADE,
    username     text NOT NULL,
    password_enc text NOT NULL,
    rotated_at   timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE server_writer_credentials, org_credentials, org_provisioning;
