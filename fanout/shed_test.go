package fanout_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/webhookdb-go/webhookdb/fanout"
)

// A backlog over more orgs than the connection cap holds, far larger than the in-flight cap: the consumer
// sheds queued payloads and reads them back from staging, every row arrives once and intact, and the
// in-flight bytes come back to zero (what a shed change holds is released, no more and no less).
func TestBacklogOverManyOrgsShedsPayloads(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	const orgs, perOrg = 6, 150
	var rows []staged
	dbs := make([]*org, orgs)
	for i := range dbs {
		dbs[i] = e.org(nil)
		in := e.integration(dbs[i], "stripe_charge_v1", "")
		for j := range perOrg {
			rows = append(rows, staged{in: in, body: paddedCharge(i, j)})
		}
	}
	cfg := e.config()
	cfg.MaxInFlightBytes = 64 << 10 // the 900 rows are about 1.1 MB
	cfg.Workers = 2
	cfg.MaxOrgConns = 2 // fewer than the orgs: visits evict connections, which is when payloads are shed
	reg := e.startWithBacklog(cfg, interleave(rows, orgs, perOrg))

	for i, o := range dbs {
		db := e.orgDB(o)
		eventually(t, time.Minute, fmt.Sprintf("org %d's charges", i), func() (bool, error) {
			var n int
			err := db.QueryRow(ctx, `SELECT count(*) FROM stripe_charge_v1`).Scan(&n)
			return n == perOrg, err
		})
		var wrong int
		if err := db.QueryRow(ctx, `
			SELECT count(*) FROM stripe_charge_v1
			WHERE amount <> $1 * 100 + split_part(stripe_id, '_', 3)::int
				OR length(data->>'description') <> 1000
				OR updated <> to_timestamp(1710000000 + split_part(stripe_id, '_', 3)::int)`, i).Scan(&wrong); err != nil {
			t.Fatal(err)
		}
		if wrong != 0 {
			t.Fatalf("org %d: %d charges differ from what was staged", i, wrong)
		}
	}
	if shed := metric(t, reg, "webhookdb_fanout_payloads_shed_total", nil); shed == 0 {
		t.Fatal("no payload was shed while visits evicted connections")
	} else {
		t.Logf("%v payloads shed and read back", shed)
	}
	if failed := metric(t, reg, "webhookdb_fanout_failed_total", nil); failed != 0 {
		t.Fatalf("%v changes failed", failed)
	}
	eventually(t, 10*time.Second, "in-flight bytes back to zero", func() (bool, error) {
		return metric(t, reg, "webhookdb_fanout_in_flight_bytes", nil) == 0, nil
	})
}

// With a connection for every org, the same backlog is drained by holding it: reading payloads back would only
// add work.
func TestBacklogWithinTheConnectionCapShedsNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	const orgs, perOrg = 3, 150
	var rows []staged
	dbs := make([]*org, orgs)
	for i := range dbs {
		dbs[i] = e.org(nil)
		in := e.integration(dbs[i], "stripe_charge_v1", "")
		for j := range perOrg {
			rows = append(rows, staged{in: in, body: paddedCharge(i, j)})
		}
	}
	cfg := e.config()
	cfg.MaxInFlightBytes = 64 << 10
	cfg.Workers = 2
	reg := e.startWithBacklog(cfg, interleave(rows, orgs, perOrg))
	for i, o := range dbs {
		db := e.orgDB(o)
		eventually(t, time.Minute, fmt.Sprintf("org %d's charges", i), func() (bool, error) {
			var n int
			err := db.QueryRow(ctx, `SELECT count(*) FROM stripe_charge_v1`).Scan(&n)
			return n == perOrg, err
		})
	}
	if shed := metric(t, reg, "webhookdb_fanout_payloads_shed_total", nil); shed != 0 {
		t.Fatalf("%v payloads shed with a connection for every org", shed)
	}
}

// paddedCharge is org i's j-th charge event, about 1.2 KB.
func paddedCharge(i, j int) []byte {
	return []byte(strings.Replace(string(stripeChargeEvent(fmt.Sprintf("evt_%d_%d", i, j), fmt.Sprintf("ch_%d_%d", i, j), 1710000000+int64(j), 100*i+j, "succeeded")),
		`"paid":true`, `"paid":true,"description":"`+strings.Repeat("d", 1000)+`"`, 1))
}

// interleave orders rows (perOrg of each org, org by org) as a shared ingest stages them: across orgs.
func interleave(rows []staged, orgs, perOrg int) []staged {
	out := make([]staged, 0, len(rows))
	for j := range perOrg {
		for i := range orgs {
			out = append(out, rows[i*perOrg+j])
		}
	}
	return out
}

// startWithBacklog creates the slot, stages rows (100 a transaction), and only then starts a consumer, so the
// whole backlog is in the stream when it starts.
func (e *env) startWithBacklog(cfg fanout.Config, rows []staged) *prometheus.Registry {
	e.t.Helper()
	pre, err := fanout.New(e.appURL, e.pool, e.box, cfg, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := pre.EnsureSlot(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	for k := 0; k < len(rows); k += 100 {
		e.stage(rows[k:min(k+100, len(rows))]...)
	}
	reg, _ := e.start(cfg)
	return reg
}
