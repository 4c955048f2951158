// Package vault connects webhookdb to Vault's database secrets engine: per database server a connection
// (database/config/<server>) as the dedicated webhookdb_vault role, whose password only Vault knows once
// rotated; per org a dynamic role (database/roles/org-<name base>-readonly) that issues read-only logins with the
// statements of package pgroles; per server a static role (database/static-roles/webhookdb-fanout-<server>)
// whose password Vault rotates on a period, for the fanout's writes.
//
// Issuer implements orgdb.Issuer. Column encryption through transit lives in internal/secrets (Transit).
package vault
