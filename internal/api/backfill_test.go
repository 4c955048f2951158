package api_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/webhookdb-go/webhookdb/internal/api"
	"github.com/webhookdb-go/webhookdb/internal/backfill"
	"github.com/webhookdb-go/webhookdb/internal/backfill/backfilltest"
)

// Backfill through the API: credentials are checked with the vendor and never shown again; only a server admin
// points an integration at another host; one job at a time; cancel once; another org sees none of it.
func TestBackfillEndpoints(t *testing.T) {
	t.Parallel()
	fake := backfilltest.NewStripe(backfilltest.StripeConfig{})
	defer fake.Close()
	fake.AddCharges("api", 120, time.Now().Add(-time.Hour))
	f := newFixtureWith(t, func(c *api.Config) {
		svc, err := backfill.New(backfill.Config{Pool: c.Pool, Box: c.Box})
		if err != nil {
			t.Fatal(err)
		}
		c.Backfill = svc
	}, nil)
	ops := f.user("ops@example.com", true)
	alice := f.user("alice@a.example", false)
	bob := f.user("bob@b.example", false)
	f.must(alice, "POST", "/v1/orgs", map[string]any{"key": "acme", "name": "Acme"}, 201)
	f.must(bob, "POST", "/v1/orgs", map[string]any{"key": "other", "name": "Other"}, 201)
	f.must(alice, "POST", "/v1/orgs/acme/members", map[string]any{"email": "ops@example.com", "role": "admin"}, 201)
	created := f.must(alice, "POST", "/v1/orgs/acme/integrations", map[string]any{"service": "stripe_charge_v1"}, 201)
	base := "/v1/orgs/acme/integrations/" + created["integration"].(map[string]any)["opaque_id"].(string) + "/backfill"

	out := f.must(alice, "GET", base, nil, 200)
	if out["credentials_set"] != false || out["supported"] != true {
		t.Fatalf("settings before credentials: %v", out)
	}
	f.must(alice, "POST", base+"/jobs", map[string]any{}, 409) // no credentials yet
	// An org admin may not name another host.
	if _, out := f.call(alice, "PUT", base, map[string]any{"key": fake.Key(), "base_url": fake.URL}); out["error"].(map[string]any)["field"] != "backfill_base_url" {
		t.Fatalf("an org admin's base URL: %v", out)
	}
	status, out := f.call(ops, "PUT", base, map[string]any{"key": "sk_test_nope", "base_url": fake.URL})
	if e := out["error"].(map[string]any); status != http.StatusUnprocessableEntity || e["code"] != "vendor_refused" || !strings.Contains(e["message"].(string), "Invalid API Key provided") {
		t.Fatalf("a refused key: %d %v", status, out)
	}
	out = f.must(ops, "PUT", base, map[string]any{"key": fake.Key(), "base_url": fake.URL, "every": "1h"}, 200)
	if out["credentials_set"] != true || out["every"] != "1h0m0s" || strings.Contains(fmt.Sprint(out), fake.Key()) {
		t.Fatalf("settings after credentials: %v", out)
	}
	f.must(alice, "PUT", base, map[string]any{"every": "10s"}, 422)

	job := f.must(alice, "POST", base+"/jobs", map[string]any{"full": true}, 202)["job"].(map[string]any)
	if job["state"] != "queued" || job["kind"] != "full" {
		t.Fatalf("queued job: %v", job)
	}
	f.must(alice, "POST", base+"/jobs", map[string]any{}, 409)
	path := fmt.Sprintf("/v1/orgs/acme/backfill/jobs/%v", job["id"])
	f.must(alice, "GET", path, nil, 200)
	f.must(bob, "GET", fmt.Sprintf("/v1/orgs/other/backfill/jobs/%v", job["id"]), nil, 404)
	if got := f.must(alice, "POST", path+"/cancel", nil, 200)["job"].(map[string]any); got["state"] != "canceled" {
		t.Fatalf("canceled job: %v", got)
	}
	f.must(alice, "POST", path+"/cancel", nil, 409)
	list := f.must(alice, "GET", "/v1/orgs/acme/backfill/jobs", nil, 200)["jobs"].([]any)
	if len(list) != 1 {
		t.Fatalf("jobs: %v", list)
	}
}
