package fanout_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/webhookdb-go/webhookdb/fanout"
	"github.com/webhookdb-go/webhookdb/ingest/verify"
	"github.com/webhookdb-go/webhookdb/internal/integrations"
	"github.com/webhookdb-go/webhookdb/internal/pgcluster"
	"github.com/webhookdb-go/webhookdb/internal/pgtest"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
	"github.com/webhookdb-go/webhookdb/pgroles"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// env is one test's application database, keyring and slot.
type env struct {
	t       *testing.T
	cluster *pgcluster.Cluster
	appURL  string
	pool    *pgxpool.Pool
	keyring string
	box     secrets.Box
	slot    string
	servers map[*pgcluster.Cluster]int64
	// batchDelay, when set, is the consumer's BatchDelay (config's default otherwise).
	batchDelay time.Duration
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, cluster: pgtest.Cluster(t), keyring: secrets.NewKeyEntry(1), slot: "fanout_" + randomHex(6), servers: map[*pgcluster.Cluster]int64{}}
	e.appURL = pgtest.NewDBURL(t)
	cfg, err := pgxpool.ParseConfig(e.appURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 8
	if e.pool, err = pgxpool.NewWithConfig(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.pool.Close)
	k, err := secrets.ParseKeyring(e.keyring)
	if err != nil {
		t.Fatal(err)
	}
	e.box = k
	return e
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// server registers cluster c as a database server (once per cluster).
func (e *env) server(c *pgcluster.Cluster) int64 {
	e.t.Helper()
	if id, ok := e.servers[c]; ok {
		return id
	}
	id := e.serverAt(c.URL("postgres"), c.Port)
	e.servers[c] = id
	return id
}

// serverAt registers a database server whose admin URL is adminURL.
func (e *env) serverAt(adminURL string, publicPort int) int64 {
	e.t.Helper()
	ctx := context.Background()
	name := "srv-" + randomHex(4)
	enc, err := e.box.Encrypt(ctx, secrets.Binding{Table: "database_servers", Column: "admin_url_enc", Row: name}, []byte(adminURL))
	if err != nil {
		e.t.Fatal(err)
	}
	var id int64
	if err := e.pool.QueryRow(ctx, `INSERT INTO database_servers (name, admin_url_enc, public_host, public_port) VALUES ($1, $2, '127.0.0.1', $3) RETURNING id`,
		name, enc, publicPort).Scan(&id); err != nil {
		e.t.Fatal(err)
	}
	return id
}

type org struct {
	id      int64
	key     string
	cluster *pgcluster.Cluster
}

// org creates an org whose database is provisioned on cluster c (the shared cluster when nil).
func (e *env) org(c *pgcluster.Cluster) *org {
	e.t.Helper()
	if c == nil {
		c = e.cluster
	}
	return e.orgOn(c, e.server(c))
}

// orgOn creates an org whose database is provisioned on cluster c, registered as database server serverID.
func (e *env) orgOn(c *pgcluster.Cluster, serverID int64) *org {
	e.t.Helper()
	ctx := context.Background()
	o := &org{key: "t" + randomHex(5), cluster: c}
	if err := pgroles.ProvisionOrg(ctx, c.URL("postgres"), o.key); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = pgroles.DropOrg(context.Background(), c.URL("postgres"), o.key) })
	if err := e.pool.QueryRow(ctx, `
		INSERT INTO organizations (key, name, database_server_id, database_name, provision_state) VALUES ($1, $1, $2, $3, 'ready') RETURNING id`,
		o.key, serverID, pgroles.DatabaseName(o.key)).Scan(&o.id); err != nil {
		e.t.Fatal(err)
	}
	return o
}

func (e *env) integration(o *org, service string, config string) *integrations.Integration {
	e.t.Helper()
	p := integrations.CreateParams{OrgID: o.id, Service: service, Secret: "whsec_test_secret"}
	if config != "" {
		p.Config = json.RawMessage(config)
		p.VerifierOverride = &verify.Config{Scheme: verify.SchemeNone}
		p.Secret = ""
	}
	in, _, err := integrations.Create(context.Background(), e.pool, e.box, p)
	if err != nil {
		e.t.Fatal(err)
	}
	return in
}

// testConfig is quick to react, for tests.
func (e *env) config() fanout.Config {
	return fanout.Config{
		BatchDelay:        e.batchDelay,
		Slot:              e.slot,
		Workers:           4,
		StatusInterval:    500 * time.Millisecond,
		HeartbeatInterval: time.Second,
		LagInterval:       200 * time.Millisecond,
		ApplyTimeout:      3 * time.Second,
		RetryMin:          100 * time.Millisecond,
		RetryMax:          time.Second,
		CacheTTL:          time.Second,
		ReconnectMin:      100 * time.Millisecond,
		ReconnectMax:      time.Second,
		Logger:            testLogger(),
	}
}

func testLogger() *slog.Logger {
	if os.Getenv("FANOUT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// start runs a consumer until stop is called or the test ends.
func (e *env) start(cfg fanout.Config) (reg *prometheus.Registry, stop func()) {
	e.t.Helper()
	reg = prometheus.NewRegistry()
	c, err := fanout.New(e.appURL, e.pool, e.box, cfg, reg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := c.EnsureSlot(ctx); err != nil {
		e.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("consumer: %v", err)
			}
		})
	}
	e.t.Cleanup(stop)
	return reg, stop
}

// metric returns the value of a counter or gauge with the given labels (0 when absent).
func metric(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			}
		}
	}
	return 0
}

// staged is one accepted staging row to insert directly.
type staged struct {
	in   *integrations.Integration
	body []byte
	// headers default to a JSON content type
	headers map[string]string
}

// stage inserts accepted staging rows in one transaction.
func (e *env) stage(rows ...staged) {
	e.t.Helper()
	if err := stageRows(context.Background(), e.pool, rows); err != nil {
		e.t.Fatal(err)
	}
}

func stageRows(ctx context.Context, db interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
}, rows []staged) error {
	n := len(rows)
	org, integ := make([]int64, n), make([]int64, n)
	headers, body := make([][]byte, n), make([][]byte, n)
	for i, r := range rows {
		org[i], integ[i], body[i] = r.in.OrgID, r.in.ID, r.body
		h := r.headers
		if h == nil {
			h = map[string]string{"Content-Type": "application/json"}
		}
		headers[i], _ = json.Marshal(h)
	}
	_, err := db.Exec(ctx, `
		INSERT INTO staging.webhooks (received_at, org_id, integration_id, method, path, content_type, headers, body, accepted)
		SELECT clock_timestamp(), o, i, 'POST', '/', 'application/json', h, b, true
		FROM unnest($1::bigint[], $2::bigint[], $3::jsonb[], $4::bytea[]) AS u(o, i, h, b)`, org, integ, headers, body)
	return err
}

// orgDB connects to the org's database as the superuser.
func (e *env) orgDB(o *org) *pgx.Conn {
	e.t.Helper()
	conn, err := pgx.Connect(context.Background(), o.cluster.URL(pgroles.DatabaseName(o.key)))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
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

func stripeChargeEvent(evtID, chargeID string, created int64, amount int, status string) []byte {
	return []byte(fmt.Sprintf(`{"id":%q,"object":"event","type":"charge.updated","created":%d,"data":{"object":{"id":%q,"object":"charge","amount":%d,"currency":"usd","status":%q,"created":1700000000,"paid":true}}}`,
		evtID, created, chargeID, amount, status))
}
