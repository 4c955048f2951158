package fanout_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/webhookdb-go/webhookdb/ingest"
	"github.com/webhookdb-go/webhookdb/pgroles"
)

func signStripe(secret string, body []byte, ts time.Time) string {
	t := strconv.FormatInt(ts.Unix(), 10)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(t + "." + string(body)))
	return "t=" + t + ",v1=" + hex.EncodeToString(m.Sum(nil))
}

func TestSignedWebhookBecomesTypedRow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	o := e.org(nil)
	in := e.integration(o, "stripe_charge_v1", "")
	reg, _ := e.start(e.config())

	// the real ingest path: HTTP, signature check, group commit into staging
	r := mux.NewRouter()
	srv := httptest.NewUnstartedServer(r)
	svc := ingest.New(e.pool, e.box, ingest.NewMetrics(prometheus.NewRegistry()), ingest.Config{
		PublicURL: "http://" + srv.Listener.Addr().String(), Cache: ingest.CacheConfig{PollInterval: 100 * time.Millisecond}, Logger: testLogger(),
	})
	svc.Register(r)
	ingestCtx, stopIngest := context.WithCancel(ctx)
	ingestDone := make(chan error, 1)
	go func() { ingestDone <- svc.Run(ingestCtx) }()
	srv.Start()
	t.Cleanup(func() { srv.Close(); stopIngest(); <-ingestDone })

	body := stripeChargeEvent("evt_e2e_1", "ch_e2e_1", 1710504003, 4999, "succeeded")
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/webhooks/"+in.OpaqueID, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Stripe-Signature", signStripe("whsec_test_secret", body, time.Now()))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("ingest answered %d", resp.StatusCode)
	}

	db := e.orgDB(o)
	var (
		amount  int64
		status  string
		updated time.Time
		data    map[string]any
		owner   string
	)
	eventually(t, 10*time.Second, "the typed row", func() (bool, error) {
		err := db.QueryRow(ctx, `SELECT amount, status, updated, data FROM stripe_charge_v1 WHERE stripe_id = 'ch_e2e_1'`).Scan(&amount, &status, &updated, &data)
		return err == nil, err
	})
	if amount != 4999 || status != "succeeded" || !updated.Equal(time.Unix(1710504003, 0)) || data["object"] != "charge" {
		t.Fatalf("row: amount %d status %q updated %s data %v", amount, status, updated, data)
	}
	if err := db.QueryRow(ctx, `SELECT tableowner FROM pg_tables WHERE tablename = 'stripe_charge_v1'`).Scan(&owner); err != nil || owner != pgroles.OwnerRole(o.key) {
		t.Fatalf("table owner %q (%v), want %s", owner, err, pgroles.OwnerRole(o.key))
	}
	var lsn string
	if err := db.QueryRow(ctx, `SELECT commit_lsn::text FROM webhookdb_meta.fanout_applied`).Scan(&lsn); err != nil || lsn == "0/0" {
		t.Fatalf("applied position %q (%v)", lsn, err)
	}
	// the slot is acknowledged past the staging transaction
	eventually(t, 10*time.Second, "the slot to be acknowledged past the row", func() (bool, error) {
		var ok bool
		err := e.pool.QueryRow(ctx, `SELECT confirmed_flush_lsn > $2::text::pg_lsn FROM pg_replication_slots WHERE slot_name = $1`, e.slot, lsn).Scan(&ok)
		return ok, err
	})
	if got := metric(t, reg, "webhookdb_fanout_rows_applied_total", nil); got != 1 {
		t.Fatalf("rows applied metric %v, want 1", got)
	}
}

func TestOlderEventDoesNotOverwriteAndDuplicatesChangeNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	o := e.org(nil)
	in := e.integration(o, "stripe_charge_v1", "")
	_, _ = e.start(e.config())
	db := e.orgDB(o)

	newer := stripeChargeEvent("evt_2", "ch_ooo", 2000000000, 300, "refunded")
	e.stage(staged{in: in, body: newer})
	// an older event in a later transaction, and one in the same transaction as a duplicate of the newer
	e.stage(staged{in: in, body: stripeChargeEvent("evt_1", "ch_ooo", 1000000000, 100, "pending")})
	e.stage(staged{in: in, body: newer}, staged{in: in, body: stripeChargeEvent("evt_0", "ch_ooo", 1000000001, 200, "pending")})
	// a marker row last, so we know everything before it was applied
	e.stage(staged{in: in, body: stripeChargeEvent("evt_m", "ch_marker", 1, 1, "marker")})
	eventually(t, 10*time.Second, "the marker row", func() (bool, error) {
		var n int
		err := db.QueryRow(ctx, `SELECT count(*) FROM stripe_charge_v1 WHERE stripe_id = 'ch_marker'`).Scan(&n)
		return n == 1, err
	})
	var (
		amount int64
		status string
		xmin   string
	)
	if err := db.QueryRow(ctx, `SELECT amount, status, xmin::text FROM stripe_charge_v1 WHERE stripe_id = 'ch_ooo'`).Scan(&amount, &status, &xmin); err != nil {
		t.Fatal(err)
	}
	if amount != 300 || status != "refunded" {
		t.Fatalf("an older event overwrote a newer one: amount %d status %q", amount, status)
	}
	// The newer event again: the row is not touched at all (same xmin).
	e.stage(staged{in: in, body: newer})
	e.stage(staged{in: in, body: stripeChargeEvent("evt_m2", "ch_marker2", 1, 1, "marker")})
	eventually(t, 10*time.Second, "the second marker row", func() (bool, error) {
		var n int
		err := db.QueryRow(ctx, `SELECT count(*) FROM stripe_charge_v1 WHERE stripe_id = 'ch_marker2'`).Scan(&n)
		return n == 1, err
	})
	var xmin2 string
	if err := db.QueryRow(ctx, `SELECT xmin::text FROM stripe_charge_v1 WHERE stripe_id = 'ch_ooo'`).Scan(&xmin2); err != nil {
		t.Fatal(err)
	}
	if xmin2 != xmin {
		t.Fatalf("a duplicate delivery rewrote the row (xmin %s -> %s)", xmin, xmin2)
	}
}

func TestReplaySkipsAppliedChanges(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	o := e.org(nil)
	in := e.integration(o, "json_v1", `{"remote_key_path":"id"}`)
	// A second slot, created before the rows, replays them all later: what a crash before the
	// acknowledgement looks like to the org database.
	replaySlot := "fanout_replay_" + randomHex(4)
	if _, err := e.pool.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, replaySlot); err != nil {
		t.Fatal(err)
	}
	_, stop := e.start(e.config())
	db := e.orgDB(o)
	e.stage(staged{in: in, body: []byte(`{"id":"k","n":1}`)})
	e.stage(staged{in: in, body: []byte(`{"id":"k","n":2}`)}, staged{in: in, body: []byte(`{"id":"j","n":1}`)})
	eventually(t, 10*time.Second, "both rows applied", func() (bool, error) {
		var n int
		err := db.QueryRow(ctx, `SELECT count(*) FROM json_v1 WHERE (remote_key = 'k' AND data->>'n' = '2') OR remote_key = 'j'`).Scan(&n)
		return n == 2, err
	})
	stop()
	var xmin, lsn string
	if err := db.QueryRow(ctx, `SELECT string_agg(xmin::text, ',' ORDER BY remote_key) FROM json_v1`).Scan(&xmin); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow(ctx, `SELECT commit_lsn::text FROM webhookdb_meta.fanout_applied`).Scan(&lsn); err != nil {
		t.Fatal(err)
	}

	cfg := e.config()
	cfg.Slot = replaySlot
	reg, _ := e.start(cfg)
	eventually(t, 10*time.Second, "the replay slot to pass the applied position", func() (bool, error) {
		var ok bool
		err := e.pool.QueryRow(ctx, `SELECT confirmed_flush_lsn > $2::text::pg_lsn FROM pg_replication_slots WHERE slot_name = $1`, replaySlot, lsn).Scan(&ok)
		return ok, err
	})
	var xmin2 string
	if err := db.QueryRow(ctx, `SELECT string_agg(xmin::text, ',' ORDER BY remote_key) FROM json_v1`).Scan(&xmin2); err != nil {
		t.Fatal(err)
	}
	if xmin2 != xmin {
		t.Fatalf("replayed changes were written again (xmin %s -> %s)", xmin, xmin2)
	}
	if got := metric(t, reg, "webhookdb_fanout_rows_skipped_total", map[string]string{"reason": "replayed"}); got != 3 {
		t.Fatalf("replayed rows skipped: %v, want 3", got)
	}
}
