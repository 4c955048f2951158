package fanout

import (
	"testing"
	"time"
)

// The churn warning needs churnWarnMin evictions of recently used connections within a minute, and comes at
// most once a minute; connections idle for churnWindow or more are the cap doing its work.
func TestServerConnsWarnsOfChurn(t *testing.T) {
	var s serverConns
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	for i := 0; i < 100; i++ {
		if n := s.evicted(now, now.Add(-churnWindow)); n != 0 {
			t.Fatalf("a connection idle for %s counted as churn", churnWindow)
		}
	}
	for i := 1; i < churnWarnMin; i++ {
		if n := s.evicted(now, now.Add(-time.Second)); n != 0 {
			t.Fatalf("warned after %d evictions", i)
		}
	}
	if n := s.evicted(now, now.Add(-time.Second)); n != churnWarnMin {
		t.Fatalf("evictions reported %d, want %d", n, churnWarnMin)
	}
	for i := 0; i < 3*churnWarnMin; i++ {
		if n := s.evicted(now.Add(time.Second), now); n != 0 {
			t.Fatal("warned twice within a minute")
		}
	}
	// A minute after the warning, churn counted anew warns again.
	later := now.Add(churnWarnEvery + 2*time.Second)
	got := 0
	for i := 0; i < churnWarnMin; i++ {
		got = s.evicted(later, later.Add(-time.Second))
	}
	if got != churnWarnMin {
		t.Fatalf("second warning reported %d, want %d", got, churnWarnMin)
	}
	// Sparse evictions, fewer than churnWarnMin a minute, never warn.
	var sparse serverConns
	for i := 0; i < 50; i++ {
		at := now.Add(time.Duration(i) * 7 * time.Second)
		if n := sparse.evicted(at, at.Add(-time.Second)); n != 0 {
			t.Fatalf("sparse evictions warned at %d", i)
		}
	}
}
