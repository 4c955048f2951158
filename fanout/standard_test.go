package fanout_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/webhookdb-go/webhookdb/ingest"
	"github.com/webhookdb-go/webhookdb/ingest/verify"
	"github.com/webhookdb-go/webhookdb/internal/integrations"
)

// A standard_event_v1 integration created with only a secret takes deliveries signed by the Standard Webhooks
// reference library (webhook-* headers, and Svix's svix-* ones): each is a row keyed by its delivery id, with
// the event's type and timestamp, also when the row goes through fanout.parked_changes first.
func TestStandardWebhookWithoutConfigBecomesRow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	o := e.org(nil)
	secret := integrations.GenerateSecret(verify.SchemeStandard)
	in, _, err := integrations.Create(ctx, e.pool, e.box, integrations.CreateParams{OrgID: o.id, Service: "standard_event_v1", Secret: secret})
	if err != nil {
		t.Fatalf("creating standard_event_v1 with only a secret: %v", err)
	}
	cfg := e.config()
	cfg.ApplyTimeout = time.Second // the parking step below waits on it
	_, _ = e.start(cfg)

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

	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	send := func(headerPrefix, id, body string) {
		t.Helper()
		now := time.Now()
		sig, err := wh.Sign(id, now, []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/webhooks/"+in.OpaqueID, bytes.NewReader([]byte(body)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(headerPrefix+"id", id)
		req.Header.Set(headerPrefix+"timestamp", strconv.FormatInt(now.Unix(), 10))
		req.Header.Set(headerPrefix+"signature", sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("delivery %s answered %d (%s)", id, resp.StatusCode, resp.Header.Get(ingest.RejectedReasonHeader))
		}
	}
	db := e.orgDB(o)
	// checkRow waits for the row keyed by a delivery id and checks what the event gave it.
	checkRow := func(key, eventType string, at time.Time, dataID string) {
		t.Helper()
		var (
			gotType, gotID string
			gotAt          time.Time
		)
		eventually(t, 15*time.Second, "the row of delivery "+key, func() (bool, error) {
			err := db.QueryRow(ctx, `SELECT event_type, event_timestamp, data #>> '{data,id}' FROM standard_event_v1 WHERE remote_key = $1`, key).
				Scan(&gotType, &gotAt, &gotID)
			return err == nil, err
		})
		if gotType != eventType || !gotAt.Equal(at) || gotID != dataID {
			t.Errorf("row %s: event_type %q, event_timestamp %s, data.id %q; want %q, %s, %q", key, gotType, gotAt, gotID, eventType, at, dataID)
		}
	}

	// The same resource in two deliveries, one with webhook-* headers and one from a Svix sender: two rows.
	send("webhook-", "msg_std_1",
		`{"type":"invoice.created","timestamp":"2024-03-15T12:00:01.482913Z","data":{"id":"inv_1"}}`)
	send("svix-", "msg_svix_1", `{"type":"invoice.paid","timestamp":"2024-03-15T12:05:00Z","data":{"id":"inv_1"}}`)
	checkRow("msg_std_1", "invoice.created", time.Date(2024, 3, 15, 12, 0, 1, 482913000, time.UTC), "inv_1")
	checkRow("msg_svix_1", "invoice.paid", time.Date(2024, 3, 15, 12, 5, 0, 0, time.UTC), "inv_1")

	// With the table locked the next delivery is parked; drained afterwards it keeps its delivery id.
	lock, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lock.Exec(ctx, `LOCK TABLE standard_event_v1 IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	send("webhook-", "msg_std_parked", `{"type":"invoice.voided","timestamp":"2024-03-15T13:00:00Z","data":{"id":"inv_2"}}`)
	eventually(t, 15*time.Second, "the locked table's delivery to be parked", func() (bool, error) {
		var n int
		err := e.pool.QueryRow(ctx, `SELECT count(*) FROM fanout.parked_changes WHERE org_id = $1`, o.id).Scan(&n)
		return n > 0, err
	})
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	checkRow("msg_std_parked", "invoice.voided", time.Date(2024, 3, 15, 13, 0, 0, 0, time.UTC), "inv_2")

	var rows, failed int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM standard_event_v1`).Scan(&rows); err != nil || rows != 3 {
		t.Errorf("%d rows (%v), want 3", rows, err)
	}
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM fanout.failed_changes`).Scan(&failed); err != nil || failed != 0 {
		t.Errorf("%d failed changes (%v), want none", failed, err)
	}
}
