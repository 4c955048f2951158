package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/webhookdb-go/webhookdb/internal/api"
)

// poolCredentials hands out the test database's own URL as the org's read-only connection.
type poolCredentials struct{ url string }

func (c poolCredentials) Connection(ctx context.Context, orgID, _ int64) (*api.Credential, error) {
	return c.ServiceConnection(ctx, orgID)
}

func (c poolCredentials) ServiceConnection(context.Context, int64) (*api.Credential, error) {
	return &api.Credential{URL: c.url, Username: "test", ExpiresAt: time.Now().Add(time.Hour)}, nil
}

func (c poolCredentials) RollCredentials(ctx context.Context, orgID, _ int64, _ bool) (*api.Credential, error) {
	return c.ServiceConnection(ctx, orgID)
}

func (c poolCredentials) RevokeMember(context.Context, int64, int64) error { return nil }

// unwrapping is a middleware's ResponseWriter wrapper, as logging or metrics middleware would add.
type unwrapping struct{ http.ResponseWriter }

func (u unwrapping) Unwrap() http.ResponseWriter { return u.ResponseWriter }

// A query that runs longer than the server's read and write timeouts still gets its answer, also behind
// middleware that wraps the ResponseWriter.
func TestDBSQLOutlivesServerTimeouts(t *testing.T) {
	t.Parallel()
	f := newFixtureWith(t,
		func(cfg *api.Config) { cfg.Credentials = poolCredentials{url: cfg.Pool.Config().ConnString()} },
		func(srv *http.Server) {
			srv.ReadTimeout, srv.WriteTimeout = time.Second, time.Second
			next := srv.Handler
			srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				next.ServeHTTP(unwrapping{w}, r)
			})
		})
	alice := f.user("alice@sql.example", false)
	f.must(alice, "POST", "/v1/orgs", map[string]any{"key": "slow"}, 201)

	b, _ := json.Marshal(map[string]any{"query": "SELECT 42 AS answer FROM pg_sleep(2)", "timeout": "5s"})
	req, _ := http.NewRequest("POST", f.srv.URL+"/v1/orgs/slow/db/sql", bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+alice)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("the answer was cut: %v", err)
	}
	defer resp.Body.Close()
	var out api.SQLResult
	dec := json.NewDecoder(resp.Body)
	dec.DisallowUnknownFields() // the streamed answer and api.SQLResult agree
	if err := dec.Decode(&out); err != nil {
		t.Fatalf("the answer was cut: %d %v", resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusOK || out.RowCount != 1 || len(out.Rows) != 1 || out.Rows[0][0] != float64(42) || out.Error != "" {
		t.Fatalf("%d %+v", resp.StatusCode, out)
	}

	// The query's own timeout still ends it.
	status, body := f.call(alice, "POST", "/v1/orgs/slow/db/sql", map[string]any{"query": "SELECT pg_sleep(3)", "timeout": "100ms"})
	if e, _ := body["error"].(map[string]any); status != http.StatusBadRequest || e["code"] != "sql_timeout" {
		t.Fatalf("timed-out query: %d %v", status, body)
	}
}
