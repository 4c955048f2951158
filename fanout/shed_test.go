package fanout_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/webhookdb-go/webhookdb/fanout"
)

// A backlog far larger than the in-flight cap, staged before the consumer starts. Over more orgs than the
// connection cap holds, the consumer sheds queued payloads and reads them back from staging; with a
// connection for every org it holds them, since reading back would only add work. Either way every row
// arrives once and intact, and the in-flight bytes come back to zero (what a shed change holds is released, no
// more and no less).
func TestBacklogShedsPayloadsOnlyWhileConnectionsChurn(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		orgs     int
		orgConns int // 0: the server's share, far more than the orgs
		wantShed bool
	}{
		{name: "more orgs than connections", orgs: 6, orgConns: 2, wantShed: true},
		{name: "a connection for every org", orgs: 3, wantShed: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			e := newEnv(t)
			const perOrg = 150
			dbs, rows := e.chargeBacklog(tc.orgs, perOrg)
			cfg := e.config()
			cfg.MaxInFlightBytes = 64 << 10 // against about 180 KB of payloads an org
			cfg.Workers = 2
			cfg.MaxOrgConns = tc.orgConns
			reg := e.startWithBacklog(cfg, rows)

			for i, db := range e.waitCharges(dbs, perOrg) {
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
			shed := metric(t, reg, "webhookdb_fanout_payloads_shed_total", nil)
			t.Logf("%v payloads shed and read back", shed)
			if (shed > 0) != tc.wantShed {
				t.Fatalf("%v payloads shed; want shedding: %v", shed, tc.wantShed)
			}
			if failed := metric(t, reg, "webhookdb_fanout_failed_total", nil); failed != 0 {
				t.Fatalf("%v changes failed", failed)
			}
			eventually(t, 10*time.Second, "in-flight bytes back to zero", func() (bool, error) {
				return metric(t, reg, "webhookdb_fanout_in_flight_bytes", nil) == 0, nil
			})
		})
	}
}

// paddedCharge is org i's j-th charge event, about 1.2 KB.
func paddedCharge(i, j int) []byte {
	return []byte(strings.Replace(string(stripeChargeEvent(fmt.Sprintf("evt_%d_%d", i, j), fmt.Sprintf("ch_%d_%d", i, j), 1710000000+int64(j), 100*i+j, "succeeded")),
		`"paid":true`, `"paid":true,"description":"`+strings.Repeat("d", 1000)+`"`, 1))
}

// chargeBacklog makes orgs with a Stripe charge integration each, and perOrg charges for each (paddedCharge),
// ordered as a shared ingest stages them: across orgs.
func (e *env) chargeBacklog(orgs, perOrg int) ([]*org, []staged) {
	e.t.Helper()
	dbs := make([]*org, orgs)
	ins := make([]staged, orgs)
	for i := range dbs {
		dbs[i] = e.org(nil)
		ins[i].in = e.integration(dbs[i], "stripe_charge_v1", "")
	}
	rows := make([]staged, 0, orgs*perOrg)
	for j := range perOrg {
		for i := range orgs {
			rows = append(rows, staged{in: ins[i].in, body: paddedCharge(i, j)})
		}
	}
	return dbs, rows
}

// waitCharges waits for perOrg charges in each org's database and returns connections to them.
func (e *env) waitCharges(dbs []*org, perOrg int) []*pgx.Conn {
	e.t.Helper()
	conns := make([]*pgx.Conn, len(dbs))
	for i, o := range dbs {
		db := e.orgDB(o)
		eventually(e.t, time.Minute, fmt.Sprintf("org %d's charges", i), func() (bool, error) {
			var n int
			err := db.QueryRow(context.Background(), `SELECT count(*) FROM stripe_charge_v1`).Scan(&n)
			return n == perOrg, err
		})
		conns[i] = db
	}
	return conns
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
