package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/webhookdb-go/webhookdb/internal/accounts"
	"github.com/webhookdb-go/webhookdb/internal/api"
)

// fakeAPI answers every request with answer(r), as JSON with status 200.
func fakeAPI(t *testing.T, answer func(r *http.Request) any) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(answer(r))
	}))
	t.Cleanup(srv.Close)
	// The client reads these; the environment is the process's, so these tests cannot run in parallel.
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	t.Setenv("WEBHOOKDB_API_URL", srv.URL)
	t.Setenv("WEBHOOKDB_TOKEN", "whdb_test")
	t.Setenv("WEBHOOKDB_ORG", "acme")
}

func runCLI(ctx context.Context, args ...string) (string, error) {
	root := NewRootCommand()
	out := &bytes.Buffer{}
	root.SetOut(out)
	root.SetErr(&bytes.Buffer{})
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

// Answers that lack fields (an older or newer server) print dashes instead of panicking.
func TestClientCommandsTolerateMissingFields(t *testing.T) {
	fakeAPI(t, func(*http.Request) any { return map[string]any{} })
	commands := [][]string{
		{"auth", "whoami"}, {"org", "create", "acme"}, {"org", "list"}, {"org", "use", "acme"}, {"org", "info"},
		{"org", "members"}, {"org", "add-member", "a@x.example"}, {"org", "remove-member", "a@x.example", "--yes"},
		{"org", "change-role", "a@x.example", "admin"}, {"org", "delete", "--yes"},
		{"tokens", "create"}, {"tokens", "list"}, {"tokens", "revoke", "1", "--yes"},
		{"services", "list"}, {"services", "info", "stripe_charge_v1"}, {"services", "fixture", "stripe_charge_v1"},
		{"integrations", "create", "stripe_charge_v1"}, {"integrations", "create", "stripe_charge_v1", "-q"},
		{"integrations", "list"}, {"integrations", "info", "svi_x"}, {"integrations", "update", "svi_x", "--body-limit", "10"},
		{"integrations", "delete", "svi_x", "--yes"}, {"integrations", "roll-secret", "svi_x"}, {"integrations", "stats", "svi_x"},
		{"db", "connection"}, {"db", "roll-credentials", "--yes"}, {"db", "tables"}, {"db", "sql", "SELECT 1"},
		{"webhooks", "list"}, {"webhooks", "show", "1"}, {"replay", "--since", "1h"},
		{"errors", "list"}, {"errors", "retry"}, {"errors", "retry", "7"}, {"errors", "skip", "7", "--yes"}, {"servers", "add", "pg2"}, {"servers", "list"}, {"fanout", "status"},
	}
	for _, args := range commands {
		for _, format := range []string{"table", "json"} {
			out, err := runCLI(context.Background(), append(args, "-o", format)...)
			if err != nil {
				t.Errorf("webhookdb %s -o %s: %v", strings.Join(args, " "), format, err)
			}
			if format == "json" && args[1] != "use" && !json.Valid([]byte(out)) {
				t.Errorf("webhookdb %s -o json: not JSON:\n%s", strings.Join(args, " "), out)
			}
		}
	}
}

// The CLI decodes the API's own types: values, null pointers and times print as the API wrote them.
func TestClientCommandsPrintTypedAnswers(t *testing.T) {
	received := time.Date(2024, 5, 6, 7, 8, 9, 123456000, time.FixedZone("", 2*3600))
	reason := "signature mismatch"
	fakeAPI(t, func(r *http.Request) any {
		switch r.URL.Path {
		case "/v1/me":
			return api.Me{User: &accounts.User{ID: 1, Email: "alice@x.example", ServerAdmin: true}, Orgs: []*api.Org{{Key: "acme", Role: "admin"}}}
		case "/v1/orgs/acme/webhooks":
			return api.DeliveryList{Webhooks: []api.Delivery{
				{ID: 1 << 53, ReceivedAt: received, Integration: "svi_a", Outcome: "accepted", Bytes: 12},
				{ID: 2, ReceivedAt: received, Integration: "svi_a", Outcome: "rejected", Reason: &reason},
			}}
		}
		return map[string]any{}
	})
	out, err := runCLI(context.Background(), "auth", "whoami")
	if err != nil || !strings.Contains(out, "alice@x.example") || !strings.Contains(out, "acme (admin)") || !strings.Contains(out, "true") {
		t.Fatalf("whoami: %v\n%s", err, out)
	}
	out, err = runCLI(context.Background(), "webhooks", "list")
	if err != nil {
		t.Fatal(err)
	}
	// int64 ids beyond float64's integers survive, times keep their offset, absent values are dashes.
	for _, want := range []string{"9007199254740992", "2024-05-06T07:08:09.123456+02:00", "signature mismatch", "rejected"} {
		if !strings.Contains(out, want) {
			t.Errorf("webhooks list lacks %q:\n%s", want, out)
		}
	}
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 || !strings.Contains(lines[1], " - ") {
		t.Errorf("webhooks list:\n%s", out)
	}
}

func TestClientErrorAnswers(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/me" {
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(api.ErrorEnvelope{Error: &api.Error{Code: "unauthorized", Message: "invalid or revoked API token"}})
			return
		}
		http.Error(w, "not JSON", http.StatusBadGateway)
	}))
	t.Cleanup(srv.Close)
	c := &client{baseURL: srv.URL, token: "whdb_x", http: srv.Client()}
	var apiErr *apiError
	if err := c.do(context.Background(), "GET", "/v1/me", nil, &api.Me{}); !errors.As(err, &apiErr) || apiErr.Status != 401 || apiErr.Code != "unauthorized" || err.Error() != "invalid or revoked API token" {
		t.Fatalf("401: %#v", err)
	}
	if err := c.do(context.Background(), "GET", "/v1/orgs", nil, &api.OrgList{}); err == nil || err.Error() != "the server answered 502" {
		t.Fatalf("502: %v", err)
	}
}

// Cancelling the command's context (Ctrl-C) ends a request that is waiting for its answer.
func TestClientRequestsFollowTheCommandContext(t *testing.T) {
	arrived := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // once the body is read, net/http notices the client leaving
		close(arrived)
		<-r.Context().Done() // a long query: no answer until the client gives up
	}))
	t.Cleanup(srv.Close)
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	t.Setenv("WEBHOOKDB_API_URL", srv.URL)
	t.Setenv("WEBHOOKDB_TOKEN", "whdb_test")
	t.Setenv("WEBHOOKDB_ORG", "acme")

	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-arrived
		cancel()
	}()
	done := make(chan error, 1)
	go func() {
		_, err := runCLI(ctx, "db", "sql", "SELECT pg_sleep(300)", "--timeout", "5m")
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("db sql after cancel: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("db sql did not stop when its context was cancelled")
	}
}

func TestSQLClientTimeout(t *testing.T) {
	t.Parallel()
	for flag, want := range map[string]time.Duration{
		"": clientTimeout, "30s": clientTimeout, "5m": 6 * time.Minute, "4m30s": 5*time.Minute + 30*time.Second, "soon": clientTimeout,
	} {
		if got := sqlClientTimeout(flag); got != want {
			t.Errorf("sqlClientTimeout(%q) = %v, want %v", flag, got, want)
		}
	}
}

// `fanout status` belongs to the fanout command itself.
func TestFanoutStatusInTree(t *testing.T) {
	t.Parallel()
	cmd, _, err := NewRootCommand().Find([]string{"fanout", "status"})
	if err != nil || cmd.Name() != "status" || cmd.Parent().Name() != "fanout" {
		t.Fatalf("fanout status: %v %v", cmd, err)
	}
}

// errors retry ID and errors skip ID address one failed change; skip needs confirming; ids are numbers.
func TestErrorsRetryAndSkipOne(t *testing.T) {
	var calls []string
	fakeAPI(t, func(r *http.Request) any {
		calls = append(calls, r.Method+" "+r.URL.Path)
		switch r.URL.Path {
		case "/v1/orgs/acme/errors/7/retry":
			return api.RetryResult{Retrying: 1}
		case "/v1/orgs/acme/errors/7/skip":
			return api.Skipped{Skipped: 7}
		}
		return map[string]any{}
	})
	ctx := context.Background()
	if out, err := runCLI(ctx, "errors", "retry", "7", "-o", "json"); err != nil || !strings.Contains(out, `"retrying": 1`) {
		t.Fatalf("retry 7: %v\n%s", err, out)
	}
	if _, err := runCLI(ctx, "errors", "skip", "7"); err == nil {
		t.Fatalf("skip without --yes: %v", err)
	}
	if out, err := runCLI(ctx, "errors", "skip", "7", "--yes", "-o", "json"); err != nil || !strings.Contains(out, `"skipped": 7`) {
		t.Fatalf("skip 7: %v\n%s", err, out)
	}
	if _, err := runCLI(ctx, "errors", "skip", "../x", "--yes"); err == nil {
		t.Fatal("skip of a non-number went through")
	}
	if _, err := runCLI(ctx, "errors", "retry", "7", "--integration", "svi_x"); err == nil {
		t.Fatal("retry ID with --integration went through")
	}
	want := []string{"POST /v1/orgs/acme/errors/7/retry", "POST /v1/orgs/acme/errors/7/skip"}
	if strings.Join(calls, ",") != strings.Join(want, ",") {
		t.Fatalf("calls %q, want %q", calls, want)
	}
}

// db roll-credentials rolls the caller's own login; --all asks for every member's (admins).
func TestRollCredentialsOwnOrAll(t *testing.T) {
	var got []string
	fakeAPI(t, func(r *http.Request) any {
		got = append(got, r.Method+" "+r.URL.RequestURI())
		return api.Credential{URL: "postgres://u:p@h/db", Username: "u", Kind: "member"}
	})
	for _, args := range [][]string{{"db", "roll-credentials", "--yes"}, {"db", "roll-credentials", "--all", "--yes"}} {
		if _, err := runCLI(context.Background(), args...); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
	}
	want := []string{"POST /v1/orgs/acme/db/roll-credentials", "POST /v1/orgs/acme/db/roll-credentials?all=true"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("requests %v, want %v", got, want)
	}
}
