package cpuacct

import (
	"strings"
	"testing"
	"time"
)

// A busy loop in this process shows up as this process' CPU; without a cluster only that part is reported.
func TestSelfTimeIsCounted(t *testing.T) {
	from := Take("")
	deadline := time.Now().Add(10 * time.Second)
	var to Sample
	for x := 0; ; x++ {
		if x%1_000_000 == 0 {
			if to = Take(""); to.Self-from.Self >= 50*time.Millisecond {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("a 10 s busy loop counted %s of CPU", to.Self-from.Self)
			}
		}
	}
	if r := Report(from, to); !strings.Contains(r, "this process") || strings.Contains(r, "backends") {
		t.Fatalf("report %q", r)
	}
}
