package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/gorilla/mux"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.yaml.in/yaml/v3"

	"github.com/webhookdb-go/webhookdb/internal/accounts"
	"github.com/webhookdb-go/webhookdb/internal/api"
	"github.com/webhookdb-go/webhookdb/internal/pgtest"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type fixture struct {
	t    *testing.T
	pool *pgxpool.Pool
	srv  *httptest.Server
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureWith(t, nil, nil)
}

// newFixtureWith lets a test change the API's config and the HTTP server (timeouts, middleware) before start.
func newFixtureWith(t *testing.T, config func(*api.Config), server func(*http.Server)) *fixture {
	t.Helper()
	pool := pgtest.NewDB(t)
	box, _ := secrets.ParseKeyring(secrets.NewKeyEntry(1))
	cfg := api.Config{Pool: pool, Box: box, PublicURL: "http://hooks.example"}
	if config != nil {
		config(&cfg)
	}
	r := mux.NewRouter()
	api.New(cfg).Register(r)
	srv := httptest.NewUnstartedServer(r)
	if server != nil {
		server(srv.Config)
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return &fixture{t: t, pool: pool, srv: srv}
}

func (f *fixture) user(email string, serverAdmin bool) string {
	f.t.Helper()
	ctx := context.Background()
	u, err := accounts.CreateUser(ctx, f.pool, email, serverAdmin)
	if err != nil {
		f.t.Fatal(err)
	}
	token, _, err := accounts.CreateToken(ctx, f.pool, u.ID, "test")
	if err != nil {
		f.t.Fatal(err)
	}
	return token
}

func (f *fixture) call(token, method, path string, body any) (int, map[string]any) {
	f.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, f.srv.URL+path, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func (f *fixture) must(token, method, path string, body any, want int) map[string]any {
	f.t.Helper()
	status, out := f.call(token, method, path, body)
	if status != want {
		f.t.Fatalf("%s %s: %d %v, want %d", method, path, status, out, want)
	}
	return out
}

func TestOpenAPIMatchesRouter(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	var documented []string
	for path, ops := range doc.Paths {
		for method := range ops {
			if method == "parameters" {
				continue
			}
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}
	var served []string
	for _, rt := range api.New(api.Config{}).Routes() {
		served = append(served, rt[0]+" "+rt[1])
	}
	slices.Sort(documented)
	slices.Sort(served)
	for _, s := range served {
		if !slices.Contains(documented, s) {
			t.Errorf("served but not in docs/openapi.yaml: %s", s)
		}
	}
	for _, d := range documented {
		if !slices.Contains(served, d) {
			t.Errorf("in docs/openapi.yaml but not served: %s", d)
		}
	}
}

func TestAuthRequired(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, tok := range []string{"", "whdb_notatoken", "garbage"} {
		status, out := f.call(tok, "GET", "/v1/me", nil)
		errObj, _ := out["error"].(map[string]any)
		if status != http.StatusUnauthorized || errObj["code"] != "unauthorized" {
			t.Errorf("token %q: %d %v", tok, status, out)
		}
	}
}

// TestCrossOrgAccess drives every route of the router as a stranger, a plain member and an admin of the org.
func TestCrossOrgAccess(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	alice := f.user("alice@a.example", false)
	bob := f.user("bob@b.example", false)
	carol := f.user("carol@a.example", false)

	f.must(alice, "POST", "/v1/orgs", map[string]any{"key": "org_a", "name": "A"}, 201)
	f.must(bob, "POST", "/v1/orgs", map[string]any{"key": "org_b", "name": "B"}, 201)
	f.must(alice, "POST", "/v1/orgs/org_a/members", map[string]any{"email": "carol@a.example", "role": "member"}, 201)
	created := f.must(alice, "POST", "/v1/orgs/org_a/integrations", map[string]any{"service": "stripe_charge_v1"}, 201)
	opaque := created["integration"].(map[string]any)["opaque_id"].(string)

	vars := map[string]string{"{org}": "org_a", "{opaque_id}": opaque, "{email}": "carol@a.example", "{id}": "1", "{name}": "stripe_charge_v1", "{delivery}": "1"}
	adminOnly := map[string]bool{
		"PATCH /v1/orgs/{org}": true, "DELETE /v1/orgs/{org}": true, "POST /v1/orgs/{org}/members": true,
		"PATCH /v1/orgs/{org}/members/{email}": true, "POST /v1/orgs/{org}/integrations": true,
		"PATCH /v1/orgs/{org}/integrations/{opaque_id}": true, "DELETE /v1/orgs/{org}/integrations/{opaque_id}": true,
		"POST /v1/orgs/{org}/integrations/{opaque_id}/roll-secret": true,
		// POST /v1/orgs/{org}/db/roll-credentials: any member rolls their own; ?all=true is admin-only
		// (TestCredentialsArePerMember).
		"POST /v1/orgs/{org}/replay": true, "POST /v1/orgs/{org}/errors/retry": true,
		"POST /v1/orgs/{org}/errors/{id}/retry": true, "POST /v1/orgs/{org}/errors/{id}/skip": true,
		"DELETE /v1/orgs/{org}/saved-queries/{name}": true, "POST /v1/orgs/{org}/saved-queries/{name}/publish": true,
		"POST /v1/orgs/{org}/saved-queries/{name}/roll-token": true, "POST /v1/orgs/{org}/saved-queries/{name}/unpublish": true,
		"PUT /v1/orgs/{org}/integrations/{opaque_id}/backfill": true, "POST /v1/orgs/{org}/integrations/{opaque_id}/backfill/jobs": true,
		"POST /v1/orgs/{org}/backfill/jobs/{id}/cancel": true,
		// issue 14
		"POST /v1/orgs/{org}/subscriptions": true, "DELETE /v1/orgs/{org}/subscriptions/{id}": true,
		"POST /v1/orgs/{org}/subscriptions/{id}/test": true, "POST /v1/orgs/{org}/subscriptions/{id}/roll-secret": true,
		"POST /v1/orgs/{org}/subscriptions/{id}/recover": true, "POST /v1/orgs/{org}/deliveries/{delivery}/redeliver": true,
		"POST /v1/orgs/{org}/alerts": true, "DELETE /v1/orgs/{org}/alerts/{id}": true,
	}
	checked := 0
	for _, rt := range api.New(api.Config{}).Routes() {
		method, pattern := rt[0], rt[1]
		path := pattern
		for k, v := range vars {
			path = strings.ReplaceAll(path, k, v)
		}
		key := method + " " + pattern
		switch {
		case strings.HasPrefix(pattern, "/v1/orgs/{org}"):
			// A stranger learns nothing: 404, as for an org that does not exist.
			status, out := f.call(bob, method, path, map[string]any{})
			if status != http.StatusNotFound {
				t.Errorf("%s as another org's user: %d %v, want 404", key, status, out)
			}
			if adminOnly[key] {
				status, out = f.call(carol, method, path, map[string]any{})
				if status != http.StatusForbidden {
					t.Errorf("%s as a plain member: %d %v, want 403", key, status, out)
				}
			}
			checked++
		case strings.HasPrefix(pattern, "/v1/admin/"):
			status, _ := f.call(alice, method, path, map[string]any{})
			if status != http.StatusForbidden {
				t.Errorf("%s as a non-server-admin: %d, want 403", key, status)
			}
			checked++
		}
	}
	if checked < 25 {
		t.Fatalf("only %d routes checked", checked)
	}
	// Bob's org is untouched and his own view works.
	f.must(bob, "GET", "/v1/orgs/org_b", nil, 200)
	// An integration id of org A under org B's path is not found either.
	f.must(bob, "GET", "/v1/orgs/org_b/integrations/"+opaque, nil, 404)
}

func TestOrgsMembersAndLastAdmin(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	alice := f.user("alice@x.example", false)
	f.must(alice, "POST", "/v1/orgs", map[string]any{"key": "acme", "name": "Acme"}, 201)
	f.must(alice, "POST", "/v1/orgs", map[string]any{"key": "acme"}, 409)
	for _, bad := range []string{"Acme", "1abc", "a b", "a'; DROP TABLE users; --", strings.Repeat("a", 42), ""} {
		status, out := f.call(alice, "POST", "/v1/orgs", map[string]any{"key": bad})
		e, _ := out["error"].(map[string]any)
		if status != http.StatusUnprocessableEntity || e["field"] != "key" {
			t.Errorf("key %q: %d %v", bad, status, out)
		}
	}
	f.must(alice, "POST", "/v1/orgs", map[string]any{"key": "quoted", "name": `Robert'); DROP TABLE organizations; -- "Bobby"`}, 201)
	// unknown fields name the field
	status, out := f.call(alice, "PATCH", "/v1/orgs/acme", map[string]any{"nmae": "typo"})
	if e, _ := out["error"].(map[string]any); status != 422 || e["field"] != "nmae" {
		t.Fatalf("typo: %d %v", status, out)
	}
	// The last admin can neither leave nor be demoted.
	f.must(alice, "DELETE", "/v1/orgs/acme/members/alice@x.example", nil, 409)
	f.must(alice, "PATCH", "/v1/orgs/acme/members/alice@x.example", map[string]any{"role": "member"}, 409)
	f.must(alice, "POST", "/v1/orgs/acme/members", map[string]any{"email": "bob@x.example", "role": "admin"}, 201)
	f.must(alice, "PATCH", "/v1/orgs/acme/members/alice@x.example", map[string]any{"role": "member"}, 200)
	members := f.must(alice, "GET", "/v1/orgs/acme/members", nil, 200)["members"].([]any)
	if len(members) != 2 {
		t.Fatalf("members: %v", members)
	}
}

func TestIntegrationsAndServices(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	alice := f.user("alice@i.example", false)
	f.must(alice, "POST", "/v1/orgs", map[string]any{"key": "shop"}, 201)
	out := f.must(alice, "POST", "/v1/orgs/shop/integrations", map[string]any{"service": "stripe_charge_v1", "secret": "whsec_given"}, 201)
	in := out["integration"].(map[string]any)
	if out["secret"] != "whsec_given" || in["table_name"] != "stripe_charge_v1" || !strings.HasPrefix(in["webhook_url"].(string), "http://hooks.example/v1/webhooks/svi_") {
		t.Fatalf("created: %v", out)
	}
	second := f.must(alice, "POST", "/v1/orgs/shop/integrations", map[string]any{"service": "stripe_charge_v1"}, 201)
	if second["integration"].(map[string]any)["table_name"] != "stripe_charge_v1_2" || second["secret"] == "" {
		t.Fatalf("second: %v", second)
	}
	f.must(alice, "POST", "/v1/orgs/shop/integrations", map[string]any{"service": "nope_v1"}, 422)
	f.must(alice, "POST", "/v1/orgs/shop/integrations", map[string]any{"service": "json_v1"}, 422)
	list := f.must(alice, "GET", "/v1/orgs/shop/integrations", nil, 200)["integrations"].([]any)
	if len(list) != 2 {
		t.Fatalf("list: %v", list)
	}
	opaque := in["opaque_id"].(string)
	rolled := f.must(alice, "POST", "/v1/orgs/shop/integrations/"+opaque+"/roll-secret", map[string]any{"grace_period": "1h"}, 200)
	if rolled["secret"] == "" || rolled["secret"] == "whsec_given" {
		t.Fatalf("rolled: %v", rolled)
	}
	f.must(alice, "GET", "/v1/orgs/shop/integrations/"+opaque+"/stats", nil, 200)
	f.must(alice, "DELETE", "/v1/orgs/shop/integrations/"+opaque, nil, 200)
	f.must(alice, "GET", "/v1/orgs/shop/integrations/"+opaque, nil, 404)

	services := f.must(alice, "GET", "/v1/services", nil, 200)["services"].([]any)
	if len(services) < 25 {
		t.Fatalf("%d services", len(services))
	}
	svc := f.must(alice, "GET", "/v1/services/shopify_order_v1", nil, 200)["service"].(map[string]any)
	if ddl, _ := svc["ddl"].([]any); len(ddl) == 0 || !strings.Contains(ddl[0].(string), "CREATE TABLE") {
		t.Fatalf("ddl: %v", svc["ddl"])
	}
}

func TestTokens(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	alice := f.user("alice@t.example", false)
	created := f.must(alice, "POST", "/v1/tokens", map[string]any{"name": "ci"}, 201)
	second := created["secret"].(string)
	f.must(second, "GET", "/v1/me", nil, 200)
	id := int(created["token"].(map[string]any)["id"].(float64))
	f.must(alice, "DELETE", "/v1/tokens/"+itoa(id), nil, 200)
	f.must(second, "GET", "/v1/me", nil, 401)
	toks := f.must(alice, "GET", "/v1/tokens", nil, 200)["tokens"].([]any)
	if len(toks) != 2 {
		t.Fatalf("tokens: %v", toks)
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }
