package credbench_test

import (
	"context"
	"strings"
	"testing"

	"github.com/webhookdb-go/webhookdb/internal/bench/credbench"
)

// A short run proves the benchmark works end to end (make bench runs the full one).
func TestRunShort(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	results, err := credbench.RunConfig(context.Background(), credbench.Config{Connections: 20, Rolls: 3, Out: &out})
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 2 || results[0].ConnectionMedian <= 0 || results[0].RollMedian <= 0 {
		t.Fatalf("results %+v", results)
	}
	t.Log("\n" + out.String())
}
