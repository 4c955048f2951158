-- +goose Up
-- Webhook subscriptions (internal/subscriptions): an org's endpoint for the row changes of all its tables or
-- of one integration's, signed with a whsec_ secret (encrypted, bound to the row's opaque id).
CREATE TABLE subscriptions (
    id                         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    opaque_id                  text NOT NULL UNIQUE CHECK (opaque_id ~ '^sub_[a-z0-9]{26,}$'),
    org_id                     bigint NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    -- NULL: every table of the org
    integration_id             bigint REFERENCES service_integrations (id) ON DELETE CASCADE,
    url                        text NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    -- which staging sources notify: webhook by default; backfill, replay, resync by opting in
    sources                    text[] NOT NULL DEFAULT '{webhook}'
        CHECK (sources <@ ARRAY['webhook', 'backfill', 'replay', 'resync'] AND cardinality(sources) > 0),
    secret_enc                 text NOT NULL,
    previous_secret_enc        text,
    previous_secret_expires_at timestamptz,
    -- the first failure of the current streak (NULL after any success)
    failing_since              timestamptz,
    disabled_at                timestamptz,
    disabled_reason            text,
    created_at                 timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscriptions_org_idx ON subscriptions (org_id);

-- One row per message and subscription. message_id is the Standard Webhooks webhook-id: the same for every
-- copy of a notification (relayed twice after a crash, redelivered, recovered).
CREATE TABLE subscription_deliveries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id bigint NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    message_id      text NOT NULL,
    remote_key      text NOT NULL,
    event_type      text NOT NULL,
    payload         jsonb NOT NULL,
    status          text NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    -- a dispatcher holds the delivery until then (a crashed one's claim expires)
    locked_until    timestamptz,
    last_attempt_at timestamptz,
    response_status integer,
    -- the first bytes of the last answer
    response_body   text,
    last_error      text,
    created_at      timestamptz NOT NULL,
    delivered_at    timestamptz,
    UNIQUE (subscription_id, message_id)
);
CREATE INDEX subscription_deliveries_due_idx ON subscription_deliveries (next_attempt_at) WHERE status = 'pending';
-- in order per remote key: a delivery waits while an earlier one for its key is pending
CREATE INDEX subscription_deliveries_key_idx ON subscription_deliveries (subscription_id, remote_key, id) WHERE status = 'pending';
CREATE INDEX subscription_deliveries_sub_idx ON subscription_deliveries (subscription_id, id);
-- the dispatcher walks each endpoint's pending deliveries in id order
CREATE INDEX subscription_deliveries_pending_idx ON subscription_deliveries (subscription_id, id) WHERE status = 'pending';

-- Alerts (internal/alerts): an org's error handlers, a URL (signed like subscriptions) or an email address.
CREATE TABLE alert_handlers (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    opaque_id  text NOT NULL UNIQUE CHECK (opaque_id ~ '^alh_[a-z0-9]{26,}$'),
    org_id     bigint NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    kind       text NOT NULL CHECK (kind IN ('url', 'email')),
    target     text NOT NULL CHECK (length(target) BETWEEN 1 AND 2048),
    secret_enc text,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, target),
    CHECK ((kind = 'url') = (secret_enc IS NOT NULL))
);

-- Every alert raised, once per dedupe key; suppressed ones (over the org's rate) are kept, not sent.
CREATE TABLE alerts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id      bigint NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    kind        text NOT NULL,
    dedupe_key  text NOT NULL,
    subject     text NOT NULL,
    detail      jsonb NOT NULL,
    state       text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'suppressed', 'failed')),
    attempts    integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    last_error  text,
    created_at  timestamptz NOT NULL,
    sent_at     timestamptz,
    UNIQUE (org_id, dedupe_key)
);
CREATE INDEX alerts_pending_idx ON alerts (next_attempt_at) WHERE state = 'pending';
CREATE INDEX alerts_org_created_idx ON alerts (org_id, created_at);

-- How far the alert watchers have read (fanout.failed_changes by id).
CREATE TABLE alert_cursors (
    name    text PRIMARY KEY,
    last_id bigint NOT NULL
);

-- +goose Down
DROP TABLE alert_cursors;
DROP TABLE alerts;
DROP TABLE alert_handlers;
DROP TABLE subscription_deliveries;
DROP TABLE subscriptions;
