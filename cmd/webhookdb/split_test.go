package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/internal/pgtest"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
	"github.com/webhookdb-go/webhookdb/pgroles"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// The documented split topology: `serve --no-fanout` and `webhookdb fanout` as two processes, both configured
// through the environment alone with a slot name that is not the default. A signed webhook becomes its row,
// both processes work on that one slot, and the fanout writes to the org database only as its narrow login.
func TestSplitTopologyServeAndFanout(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// A cluster of its own: the fanout's login and its password are per server.
	cluster := pgtest.NewCluster(t)
	appURL := pgtest.NewMigratedDBURL(t, cluster)
	dir := t.TempDir()
	bin := filepath.Join(dir, "webhookdb")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	const slot = "split_topology_slot"
	listen, metrics := freeAddr(t), freeAddr(t)
	env := append(os.Environ(),
		"WEBHOOKDB_DATABASE_URL="+appURL,
		"WEBHOOKDB_KEYRING="+secrets.NewKeyEntry(1),
		"WEBHOOKDB_CREDENTIALS=postgres",
		"WEBHOOKDB_SLOT_NAME="+slot,
		"WEBHOOKDB_LISTEN="+listen,
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
		"WEBHOOKDB_API_URL=", "WEBHOOKDB_TOKEN=",
		// Neither process may find a Vault: the modes above need none.
		"VAULT_ADDR=", "VAULT_TOKEN=",
	)
	start := func(name string, extraEnv []string, args ...string) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(env, extraEnv...)
		out := &bytes.Buffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
			}
			if t.Failed() {
				t.Logf("%s output:\n%s", name, out.String())
			}
		})
	}
	start("serve", nil, "serve", "--no-fanout", "--log-level", "warn")
	waitHTTP(t, "http://"+listen+"/healthz")
	start("fanout", []string{"WEBHOOKDB_METRICS_LISTEN=" + metrics}, "fanout", "--log-level", "warn")
	waitHTTP(t, "http://"+metrics+"/healthz")

	cli := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("webhookdb %s: %v: %s", strings.Join(args, " "), err, stderr.String())
		}
		return stdout.String()
	}
	token := strings.TrimSpace(cli("admin", "create-user", "--email", "ops@example.com", "--server-admin"))
	cli("auth", "login", "--url", "http://"+listen, "--token", token)
	cli("servers", "add", "local", "--admin-url", cluster.URL("postgres"), "--public-host", "127.0.0.1", "--public-port", fmt.Sprint(cluster.Port), "--sslmode", "disable")
	cli("org", "create", "split")
	cli("org", "use", "split")
	var created struct {
		Integration struct {
			WebhookURL string `json:"webhook_url"`
		} `json:"integration"`
	}
	if err := json.Unmarshal([]byte(cli("integrations", "create", "stripe_charge_v1", "--secret", "whsec_split", "-o", "json")), &created); err != nil {
		t.Fatal(err)
	}

	body := `{"id":"evt_split_1","object":"event","type":"charge.succeeded","created":1700000000,"data":{"object":{"id":"ch_split","object":"charge","amount":1234,"currency":"usd","status":"succeeded","created":1700000000}}}`
	name, value, _ := strings.Cut(strings.TrimSpace(cli("sign", "stripe", "--secret", "whsec_split", "--body", body)), ": ")
	req, _ := http.NewRequest(http.MethodPost, created.Integration.WebhookURL, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(name, value)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("signed webhook: %d", resp.StatusCode)
	}

	var orgKey string
	admin := connect(t, appURL)
	if err := admin.QueryRow(ctx, `SELECT key FROM organizations`).Scan(&orgKey); err != nil {
		t.Fatal(err)
	}
	orgDB := connect(t, cluster.URL(pgroles.DatabaseName(orgKey)))
	waitFor(t, time.Minute, "the webhook's row", func() (bool, error) {
		var amount int64
		err := orgDB.QueryRow(ctx, `SELECT amount FROM stripe_charge_v1 WHERE stripe_id = 'ch_split'`).Scan(&amount)
		if err == pgx.ErrNoRows {
			return false, nil
		}
		return amount == 1234, err
	})

	// One slot on the cluster, the configured one, consumed by the fanout process.
	var slots []string
	rows, _ := admin.Query(ctx, `SELECT slot_name FROM pg_replication_slots`)
	slots, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(slots) != 1 || slots[0] != slot {
		t.Fatalf("replication slots %v (%v): want only %s", slots, err, slot)
	}
	var consumer string
	if err := admin.QueryRow(ctx, `SELECT a.application_name FROM pg_replication_slots s JOIN pg_stat_activity a ON a.pid = s.active_pid
		WHERE s.slot_name = $1`, slot).Scan(&consumer); err != nil || consumer != "webhookdb-fanout" {
		t.Fatalf("slot %s consumed by %q (%v), want the fanout", slot, consumer, err)
	}
	// serve reads the same slot for status and retention.
	var status struct {
		Slot   string `json:"slot"`
		Exists bool   `json:"exists"`
		Active *bool  `json:"active"`
	}
	if err := json.Unmarshal([]byte(cli("fanout", "status", "-o", "json")), &status); err != nil {
		t.Fatal(err)
	}
	if status.Slot != slot || !status.Exists || status.Active == nil || !*status.Active {
		t.Fatalf("serve's fanout status: %+v, want slot %s, active", status, slot)
	}

	// Every connection to the org database, other than this test's own, is the fanout's narrow login.
	rows, _ = admin.Query(ctx, `SELECT a.usename, r.rolsuper FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid
		WHERE a.datname = $1 AND a.pid <> $2 AND a.backend_type = 'client backend'`, pgroles.DatabaseName(orgKey), orgDB.PgConn().PID())
	type login struct {
		Name  string
		Super bool
	}
	logins, err := pgx.CollectRows(rows, pgx.RowToStructByPos[login])
	if err != nil || len(logins) == 0 {
		t.Fatalf("fanout connections to the org database: %v, %v", logins, err)
	}
	for _, l := range logins {
		if l.Super || l.Name != pgroles.FanoutRole {
			t.Fatalf("a connection to the org database as %s (superuser %v): want only %s", l.Name, l.Super, pgroles.FanoutRole)
		}
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitHTTP(t *testing.T, url string) {
	t.Helper()
	waitFor(t, time.Minute, url, func() (bool, error) {
		resp, err := http.Get(url)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		ok, err := cond()
		if ok && err == nil {
			return
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s (last error: %v)", timeout, what, lastErr)
}
