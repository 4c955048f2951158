// Package ingest receives webhooks. Each request is matched to its integration (through a cache that sees
// changes within a second), verified over its raw body (package verify), and group-committed into the
// partitioned staging.webhooks table; the sender gets its 2xx only after the transaction carrying its row has
// committed. Refused requests are answered with a reason in the Whdb-Rejected-Reason header and kept too,
// body cut to 4 KiB and capped per integration, so an operator can see them.
package ingest
