-- +goose Up
-- Every webhook request lands here first, accepted or rejected, before the sender gets an answer.
-- fanout reads accepted rows through the publication and writes them into the org databases.
CREATE SCHEMA staging;

CREATE SEQUENCE staging.webhooks_id_seq AS bigint;

CREATE TABLE staging.webhooks (
    id              bigint NOT NULL DEFAULT nextval('staging.webhooks_id_seq'),
    received_at     timestamptz NOT NULL,
    org_id          bigint NOT NULL,
    integration_id  bigint NOT NULL,
    -- the provider's own id for the delivery, when it sends one (webhook-id, X-GitHub-Delivery, Stripe's evt_...)
    delivery_id     text,
    method          text NOT NULL,
    path            text NOT NULL,
    query           text NOT NULL DEFAULT '',
    content_type    text NOT NULL DEFAULT '',
    -- request headers minus Authorization, Cookie and signature headers
    headers         jsonb NOT NULL,
    body            bytea NOT NULL,
    -- rejected bodies are cut to 4 KiB
    body_truncated  boolean NOT NULL DEFAULT false,
    accepted        boolean NOT NULL,
    rejected_reason text,
    -- a replay re-sends a stored delivery: it points at the original
    replay_of       bigint,
    PRIMARY KEY (received_at, id),
    CHECK (accepted = (rejected_reason IS NULL))
) PARTITION BY RANGE (received_at);
ALTER SEQUENCE staging.webhooks_id_seq OWNED BY staging.webhooks.id;

CREATE INDEX webhooks_integration_received_idx ON staging.webhooks (integration_id, received_at DESC);

-- +goose StatementBegin
-- ensure_partitions creates the daily partitions covering [from_day, from_day + days) that do not exist yet.
CREATE FUNCTION staging.ensure_partitions(from_day date, days integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d       date;
    created integer := 0;
    part    text;
BEGIN
    FOR i IN 0 .. days - 1 LOOP
        d := from_day + i;
        part := 'webhooks_' || to_char(d, 'YYYYMMDD');
        IF to_regclass(format('staging.%I', part)) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE IF NOT EXISTS staging.%I PARTITION OF staging.webhooks FOR VALUES FROM (%L) TO (%L)',
                part, d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC');
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END
$$;
-- +goose StatementEnd

SELECT staging.ensure_partitions((now() AT TIME ZONE 'UTC')::date - 1, 9);

CREATE PUBLICATION webhookdb_staging FOR TABLE staging.webhooks WHERE (accepted)
    WITH (publish = 'insert', publish_via_partition_root = true);

-- +goose Down
DROP PUBLICATION webhookdb_staging;
DROP SCHEMA staging CASCADE;
