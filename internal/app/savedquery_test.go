package app

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

	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/internal/accounts"
	"github.com/webhookdb-go/webhookdb/internal/orgdb"
	"github.com/webhookdb-go/webhookdb/internal/pgtest"
)

// Saved queries on real org databases, through the server as assembled: the query runs on the org's own
// service login issued by Vault (not a member's), read-only; the login's privileges decide what can be saved;
// a public URL is cached (a row inserted meanwhile is not counted until the TTL passes), revocable, and reads
// only its own org's database.
func TestSavedQueriesOnOrgDatabases(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tv := newTestVault(t, ctx)
	root, token, key := tv.root, tv.token, tv.key
	dbURL := pgtest.NewDBURL(t)
	a, err := New(ctx, Config{
		DatabaseURL: dbURL, VaultAddr: root.Address(), VaultToken: token, TransitKey: key,
		Roles: []Role{RoleAPI}, Listen: "127.0.0.1:0", Slot: "s_" + suffix(), Logger: quiet(),
		SavedQueries: SavedQueryConfig{CacheTTL: time.Hour},
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	var orgIDs []int64
	defer func() {
		for _, id := range orgIDs {
			_ = a.Orgs().DeleteOrg(context.Background(), id)
		}
	}()
	c := pgtest.NewCluster(t) // its own server: registering one sets the Vault role's password, which the other tests of this package race for on the shared cluster
	if _, err := a.Orgs().RegisterServer(ctx, orgdb.ServerSpec{Name: "sq" + suffix(), AdminURL: c.URL("postgres"), PublicHost: "127.0.0.1", PublicPort: c.Port, SSLMode: "disable"}); err != nil {
		t.Fatal(err)
	}

	call := func(token, method, path string, body any) (int, []byte) {
		t.Helper()
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, a.URL()+path, rd)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	must := func(token, method, path string, body any, want int) map[string]any {
		t.Helper()
		status, b := call(token, method, path, body)
		if status != want {
			t.Fatalf("%s %s: %d %s, want %d", method, path, status, b, want)
		}
		var out map[string]any
		_ = json.Unmarshal(b, &out)
		return out
	}
	user := func(email string) string {
		u, err := accounts.CreateUser(ctx, a.Pool(), email, false)
		if err != nil {
			t.Fatal(err)
		}
		tok, _, err := accounts.CreateToken(ctx, a.Pool(), u.ID, "t")
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	// org creates an org of admin's and, as the org's owner role, a table items with the given names.
	org := func(admin, key string, names ...string) *pgx.Conn {
		t.Helper()
		must(admin, "POST", "/v1/orgs", map[string]any{"key": key}, 201)
		var id int64
		var dbName, owner string
		if err := a.Pool().QueryRow(ctx, `SELECT id, database_name FROM organizations WHERE key = $1`, key).Scan(&id, &dbName); err != nil {
			t.Fatal(err)
		}
		orgIDs = append(orgIDs, id)
		conn, err := pgx.Connect(ctx, c.URL(dbName))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close(context.Background()) })
		if err := conn.QueryRow(ctx, `SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'public'`).Scan(&owner); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "SET ROLE "+pgx.Identifier{owner}.Sanitize()); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, `CREATE TABLE items (id serial PRIMARY KEY, name text)`); err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			if _, err := conn.Exec(ctx, `INSERT INTO items (name) VALUES ($1)`, n); err != nil {
				t.Fatal(err)
			}
		}
		return conn
	}
	alice, bob := user("alice@sqa.example"), user("bob@sqb.example")
	dbA := org(alice, "sq_a", "a1", "a2")
	dbB := org(bob, "sq_b", "b1")

	// It runs on the service login, read-only, not on alice's own login.
	mine := must(alice, "GET", "/v1/orgs/sq_a/db/connection", nil, 200)["username"]
	must(alice, "POST", "/v1/orgs/sq_a/saved-queries", map[string]any{"name": "who",
		"sql": "SELECT current_user AS who, current_setting('transaction_read_only') AS ro, (SELECT count(*) FROM items) AS n"}, 201)
	res := must(alice, "POST", "/v1/orgs/sq_a/saved-queries/who/run", nil, 200)
	row := res["rows"].([]any)[0].([]any)
	if who := fmt.Sprint(row[0]); who == fmt.Sprint(mine) || !strings.Contains(who, "readonly") || row[1] != "on" || row[2] != float64(2) {
		t.Fatalf("run: %v (alice's own login %v)", res, mine)
	}

	// What the read-only login cannot do cannot be saved, whatever the statement looks like.
	for sql, want := range map[string]string{
		"WITH gone AS (DELETE FROM items RETURNING *) SELECT * FROM gone": "permission denied for table items",
		"SELECT * FROM items FOR UPDATE":                                  "permission denied for table items",
		"SELECT rolpassword FROM pg_authid":                               "permission denied for table pg_authid",
		"SELECT * FROM items; DELETE FROM items":                          "multiple commands",
		"DELETE FROM items RETURNING *":                                   "this statement is DELETE",
	} {
		status, b := call(alice, "POST", "/v1/orgs/sq_a/saved-queries", map[string]any{"name": "bad", "sql": sql})
		if status != 422 || !strings.Contains(string(b), want) {
			t.Errorf("%q: %d %s, want 422 saying %q", sql, status, b, want)
		}
	}
	var n int
	if err := dbA.QueryRow(ctx, `SELECT count(*) FROM items`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("items after the refusals: %d %v", n, err)
	}

	// Public URLs: each reads its own org's database; cached within the TTL; revocable.
	countA := strings.TrimPrefix(must(alice, "POST", "/v1/orgs/sq_a/saved-queries", map[string]any{"name": "count", "sql": "SELECT count(*) AS n, string_agg(name, ',' ORDER BY id) AS names FROM items", "public": true}, 201)["public_url"].(string), a.PublicURL())
	countB := strings.TrimPrefix(must(bob, "POST", "/v1/orgs/sq_b/saved-queries", map[string]any{"name": "count", "sql": "SELECT count(*) AS n, string_agg(name, ',' ORDER BY id) AS names FROM items", "public": true}, 201)["public_url"].(string), a.PublicURL())
	fetch := func(path string) string {
		t.Helper()
		status, b := call("", "GET", path+"?format=csv", nil)
		if status != 200 {
			t.Fatalf("%s: %d %s", path, status, b)
		}
		return string(b)
	}
	if got := fetch(countA); got != "n,names\r\n2,\"a1,a2\"\r\n" {
		t.Fatalf("org A's URL: %q", got)
	}
	if got := fetch(countB); got != "n,names\r\n1,b1\r\n" {
		t.Fatalf("org B's URL: %q", got)
	}
	if _, err := dbA.Exec(ctx, `INSERT INTO items (name) VALUES ('a3')`); err != nil {
		t.Fatal(err)
	}
	if got := fetch(countA); got != "n,names\r\n2,\"a1,a2\"\r\n" {
		t.Fatalf("within the TTL the database was asked again: %q", got)
	}
	if res := must(alice, "POST", "/v1/orgs/sq_a/saved-queries/count/run", nil, 200); fmt.Sprint(res["rows"]) != "[[3 a1,a2,a3]]" {
		t.Fatalf("a member's run: %v", res)
	}
	// Bob's token, and bob himself, reach nothing of org A.
	must(bob, "POST", "/v1/orgs/sq_a/saved-queries/count/run", nil, 404)
	if status, _ := call("", "GET", "/v1/public/queries/"+bob, nil); status != 404 {
		t.Fatalf("an API token as a public token: %d", status)
	}
	must(alice, "POST", "/v1/orgs/sq_a/saved-queries/count/unpublish", nil, 200)
	if status, _ := call("", "GET", countA, nil); status != 404 {
		t.Fatalf("unpublished URL: %d", status)
	}
	if got := fetch(countB); got != "n,names\r\n1,b1\r\n" {
		t.Fatalf("org B's URL after A's unpublish: %q", got)
	}

	// A table dropped later: the run says why.
	if _, err := dbB.Exec(ctx, `DROP TABLE items`); err != nil {
		t.Fatal(err)
	}
	status, b := call(bob, "POST", "/v1/orgs/sq_b/saved-queries/count/run", nil)
	if status != 400 || !strings.Contains(string(b), `relation \"items\" does not exist`) {
		t.Fatalf("run after DROP TABLE: %d %s", status, b)
	}
}
