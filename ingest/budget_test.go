package ingest

import (
	"errors"
	"testing"
)

// One org's single large body may pass the org's share, but never so far that another org has no room left.
func TestBudgetKeepsAShareForOthers(t *testing.T) {
	t.Parallel()
	const mib = 1 << 20
	b := newBudget(128*mib, 32*mib, nil)
	var held int64
	for held < 200*mib {
		if err := b.reserve(1, held, 8*mib); err != nil {
			if !errors.Is(err, errProcessBudget) {
				t.Fatalf("a lone large body: %v", err)
			}
			break
		}
		held += 8 * mib
	}
	if held != 96*mib {
		t.Fatalf("a lone large body grew to %d MiB, want 96 (the total less one share)", held>>20)
	}
	// A second request of the same org is over the org's share.
	if err := b.reserve(1, 0, mib); !errors.Is(err, errOrgBudget) {
		t.Fatalf("another request of the large org: %v", err)
	}
	// Another org still gets a whole share.
	if err := b.reserve(2, 0, 32*mib); err != nil {
		t.Fatalf("another org beside the large body: %v", err)
	}
	b.release(1, held)
	b.release(2, 32*mib)
	if b.used != 0 || len(b.byOrg) != 0 {
		t.Fatalf("after release: used %d, orgs %v", b.used, b.byOrg)
	}
}
