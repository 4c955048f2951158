-- +goose Up
-- Backfill (internal/backfill): an integration's credentials for its vendor's API, and the jobs that page
-- through that API into staging.

-- One row per integration that has credentials. key_enc and secret_enc are ciphertexts bound to the row
-- (secrets.Binding{Table: backfill_credentials, Column, Row: integration_id}); only fingerprint is ever shown.
CREATE TABLE backfill_credentials (
    integration_id bigint PRIMARY KEY REFERENCES service_integrations (id) ON DELETE CASCADE,
    key_enc        text        NOT NULL,
    secret_enc     text,
    fingerprint    text        NOT NULL,
    -- an API base URL other than the vendor's own hosts: set by a server admin (or dev) only, never an org member
    base_url       text,
    -- the vendor client's options: GitHub's repositories, Intercom's region, Shopify's shop and API version
    options        jsonb       NOT NULL DEFAULT '{}',
    -- scheduled incremental backfills: every this long; NULL for none
    every          interval CHECK (every IS NULL OR every >= interval '1 minute'),
    next_run_at    timestamptz,
    -- where the next incremental job starts: the start of the last job that finished (set only then)
    high_water     timestamptz,
    verified_at    timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE backfill_jobs (
    id             bigserial PRIMARY KEY,
    org_id         bigint      NOT NULL,
    integration_id bigint      NOT NULL REFERENCES service_integrations (id) ON DELETE CASCADE,
    kind           text        NOT NULL CHECK (kind IN ('full', 'incremental')),
    state          text        NOT NULL DEFAULT 'queued'
        CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'canceled')),
    -- incremental: the high-water mark it lists changes from
    since          timestamptz,
    -- the vendor's cursor of the next page, checkpointed with each page's staging rows in one transaction
    cursor         text        NOT NULL DEFAULT '',
    pages_done     bigint      NOT NULL DEFAULT 0,
    items_done     bigint      NOT NULL DEFAULT 0,
    requested_by   text        NOT NULL DEFAULT 'user' CHECK (requested_by IN ('user', 'schedule')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    started_at     timestamptz,
    finished_at    timestamptz,
    -- when a worker last took it up: workers serve the org (then the job) served longest ago first
    last_ran_at    timestamptz,
    -- not before this (a vendor that kept failing transiently)
    run_after      timestamptz,
    transient_failures integer NOT NULL DEFAULT 0,
    last_error     text,
    -- the vendor's HTTP status behind last_error, when there was one
    error_status   integer
);

-- One job at a time per integration.
CREATE UNIQUE INDEX backfill_jobs_one_active ON backfill_jobs (integration_id) WHERE state IN ('queued', 'running');
CREATE INDEX backfill_jobs_org ON backfill_jobs (org_id, id DESC);

-- +goose Down
DROP TABLE backfill_jobs;
DROP TABLE backfill_credentials;
