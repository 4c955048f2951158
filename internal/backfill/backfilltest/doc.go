// Package backfilltest holds in-process fakes of the vendors' APIs that backfill pages through, faithful to
// their documented shapes, paging and errors, with faults on demand (429 with Retry-After now and then, a 500
// once, revoked keys, malformed pages). Tests and benchmarks use them; nothing else does.
package backfilltest
