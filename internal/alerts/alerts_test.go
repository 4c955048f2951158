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

// A retried alert goes only to the handlers that did not take it: one that answered 2xx is not called again.
func TestRetriedAlertGoesOnlyToHandlersThatFailed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 10)
	ctx := context.Background()
	var mu sync.Mutex
	calls := 0
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls == 1 {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	t.Cleanup(flaky.Close)
	if _, _, err := e.svc.AddHandler(ctx, e.orgID, flaky.URL+"/flaky"); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Raise(ctx, alerts.Alert{OrgID: e.orgID, Kind: alerts.KindSubscriptionDisabled, DedupeKey: "k", Subject: "s"}); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	e.now = e.now.Add(2 * time.Minute) // past the first retry delay
	for range 2 {
		if err := e.svc.Pass(ctx); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	got := calls
	mu.Unlock()
	if n := len(e.got()); n != 1 || got != 2 {
		t.Fatalf("the handler that took the alert got it %d times (want 1), the one that failed once %d (want 2)", n, got)
	}
	list, err := e.svc.List(ctx, e.orgID, 10)
	if err != nil || len(list) != 1 || list[0].State != "sent" || list[0].Attempts != 2 {
		t.Fatalf("alert log %+v %v", list, err)
	}
}

// Failed changes are counted once each, whatever order their transactions commit in: an id that commits
// after a higher one was read is counted when it appears; an id rolled back is given up once no transaction
// can fill it any more.
func TestFailedChangesCountedOnceWhateverTheCommitOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 10)
	ctx := context.Background()
	var other int64
	if err := e.pool.QueryRow(ctx, `INSERT INTO organizations (key, name, provision_state) VALUES ('other', 'Other', 'ready') RETURNING id`).Scan(&other); err != nil {
		t.Fatal(err)
	}
	const insert = `INSERT INTO fanout.failed_changes (org_id, integration_id, received_at, webhook_id, commit_lsn, seq, error)
		VALUES ($1, 1, now(), 1, '0/1', 0, 'malformed webhook: no id')`
	pass := func() {
		t.Helper()
		if err := e.svc.Pass(ctx); err != nil {
			t.Fatal(err)
		}
	}
	counts := func(org int64) (out []float64) {
		t.Helper()
		list, err := e.svc.List(ctx, org, 10)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range list {
			out = append(out, r.Detail["count"].(float64))
		}
		return out
	}
	pass() // the cursor starts here

	slow, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = slow.Rollback(ctx) }()
	if _, err := slow.Exec(ctx, insert, e.orgID); err != nil { // the lower id, committed last
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(ctx, insert, other); err != nil {
		t.Fatal(err)
	}
	pass()
	if c := counts(e.orgID); len(c) != 0 {
		t.Fatalf("an uncommitted failure was counted: %v", c)
	}
	if err := slow.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	pass()
	pass()
	if a, b := counts(e.orgID), counts(other); len(a) != 1 || a[0] != 1 || len(b) != 1 || b[0] != 1 {
		t.Fatalf("counts: org %v, other org %v; want [1] and [1]", a, b)
	}

	// a rolled-back id is a hole until the transactions that could fill it are over, then given up
	rolled, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rolled.Exec(ctx, insert, e.orgID); err != nil {
		t.Fatal(err)
	}
	if err := rolled.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	e.now = e.now.Add(time.Hour)
	if _, err := e.pool.Exec(ctx, insert, other); err != nil {
		t.Fatal(err)
	}
	pass()
	holes := func() string {
		var h string
		if err := e.pool.QueryRow(ctx, `SELECT holes::text FROM alert_cursors`).Scan(&h); err != nil {
			t.Fatal(err)
		}
		return h
	}
	if h := holes(); h == "[]" {
		t.Fatal("the rolled-back id is not kept as a hole")
	}
	e.now = e.now.Add(2 * time.Minute)
	// the horizon is the cluster's: transactions of other tests' databases hold it back for a while
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(30 * time.Second); ; <-tick.C {
		pass()
		if holes() == "[]" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("holes left: %s", holes())
		}
	}
	if a, b := counts(e.orgID), counts(other); len(a) != 1 || len(b) != 2 || b[0] != 1 {
		t.Fatalf("counts: org %v, other org %v", a, b)
	}
}
