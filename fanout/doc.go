// Package fanout moves accepted webhooks from staging into each organization's own database.
//
// A [Consumer] reads the webhookdb_staging publication through a persistent pgoutput replication slot,
// starting where the slot's confirmed position says (never at the server's current WAL position). Rows of
// many staging transactions are gathered into batches, split per organization, turned into typed rows by the
// integration's replicator (internal/replicator) and written as multi-row upserts, one transaction per org
// database per batch, org databases in parallel under a bounded number of workers.
//
// # Exactly-once effect
//
// Every staging row has a stream position: the commit LSN of its staging transaction and its ordinal in that
// transaction (replays of a transaction decode the same rows in the same order). Positions rather than commit
// end LSNs, because a large transaction is applied in several org transactions before its Commit message
// arrives. Each org database keeps the last position applied in webhookdb_meta.fanout_applied (keyed by the
// application database's system identifier and name, the LSN space the positions live in), locked and
// written in the same transaction as the rows, so a replay after a crash skips what was already applied; the
// replicators' upserts are idempotent and monotonic on top of that.
//
// # Acknowledgement
//
// The flush position sent to Postgres is only ever the end LSN of a transaction whose rows are all applied,
// parked or recorded as failed, and every transaction before it too. Keepalives asking for a reply are
// answered at once, status goes out every StatusInterval whatever the downstream does, and a transactional
// logical message (pg_logical_emit_message) is emitted every HeartbeatInterval so a quiet publication does not
// pin WAL.
//
// # No head-of-line blocking
//
// When an org database cannot take a batch within ApplyTimeout (unreachable, slow, locked) or its replicator
// fails, the batch is parked in fanout.parked_changes in the application database (a reference to the staging
// row and its position, not a copy) and the stream moves on. While an org has parked changes its new changes
// are parked behind them; a retry loop drains them in stream order with exponential backoff, and a change
// parked past Config.ParkedMaxAge or ParkedMaxAttempts becomes failed. A payload that can never be applied
// (replicator.ErrMalformed), or a change the org database refuses for good (SQLSTATE classes 22, 23, 54; found
// by bisecting the org transaction, so the other rows commit), goes to fanout.failed_changes with its own copy
// of the payload and blocks nothing; see classify.go.
//
// # Bounded resources
//
// Bytes received but not yet applied or parked are capped by MaxInFlightBytes: at the cap the consumer stops
// reading the stream (Postgres buffers, and spills large transactions to disk) and keeps sending status
// updates. Connections to org databases are capped per database server: a share (ServerConnPercent) of what
// the server's max_connections leaves beside its superuser reserve, read on the first connection, or
// MaxOrgConns when set. The server's least recently used idle connection is closed to make room, and idle ones
// are closed after OrgConnIdleTimeout. Workers prefer orgs
// whose connection is open, so more busy orgs than connections do not mean a new connection per batch.
//
// Changes committed to staging before the slot exists never reach the fanout: call [Consumer.EnsureSlot]
// before accepting webhooks.
package fanout
