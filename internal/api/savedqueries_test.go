package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/webhookdb-go/webhookdb/internal/api"
	"github.com/webhookdb-go/webhookdb/internal/pgtest"
)

// orgDatabases gives each org a database of its own (superuser URLs on the test cluster) as its service login.
type orgDatabases struct {
	mu   sync.Mutex
	urls map[int64]string
}

func (c *orgDatabases) set(orgID int64, url string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.urls == nil {
		c.urls = map[int64]string{}
	}
	c.urls[orgID] = url
}

func (c *orgDatabases) ServiceConnection(_ context.Context, orgID int64) (*api.Credential, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	url, ok := c.urls[orgID]
	if !ok {
		return nil, fmt.Errorf("org %d has no database in this test", orgID)
	}
	return &api.Credential{URL: url, Username: "service", Kind: "service", ExpiresAt: time.Now().Add(time.Hour)}, nil
}

func (c *orgDatabases) Connection(ctx context.Context, orgID, _ int64) (*api.Credential, error) {
	return c.ServiceConnection(ctx, orgID)
}

func (c *orgDatabases) RollCredentials(ctx context.Context, orgID, _ int64, _ bool) (*api.Credential, error) {
	return c.ServiceConnection(ctx, orgID)
}

func (c *orgDatabases) RevokeMember(context.Context, int64, int64) error { return nil }

// sqFixture is the API with orgs whose databases hold a table items (id, name).
type sqFixture struct {
	*fixture
	dbs *orgDatabases
}

func newSQFixture(t *testing.T, config func(*api.Config)) *sqFixture {
	t.Helper()
	dbs := &orgDatabases{}
	f := newFixtureWith(t, func(cfg *api.Config) {
		cfg.Credentials = dbs
		// Clients are told apart by a header, so a test can be several clients.
		cfg.ClientKey = func(r *http.Request) string { return r.Header.Get("X-Test-Client") }
		if config != nil {
			config(cfg)
		}
	}, nil)
	return &sqFixture{fixture: f, dbs: dbs}
}

// org creates an org of admin's with a database of its own, holding items with the given names.
func (f *sqFixture) org(admin, key string, names ...string) *pgxpool.Pool {
	f.t.Helper()
	f.must(admin, "POST", "/v1/orgs", map[string]any{"key": key}, 201)
	var id int64
	if err := f.pool.QueryRow(context.Background(), `SELECT id FROM organizations WHERE key = $1 AND deleted_at IS NULL`, key).Scan(&id); err != nil {
		f.t.Fatal(err)
	}
	url := pgtest.NewEmptyDBURL(f.t, pgtest.Cluster(f.t))
	f.dbs.set(id, url)
	db, err := pgxpool.New(context.Background(), url)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(db.Close)
	if _, err := db.Exec(context.Background(), `CREATE TABLE items (id serial PRIMARY KEY, name text)`); err != nil {
		f.t.Fatal(err)
	}
	for _, n := range names {
		if _, err := db.Exec(context.Background(), `INSERT INTO items (name) VALUES ($1)`, n); err != nil {
			f.t.Fatal(err)
		}
	}
	return db
}

// get fetches a URL of the server without a token (as a client named client) and returns the answer whole.
func (f *sqFixture) get(client, path string) (*http.Response, []byte) {
	f.t.Helper()
	req, _ := http.NewRequest("GET", f.srv.URL+path, nil)
	req.Header.Set("X-Test-Client", client)
	return f.do(req)
}

// runRaw runs a saved query as token and returns the status, headers and body.
func (f *sqFixture) runRaw(token, org, name, format string) (*http.Response, []byte) {
	f.t.Helper()
	req, _ := http.NewRequest("POST", f.srv.URL+"/v1/orgs/"+org+"/saved-queries/"+name+"/run?format="+format, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	return f.do(req)
}

func (f *sqFixture) do(req *http.Request) (*http.Response, []byte) {
	f.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func decodeResult(t *testing.T, b []byte) api.SavedQueryResult {
	t.Helper()
	var out api.SavedQueryResult
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields() // the written answer and api.SavedQueryResult agree
	if err := dec.Decode(&out); err != nil {
		t.Fatalf("not a result: %v: %s", err, b)
	}
	return out
}

func errorOf(out map[string]any) (code, msg string) {
	e, _ := out["error"].(map[string]any)
	return fmt.Sprint(e["code"]), fmt.Sprint(e["message"])
}

// create, list, run (JSON and CSV), delete; members save and run, admins delete; names are checked.
func TestSavedQueryLifecycle(t *testing.T) {
	t.Parallel()
	f := newSQFixture(t, nil)
	alice := f.user("alice@sq.example", false)
	bob := f.user("bob@sq.example", false)
	f.org(alice, "shop", "apple", "pear")
	f.must(alice, "POST", "/v1/orgs/shop/members", map[string]any{"email": "bob@sq.example", "role": "member"}, 201)

	created := f.must(bob, "POST", "/v1/orgs/shop/saved-queries", map[string]any{"name": "fruit", "sql": "SELECT id, name FROM items ORDER BY id"}, 201)
	if sq := created["saved_query"].(map[string]any); sq["name"] != "fruit" || sq["public"] != false || created["public_url"] != nil {
		t.Fatalf("created: %v", created)
	}
	f.must(bob, "POST", "/v1/orgs/shop/saved-queries", map[string]any{"name": "fruit", "sql": "SELECT 1"}, 409)
	for _, bad := range []string{"", "Fruit", "1x", "a b", strings.Repeat("a", 64), "x'; DROP TABLE saved_queries; --"} {
		status, out := f.call(bob, "POST", "/v1/orgs/shop/saved-queries", map[string]any{"name": bad, "sql": "SELECT 1"})
		if e, _ := out["error"].(map[string]any); status != 422 || e["field"] != "name" {
			t.Errorf("name %q: %d %v", bad, status, out)
		}
	}
	// Only an admin publishes.
	f.must(bob, "POST", "/v1/orgs/shop/saved-queries", map[string]any{"name": "open", "sql": "SELECT 1", "public": true}, 403)

	list := f.must(bob, "GET", "/v1/orgs/shop/saved-queries", nil, 200)["saved_queries"].([]any)
	if len(list) != 1 || list[0].(map[string]any)["sql"] != "SELECT id, name FROM items ORDER BY id" || list[0].(map[string]any)["last_run_at"] != nil {
		t.Fatalf("list: %v", list)
	}

	resp, b := f.runRaw(bob, "shop", "fruit", "json")
	res := decodeResult(t, b)
	if resp.StatusCode != 200 || fmt.Sprint(res.Columns) != "[id name]" || fmt.Sprint(res.Rows) != "[[1 apple] [2 pear]]" || res.RowCount != 2 || res.Truncated || res.MaxRows != 1000 {
		t.Fatalf("run: %d %+v", resp.StatusCode, res)
	}
	resp, b = f.runRaw(bob, "shop", "fruit", "csv")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/csv; charset=utf-8" || string(b) != "id,name\r\n1,apple\r\n2,pear\r\n" {
		t.Fatalf("run csv: %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	if resp, b := f.runRaw(bob, "shop", "fruit", "xml"); resp.StatusCode != 422 {
		t.Fatalf("format xml: %d %s", resp.StatusCode, b)
	}
	list = f.must(bob, "GET", "/v1/orgs/shop/saved-queries", nil, 200)["saved_queries"].([]any)
	if list[0].(map[string]any)["last_run_at"] == nil {
		t.Fatalf("the run was not recorded: %v", list)
	}

	f.must(bob, "DELETE", "/v1/orgs/shop/saved-queries/fruit", nil, 403)
	f.must(alice, "DELETE", "/v1/orgs/shop/saved-queries/fruit", nil, 200)
	f.must(alice, "DELETE", "/v1/orgs/shop/saved-queries/fruit", nil, 404)
	if resp, _ := f.runRaw(bob, "shop", "fruit", "json"); resp.StatusCode != 404 {
		t.Fatalf("run after delete: %d", resp.StatusCode)
	}
}

// CSV is written as COPY ... CSV writes it: NULL is nothing, the empty string "", and values with delimiters,
// quotes, line breaks or edge spaces are quoted with quotes doubled; values are Postgres' own text.
func TestSavedQueryCSVEscaping(t *testing.T) {
	t.Parallel()
	f := newSQFixture(t, nil)
	alice := f.user("alice@csv.example", false)
	f.org(alice, "csv")
	sql := `SELECT * FROM (VALUES
		(1, 'plain', NULL::text, 1.50::numeric, true, '{"a": [1, "x,y"]}'::jsonb, ARRAY['a', 'b c'], '2026-01-02 03:04:05+00'::timestamptz),
		(2, 'com,ma', '', -0.0::numeric, false, 'null'::jsonb, ARRAY[]::text[], NULL),
		(3, 'say "hi"', ' lead', 1e3::numeric, NULL, '"s"'::jsonb, ARRAY['"q"'], NULL),
		(4, E'two\nlines', E'cr\rlf', NULL, NULL, NULL, NULL, NULL),
		(5, 'ünïcødé ✓', 'trail ', NULL, NULL, NULL, NULL, NULL)
	) AS t(id, "na,me", "note ""n""", amount, ok, doc, tags, at) ORDER BY id`
	f.must(alice, "POST", "/v1/orgs/csv/saved-queries", map[string]any{"name": "escapes", "sql": sql}, 201)
	resp, b := f.runRaw(alice, "csv", "escapes", "csv")
	want := "id,\"na,me\",\"note \"\"n\"\"\",amount,ok,doc,tags,at\r\n" +
		"1,plain,,1.50,t,\"{\"\"a\"\": [1, \"\"x,y\"\"]}\",\"{a,\"\"b c\"\"}\",2026-01-02 03:04:05+00\r\n" +
		"2,\"com,ma\",\"\",0.0,f,null,{},\r\n" +
		"3,\"say \"\"hi\"\"\",\" lead\",1000,,\"\"\"s\"\"\",\"{\"\"\\\"\"q\\\"\"\"\"}\",\r\n" +
		"4,\"two\nlines\",\"cr\rlf\",,,,,\r\n" +
		"5,ünïcødé ✓,\"trail \",,,,,\r\n"
	if resp.StatusCode != 200 || string(b) != want {
		t.Fatalf("csv: %d\n got %q\nwant %q", resp.StatusCode, b, want)
	}
	if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("Whdb-Row-Count") != "5" {
		t.Fatalf("headers: %v", resp.Header)
	}
	// JSON of the same rows keeps types: numbers, booleans, null, objects.
	resp, b = f.runRaw(alice, "csv", "escapes", "json")
	res := decodeResult(t, b)
	if resp.StatusCode != 200 || res.RowCount != 5 || res.Rows[0][2] != nil || res.Rows[0][4] != true || res.Rows[1][1] != "com,ma" {
		t.Fatalf("json: %d %s", resp.StatusCode, b)
	}
}

// A statement is checked when saved: one read-only query the login can plan. Nothing of it runs.
func TestSavedQueryRefusedAtSave(t *testing.T) {
	t.Parallel()
	f := newSQFixture(t, nil)
	alice := f.user("alice@refuse.example", false)
	db := f.org(alice, "refuse", "keep")
	cases := []struct{ sql, want string }{
		{"DELETE FROM items", "only a read-only query"},
		{"  /* hi */ (( INSERT INTO items (name) VALUES ('x') RETURNING *", "this statement is INSERT"},
		{"UPDATE items SET name = 'x' RETURNING *", "this statement is UPDATE"},
		{"SET statement_timeout = 0", "this statement is SET"},
		{"EXPLAIN ANALYZE DELETE FROM items", "this statement is EXPLAIN"},
		{"DO $$ BEGIN DELETE FROM items; END $$", "this statement is DO"},
		{"SELECT 1; DELETE FROM items", "multiple commands"},
		{"SELECT 1; SELECT 2", "multiple commands"},
		{"WITH gone AS (DELETE FROM items RETURNING *) SELECT * FROM gone", "writes or locks rows (its plan has a ModifyTable node)"},
		{"SELECT * FROM items FOR UPDATE", "LockRows"},
		{"SELECT * INTO copied FROM items", "returns no rows"},
		{"SELECT * FROM missing_table", "relation \"missing_table\" does not exist (SQLSTATE 42P01)"},
		{"SELECT nope FROM items", "SQLSTATE 42703"},
		{"SELECT $1::int", "parameter"},
		{"SELEC 1", "this statement is SELEC"},
		{"-- only a comment", "only comments"},
		{"   ", "required"},
		{"SELECT '" + strings.Repeat("x", 70000) + "'", "a saved query has at most 65536"},
		{"SELECT 'nul\x00'", "NUL"},
	}
	for _, c := range cases {
		status, out := f.call(alice, "POST", "/v1/orgs/refuse/saved-queries", map[string]any{"name": "bad", "sql": c.sql})
		e, _ := out["error"].(map[string]any)
		if status != 422 || e["field"] != "sql" || !strings.Contains(fmt.Sprint(e["message"]), c.want) {
			t.Errorf("%.60q: %d %v, want 422 on sql saying %q", c.sql, status, out, c.want)
		}
	}
	var n int
	if err := db.QueryRow(context.Background(), `SELECT count(*) FROM items`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("items: %d %v", n, err)
	}
	if err := db.QueryRow(context.Background(), `SELECT count(*) FROM pg_class WHERE relname = 'copied'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("SELECT INTO ran: %d %v", n, err)
	}
	if list := f.must(alice, "GET", "/v1/orgs/refuse/saved-queries", nil, 200)["saved_queries"].([]any); len(list) != 0 {
		t.Fatalf("refused queries were saved: %v", list)
	}
	// A query that sleeps is a query: saved (not run).
	started := time.Now()
	f.must(alice, "POST", "/v1/orgs/refuse/saved-queries", map[string]any{"name": "slow", "sql": "SELECT pg_sleep(5)"}, 201)
	if time.Since(started) > 4*time.Second {
		t.Fatalf("saving ran the query (%s)", time.Since(started))
	}
}

// A saved query that fails later says why: to members when they run it, in the list, and (without the
// database's message) at its public URL.
func TestSavedQueryFailureSaysWhy(t *testing.T) {
	t.Parallel()
	f := newSQFixture(t, func(cfg *api.Config) {
		cfg.SQLTimeout = 500 * time.Millisecond
		cfg.PublicQueryTimeout = 500 * time.Millisecond
	})
	alice := f.user("alice@fail.example", false)
	db := f.org(alice, "fail", "x")
	if _, err := db.Exec(context.Background(), `CREATE TABLE doomed (id int)`); err != nil {
		t.Fatal(err)
	}
	created := f.must(alice, "POST", "/v1/orgs/fail/saved-queries", map[string]any{"name": "doomed", "sql": "SELECT count(*) FROM doomed", "public": true}, 201)
	publicPath := strings.TrimPrefix(created["public_url"].(string), "http://hooks.example")
	f.must(alice, "POST", "/v1/orgs/fail/saved-queries/doomed/run", nil, 200)
	if _, err := db.Exec(context.Background(), `DROP TABLE doomed`); err != nil {
		t.Fatal(err)
	}
	status, out := f.call(alice, "POST", "/v1/orgs/fail/saved-queries/doomed/run", nil)
	if code, msg := errorOf(out); status != 400 || code != "sql_error" || !strings.Contains(msg, "saved query doomed failed") || !strings.Contains(msg, `relation "doomed" does not exist (SQLSTATE 42P01)`) {
		t.Fatalf("run of a dropped table: %d %v", status, out)
	}
	list := f.must(alice, "GET", "/v1/orgs/fail/saved-queries", nil, 200)["saved_queries"].([]any)
	if le := fmt.Sprint(list[0].(map[string]any)["last_error"]); !strings.Contains(le, "42P01") {
		t.Fatalf("last_error: %v", list)
	}
	resp, b := f.get("c1", publicPath)
	var pub map[string]any
	_ = json.Unmarshal(b, &pub)
	if code, msg := errorOf(pub); resp.StatusCode != 400 || code != "sql_error" || !strings.Contains(msg, "SQLSTATE 42P01") || strings.Contains(msg, "doomed") {
		t.Fatalf("public failure: %d %s", resp.StatusCode, b)
	}

	f.must(alice, "POST", "/v1/orgs/fail/saved-queries", map[string]any{"name": "sleepy", "sql": "SELECT pg_sleep(3)"}, 201)
	started := time.Now()
	status, out = f.call(alice, "POST", "/v1/orgs/fail/saved-queries/sleepy/run", nil)
	if code, msg := errorOf(out); status != 400 || code != "sql_timeout" || !strings.Contains(msg, "saved query sleepy failed: the query ran past its timeout") || time.Since(started) > 2500*time.Millisecond {
		t.Fatalf("timeout: %d %v after %s", status, out, time.Since(started))
	}
}

// A public query: served without a token as JSON or CSV, capped, cached for the TTL (the database is not asked
// again: a row inserted meanwhile is not counted, and the run is not recorded), rate limited per client; its
// URL stops working when it is unpublished, its token rolled or the query deleted.
func TestPublicSavedQuery(t *testing.T) {
	t.Parallel()
	f := newSQFixture(t, func(cfg *api.Config) {
		cfg.SavedQueryCacheTTL = time.Hour
		cfg.PublicQueryMaxRows = 50
		cfg.PublicQueryMaxBytes = 2000
		cfg.PublicQueryBurst = 50
	})
	alice := f.user("alice@pub.example", false)
	db := f.org(alice, "pub", "a", "b")
	created := f.must(alice, "POST", "/v1/orgs/pub/saved-queries", map[string]any{"name": "count", "sql": "SELECT count(*) AS n FROM items", "public": true}, 201)
	url := created["public_url"].(string)
	if !strings.HasPrefix(url, "http://hooks.example/v1/public/queries/sqt_") || created["saved_query"].(map[string]any)["token_hint"] != url[len("http://hooks.example/v1/public/queries/"):][:8] {
		t.Fatalf("created: %v", created)
	}
	path := strings.TrimPrefix(url, "http://hooks.example")
	resp, b := f.get("c1", path)
	if res := decodeResult(t, b); resp.StatusCode != 200 || fmt.Sprint(res.Rows) != "[[2]]" || resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("public json: %d %s", resp.StatusCode, b)
	}
	lastRun := func() time.Time {
		var at time.Time
		if err := f.pool.QueryRow(context.Background(), `SELECT last_run_at FROM saved_queries WHERE name = 'count'`).Scan(&at); err != nil {
			t.Fatal(err)
		}
		return at
	}
	ranAt := lastRun()
	if _, err := db.Exec(context.Background(), `INSERT INTO items (name) VALUES ('c')`); err != nil {
		t.Fatal(err)
	}
	resp, b = f.get("c2", path)
	if res := decodeResult(t, b); resp.StatusCode != 200 || fmt.Sprint(res.Rows) != "[[2]]" || lastRun() != ranAt {
		t.Fatalf("within the TTL the database was asked again: %d %s", resp.StatusCode, b)
	}
	// A member's run is never cached.
	if res := decodeResult(t, must2(f.runRaw(alice, "pub", "count", "json"))); fmt.Sprint(res.Rows) != "[[3]]" {
		t.Fatalf("run: %+v", res)
	}
	resp, b = f.get("c1", path+"?format=csv")
	if resp.StatusCode != 200 || string(b) != "n\r\n3\r\n" {
		t.Fatalf("public csv (its own cache entry): %d %q", resp.StatusCode, b)
	}

	// Caps: rows, then bytes.
	f.must(alice, "POST", "/v1/orgs/pub/saved-queries", map[string]any{"name": "many", "sql": "SELECT i FROM generate_series(1, 100) i", "public": true}, 201)
	f.must(alice, "POST", "/v1/orgs/pub/saved-queries", map[string]any{"name": "wide", "sql": "SELECT i, repeat('x', 100) FROM generate_series(1, 3) i", "public": true}, 201)
	manyURL := strings.TrimPrefix(f.must(alice, "POST", "/v1/orgs/pub/saved-queries/many/roll-token", nil, 200)["public_url"].(string), "http://hooks.example")
	resp, b = f.get("c1", manyURL)
	if res := decodeResult(t, b); resp.StatusCode != 200 || res.RowCount != 50 || !res.Truncated || res.TruncatedBy != "max_rows" || resp.Header.Get("Whdb-Truncated-By") != "max_rows" {
		t.Fatalf("row cap: %d %s", resp.StatusCode, b)
	}
	f.must(alice, "POST", "/v1/orgs/pub/saved-queries/wide/unpublish", nil, 200)
	f.must(alice, "PATCH", "/v1/orgs/pub", map[string]any{"name": "Pub"}, 200)
	wideURL := strings.TrimPrefix(f.must(alice, "POST", "/v1/orgs/pub/saved-queries/wide/publish", nil, 200)["public_url"].(string), "http://hooks.example")
	f.must(alice, "POST", "/v1/orgs/pub/saved-queries", map[string]any{"name": "wider", "sql": "SELECT i, repeat('x', 100) FROM generate_series(1, 100) i", "public": true}, 201)
	list := f.must(alice, "GET", "/v1/orgs/pub/saved-queries", nil, 200)["saved_queries"].([]any)
	if len(list) != 4 {
		t.Fatalf("list: %v", list)
	}
	resp, b = f.get("c1", wideURL)
	if res := decodeResult(t, b); resp.StatusCode != 200 || res.RowCount != 3 || res.Truncated {
		t.Fatalf("wide: %d %s", resp.StatusCode, b)
	}
	var widerPath string
	for _, q := range list {
		if q.(map[string]any)["name"] == "wider" {
			widerPath = strings.TrimPrefix(f.must(alice, "POST", "/v1/orgs/pub/saved-queries/wider/roll-token", nil, 200)["public_url"].(string), "http://hooks.example")
		}
	}
	for _, format := range []string{"json", "csv"} {
		resp, b = f.get("c1", widerPath+"?format="+format)
		if resp.StatusCode != 200 || resp.Header.Get("Whdb-Truncated-By") != "max_bytes" || len(b) > 2000+300 || len(b) < 1500 {
			t.Fatalf("byte cap (%s): %d, %d bytes, %v", format, resp.StatusCode, len(b), resp.Header)
		}
	}

	// Revocation: unpublish, then publish again (a new URL), roll (the old one dies), delete.
	f.must(alice, "POST", "/v1/orgs/pub/saved-queries/count/publish", nil, 409)
	f.must(alice, "POST", "/v1/orgs/pub/saved-queries/count/unpublish", nil, 200)
	if resp, b := f.get("c1", path); resp.StatusCode != 404 {
		t.Fatalf("unpublished: %d %s", resp.StatusCode, b)
	}
	f.must(alice, "POST", "/v1/orgs/pub/saved-queries/count/unpublish", nil, 409)
	f.must(alice, "POST", "/v1/orgs/pub/saved-queries/count/roll-token", nil, 409)
	second := strings.TrimPrefix(f.must(alice, "POST", "/v1/orgs/pub/saved-queries/count/publish", nil, 200)["public_url"].(string), "http://hooks.example")
	if second == path {
		t.Fatal("publishing again gave the old URL")
	}
	third := strings.TrimPrefix(f.must(alice, "POST", "/v1/orgs/pub/saved-queries/count/roll-token", nil, 200)["public_url"].(string), "http://hooks.example")
	if resp, _ := f.get("c1", second); resp.StatusCode != 404 {
		t.Fatalf("rolled token still works: %d", resp.StatusCode)
	}
	if resp, b := f.get("c1", third); resp.StatusCode != 200 || decodeResult(t, b).Rows[0][0] != float64(3) {
		t.Fatalf("new token: %d %s", resp.StatusCode, b)
	}
	// Only the hash is stored.
	var stored int
	token := third[len("/v1/public/queries/"):]
	if err := f.pool.QueryRow(context.Background(), `SELECT count(*) FROM saved_queries WHERE public_token_hash = sha256($1::bytea) AND strpos(sql, $2) = 0`, []byte(token), token).Scan(&stored); err != nil || stored != 1 {
		t.Fatalf("stored hash: %d %v", stored, err)
	}
	f.must(alice, "DELETE", "/v1/orgs/pub/saved-queries/count", nil, 200)
	if resp, _ := f.get("c1", third); resp.StatusCode != 404 {
		t.Fatalf("deleted query still served: %d", resp.StatusCode)
	}
	// Not a token, an API token, a token of the right shape that does not exist: 404 alike.
	for _, p := range []string{"/v1/public/queries/nope", "/v1/public/queries/" + alice, "/v1/public/queries/sqt_aaaaaaaaaaaaaaaaaaaaaaaaaa"} {
		if resp, b := f.get("c1", p); resp.StatusCode != 404 {
			t.Fatalf("%s: %d %s", p, resp.StatusCode, b)
		}
	}
	if resp, _ := f.get("c1", manyURL+"?format=xml"); resp.StatusCode != 422 {
		t.Fatalf("format xml: %d", resp.StatusCode)
	}
}

func must2(_ *http.Response, b []byte) []byte { return b }

// After the TTL the query runs again; each client has its own request budget.
func TestPublicSavedQueryCacheExpiresAndRateLimit(t *testing.T) {
	t.Parallel()
	f := newSQFixture(t, func(cfg *api.Config) {
		cfg.SavedQueryCacheTTL = 300 * time.Millisecond
		cfg.PublicQueryBurst = 3
		cfg.PublicQueryEvery = time.Hour
	})
	alice := f.user("alice@ttl.example", false)
	db := f.org(alice, "ttl", "a")
	url := f.must(alice, "POST", "/v1/orgs/ttl/saved-queries", map[string]any{"name": "count", "sql": "SELECT count(*) FROM items", "public": true}, 201)["public_url"].(string)
	path := strings.TrimPrefix(url, "http://hooks.example")
	count := func(client string) any {
		resp, b := f.get(client, path)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", client, resp.StatusCode, b)
		}
		return decodeResult(t, b).Rows[0][0]
	}
	if n := count("c1"); n != float64(1) {
		t.Fatalf("count %v", n)
	}
	if _, err := db.Exec(context.Background(), `INSERT INTO items (name) VALUES ('b')`); err != nil {
		t.Fatal(err)
	}
	// Each poll is a client of its own (the budget is per client), until the TTL has passed.
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; count(fmt.Sprintf("poll%d", i)) != float64(2); i++ {
		if time.Now().After(deadline) {
			t.Fatal("the cached result outlived its TTL")
		}
		time.Sleep(50 * time.Millisecond)
	}
	count("c1")
	count("c1")
	resp, b := f.get("c1", path)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("4th request of c1: %d %s", resp.StatusCode, b)
	}
	if count("c10") != float64(2) {
		t.Fatal("another client is limited too")
	}
}

// Orgs are isolated: each public URL reads its own org's database; another org's member reaches nothing of
// the org by name.
func TestSavedQueryTenantIsolation(t *testing.T) {
	t.Parallel()
	f := newSQFixture(t, nil)
	alice := f.user("alice@iso-a.example", false)
	bob := f.user("bob@iso-b.example", false)
	f.org(alice, "org_a", "a-secret")
	f.org(bob, "org_b", "b-secret")
	aURL := f.must(alice, "POST", "/v1/orgs/org_a/saved-queries", map[string]any{"name": "rows", "sql": "SELECT name FROM items", "public": true}, 201)["public_url"].(string)
	bURL := f.must(bob, "POST", "/v1/orgs/org_b/saved-queries", map[string]any{"name": "rows", "sql": "SELECT name FROM items", "public": true}, 201)["public_url"].(string)
	for url, want := range map[string]string{aURL: "[[a-secret]]", bURL: "[[b-secret]]"} {
		resp, b := f.get("c", strings.TrimPrefix(url, "http://hooks.example"))
		if res := decodeResult(t, b); resp.StatusCode != 200 || fmt.Sprint(res.Rows) != want {
			t.Fatalf("%s: %d %s, want %s", url, resp.StatusCode, b, want)
		}
	}
	for _, route := range []struct{ method, path string }{
		{"GET", "/v1/orgs/org_a/saved-queries"}, {"POST", "/v1/orgs/org_a/saved-queries/rows/run"},
		{"POST", "/v1/orgs/org_a/saved-queries/rows/roll-token"}, {"POST", "/v1/orgs/org_a/saved-queries/rows/unpublish"},
		{"DELETE", "/v1/orgs/org_a/saved-queries/rows"},
	} {
		if status, out := f.call(bob, route.method, route.path, nil); status != 404 {
			t.Errorf("bob %s %s: %d %v", route.method, route.path, status, out)
		}
	}
	// Org A's admin sees only A's query, and deleting the org ends its URL.
	if list := f.must(alice, "GET", "/v1/orgs/org_a/saved-queries", nil, 200)["saved_queries"].([]any); len(list) != 1 {
		t.Fatalf("list: %v", list)
	}
	f.must(alice, "DELETE", "/v1/orgs/org_a", nil, 200)
	if resp, _ := f.get("c", strings.TrimPrefix(aURL, "http://hooks.example")); resp.StatusCode != 404 {
		t.Fatalf("deleted org's URL: %d", resp.StatusCode)
	}
	if resp, _ := f.get("c", strings.TrimPrefix(bURL, "http://hooks.example")); resp.StatusCode != 200 {
		t.Fatalf("org B's URL after A's deletion: %d", resp.StatusCode)
	}
}

// Public runs of one org are bounded at once: past the bound a fetch is told to come back (503, Retry-After),
// while another org's public queries are served.
func TestPublicSavedQueryRunsBoundedPerOrg(t *testing.T) {
	t.Parallel()
	f := newSQFixture(t, func(cfg *api.Config) { cfg.PublicQueryConcurrency = 1; cfg.SavedQueryCacheTTL = time.Hour })
	alice := f.user("alice@busy-a.example", false)
	bob := f.user("bob@busy-b.example", false)
	dbA := f.org(alice, "busy_a")
	f.org(bob, "busy_b", "b")
	publish := func(token, org, name, sql string) string {
		url := f.must(token, "POST", "/v1/orgs/"+org+"/saved-queries", map[string]any{"name": name, "sql": sql, "public": true}, 201)["public_url"].(string)
		return strings.TrimPrefix(url, "http://hooks.example")
	}
	slow1 := publish(alice, "busy_a", "slow1", "SELECT 1 AS one FROM pg_sleep(1)")
	slow2 := publish(alice, "busy_a", "slow2", "SELECT 2 AS two FROM pg_sleep(1)")
	other := publish(bob, "busy_b", "quick", "SELECT count(*) FROM items")

	first := make(chan int, 1)
	go func() { resp, _ := f.get("c1", slow1); first <- resp.StatusCode }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var running int
		if err := dbA.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT 1 AS one%' AND state = 'active'`).Scan(&running); err != nil {
			t.Fatal(err)
		}
		if running == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first public run never started")
		}
		time.Sleep(20 * time.Millisecond)
	}
	resp, b := f.get("c2", slow2)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" || !strings.Contains(string(b), `"busy"`) {
		t.Fatalf("a second run of the org at once: %d %s", resp.StatusCode, b)
	}
	if resp, b := f.get("c3", other); resp.StatusCode != 200 {
		t.Fatalf("another org's query meanwhile: %d %s", resp.StatusCode, b)
	}
	if s := <-first; s != 200 {
		t.Fatalf("the first run: %d", s)
	}
	if resp, b := f.get("c2", slow2); resp.StatusCode != 200 {
		t.Fatalf("the second once the first is done: %d %s", resp.StatusCode, b)
	}
}

// Functions with side effects pass the check (they are queries) but cannot write when run, and cannot lift the
// timeout the server set: the read-only transaction and the statement timeout hold whatever the query calls.
func TestSavedQuerySideEffectsAreBounded(t *testing.T) {
	t.Parallel()
	f := newSQFixture(t, func(cfg *api.Config) { cfg.SQLTimeout = 500 * time.Millisecond })
	alice := f.user("alice@side.example", false)
	db := f.org(alice, "side", "a")
	for name, sql := range map[string]string{
		"nextval": "SELECT nextval('items_id_seq')",
		"lo":      "SELECT lo_create(0)",
		"untimed": "SELECT set_config('statement_timeout', '0', false) AS t, pg_sleep(3)",
	} {
		f.must(alice, "POST", "/v1/orgs/side/saved-queries", map[string]any{"name": name, "sql": sql}, 201)
	}
	status, out := f.call(alice, "POST", "/v1/orgs/side/saved-queries/nextval/run", nil)
	if code, msg := errorOf(out); status != 400 || code != "sql_error" || !strings.Contains(msg, "SQLSTATE 25006") {
		t.Errorf("nextval: %d %v", status, out)
	}
	// Postgres lets a read-only transaction create a large object; the run's transaction is rolled back.
	f.must(alice, "POST", "/v1/orgs/side/saved-queries/lo/run", nil, 200)
	var last int64
	var los int
	if err := db.QueryRow(context.Background(), `SELECT last_value, (SELECT count(*) FROM pg_largeobject_metadata) FROM items_id_seq`).Scan(&last, &los); err != nil || last != 1 || los != 0 {
		t.Fatalf("sequence at %d, %d large objects (%v)", last, los, err)
	}
	started := time.Now()
	status, out = f.call(alice, "POST", "/v1/orgs/side/saved-queries/untimed/run", nil)
	if code, _ := errorOf(out); status != 400 || code != "sql_timeout" || time.Since(started) > 2500*time.Millisecond {
		t.Fatalf("a query turning its timeout off: %d %v after %s", status, out, time.Since(started))
	}
}
