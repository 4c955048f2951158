// Package app assembles webhookdb processes. One [Config] (one set of flag and environment names, bound by
// [BindFlags]) and one function, [New], build a process from roles: ingest, the management API, the fanout and
// maintenance. `webhookdb serve` runs them all, `serve --no-fanout` and `webhookdb fanout` run subsets, and
// `webhookdb dev` runs them all on its embedded PostgreSQL and Vault. It sits above the capability packages
// (ingest, fanout, staging, orgdb, vault, api): they never import it.
package app
