package api_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/webhookdb-go/webhookdb/internal/api"
)

// One user cannot create orgs without end (each is a database on a shared server): concurrent creations
// count each other, and server admins have no limit.
func TestOrgLimitPerUser(t *testing.T) {
	t.Parallel()
	f := newFixtureWith(t, func(c *api.Config) { c.MaxOrgsPerUser = 3 }, nil)
	mallory := f.user("mallory@x.example", false)
	var wg sync.WaitGroup
	statuses := make(chan int, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, _ := f.call(mallory, "POST", "/v1/orgs", map[string]any{"key": fmt.Sprintf("m%d", i)})
			statuses <- status
		}()
	}
	wg.Wait()
	close(statuses)
	created, refused := 0, 0
	for s := range statuses {
		switch s {
		case http.StatusCreated:
			created++
		case http.StatusForbidden:
			refused++
		default:
			t.Errorf("status %d", s)
		}
	}
	if created != 3 || refused != 5 {
		t.Fatalf("created %d, refused %d; want 3 and 5", created, refused)
	}
	status, out := f.call(mallory, "POST", "/v1/orgs", map[string]any{"key": "one_more"})
	if e, _ := out["error"].(map[string]any); status != http.StatusForbidden || e["code"] != "org_limit" {
		t.Fatalf("over the limit: %d %v", status, out)
	}
	admin := f.user("ops@x.example", true)
	for i := range 5 {
		f.must(admin, "POST", "/v1/orgs", map[string]any{"key": fmt.Sprintf("ops%d", i)}, http.StatusCreated)
	}
}

// Replays store whole windows again: an org gets a burst of them, then waits, and another org is unaffected.
func TestReplayIsRateLimitedPerOrg(t *testing.T) {
	t.Parallel()
	f := newFixtureWith(t, func(c *api.Config) { c.ReplayBurst, c.ReplayEvery = 2, time.Hour }, nil)
	alice := f.user("alice@replay.example", false)
	bob := f.user("bob@replay.example", false)
	f.must(alice, "POST", "/v1/orgs", map[string]any{"key": "ra"}, 201)
	f.must(bob, "POST", "/v1/orgs", map[string]any{"key": "rb"}, 201)
	window := map[string]any{"since": time.Now().Add(-time.Hour).Format(time.RFC3339)}
	f.must(alice, "POST", "/v1/orgs/ra/replay", window, http.StatusAccepted)
	f.must(alice, "POST", "/v1/orgs/ra/replay", window, http.StatusAccepted)
	req, _ := http.NewRequest("POST", f.srv.URL+"/v1/orgs/ra/replay", strings.NewReader(`{"since":"`+window["since"].(string)+`"}`))
	req.Header.Set("Authorization", "Bearer "+alice)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third replay within the hour: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	f.must(bob, "POST", "/v1/orgs/rb/replay", window, http.StatusAccepted)
}

// A client guessing tokens is refused before any lookup once past its burst; another client is not.
func TestBadTokensAreRateLimitedPerClient(t *testing.T) {
	t.Parallel()
	f := newFixtureWith(t, func(c *api.Config) {
		c.ClientKey = func(r *http.Request) string { return r.Header.Get("X-Test-Client") }
	}, nil)
	good := f.user("carol@tokens.example", false)
	get := func(client, token string) (int, string) {
		req, _ := http.NewRequest("GET", f.srv.URL+"/v1/me", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("X-Test-Client", client)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Retry-After")
	}
	wellFormedButWrong := "whdb_" + strings.Repeat("a", 32)
	for i := range 20 {
		if s, _ := get("guesser", wellFormedButWrong); s != http.StatusUnauthorized {
			t.Fatalf("bad token %d: %d", i, s)
		}
	}
	if s, ra := get("guesser", wellFormedButWrong); s != http.StatusTooManyRequests || ra == "" {
		t.Fatalf("past the burst: %d, Retry-After %q", s, ra)
	}
	if s, _ := get("someone-else", good); s != http.StatusOK {
		t.Fatalf("another client with a good token: %d", s)
	}
}

type fakeLimiter struct{ q, idle time.Duration }

func (f *fakeLimiter) OrgLimits(context.Context, int64) (time.Duration, time.Duration, error) {
	return f.q, f.idle, nil
}
func (f *fakeLimiter) SetOrgLimits(_ context.Context, _ int64, q, idle time.Duration) error {
	f.q, f.idle = q, idle
	return nil
}

// A server admin reads and sets an org's limits; an org admin cannot, and bad durations are refused by name.
func TestOrgLimitsAreServerAdmins(t *testing.T) {
	t.Parallel()
	lim := &fakeLimiter{q: 30 * time.Minute, idle: 10 * time.Minute}
	f := newFixtureWith(t, func(c *api.Config) { c.Limits = lim }, nil)
	alice := f.user("alice@limits.example", false)
	ops := f.user("ops@limits.example", true)
	f.must(alice, "POST", "/v1/orgs", map[string]any{"key": "lim"}, 201)
	f.must(alice, "GET", "/v1/admin/orgs/lim/limits", nil, http.StatusForbidden)
	out := f.must(ops, "GET", "/v1/admin/orgs/lim/limits", nil, http.StatusOK)
	if out["query_limit"] != "30m0s" || out["idle_in_transaction_limit"] != "10m0s" {
		t.Fatalf("limits: %v", out)
	}
	out = f.must(ops, "PUT", "/v1/admin/orgs/lim/limits", map[string]any{"query_limit": "2h"}, http.StatusOK)
	if out["query_limit"] != "2h0m0s" || lim.q != 2*time.Hour || lim.idle != 10*time.Minute {
		t.Fatalf("after setting the query limit: %v, %v", out, lim)
	}
	status, bad := f.call(ops, "PUT", "/v1/admin/orgs/lim/limits", map[string]any{"idle_in_transaction_limit": "10ms"})
	if e, _ := bad["error"].(map[string]any); status != 422 || e["field"] != "idle_in_transaction_limit" {
		t.Fatalf("a limit under a second: %d %v", status, bad)
	}
	f.must(ops, "GET", "/v1/admin/orgs/nosuch/limits", nil, http.StatusNotFound)
}
