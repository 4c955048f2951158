package fanout_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/internal/pgtest"
	"github.com/webhookdb-go/webhookdb/internal/replicator"
	"github.com/webhookdb-go/webhookdb/pgroles"
)

// auditJSON creates the json_v1 table as the fanout would, and an audit trigger recording every row version
// the fanout writes: an exactly-once effect means each webhook's version is written at most once and, per
// key, versions are written in stream order.
func auditJSON(t *testing.T, e *env, o *org) {
	t.Helper()
	ctx := context.Background()
	db := e.orgDB(o)
	svc, _ := replicator.Lookup("json_v1")
	stmts := append([]string{"SET ROLE " + pgx.Identifier{pgroles.OwnerRole(o.key)}.Sanitize()}, svc.EnsureTableSQL("public", "json_v1")...)
	stmts = append(stmts,
		`CREATE TABLE audit (id bigserial PRIMARY KEY, key text NOT NULL, n int NOT NULL)`,
		`CREATE FUNCTION audit_json() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			INSERT INTO audit (key, n) VALUES (NEW.remote_key, (NEW.data->>'n')::int);
			RETURN NEW;
		END $$`,
		`CREATE TRIGGER audit AFTER INSERT OR UPDATE ON json_v1 FOR EACH ROW EXECUTE FUNCTION audit_json()`,
		`RESET ROLE`)
	for _, s := range stmts {
		if _, err := db.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// One change per org transaction: a replay then re-sends versions one at a time, so writing any of them
// again would show in the audit (a batch of many would collapse to the newest version and hide it).
var crashFlags = []string{"--workers", "4", "--max-apply-rows", "1"}

// The fanout process is killed with SIGKILL again and again during a load. Afterwards every accepted
// webhook is reflected exactly once, with the newest data per remote key.
func TestKill9DuringLoadKeepsExactlyOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	orgServer := pgtest.NewCluster(t)
	jsonOrg, stripeOrg := e.org(orgServer), e.org(orgServer)
	auditJSON(t, e, jsonOrg)
	inJSON := e.integration(jsonOrg, "json_v1", `{"remote_key_path":"id"}`)
	inStripe := e.integration(stripeOrg, "stripe_charge_v1", "")
	if inJSON.TableName != "json_v1" {
		t.Fatalf("table %s", inJSON.TableName)
	}
	ch := e.startChild(crashFlags...)
	e.waitSlotActive()

	const txns, hot = 1200, 7
	loadDone := make(chan error, 1)
	go func() {
		for i := 1; i <= txns; i++ {
			rows := []staged{
				{in: inJSON, body: fmt.Appendf(nil, `{"id":"hot%d","n":%d}`, i%hot, i)},
				{in: inJSON, body: fmt.Appendf(nil, `{"id":"u%d","n":%d}`, i, i)},
				{in: inStripe, body: stripeChargeEvent(fmt.Sprintf("evt_h%d", i), fmt.Sprintf("ch_hot%d", i%hot), int64(1700000000+i), i, "succeeded")},
				{in: inStripe, body: stripeChargeEvent(fmt.Sprintf("evt_u%d", i), fmt.Sprintf("ch_u%d", i), 1700000000, i, "succeeded")},
			}
			if err := stageRows(ctx, e.pool, rows); err != nil {
				loadDone <- err
				return
			}
			if i%10 == 0 {
				time.Sleep(50 * time.Millisecond)
			}
		}
		loadDone <- nil
	}()

	kills := 0
	for loading := true; loading; {
		select {
		case err := <-loadDone:
			if err != nil {
				t.Fatal(err)
			}
			loading = false
		case <-time.After(time.Duration(400+rand.IntN(800)) * time.Millisecond):
			ch.kill()
			kills++
			ch = e.startChild(crashFlags...)
		}
	}
	// one more kill once everything is staged, mid-catch-up
	time.Sleep(300 * time.Millisecond)
	ch.kill()
	kills++
	ch = e.startChild(crashFlags...)
	t.Logf("killed the fanout %d times", kills)

	jsonDB, stripeDB := e.orgDB(jsonOrg), e.orgDB(stripeOrg)
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		var a, b, staged, parked, failed int
		var slot string
		_ = jsonDB.QueryRow(ctx, `SELECT count(*) FROM json_v1 WHERE remote_key LIKE 'u%'`).Scan(&a)
		_ = stripeDB.QueryRow(ctx, `SELECT count(*) FROM stripe_charge_v1 WHERE stripe_id LIKE 'ch_u%'`).Scan(&b)
		_ = e.pool.QueryRow(ctx, `SELECT count(*) FROM staging.webhooks`).Scan(&staged)
		_ = e.pool.QueryRow(ctx, `SELECT count(*) FROM fanout.parked_changes`).Scan(&parked)
		_ = e.pool.QueryRow(ctx, `SELECT count(*) FROM fanout.failed_changes`).Scan(&failed)
		_ = e.pool.QueryRow(ctx, `SELECT format('%s active=%s confirmed=%s current=%s', slot_name, active, confirmed_flush_lsn, pg_current_wal_lsn()) FROM pg_replication_slots WHERE slot_name = $1`, e.slot).Scan(&slot)
		t.Logf("json unique %d, stripe unique %d, staged %d, parked %d, failed %d, slot %s", a, b, staged, parked, failed, slot)
		var missing string
		_ = jsonDB.QueryRow(ctx, `SELECT string_agg(i::text, ',') FROM generate_series(1, $1) i WHERE NOT EXISTS (SELECT 1 FROM json_v1 WHERE remote_key = 'u' || i)`, txns).Scan(&missing)
		t.Logf("missing unique rows: %s", missing)
	})
	eventually(t, time.Minute, "every webhook to be applied", func() (bool, error) {
		var a, b int
		if err := jsonDB.QueryRow(ctx, `SELECT count(*) FROM json_v1 WHERE remote_key LIKE 'u%'`).Scan(&a); err != nil {
			return false, err
		}
		if err := stripeDB.QueryRow(ctx, `SELECT count(*) FROM stripe_charge_v1 WHERE stripe_id LIKE 'ch_u%'`).Scan(&b); err != nil {
			return false, err
		}
		return a == txns && b == txns, nil
	})
	ch.stop()

	// newest data per key
	for k := 0; k < hot; k++ {
		want := txns - (txns-k)%hot
		var n, amount int
		if err := jsonDB.QueryRow(ctx, `SELECT (data->>'n')::int FROM json_v1 WHERE remote_key = $1`, fmt.Sprintf("hot%d", k)).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if err := stripeDB.QueryRow(ctx, `SELECT amount FROM stripe_charge_v1 WHERE stripe_id = $1`, fmt.Sprintf("ch_hot%d", k)).Scan(&amount); err != nil {
			t.Fatal(err)
		}
		if n != want || amount != want {
			t.Fatalf("hot%d: json n=%d, stripe amount=%d, want %d", k, n, amount, want)
		}
	}
	// exactly once: each unique webhook written once; hot keys written in increasing order, none twice
	var dupUnique, regressions, dupHot int
	if err := jsonDB.QueryRow(ctx, `SELECT count(*) FROM (SELECT key FROM audit WHERE key LIKE 'u%' GROUP BY key HAVING count(*) > 1) d`).Scan(&dupUnique); err != nil {
		t.Fatal(err)
	}
	if err := jsonDB.QueryRow(ctx, `
		SELECT count(*) FROM (SELECT n, lag(n) OVER (PARTITION BY key ORDER BY id) AS prev FROM audit WHERE key LIKE 'hot%') a
		WHERE prev IS NOT NULL AND n <= prev`).Scan(&regressions); err != nil {
		t.Fatal(err)
	}
	if err := jsonDB.QueryRow(ctx, `SELECT count(*) FROM (SELECT key, n FROM audit GROUP BY key, n HAVING count(*) > 1) d`).Scan(&dupHot); err != nil {
		t.Fatal(err)
	}
	var audited int
	if err := jsonDB.QueryRow(ctx, `SELECT count(*) FROM audit`).Scan(&audited); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d row versions written to the audited table for %d webhooks", audited, 2*txns)
	if dupUnique > 0 || regressions > 0 || dupHot > 0 {
		t.Fatalf("not exactly once: %d unique webhooks written twice, %d versions written out of order, %d versions written twice", dupUnique, regressions, dupHot)
	}
}
