package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/internal/pgcluster"
	"github.com/webhookdb-go/webhookdb/internal/pgtest"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
	"github.com/webhookdb-go/webhookdb/pgroles"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// topology is one deployment of real webhookdb processes on a cluster of their own (the fanout's login and
// its password are per server), configured through the environment alone, without Vault.
type topology struct {
	t       *testing.T
	cluster *pgcluster.Cluster
	appURL  string
	bin     string
	listen  string
	env     []string
}

var (
	buildBinOnce sync.Once
	builtBin     string
	buildBinErr  error
)

func newTopology(t *testing.T, slot string) *topology {
	t.Helper()
	cluster := pgtest.NewCluster(t)
	buildBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "whdb-e2e-bin-")
		if err != nil {
			buildBinErr = err
			return
		}
		pgtest.AtExit(func() { _ = os.RemoveAll(dir) })
		builtBin = filepath.Join(dir, "webhookdb")
		if out, err := exec.Command("go", "build", "-o", builtBin, ".").CombinedOutput(); err != nil {
			buildBinErr = fmt.Errorf("build: %v\n%s", err, out)
		}
	})
	if buildBinErr != nil {
		t.Fatal(buildBinErr)
	}
	tp := &topology{t: t, cluster: cluster, appURL: pgtest.NewMigratedDBURL(t, cluster), bin: builtBin, listen: freeAddr(t)}
	tp.env = append(os.Environ(),
		"WEBHOOKDB_DATABASE_URL="+tp.appURL,
		"WEBHOOKDB_KEYRING="+secrets.NewKeyEntry(1),
		"WEBHOOKDB_CREDENTIALS=postgres",
		"WEBHOOKDB_SLOT_NAME="+slot,
		"WEBHOOKDB_LISTEN="+tp.listen,
		"XDG_CONFIG_HOME="+filepath.Join(t.TempDir(), "config"),
		"WEBHOOKDB_API_URL=", "WEBHOOKDB_TOKEN=",
		// No process may find a Vault: the modes above need none.
		"VAULT_ADDR=", "VAULT_TOKEN=",
	)
	return tp
}

// proc is a long-lived webhookdb process of a test.
type proc struct {
	cmd  *exec.Cmd
	stop func()
}

// start runs a long-lived webhookdb process; its stop ends it (and the test's end does too).
func (tp *topology) start(name string, extraEnv []string, args ...string) *proc {
	t := tp.t
	t.Helper()
	cmd := exec.Command(tp.bin, args...)
	cmd.Env = append(slices.Clone(tp.env), extraEnv...)
	out := &pgtest.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
			if t.Failed() {
				t.Logf("%s output:\n%s", name, out.String())
			}
		})
	}
	t.Cleanup(stop)
	return &proc{cmd: cmd, stop: stop}
}

func (tp *topology) cli(args ...string) string {
	tp.t.Helper()
	cmd := exec.Command(tp.bin, args...)
	cmd.Env = tp.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		tp.t.Fatalf("webhookdb %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// setup creates an admin, registers the cluster, and an org with a Stripe integration; it returns the org
// database's superuser connection and the webhook URL.
func (tp *topology) setup() (orgDB *pgx.Conn, webhookURL string) {
	t := tp.t
	t.Helper()
	token := strings.TrimSpace(tp.cli("admin", "create-user", "--email", "ops@example.com", "--server-admin"))
	tp.cli("auth", "login", "--url", "http://"+tp.listen, "--token", token)
	tp.cli("servers", "add", "local", "--admin-url", tp.cluster.URL("postgres"), "--public-host", "127.0.0.1", "--public-port", fmt.Sprint(tp.cluster.Port), "--sslmode", "disable")
	tp.cli("org", "create", "acme")
	tp.cli("org", "use", "acme")
	var created struct {
		Integration struct {
			WebhookURL string `json:"webhook_url"`
		} `json:"integration"`
	}
	if err := json.Unmarshal([]byte(tp.cli("integrations", "create", "stripe_charge_v1", "--secret", "whsec_topology", "-o", "json")), &created); err != nil {
		t.Fatal(err)
	}
	return connect(t, tp.cluster.URL(orgDatabase(t, tp, "acme"))), created.Integration.WebhookURL
}

// orgDatabase is the name of an org's database (named from its opaque name base, not its key).
func orgDatabase(t *testing.T, tp *topology, key string) string {
	t.Helper()
	var dbName string
	if err := connect(t, tp.appURL).QueryRow(context.Background(), `SELECT database_name FROM organizations WHERE key = $1 AND deleted_at IS NULL`, key).Scan(&dbName); err != nil {
		t.Fatal(err)
	}
	return dbName
}

// send delivers a signed Stripe charge event and expects 202.
func (tp *topology) send(webhookURL, chargeID string, amount int) {
	t := tp.t
	t.Helper()
	body := fmt.Sprintf(`{"id":"evt_%s","object":"event","type":"charge.succeeded","created":1700000000,"data":{"object":{"id":%q,"object":"charge","amount":%d,"currency":"usd","status":"succeeded","created":1700000000}}}`,
		chargeID, chargeID, amount)
	name, value, _ := strings.Cut(strings.TrimSpace(tp.cli("sign", "stripe", "--secret", "whsec_topology", "--body", body)), ": ")
	req, _ := http.NewRequest(http.MethodPost, webhookURL, strings.NewReader(body))
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
}

func waitAmount(t *testing.T, orgDB *pgx.Conn, chargeID string, want int64) {
	t.Helper()
	waitFor(t, time.Minute, "charge "+chargeID, func() (bool, error) {
		var amount int64
		err := orgDB.QueryRow(context.Background(), `SELECT amount FROM stripe_charge_v1 WHERE stripe_id = $1`, chargeID).Scan(&amount)
		if err == pgx.ErrNoRows {
			return false, nil
		}
		return amount == want, err
	})
}

// The documented split topology: `serve --no-fanout` and `webhookdb fanout` as two processes, both configured
// through the environment alone with a slot name that is not the default. A signed webhook becomes its row,
// both processes work on that one slot, and the fanout writes to the org database only as its narrow login.
func TestSplitTopologyServeAndFanout(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const slot = "split_topology_slot"
	tp := newTopology(t, slot)
	metrics := freeAddr(t)
	tp.start("serve", nil, "serve", "--no-fanout", "--log-level", "warn")
	waitHTTP(t, "http://"+tp.listen+"/healthz")
	tp.start("fanout", []string{"WEBHOOKDB_METRICS_LISTEN=" + metrics}, "fanout", "--log-level", "warn")
	waitHTTP(t, "http://"+metrics+"/healthz")
	orgDB, webhookURL := tp.setup()
	tp.send(webhookURL, "ch_split", 1234)
	waitAmount(t, orgDB, "ch_split", 1234)

	// One slot on the cluster, the configured one, consumed by the fanout process.
	admin := connect(t, tp.appURL)
	rows, _ := admin.Query(ctx, `SELECT slot_name FROM pg_replication_slots`)
	slots, err := pgx.CollectRows(rows, pgx.RowTo[string])
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
	if err := json.Unmarshal([]byte(tp.cli("fanout", "status", "-o", "json")), &status); err != nil {
		t.Fatal(err)
	}
	if status.Slot != slot || !status.Exists || status.Active == nil || !*status.Active {
		t.Fatalf("serve's fanout status: %+v, want slot %s, active", status, slot)
	}

	// Every connection to the org database, other than this test's own, is the fanout's narrow login.
	var orgDBName string
	if err := orgDB.QueryRow(ctx, `SELECT current_database()`).Scan(&orgDBName); err != nil {
		t.Fatal(err)
	}
	rows, _ = admin.Query(ctx, `SELECT a.usename, r.rolsuper FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid
		WHERE a.datname = $1 AND a.pid <> $2 AND a.backend_type = 'client backend'`, orgDBName, orgDB.PgConn().PID())
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

// Postgres invalidates a slot that falls too far behind (max_slot_wal_keep_size). /healthz says so, and
// `fanout resync --since T --recreate-slot` brings back what the lost slot would have delivered.
func TestLostSlotResync(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const slot = "lost_slot"
	tp := newTopology(t, slot)
	super := connect(t, tp.cluster.URL("postgres"))
	for _, q := range []string{`ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'`, `ALTER SYSTEM SET wal_keep_size = 0`, `SELECT pg_reload_conf()`} {
		if _, err := super.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	serve := tp.start("serve", nil, "serve", "--log-level", "warn")
	waitHTTP(t, "http://"+tp.listen+"/healthz")
	orgDB, webhookURL := tp.setup()
	tp.send(webhookURL, "ch_before", 100)
	waitAmount(t, orgDB, "ch_before", 100)
	serve.stop()

	// Ingest alone stores a delivery nobody consumes; then the slot is left behind until Postgres drops its WAL.
	tp.start("ingest", nil, "serve", "--no-fanout", "--log-level", "error")
	waitHTTP(t, "http://"+tp.listen+"/healthz")
	tp.send(webhookURL, "ch_during", 200)
	if _, err := super.Exec(ctx, `CREATE TABLE wal_filler (b bytea)`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "the slot to be lost", func() (bool, error) {
		for _, q := range []string{`INSERT INTO wal_filler SELECT decode(repeat('ab', 4096), 'hex') FROM generate_series(1, 300)`, `SELECT pg_switch_wal()`, `CHECKPOINT`} {
			if _, err := super.Exec(ctx, q); err != nil {
				return false, err
			}
		}
		var status string
		err := super.QueryRow(ctx, `SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&status)
		return status == "lost", err
	})
	resp, err := http.Get("http://" + tp.listen + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), `"slot_state":"lost"`) {
		t.Fatalf("/healthz with a lost slot: %d %s", resp.StatusCode, body)
	}

	out := tp.cli("fanout", "resync", "--since", "1h", "--recreate-slot")
	if !strings.Contains(out, "Re-created replication slot "+slot) || !strings.Contains(out, "2 deliveries stored again") {
		t.Fatalf("resync output:\n%s", out)
	}
	waitHTTP(t, "http://"+tp.listen+"/healthz")
	tp.start("fanout", nil, "fanout", "--log-level", "warn")
	waitAmount(t, orgDB, "ch_during", 200)
	waitAmount(t, orgDB, "ch_before", 100)
	var n int
	if err := orgDB.QueryRow(ctx, `SELECT count(*) FROM stripe_charge_v1`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("rows after the resync: %d, %v", n, err)
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
