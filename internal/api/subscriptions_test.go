package api_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/webhookdb-go/webhookdb/internal/alerts"
	"github.com/webhookdb-go/webhookdb/internal/api"
	"github.com/webhookdb-go/webhookdb/internal/outgoing"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
	"github.com/webhookdb-go/webhookdb/internal/subscriptions"
)

// The subscription routes: a URL on a private address is refused, the secret is shown once, test sends a
// message that verifies, and after roll-secret both the new and the previous secret verify (grace period).
func TestSubscriptionsAPI(t *testing.T) {
	t.Parallel()
	var (
		mu     sync.Mutex
		bodies [][]byte
		heads  []http.Header
	)
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies, heads = append(bodies, b), append(heads, r.Header.Clone())
		mu.Unlock()
	}))
	t.Cleanup(rcv.Close)
	build := func(pool *pgxpool.Pool, box secrets.Box, allowPrivate bool) (*subscriptions.Service, *alerts.Service) {
		client := outgoing.NewClient(outgoing.Config{AllowPrivate: allowPrivate})
		subs, err := subscriptions.New(subscriptions.Config{Pool: pool, Box: box, Client: client})
		if err != nil {
			t.Fatal(err)
		}
		al, err := alerts.New(alerts.Config{Pool: pool, Box: box, Client: client})
		if err != nil {
			t.Fatal(err)
		}
		return subs, al
	}
	f := newFixtureWith(t, func(c *api.Config) { c.Subscriptions, c.Alerts = build(c.Pool, c.Box, true) }, nil)
	alice := f.user("alice@a.example", false)
	f.must(alice, "POST", "/v1/orgs", map[string]any{"key": "org_a", "name": "A"}, 201)

	f.must(alice, "POST", "/v1/orgs/org_a/subscriptions", map[string]any{"url": rcv.URL, "sources": []string{"nightly"}}, 422)
	f.must(alice, "POST", "/v1/orgs/org_a/subscriptions", map[string]any{"url": rcv.URL, "integration_id": "svi_nosuchintegrationatall00"}, 422)
	created := f.must(alice, "POST", "/v1/orgs/org_a/subscriptions", map[string]any{"url": rcv.URL, "sources": []string{"webhook", "backfill"}}, 201)
	secret := created["secret"].(string)
	id := created["subscription"].(map[string]any)["id"].(string)
	got := f.must(alice, "GET", "/v1/orgs/org_a/subscriptions/"+id, nil, 200)
	if _, shown := got["secret"]; shown {
		t.Fatal("the secret is shown again")
	}
	if res := f.must(alice, "POST", "/v1/orgs/org_a/subscriptions/"+id+"/test", nil, 200); res["ok"] != true {
		t.Fatalf("test: %v", res)
	}
	rolled := f.must(alice, "POST", "/v1/orgs/org_a/subscriptions/"+id+"/roll-secret", map[string]any{"grace_period": "1h"}, 200)
	newSecret := rolled["secret"].(string)
	if newSecret == secret {
		t.Fatal("roll-secret kept the secret")
	}
	f.must(alice, "POST", "/v1/orgs/org_a/subscriptions/"+id+"/test", nil, 200)
	mu.Lock()
	if len(bodies) != 2 {
		t.Fatalf("%d test messages", len(bodies))
	}
	if wh, _ := standardwebhooks.NewWebhook(secret); wh.Verify(bodies[0], heads[0]) != nil {
		t.Error("the first test message does not verify")
	}
	for _, s := range []string{secret, newSecret} {
		wh, _ := standardwebhooks.NewWebhook(s)
		if err := wh.Verify(bodies[1], heads[1]); err != nil {
			t.Errorf("a message during the grace period does not verify with %s...: %v", s[:10], err)
		}
	}
	mu.Unlock()
	list := f.must(alice, "GET", "/v1/orgs/org_a/subscriptions", nil, 200)
	if n := len(list["subscriptions"].([]any)); n != 1 {
		t.Fatalf("%d subscriptions", n)
	}
	f.must(alice, "GET", "/v1/orgs/org_a/subscriptions/"+id+"/deliveries?status=failed", nil, 200)
	f.must(alice, "GET", "/v1/orgs/org_a/subscriptions/"+id+"/deliveries?status=lost", nil, 422)
	f.must(alice, "POST", "/v1/orgs/org_a/subscriptions/"+id+"/recover", map[string]any{}, 422)
	f.must(alice, "POST", "/v1/orgs/org_a/subscriptions/"+id+"/recover", map[string]any{"all": true}, 200)
	f.must(alice, "POST", "/v1/orgs/org_a/deliveries/999/redeliver", nil, 404)

	h := f.must(alice, "POST", "/v1/orgs/org_a/alerts", map[string]any{"target": rcv.URL + "/alerts"}, 201)
	if h["secret"] == "" || h["handler"].(map[string]any)["kind"] != "url" {
		t.Fatalf("alert handler: %v", h)
	}
	f.must(alice, "POST", "/v1/orgs/org_a/alerts", map[string]any{"target": "ops@a.example"}, 422) // no SMTP server
	f.must(alice, "GET", "/v1/orgs/org_a/alerts", nil, 200)
	f.must(alice, "DELETE", "/v1/orgs/org_a/alerts/"+h["handler"].(map[string]any)["id"].(string), nil, 200)

	f.must(alice, "DELETE", "/v1/orgs/org_a/subscriptions/"+id, nil, 200)
	f.must(alice, "GET", "/v1/orgs/org_a/subscriptions/"+id, nil, 404)

	// without private targets allowed, a loopback URL is refused when saved
	strict := newFixtureWith(t, func(c *api.Config) { c.Subscriptions, c.Alerts = build(c.Pool, c.Box, false) }, nil)
	bob := strict.user("bob@b.example", false)
	strict.must(bob, "POST", "/v1/orgs", map[string]any{"key": "org_b", "name": "B"}, 201)
	strict.must(bob, "POST", "/v1/orgs/org_b/subscriptions", map[string]any{"url": "https://127.0.0.1/hooks"}, 422)
	strict.must(bob, "POST", "/v1/orgs/org_b/alerts", map[string]any{"target": "https://169.254.169.254/latest"}, 422)
}
