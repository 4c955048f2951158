// Package credbench measures the read-only credential operations users wait on: `db connection` (once the
// org's role exists; target under 100 ms median through Vault) and `db roll-credentials` (target under 2 s),
// through Vault and, as the baseline measured in the same run, directly (--credentials=postgres). It starts
// its own PostgreSQL cluster (fsync on) and Vault dev server.
package credbench
