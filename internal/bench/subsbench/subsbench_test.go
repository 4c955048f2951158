package subsbench_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/webhookdb-go/webhookdb/internal/bench/subsbench"
)

// A short run proves the benchmark works end to end (make bench runs the full one).
func TestRunShort(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	res, err := subsbench.Run(context.Background(), subsbench.Config{Rate: 200, Duration: 2 * time.Second, Orgs: 2, Out: &out})
	if err != nil {
		t.Fatal(err)
	}
	if res.Notifications != res.Changes || res.Changes < 300 || res.LagP99 <= 0 {
		t.Fatalf("result %+v", res)
	}
	t.Log("\n" + out.String())
}
