package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestCLIEndToEnd drives the real binary the way the README does: `webhookdb dev`, then only CLI commands and
// plain HTTP.
func TestCLIEndToEnd(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "webhookdb")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	// dev finds bin/vault of the checkout from its working directory.
	dev := exec.Command(bin, "dev", "--dir", filepath.Join(dir, "data"), "--listen", "127.0.0.1:0", "--log-level", "warn")
	dev.Dir = "."
	devLog := &bytes.Buffer{}
	dev.Stdout, dev.Stderr = devLog, devLog
	if err := dev.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = dev.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = dev.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(time.Minute):
			_ = dev.Process.Kill()
		}
		if t.Failed() {
			t.Logf("dev output:\n%s", devLog.String())
		}
	})
	env := waitForDevEnv(t, filepath.Join(dir, "data", "dev.env"), devLog)

	cli := func(args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "WEBHOOKDB_API_URL=", "WEBHOOKDB_TOKEN=")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if err != nil {
			return stdout.String(), fmt.Errorf("webhookdb %s: %v: %s", strings.Join(args, " "), err, stderr.String())
		}
		return stdout.String(), nil
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := cli(args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	mustJSON := func(v any, args ...string) {
		t.Helper()
		out := must(append(args, "-o", "json")...)
		if err := json.Unmarshal([]byte(out), v); err != nil {
			t.Fatalf("webhookdb %s: not JSON: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	must("auth", "login", "--url", env["WEBHOOKDB_API_URL"], "--token", env["WEBHOOKDB_TOKEN"])
	if st, err := os.Stat(filepath.Join(dir, "config", "webhookdb", "config.json")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("config.json: %v %v", st, err)
	}
	must("org", "create", "acme", "--name", "Acme Inc")
	must("org", "use", "acme")

	var created struct {
		Integration struct {
			OpaqueID   string `json:"opaque_id"`
			Service    string `json:"service"`
			TableName  string `json:"table_name"`
			WebhookURL string `json:"webhook_url"`
		} `json:"integration"`
	}
	mustJSON(&created, "integrations", "create", "stripe_charge_v1", "--secret", "whsec_e2e")
	if created.Integration.TableName != "stripe_charge_v1" || created.Integration.WebhookURL == "" {
		t.Fatalf("created: %+v", created)
	}

	body := `{"id":"evt_e2e_1","object":"event","type":"charge.succeeded","created":1700000000,"data":{"object":{"id":"ch_e2e","object":"charge","amount":4200,"currency":"usd","status":"succeeded","created":1700000000}}}`
	send := func(secret string) int {
		t.Helper()
		header := strings.TrimSpace(must("sign", "stripe", "--secret", secret, "--body", body))
		name, value, _ := strings.Cut(header, ": ")
		req, _ := http.NewRequest("POST", created.Integration.WebhookURL, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(name, value)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := send("whsec_e2e"); s != http.StatusAccepted {
		t.Fatalf("signed webhook: %d", s)
	}
	if s := send("whsec_wrong"); s != http.StatusUnauthorized {
		t.Fatalf("badly signed webhook: %d", s)
	}

	type sqlResult struct {
		Columns []string `json:"columns"`
		Rows    [][]any  `json:"rows"`
	}
	var res sqlResult
	deadline := time.Now().Add(15 * time.Second)
	for {
		res = sqlResult{}
		out, err := cli("db", "sql", "SELECT stripe_id, amount FROM stripe_charge_v1", "-o", "json")
		if err == nil && json.Unmarshal([]byte(out), &res) == nil && len(res.Rows) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("row did not appear: %v %s", err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if res.Rows[0][0] != "ch_e2e" || fmt.Sprint(res.Rows[0][1]) != "4200" {
		t.Fatalf("row: %v", res.Rows)
	}
	// Saved queries through the CLI, and a public URL over plain HTTP until it is revoked.
	must("saved-query", "create", "charges", "--sql", "SELECT stripe_id, amount FROM stripe_charge_v1")
	if out := must("saved-query", "run", "charges", "--format", "csv"); out != "stripe_id,amount\r\nch_e2e,4200\r\n" {
		t.Fatalf("saved-query run --format csv: %q", out)
	}
	var published struct {
		PublicURL string `json:"public_url"`
	}
	mustJSON(&published, "saved-query", "publish", "charges")
	fetchPublic := func() (int, string) {
		t.Helper()
		resp, err := http.Get(published.PublicURL + "?format=csv")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if status, body := fetchPublic(); status != http.StatusOK || body != "stripe_id,amount\r\nch_e2e,4200\r\n" {
		t.Fatalf("public URL %s: %d %q", published.PublicURL, status, body)
	}
	must("saved-query", "unpublish", "charges", "--yes")
	if status, body := fetchPublic(); status != http.StatusNotFound {
		t.Fatalf("revoked public URL: %d %q", status, body)
	}
	// The fanout wrote with its own narrow login (Vault's static role), not as a superuser.
	admin, err := pgx.Connect(context.Background(), env["WEBHOOKDB_DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	var writer string
	var super bool
	err = admin.QueryRow(context.Background(), `
		SELECT a.usename, r.rolsuper FROM pg_stat_activity a JOIN pg_roles r ON r.rolname = a.usename
		WHERE a.datname = (SELECT database_name FROM organizations WHERE key = 'acme') AND a.application_name = 'webhookdb-fanout' LIMIT 1`).Scan(&writer, &super)
	admin.Close(context.Background())
	if err != nil || super {
		t.Fatalf("fanout connection to acme's database: user %q superuser %v (%v)", writer, super, err)
	}

	// the list commands
	var orgs struct {
		Orgs []struct {
			Key  string `json:"key"`
			Name string `json:"name"`
		} `json:"orgs"`
	}
	mustJSON(&orgs, "org", "list")
	if len(orgs.Orgs) != 1 || orgs.Orgs[0].Key != "acme" || orgs.Orgs[0].Name != "Acme Inc" {
		t.Fatalf("org list: %+v", orgs)
	}
	var ints struct {
		Integrations []struct {
			OpaqueID string `json:"opaque_id"`
		} `json:"integrations"`
	}
	mustJSON(&ints, "integrations", "list")
	if len(ints.Integrations) != 1 || ints.Integrations[0].OpaqueID != created.Integration.OpaqueID {
		t.Fatalf("integrations list: %+v", ints)
	}
	if out := must("db", "tables"); !strings.Contains(out, "stripe_charge_v1") {
		t.Fatalf("db tables:\n%s", out)
	}
	if out := must("services", "list"); !strings.Contains(out, "shopify_order_v1") || !strings.Contains(out, "NAME") {
		t.Fatalf("services list:\n%s", out)
	}
	if out := must("org", "members"); !strings.Contains(out, "admin@localhost") {
		t.Fatalf("org members:\n%s", out)
	}

	var status map[string]any
	mustJSON(&status, "fanout", "status")
	if status["exists"] != true || status["parked_changes"] != float64(0) {
		t.Fatalf("fanout status: %v", status)
	}
	var errs struct {
		Errors []any `json:"errors"`
	}
	mustJSON(&errs, "errors", "list")
	if len(errs.Errors) != 0 {
		t.Fatalf("errors list: %v", errs)
	}

	var hooks struct {
		Webhooks []struct {
			Outcome string  `json:"outcome"`
			Reason  *string `json:"reason"`
		} `json:"webhooks"`
	}
	mustJSON(&hooks, "webhooks", "list")
	outcomes := map[string]int{}
	for _, h := range hooks.Webhooks {
		outcomes[h.Outcome]++
		if h.Outcome == "rejected" && (h.Reason == nil || *h.Reason == "") {
			t.Errorf("rejected delivery without a reason")
		}
	}
	if outcomes["accepted"] != 1 || outcomes["rejected"] != 1 {
		t.Fatalf("webhooks list: %+v", hooks)
	}

	var conn1, conn2 struct {
		URL       string    `json:"url"`
		Username  string    `json:"username"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	mustJSON(&conn1, "db", "connection")
	ctx := context.Background()
	pg, err := pgx.Connect(ctx, conn1.URL)
	if err != nil {
		t.Fatalf("connecting with db connection's URL: %v", err)
	}
	var n int
	if err := pg.QueryRow(ctx, "SELECT count(*) FROM stripe_charge_v1").Scan(&n); err != nil || n != 1 {
		t.Fatalf("psql-style read: %d %v", n, err)
	}
	pg.Close(ctx)
	mustJSON(&conn2, "db", "roll-credentials", "--yes")
	if conn2.URL == conn1.URL || conn2.Username == conn1.Username {
		t.Fatalf("roll-credentials returned the same credentials")
	}
	if c, err := pgx.Connect(ctx, conn1.URL); err == nil {
		c.Close(ctx)
		t.Fatal("the old URL still connects after roll-credentials")
	}
	if c, err := pgx.Connect(ctx, conn2.URL); err != nil {
		t.Fatalf("the new URL: %v", err)
	} else {
		c.Close(ctx)
	}
	// A member who changes their own login's password and settings locks out only themselves: db sql runs
	// on the server's own login.
	if c, err := pgx.Connect(ctx, conn2.URL); err != nil {
		t.Fatal(err)
	} else {
		for _, sql := range []string{`SET default_transaction_read_only = off`, `ALTER ROLE CURRENT_USER PASSWORD 'changed-by-its-holder-42'`, `ALTER ROLE CURRENT_USER SET statement_timeout = 0`} {
			if _, err := c.Exec(ctx, sql); err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
		}
		c.Close(ctx)
	}
	var afterChange sqlResult
	mustJSON(&afterChange, "db", "sql", "SELECT count(*) AS n FROM stripe_charge_v1")
	if len(afterChange.Rows) != 1 || fmt.Sprint(afterChange.Rows[0]) != "[1]" {
		t.Fatalf("db sql after a member changed their own login: %+v", afterChange)
	}
	mustJSON(&conn2, "db", "roll-credentials", "--yes")
	if c, err := pgx.Connect(ctx, conn2.URL); err != nil {
		t.Fatalf("the member's login rolled after they changed it: %v", err)
	} else {
		c.Close(ctx)
	}

	var replayed struct {
		Replayed int `json:"replayed"`
	}
	mustJSON(&replayed, "replay", "--since", "1h")
	if replayed.Replayed != 1 {
		t.Fatalf("replayed %d deliveries, want 1", replayed.Replayed)
	}
	time.Sleep(2 * time.Second) // give the fanout time to (not) duplicate anything
	res = sqlResult{}
	mustJSON(&res, "db", "sql", "SELECT count(*) FROM stripe_charge_v1")
	if fmt.Sprint(res.Rows[0][0]) != "1" {
		t.Fatalf("after replay: %v rows", res.Rows)
	}

	// destructive commands: refused without --yes off a terminal, done with it
	if _, err := cli("integrations", "delete", created.Integration.OpaqueID); err == nil {
		t.Fatal("integrations delete ran without --yes and without a terminal")
	}
	must("integrations", "delete", created.Integration.OpaqueID, "--yes")
	// the ingest cache sees a deletion within about a second
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		s := send("whsec_e2e")
		if s == http.StatusGone {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhook to a deleted integration: %d, want 410", s)
		}
	}
	var tok struct {
		Token struct {
			ID int `json:"id"`
		} `json:"token"`
		Secret string `json:"secret"`
	}
	mustJSON(&tok, "tokens", "create", "--name", "e2e")
	must("tokens", "revoke", fmt.Sprint(tok.Token.ID), "--yes")
	req, _ := http.NewRequest("GET", env["WEBHOOKDB_API_URL"]+"/v1/me", nil)
	req.Header.Set("Authorization", "Bearer "+tok.Secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("revoked token: %d", resp.StatusCode)
	}
}

func waitForDevEnv(t *testing.T, path string, log *bytes.Buffer) map[string]string {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if b, err := os.ReadFile(path); err == nil && strings.Contains(string(b), "WEBHOOKDB_TOKEN=") {
			env := map[string]string{}
			for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				k, v, _ := strings.Cut(line, "=")
				env[k] = v
			}
			return env
		}
		if time.Now().After(deadline) {
			t.Fatalf("dev.env did not appear:\n%s", log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestReadmeWalkthrough runs the README's first-webhook walkthrough as written, in bash, against `webhookdb dev`.
func TestReadmeWalkthrough(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	section := string(readme)
	start, end := strings.Index(section, "## Your first webhook"), strings.Index(section, "## Commands")
	if start < 0 || end < start {
		t.Fatal("README has no first-webhook section")
	}
	var blocks []string
	for _, part := range strings.Split(section[start:end], "```sh\n")[1:] {
		blocks = append(blocks, part[:strings.Index(part, "```")])
	}
	if len(blocks) != 4 || strings.TrimSpace(blocks[0]) != "make run" {
		t.Fatalf("walkthrough blocks changed shape (%d blocks): update this test", len(blocks))
	}

	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "bin", "webhookdb")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	// what `make run` does, in the walkthrough's working directory
	dev := exec.Command(bin, "dev", "--dir", filepath.Join(dir, ".webhookdb"), "--listen", "127.0.0.1:0", "--log-level", "warn")
	devLog := &bytes.Buffer{}
	dev.Stdout, dev.Stderr = devLog, devLog
	dev.Env = append(os.Environ(), "WEBHOOKDB_VAULT_BIN="+vaultBin(t))
	if err := dev.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = dev.Process.Signal(syscall.SIGTERM)
		_ = dev.Wait()
	})
	waitForDevEnv(t, filepath.Join(dir, ".webhookdb", "dev.env"), devLog)

	script := "set -euo pipefail\n" + blocks[1] + blocks[2] + "sleep 2\n" + blocks[3]
	cmd := exec.Command("bash", "-c", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "HOME="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("walkthrough failed: %v\n%s\ndev:\n%s", err, out, devLog.String())
	}
	for _, want := range []string{`{"ok":true}`, "202 Accepted", "401 Unauthorized", "Whdb-Rejected-Reason", "ch_1", "4200", "stripe_charge_v1", "replayed  1"} {
		if !strings.Contains(strings.ToLower(string(out)), strings.ToLower(want)) {
			t.Errorf("walkthrough output lacks %q:\n%s", want, out)
		}
	}
}

// vaultBin is the checkout's bin/vault (the walkthrough runs outside the checkout).
func vaultBin(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs("../../bin/vault")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("bin/vault is missing: run `make vault` (%v)", err)
	}
	return p
}
