package api_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/webhookdb-go/webhookdb/internal/accounts"
	"github.com/webhookdb-go/webhookdb/internal/api"
)

// recordingCredentials issues a distinct fake login per holder and records what the API asked for; the
// service login is the test database's URL, so db sql and db tables work on it (and only on it).
type recordingCredentials struct {
	serviceURL string
	mu         sync.Mutex
	calls      []string
}

func (c *recordingCredentials) record(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, fmt.Sprintf(format, args...))
}

func (c *recordingCredentials) Calls() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.calls...)
}

func (c *recordingCredentials) Connection(_ context.Context, orgID, userID int64) (*api.Credential, error) {
	c.record("connection %d %d", orgID, userID)
	return &api.Credential{URL: fmt.Sprintf("postgres://member-%d@invalid/x", userID), Username: fmt.Sprintf("member-%d", userID), Kind: "member", ExpiresAt: time.Now().Add(time.Hour)}, nil
}

func (c *recordingCredentials) ServiceConnection(_ context.Context, orgID int64) (*api.Credential, error) {
	c.record("service %d", orgID)
	return &api.Credential{URL: c.serviceURL, Username: "service", Kind: "service", ExpiresAt: time.Now().Add(time.Hour)}, nil
}

func (c *recordingCredentials) RollCredentials(_ context.Context, orgID, userID int64, all bool) (*api.Credential, error) {
	c.record("roll %d %d all=%v", orgID, userID, all)
	return &api.Credential{URL: fmt.Sprintf("postgres://member-%d-rolled@invalid/x", userID), Username: fmt.Sprintf("member-%d-rolled", userID), Kind: "member", ExpiresAt: time.Now().Add(time.Hour)}, nil
}

func (c *recordingCredentials) RevokeMember(_ context.Context, orgID, userID int64) error {
	c.record("revoke %d %d", orgID, userID)
	return nil
}

func userID(t *testing.T, f *fixture, email string) int64 {
	t.Helper()
	u, err := accounts.UserByEmail(context.Background(), f.pool, email)
	if err != nil {
		t.Fatal(err)
	}
	return u.ID
}

// db connection returns the caller's own login; db sql and db tables run on the server's own login;
// roll-credentials rolls the caller's own (any member), --all everyone's (admins only); removing a member
// revokes their logins.
func TestCredentialsArePerMember(t *testing.T) {
	t.Parallel()
	creds := &recordingCredentials{}
	f := newFixtureWith(t, func(cfg *api.Config) {
		creds.serviceURL = cfg.Pool.Config().ConnString()
		cfg.Credentials = creds
	}, nil)
	alice := f.user("alice@creds.example", false)
	bob := f.user("bob@creds.example", false)
	f.must(alice, "POST", "/v1/orgs", map[string]any{"key": "percreds"}, 201)
	f.must(alice, "POST", "/v1/orgs/percreds/members", map[string]any{"email": "bob@creds.example", "role": "member"}, 201)
	var orgID int64
	if err := f.pool.QueryRow(context.Background(), `SELECT id FROM organizations WHERE key = 'percreds'`).Scan(&orgID); err != nil {
		t.Fatal(err)
	}
	aliceID, bobID := userID(t, f, "alice@creds.example"), userID(t, f, "bob@creds.example")

	a := f.must(alice, "GET", "/v1/orgs/percreds/db/connection", nil, 200)
	b := f.must(bob, "GET", "/v1/orgs/percreds/db/connection", nil, 200)
	if a["username"] != fmt.Sprintf("member-%d", aliceID) || b["username"] != fmt.Sprintf("member-%d", bobID) || a["kind"] != "member" {
		t.Fatalf("db connection: alice got %v, bob got %v", a, b)
	}
	if out := f.must(bob, "POST", "/v1/orgs/percreds/db/sql", map[string]any{"query": "SELECT current_user"}, 200); out["row_count"] != float64(1) {
		t.Fatalf("db sql on the service login: %v", out)
	}
	f.must(bob, "GET", "/v1/orgs/percreds/db/tables", nil, 200)

	// Any member rolls their own; --all needs the admin role.
	if out := f.must(bob, "POST", "/v1/orgs/percreds/db/roll-credentials", nil, 200); out["username"] != fmt.Sprintf("member-%d-rolled", bobID) {
		t.Fatalf("bob's roll: %v", out)
	}
	f.must(bob, "POST", "/v1/orgs/percreds/db/roll-credentials?all=true", nil, 403)
	f.must(alice, "POST", "/v1/orgs/percreds/db/roll-credentials?all=true", nil, 200)
	f.must(alice, "POST", "/v1/orgs/percreds/db/roll-credentials?all=maybe", nil, 422)

	// Removing bob revokes his logins; bob leaving does too.
	f.must(alice, "DELETE", "/v1/orgs/percreds/members/bob@creds.example", nil, 200)

	want := []string{
		fmt.Sprintf("connection %d %d", orgID, aliceID),
		fmt.Sprintf("connection %d %d", orgID, bobID),
		fmt.Sprintf("service %d", orgID),
		fmt.Sprintf("service %d", orgID),
		fmt.Sprintf("roll %d %d all=false", orgID, bobID),
		fmt.Sprintf("roll %d %d all=true", orgID, aliceID),
		fmt.Sprintf("revoke %d %d", orgID, bobID),
	}
	if got := creds.Calls(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("calls:\n got %v\nwant %v", got, want)
	}
}
