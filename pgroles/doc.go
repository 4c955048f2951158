// Package pgroles provisions each organization's replication database and its roles on a database server,
// and issues, renews and revokes the read-only login roles users get.
//
// Per org: a database owned by a NOLOGIN owner role that owns the schema and tables (the fanout writes through
// it), and a NOLOGIN read-only group that holds every read grant. Login roles issued to users (by Vault, or
// directly with IssueLogin) only join that group, so revoking one never trips over "role cannot be dropped
// because some objects depend on it", and one admin connection per server suffices.
//
// Per server: PUBLIC loses CONNECT and TEMP on every database (postgres and template1 included), a dedicated
// webhookdb_vault role (CREATEROLE, pg_signal_backend, CONNECT on postgres, ADMIN on each read-only group, never
// superuser) is what Vault connects as, and webhookdb_fanout (a member of each owner role) is what the fanout
// writes as.
//
// The statements that create, renew and revoke login roles are Vault database-plugin templates ({{name}},
// {{password}}, {{expiration}}); the direct mode (--credentials=postgres) renders and runs the very same ones.
//
// Every identifier goes through pgx.Identifier.Sanitize; org keys are validated first. DDL takes no bind
// parameters, so values that are not identifiers (numbers, timestamps, password verifiers) are rendered from
// validated Go values only.
package pgroles
