package fanout_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/webhookdb-go/webhookdb/internal/pgtest"
)

// One staging transaction of 100,000 rows (~290 MiB of bodies, twice that as hex in the stream) goes through a
// consumer whose in-flight bytes are capped at 16 MiB; its peak RSS stays far below the transaction's size.
func TestLargeTransactionInBoundedMemory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	o := e.org(pgtest.NewCluster(t))
	in := e.integration(o, "stripe_charge_v1", "")
	ch := e.startChild("--max-in-flight-bytes", fmt.Sprint(16<<20), "--workers", "2")
	e.waitSlotActive()
	t.Logf("slot %s", e.slot)

	const rows = 100_000
	var payload int64
	start := time.Now()
	if err := e.pool.QueryRow(ctx, `
		WITH ins AS (
			INSERT INTO staging.webhooks (received_at, org_id, integration_id, method, path, content_type, headers, body, accepted)
			SELECT now(), $1, $2, 'POST', '/', 'application/json', '{"Content-Type":"application/json"}',
				convert_to(format('{"id":"evt_%s","object":"event","type":"charge.updated","created":%s,"data":{"object":{"id":"ch_%s","object":"charge","amount":%s,"currency":"usd","status":"succeeded","metadata":{"padding":"%s"}}}}',
					i, 1700000000 + i, i, i, repeat('x', 2800)), 'UTF8'), true
			FROM generate_series(1, $3) AS i
			RETURNING length(body) AS n)
		SELECT sum(n) FROM ins`, in.OrgID, in.ID, rows).Scan(&payload); err != nil {
		t.Fatal(err)
	}
	var end string
	if err := e.pool.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&end); err != nil {
		t.Fatal(err)
	}
	t.Logf("staged %d rows (%d MiB of bodies) in one transaction in %s", rows, payload>>20, time.Since(start).Round(time.Millisecond))

	db := e.orgDB(o)
	applyStart := time.Now()
	eventually(t, 3*time.Minute, "the large transaction to be applied", func() (bool, error) {
		var n int
		err := db.QueryRow(ctx, `SELECT count(*) FROM stripe_charge_v1`).Scan(&n)
		return n == rows, err
	})
	elapsed := time.Since(applyStart)
	peak := ch.peakRSS()
	t.Logf("applied in %s (%.0f rows/s); peak RSS of the consumer %d MiB", elapsed.Round(time.Millisecond), rows/elapsed.Seconds(), peak>>20)
	if limit := payload / 2; peak > limit {
		t.Fatalf("peak RSS %d MiB exceeds %d MiB for a %d MiB transaction", peak>>20, limit>>20, payload>>20)
	}
	eventually(t, 10*time.Second, "the slot to acknowledge the transaction", func() (bool, error) {
		var caughtUp bool
		err := e.pool.QueryRow(ctx, `SELECT confirmed_flush_lsn >= $2::text::pg_lsn FROM pg_replication_slots WHERE slot_name = $1`, e.slot, end).Scan(&caughtUp)
		return caughtUp, err
	})
	ch.stop()
}
