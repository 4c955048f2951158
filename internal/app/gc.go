package app

import (
	"cmp"
	"os"
	"runtime/debug"
	"slices"

	"github.com/webhookdb-go/webhookdb/ingest"
)

// TuneGC sets the garbage collector for a process running roles, unless GOGC or GOMEMLIMIT say otherwise, and
// returns a function that puts back what it changed. It is the process's business, not an App's: `serve`,
// `fanout` and `dev` call it for their roles, and a benchmark for the roles its process runs together.
//
//   - Ingest alone: the live heap is small and each request allocates, so collecting at five times the live heap
//     (GOGC=400) instead of twice saves a measurable share of ingest's CPU for a few MB.
//   - Ingest with the fanout in the same process (`serve`): the fanout's batches make the live heap larger, and
//     at 400 the process grew past 256 MiB at 2,000 webhooks/s (`bench fanout`, steady phase); GOGC=200 keeps it
//     near 160 MiB with the same lag.
//   - Either way a soft memory limit of twice ingestMemory plus 128 MiB (request bodies in flight are bounded by
//     it) keeps the GC goal from outgrowing the memory ingest is allowed.
//   - The fanout alone keeps Go's defaults.
func TuneGC(roles []Role, ingestMemory int64) (restore func()) {
	if !slices.Contains(roles, RoleIngest) {
		return func() {}
	}
	percent, limit := -2, int64(-1) // -2: unchanged
	if os.Getenv("GOGC") == "" {
		p := 400
		if slices.Contains(roles, RoleFanout) {
			p = 200
		}
		percent = debug.SetGCPercent(p)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		limit = debug.SetMemoryLimit(2*cmp.Or(ingestMemory, ingest.DefaultMemory) + 128<<20)
	}
	return func() {
		if percent != -2 {
			debug.SetGCPercent(percent)
		}
		if limit >= 0 {
			debug.SetMemoryLimit(limit)
		}
	}
}
