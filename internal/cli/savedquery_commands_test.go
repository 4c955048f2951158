package cli

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
)

// Every saved-query command tolerates answers without fields, in both output formats.
func TestSavedQueryCommandsTolerateMissingFields(t *testing.T) {
	fakeAPI(t, func(*http.Request) any { return map[string]any{} })
	for _, args := range [][]string{
		{"saved-query", "create", "q", "--sql", "SELECT 1"}, {"saved-query", "create", "q", "--sql", "SELECT 1", "--public"},
		{"saved-query", "list"}, {"saved-query", "run", "q"}, {"saved-query", "delete", "q", "--yes"},
		{"saved-query", "publish", "q"}, {"saved-query", "roll-token", "q", "--yes"}, {"saved-query", "unpublish", "q", "--yes"},
	} {
		for _, format := range []string{"table", "json"} {
			out, err := runCLI(context.Background(), append(args, "-o", format)...)
			if err != nil {
				t.Errorf("webhookdb %s -o %s: %v", strings.Join(args, " "), format, err)
			}
			if format == "json" && !json.Valid([]byte(out)) {
				t.Errorf("webhookdb %s -o json: not JSON:\n%s", strings.Join(args, " "), out)
			}
		}
	}
}

// The commands call the routes of docs/openapi.yaml; run --format csv prints the server's CSV as it is.
func TestSavedQueryCommandsCallTheirRoutes(t *testing.T) {
	var mu sync.Mutex
	var calls []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		calls = append(calls, r.Method+" "+r.URL.RequestURI())
		if strings.Contains(string(body), "from a file") {
			calls = append(calls, "(the file's query)")
		}
		mu.Unlock()
		if r.URL.Query().Get("format") == "csv" {
			w.Header().Set("Content-Type", "text/csv")
			_, _ = w.Write([]byte("a,b\r\n\"x,y\",\r\n"))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"saved_query":{"name":"q"},"public_url":"http://h/v1/public/queries/sqt_x","columns":["a"],"rows":[[1]],"row_count":1}`))
	}))
	t.Cleanup(srv.Close)
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	t.Setenv("WEBHOOKDB_API_URL", srv.URL)
	t.Setenv("WEBHOOKDB_TOKEN", "whdb_test")
	t.Setenv("WEBHOOKDB_ORG", "acme")
	out, err := runCLI(context.Background(), "saved-query", "run", "q", "--format", "csv")
	if err != nil || out != "a,b\r\n\"x,y\",\r\n" {
		t.Fatalf("run --format csv: %v %q", err, out)
	}
	if out, err := runCLI(context.Background(), "saved-query", "create", "q", "--sql", "SELECT 1", "--public"); err != nil || !strings.Contains(out, "http://h/v1/public/queries/sqt_x") {
		t.Fatalf("create --public: %v %q", err, out)
	}
	sqlFile := t.TempDir() + "/q.sql"
	if err := os.WriteFile(sqlFile, []byte("SELECT 'from a file'"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"create", "f", "--sql-file", sqlFile}, {"run", "q"}, {"publish", "q"}, {"roll-token", "q", "--yes"}, {"unpublish", "q", "--yes"}, {"delete", "q", "--yes"}, {"list"}} {
		if _, err := runCLI(context.Background(), append([]string{"saved-query"}, args...)...); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
	}
	want := []string{
		"POST /v1/orgs/acme/saved-queries/q/run?format=csv", "POST /v1/orgs/acme/saved-queries",
		"POST /v1/orgs/acme/saved-queries", "(the file's query)", "POST /v1/orgs/acme/saved-queries/q/run?format=json", "POST /v1/orgs/acme/saved-queries/q/publish",
		"POST /v1/orgs/acme/saved-queries/q/roll-token", "POST /v1/orgs/acme/saved-queries/q/unpublish",
		"DELETE /v1/orgs/acme/saved-queries/q", "GET /v1/orgs/acme/saved-queries",
	}
	if strings.Join(calls, "\n") != strings.Join(want, "\n") {
		t.Fatalf("calls:\n%s\nwant:\n%s", strings.Join(calls, "\n"), strings.Join(want, "\n"))
	}
}
