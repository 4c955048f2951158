-- +goose Up
-- The application database: who may do what, where each org's data lives, and which integrations exist.
-- Columns ending in _enc hold ciphertext (see internal/secrets); plaintext secrets never reach this database.

CREATE TABLE users (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email        text NOT NULL CHECK (email ~ '^[^@\s]+@[^@\s]+$' AND length(email) <= 320),
    server_admin boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE api_tokens (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text NOT NULL DEFAULT '',
    -- sha256 of the whole token: a token is random enough that a slow hash buys nothing, and lookups stay O(1).
    token_hash   bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    -- the first characters, so a person can tell their tokens apart in a list
    token_hint   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    expires_at   timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_tokens_user_id_idx ON api_tokens (user_id);

CREATE TABLE database_servers (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text NOT NULL UNIQUE CHECK (name ~ '^[a-z][a-z0-9_-]{0,40}$'),
    -- superuser-ish URL webhookdb uses to provision org databases (encrypted)
    admin_url_enc text NOT NULL,
    -- how users reach this server: host and port put into read-only URLs
    public_host   text NOT NULL,
    public_port   integer NOT NULL CHECK (public_port BETWEEN 1 AND 65535),
    sslmode       text NOT NULL DEFAULT 'prefer'
                  CHECK (sslmode IN ('disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full')),
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE organizations (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key                text NOT NULL CHECK (key ~ '^[a-z][a-z0-9_]{0,40}$'),
    name               text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    database_server_id bigint REFERENCES database_servers (id),
    database_name      text,
    -- provisioning is resumable: each step records itself here
    provision_state    text NOT NULL DEFAULT 'pending'
                       CHECK (provision_state IN ('pending', 'provisioning', 'ready', 'deleting', 'deleted')),
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    deleted_at         timestamptz
);
CREATE UNIQUE INDEX organizations_key_live_key ON organizations (key) WHERE deleted_at IS NULL;

CREATE TABLE memberships (
    org_id     bigint NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       text NOT NULL CHECK (role IN ('admin', 'member')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX memberships_user_id_idx ON memberships (user_id);

CREATE TABLE service_integrations (
    id                         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- the unguessable part of the webhook URL
    opaque_id                  text NOT NULL UNIQUE CHECK (opaque_id ~ '^svi_[a-z0-9]{26,}$'),
    org_id                     bigint NOT NULL REFERENCES organizations (id),
    service                    text NOT NULL,
    table_name                 text NOT NULL CHECK (table_name ~ '^[a-z][a-z0-9_]{0,62}$'),
    -- verifier override ({} = the service's default scheme) and replicator settings
    verifier                   jsonb NOT NULL DEFAULT '{}',
    config                     jsonb NOT NULL DEFAULT '{}',
    secret_enc                 text,
    previous_secret_enc        text,
    previous_secret_expires_at timestamptz,
    body_limit_bytes           integer CHECK (body_limit_bytes > 0),
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    deleted_at                 timestamptz
);
CREATE UNIQUE INDEX service_integrations_table_live_key ON service_integrations (org_id, table_name) WHERE deleted_at IS NULL;
-- the ingest cache polls for changes by updated_at
CREATE INDEX service_integrations_updated_at_idx ON service_integrations (updated_at);

-- +goose StatementBegin
CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := clock_timestamp();
    RETURN NEW;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER organizations_touch BEFORE UPDATE ON organizations
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
CREATE TRIGGER service_integrations_touch BEFORE UPDATE ON service_integrations
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- +goose Down
DROP TABLE service_integrations, memberships, organizations, database_servers, api_tokens, users;
DROP FUNCTION touch_updated_at();
