package fanout_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/webhookdb-go/webhookdb/fanout"
)

// A backlog over several orgs, far larger than the in-flight cap, before any org has a connection: the
// consumer sheds queued payloads and reads them back from staging, every row arrives once and intact, and the
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
			// ~1.2 KB a body: the 900 rows are about 1.1 MB against a 64 KiB cap
			body := strings.Replace(string(stripeChargeEvent(fmt.Sprintf("evt_%d_%d", i, j), fmt.Sprintf("ch_%d_%d", i, j), 1710000000+int64(j), 100*i+j, "succeeded")),
				`"paid":true`, `"paid":true,"description":"`+strings.Repeat("d", 1000)+`"`, 1)
			rows = append(rows, staged{in: in, body: []byte(body)})
		}
	}
	// interleaved across orgs, as a shared ingest stages them
	interleaved := make([]staged, 0, len(rows))
	for j := range perOrg {
		for i := range orgs {
			interleaved = append(interleaved, rows[i*perOrg+j])
		}
	}
	cfg := e.config()
	cfg.MaxInFlightBytes = 64 << 10
	cfg.Workers = 2
	// the slot first, so the backlog is in the stream when the consumer starts
	pre, err := fanout.New(e.appURL, e.pool, e.box, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := pre.EnsureSlot(ctx); err != nil {
		t.Fatal(err)
	}
	for k := 0; k < len(interleaved); k += 100 {
		e.stage(interleaved[k:min(k+100, len(interleaved))]...)
	}

	reg, _ := e.start(cfg)

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
		t.Fatal("no payload was shed: the backlog was drained by holding it, which a 64 KiB cap cannot")
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
