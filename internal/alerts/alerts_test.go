package alerts_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/webhookdb-go/webhookdb/internal/alerts"
	"github.com/webhookdb-go/webhookdb/internal/outgoing"
	"github.com/webhookdb-go/webhookdb/internal/pgtest"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type env struct {
	pool  *pgxpool.Pool
	svc   *alerts.Service
	orgID int64
	now   time.Time

	mu     sync.Mutex
	bodies []string
}

func newEnv(t *testing.T, rate int) *env {
	t.Helper()
	e := &env{pool: pgtest.NewDB(t), now: time.Now()}
	k, err := secrets.ParseKeyring(secrets.NewKeyEntry(1))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.pool.QueryRow(context.Background(), `INSERT INTO organizations (key, name, provision_state) VALUES ('acme', 'Acme', 'ready') RETURNING id`).Scan(&e.orgID); err != nil {
		t.Fatal(err)
	}
	e.svc, err = alerts.New(alerts.Config{Pool: e.pool, Box: k, RatePerHour: rate, Now: func() time.Time { return e.now },
		Client: outgoing.NewClient(outgoing.Config{AllowPrivate: true}), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	var wh *standardwebhooks.Webhook
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		e.mu.Lock()
		defer e.mu.Unlock()
		if err := wh.VerifyIgnoringTimestamp(body, r.Header); err != nil { // the test moves its clock
			t.Errorf("an alert did not verify: %v", err)
		}
		e.bodies = append(e.bodies, string(body))
	}))
	t.Cleanup(srv.Close)
	_, secret, err := e.svc.AddHandler(context.Background(), e.orgID, srv.URL+"/alerts")
	if err != nil {
		t.Fatal(err)
	}
	if wh, err = standardwebhooks.NewWebhook(secret); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) got() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.bodies...)
}

// Changes that failed after the watcher started give one alert an hour per org, however many fail.
func TestFailedChangesAlertOnceAnHour(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 10)
	ctx := context.Background()
	fail := func(webhookID int64) {
		t.Helper()
		if _, err := e.pool.Exec(ctx, `INSERT INTO fanout.failed_changes (org_id, integration_id, received_at, webhook_id, commit_lsn, seq, error)
			VALUES ($1, 1, now(), $2, '0/1', 0, 'malformed webhook: no id')`, e.orgID, webhookID); err != nil {
			t.Fatal(err)
		}
	}
	fail(1) // before the first pass: history, not news
	if err := e.svc.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	fail(2)
	fail(3)
	for range 2 {
		if err := e.svc.Pass(ctx); err != nil {
			t.Fatal(err)
		}
	}
	fail(4)
	if err := e.svc.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	got := e.got()
	if len(got) != 1 || !strings.Contains(got[0], "alert.failed_changes") || !strings.Contains(got[0], `"count": 2`) {
		t.Fatalf("alerts: %q", got)
	}
	e.now = e.now.Add(time.Hour)
	fail(5)
	if err := e.svc.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.got(); len(got) != 2 {
		t.Fatalf("an hour later: %d alerts, want 2", len(got))
	}
}

// Raising the same alert twice sends it once; past the org's rate alerts are kept as suppressed.
func TestAlertsAreDeduplicatedAndRateLimited(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 3)
	ctx := context.Background()
	for i := range 5 {
		for range 2 {
			if err := e.svc.Raise(ctx, alerts.Alert{OrgID: e.orgID, Kind: alerts.KindSubscriptionDisabled,
				DedupeKey: "k" + string(rune('a'+i)), Subject: "s", Detail: map[string]any{"i": i}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := e.svc.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.got(); len(got) != 3 {
		t.Fatalf("%d alerts sent, want 3 (the rate)", len(got))
	}
	list, err := e.svc.List(ctx, e.orgID, 10)
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]int{}
	for _, r := range list {
		states[r.State]++
	}
	if len(list) != 5 || states["sent"] != 3 || states["suppressed"] != 2 {
		t.Fatalf("alert log %v", states)
	}
}

func TestAddHandlerRefusesBadTargets(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 10)
	ctx := context.Background()
	strict, err := alerts.New(alerts.Config{Pool: e.pool, Box: secretsBox(t)})
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{"https://10.0.0.1/x", "http://example.com/x", "not an address", "ops@acme.test"} {
		if _, _, err := strict.AddHandler(ctx, e.orgID, target); err == nil {
			t.Errorf("%q accepted (no SMTP server configured, private targets refused)", target)
		}
	}
	h, _ := e.svc.ListHandlers(ctx, e.orgID)
	if len(h) != 1 {
		t.Fatalf("handlers %+v", h)
	}
	if err := e.svc.RemoveHandler(ctx, e.orgID, h[0].ID); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.RemoveHandler(ctx, e.orgID, h[0].ID); err == nil {
		t.Fatal("removed twice")
	}
}

func secretsBox(t *testing.T) secrets.Box {
	k, err := secrets.ParseKeyring(secrets.NewKeyEntry(1))
	if err != nil {
		t.Fatal(err)
	}
	return k
}
