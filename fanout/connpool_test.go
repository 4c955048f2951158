package fanout_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/webhookdb-go/webhookdb/internal/integrations"
)

// The connection cap is per database server, sized from its max_connections: with 1% of the test cluster's
// (under Workers, so Workers), more busy orgs than the cap share the cap's connections, never exceeding it.
func TestOrgConnectionsCappedFromTheServersMaxConnections(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	var (
		ins  []*integrations.Integration
		orgs []*org
	)
	for range 5 {
		o := e.org(nil)
		orgs = append(orgs, o)
		ins = append(ins, e.integration(o, "json_v1", `{"remote_key_path":"id"}`))
	}
	cfg := e.config()
	cfg.Workers = 2
	cfg.ServerConnPercent = 1
	reg, _ := e.start(cfg)

	var peak atomic.Int64
	sampling, stopSampling := context.WithCancel(ctx)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for sampling.Err() == nil {
			if n := int64(metric(t, reg, "webhookdb_fanout_org_connections", nil)); n > peak.Load() {
				peak.Store(n)
			}
			time.Sleep(time.Millisecond) // a sampling period, not a wait for a condition
		}
	}()
	for round := range 6 {
		var rows []staged
		for _, in := range ins {
			rows = append(rows, staged{in: in, body: fmt.Appendf(nil, `{"id":"k%d"}`, round)})
		}
		e.stage(rows...)
	}
	for _, o := range orgs {
		db := e.orgDB(o)
		eventually(t, 15*time.Second, "every round applied", func() (bool, error) {
			var n int
			err := db.QueryRow(ctx, `SELECT count(*) FROM json_v1`).Scan(&n)
			return n == 6, err
		})
	}
	stopSampling()
	<-sampled
	if p := peak.Load(); p > 2 || p < 1 {
		t.Fatalf("peak open org connections %d, want at most the cap of 2", p)
	}
	if n := metric(t, reg, "webhookdb_fanout_org_connects_total", nil); n < 5 {
		t.Fatalf("%v connects for 5 orgs", n)
	}
}
