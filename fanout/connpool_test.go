package fanout_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/webhookdb-go/webhookdb/internal/integrations"
	"github.com/webhookdb-go/webhookdb/internal/pgtest"
)

// The connection cap is per database server, sized from its max_connections: with 1% of the test cluster's
// (under Workers, so Workers), more busy orgs than the cap share the cap's connections, never exceeding it.
// The evictions that makes are counted, and their churn is logged as a warning to raise the cap.
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
	var logs pgtest.SyncBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
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
	// Round by round, so that each round visits every org again and the orgs take turns at the connections.
	for round := range 6 {
		var rows []staged
		for _, in := range ins {
			rows = append(rows, staged{in: in, body: fmt.Appendf(nil, `{"id":"k%d"}`, round)})
		}
		e.stage(rows...)
		for _, o := range orgs {
			db := e.orgDB(o)
			eventually(t, 15*time.Second, "the round applied", func() (bool, error) {
				var n int
				err := db.QueryRow(ctx, `SELECT count(*) FROM json_v1`).Scan(&n)
				return n == round+1, err
			})
		}
	}
	stopSampling()
	<-sampled
	if p := peak.Load(); p > 2 || p < 1 {
		t.Fatalf("peak open org connections %d, want at most the cap of 2", p)
	}
	if n := metric(t, reg, "webhookdb_fanout_org_connects_total", nil); n < 5 {
		t.Fatalf("%v connects for 5 orgs", n)
	}
	connects := metric(t, reg, "webhookdb_fanout_org_connects_total", nil)
	evictions := metric(t, reg, "webhookdb_fanout_org_connection_evictions_total", nil)
	// every connect beyond the cap's two made room by closing an idle one (or replaced one that failed)
	if evictions < 10 || evictions > connects-2 {
		t.Fatalf("%v evictions for %v connects under a cap of 2, 5 orgs and 6 rounds", evictions, connects)
	}
	if !strings.Contains(logs.String(), "org connections churn") {
		t.Fatalf("%v evictions of busy orgs' connections and no churn warning; log:\n%s", evictions, logs.String())
	}
}
