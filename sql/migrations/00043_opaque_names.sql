-- +goose Up
-- Shared database servers: names that carry no org key, and read-only URLs whose TLS cannot be downgraded.

-- Every login on a server can read pg_database, pg_roles and pg_stat_activity, so an org's database, roles and
-- logins are named from an opaque random base (pgroles.NewNameBase), never from its key. NULL: an org
-- provisioned before this migration, still named from its key until `webhookdb admin rename-org-databases`
-- moves it; renaming_to is the base such a move is taking it to (set first, so a crash resumes to the same
-- names).
ALTER TABLE organizations
    ADD COLUMN name_base   text CHECK (name_base ~ '^[a-z][a-z0-9]{19}$'),
    ADD COLUMN renaming_to text CHECK (renaming_to ~ '^[a-z][a-z0-9]{19}$');
CREATE UNIQUE INDEX organizations_name_base_key ON organizations (name_base);
CREATE UNIQUE INDEX organizations_renaming_to_key ON organizations (renaming_to);

-- sslmode is chosen at registration: require (the default off loopback), verify-ca or verify-full with the CA
-- the operator gives (ca_cert, PEM, handed to clients with the URL), disable only for a loopback host. prefer
-- and allow fall back to plaintext when a network attacker says so: existing servers move to require (or to
-- disable on loopback, where there is no network to attack).
ALTER TABLE database_servers ADD COLUMN ca_cert text;
UPDATE database_servers
SET sslmode = CASE
        WHEN public_host IN ('localhost', '::1') OR public_host ~ '^127\.' THEN 'disable'
        ELSE 'require' END
WHERE sslmode IN ('prefer', 'allow');
-- RegisterServer always chooses; rows written some other way get the safe choice.
ALTER TABLE database_servers ALTER COLUMN sslmode SET DEFAULT 'require';
ALTER TABLE database_servers DROP CONSTRAINT database_servers_sslmode_check;
ALTER TABLE database_servers ADD CONSTRAINT database_servers_sslmode_check
    CHECK (sslmode IN ('disable', 'require', 'verify-ca', 'verify-full'));

-- +goose Down
ALTER TABLE database_servers DROP CONSTRAINT database_servers_sslmode_check;
ALTER TABLE database_servers ADD CONSTRAINT database_servers_sslmode_check
    CHECK (sslmode IN ('disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'));
ALTER TABLE database_servers ALTER COLUMN sslmode SET DEFAULT 'prefer';
ALTER TABLE database_servers DROP COLUMN ca_cert;
ALTER TABLE organizations DROP COLUMN renaming_to, DROP COLUMN name_base;
