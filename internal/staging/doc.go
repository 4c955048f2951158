// Package staging owns staging.webhooks, the partitioned table that joins ingest to the fanout: every request
// lands there before its sender gets an answer, and the fanout reads the accepted rows back through the
// publication [Publication] on a replication slot ([DefaultSlot] unless configured).
//
// It holds every statement against the table: the one insert used by ingest, replays and retries ([Insert],
// [Resubmit], [Replay]), the reads of the management API ([List], [Get], [Counts]) and of the fanout
// ([Lookup]), and partition upkeep with retention ([Upkeep]). The table itself is created by the migrations in
// sql/migrations.
package staging
