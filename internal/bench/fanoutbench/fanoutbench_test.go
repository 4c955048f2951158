package fanoutbench

import "testing"

func benchWith(orgs int, hotShare, hotOrgs float64) *bench {
	b := &bench{cfg: Config{HotShare: hotShare, HotOrgs: hotOrgs}}
	for i := 0; i < orgs; i++ {
		b.orgs = append(b.orgs, benchOrg{id: int64(i)})
	}
	return b
}

// Both events of a charge go to one org; without a hot share, charges go round-robin.
func TestOrgOfRoundRobin(t *testing.T) {
	b := benchWith(10, 0, 0)
	for i := 0; i < 100; i++ {
		if got, want := b.orgOf(i).id, int64((i/2)%10); got != want {
			t.Fatalf("event %d: org %d, want %d", i, got, want)
		}
	}
}

// --hot-share 0.9 --hot-orgs 0.1: the first 10% of the orgs get about 90% of the charges, and every org some.
func TestOrgOfHotShare(t *testing.T) {
	b := benchWith(100, 0.9, 0.1)
	counts := make([]int, 100)
	const events = 200_000
	for i := 0; i < events; i++ {
		if b.orgOf(i).id != b.orgOf(i^1).id {
			t.Fatalf("the events of charge %d went to different orgs", i/2)
		}
		counts[b.orgOf(i).id]++
	}
	hot := 0
	for i := 0; i < 10; i++ {
		hot += counts[i]
	}
	if share := float64(hot) / events; share < 0.88 || share > 0.92 {
		t.Fatalf("hot orgs got %.3f of the events, want about 0.9", share)
	}
	for i, c := range counts {
		if c == 0 {
			t.Fatalf("org %d got no events", i)
		}
	}
}
