// Package backfill fills an integration's table with the history its vendor's API holds, through the same
// path as webhooks: each page of objects is stored in staging (source "backfill", the job's id) and the fanout
// applies it with the same tables and conflict policies.
//
// It owns backfill_credentials (an integration's API credentials, encrypted, shown only as a fingerprint) and
// backfill_jobs. A job's page cursor is checkpointed in the same transaction as the page's staging rows, so a
// crash repeats at most one page. Workers ([Runner], in the maintenance role) take jobs round-robin across orgs
// under a session advisory lock per job, store at a bounded rate, and let go of a job after a slice of time so
// one org's huge backfill cannot starve another's. Vendors are small clients behind [Vendor]; their hosts come
// from the vendor's own patterns, and only a server admin may point an integration elsewhere.
package backfill
