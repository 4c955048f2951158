package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
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

// db sql runs exactly one statement (extended protocol), in a read-only transaction, under the request's
// statement timeout set by the server whatever the login's own settings say, and caps the bytes of its answer.
func TestDBSQLOneStatementReadOnlyCapped(t *testing.T) {
	t.Parallel()
	f := newFixtureWith(t, func(cfg *api.Config) {
		// The login turns its own timeout off, as any login may.
		u := cfg.Pool.Config().ConnString()
		if strings.Contains(u, "?") {
			u += "&statement_timeout=0"
		} else {
			u += "?statement_timeout=0"
		}
		cfg.Credentials = poolCredentials{url: u}
		cfg.SQLByteLimit = 2000
	}, nil)
	alice := f.user("alice@sqlcap.example", false)
	f.must(alice, "POST", "/v1/orgs", map[string]any{"key": "capped"}, 201)
	post := func(q map[string]any) (int, map[string]any) {
		t.Helper()
		return f.call(alice, "POST", "/v1/orgs/capped/db/sql", q)
	}

	started := time.Now()
	status, body := post(map[string]any{"query": "SELECT 1; SELECT pg_sleep(4)"})
	if e, _ := body["error"].(map[string]any); status != http.StatusBadRequest || e["code"] != "sql_error" || !strings.Contains(fmt.Sprint(e["message"]), "multiple commands") {
		t.Fatalf("two statements: %d %v", status, body)
	}
	if time.Since(started) > 3*time.Second {
		t.Fatalf("two statements ran (%s)", time.Since(started))
	}

	status, body = post(map[string]any{"query": "SELECT current_setting('transaction_read_only'), current_setting('statement_timeout')", "timeout": "7s"})
	if rows, _ := body["rows"].([]any); status != http.StatusOK || len(rows) != 1 || fmt.Sprint(rows[0]) != "[on 7s]" {
		t.Fatalf("settings inside db sql: %d %v", status, body)
	}
	// The org's query limit bounds it too.
	if _, err := f.pool.Exec(context.Background(), `UPDATE organizations SET query_limit = '3s' WHERE key = 'capped'`); err != nil {
		t.Fatal(err)
	}
	status, body = post(map[string]any{"query": "SELECT current_setting('statement_timeout')", "timeout": "7s"})
	if rows, _ := body["rows"].([]any); status != http.StatusOK || len(rows) != 1 || fmt.Sprint(rows[0]) != "[3s]" {
		t.Fatalf("org limit: %d %v", status, body)
	}
	status, body = post(map[string]any{"query": "CREATE TABLE evil (x int)"})
	if e, _ := body["error"].(map[string]any); status != http.StatusBadRequest || !strings.Contains(fmt.Sprint(e["message"]), "read-only transaction") {
		t.Fatalf("write: %d %v", status, body)
	}

	// 100 rows of ~100 bytes: the byte cap cuts the answer, which says so.
	b, _ := json.Marshal(map[string]any{"query": "SELECT i, repeat('x', 100) FROM generate_series(1, 100) i"})
	req, _ := http.NewRequest("POST", f.srv.URL+"/v1/orgs/capped/db/sql", bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+alice)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out api.SQLResult
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&out); err != nil {
		t.Fatalf("%d %v: %s", resp.StatusCode, err, raw)
	}
	if !out.Truncated || out.TruncatedBy != "max_bytes" || out.MaxBytes != 2000 || out.RowCount == 0 || out.RowCount >= 100 || len(out.Rows) != out.RowCount || len(raw) > 2000+200 {
		t.Fatalf("byte cap: %d bytes, %+v", len(raw), out)
	}
	status, body = post(map[string]any{"query": "SELECT i FROM generate_series(1, 10) i", "max_rows": 3})
	if status != http.StatusOK || body["truncated"] != true || body["truncated_by"] != "max_rows" || body["row_count"] != float64(3) {
		t.Fatalf("row cap: %d %v", status, body)
	}
	// Past a cap the rest of the result is not read: the query is cancelled rather than drained (wide rows,
	// so that the server flushes them as they come).
	started = time.Now()
	status, body = post(map[string]any{"query": "SELECT i, repeat('x', 500), pg_sleep(0.01) FROM generate_series(1, 1000) i", "max_rows": 3})
	if status != http.StatusOK || body["truncated"] != true || time.Since(started) > 2*time.Second {
		t.Fatalf("slow rows past the cap: %d %v after %s", status, body, time.Since(started))
	}
	status, body = post(map[string]any{"query": "SELECT 1"})
	if status != http.StatusOK || body["truncated"] != false || body["truncated_by"] != nil {
		t.Fatalf("whole answer: %d %v", status, body)
	}
}
