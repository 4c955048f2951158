// Package fanoutbench measures the fanout against Postgres' own logical replication in the same run, on the
// same cluster and the same WAL: N accepted staging rows are preloaded while neither consumer runs, then each
// drains them in turn — native logical replication (CREATE SUBSCRIPTION) copying the rows as they are into
// one target database, and the fanout turning them into typed upserts in one database per org. A second
// (steady) phase sends signed HTTP deliveries at a fixed rate to a real ingest (internal/app with the ingest
// role, in this process, on the same cluster) with the fanout running, and reports the lag as users see it:
// from ingest receiving a delivery (staging's received_at) to the commit of its row in the org database,
// overall and for the worst org, with the rate the generator reached and the process' peak RSS.
//
// Rows go round-robin over the orgs, or with HotShare, a share of them to a few hot orgs.
package fanoutbench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/webhookdb-go/webhookdb/fanout"
	"github.com/webhookdb-go/webhookdb/internal/app"
	"github.com/webhookdb-go/webhookdb/internal/bench/cpuacct"
	"github.com/webhookdb-go/webhookdb/internal/integrations"
	"github.com/webhookdb-go/webhookdb/internal/migrate"
	"github.com/webhookdb-go/webhookdb/internal/orgdb"
	"github.com/webhookdb-go/webhookdb/internal/pgcluster"
	"github.com/webhookdb-go/webhookdb/internal/replicator"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
	"github.com/webhookdb-go/webhookdb/pgroles"
)

// Config of a run.
type Config struct {
	// AdminURL is a superuser URL of an existing cluster with wal_level=logical; empty starts a private
	// cluster (fsync on) in a temporary directory. The run creates its databases, roles and slots and drops them.
	AdminURL string
	// DataDir is the data directory of AdminURL's cluster when it runs on this machine: its processes' CPU is
	// reported per phase as a private cluster's is.
	DataDir string
	Rows    int // staging rows to preload; default 100,000
	Orgs    int // default 100
	Workers int // fanout workers; 0 keeps the fanout's default
	// MaxOrgConns caps the fanout's org connections; 0 keeps the fanout's default
	MaxOrgConns int
	// MaxInFlightBytes caps the staging bytes the fanout holds unapplied; 0 keeps the fanout's default
	MaxInFlightBytes int64
	// Rate is the steady-state phase's webhooks per second (0 skips the phase); SteadyDuration its length.
	Rate           int
	SteadyDuration time.Duration
	// HotShare is the share of the rows (drain and steady phase) that go to the hot orgs, HotOrgs the share of
	// the orgs that are hot (default 0.1 when HotShare is set): 0.9 and 0.1 send 90% of the traffic to 10% of
	// the orgs. Zero spreads rows round-robin over all orgs.
	HotShare float64
	HotOrgs  float64
	// SteadyClients are the steady phase's concurrent keep-alive HTTP clients; default 64.
	SteadyClients int
	// PGSettings are extra postgresql.conf settings of the private cluster (ignored with AdminURL), for A/B
	// runs such as autovacuum off or huge pages.
	PGSettings map[string]string
	Out        io.Writer
	Logger     *slog.Logger
	// StartProfile and StopProfile, when set, are called around the measured phases (the drains and the
	// steady phase), leaving provisioning, the preload and cleanup out of a CPU profile.
	StartProfile, StopProfile func()
}

func (c Config) withDefaults() Config {
	if c.Rows == 0 {
		c.Rows = 100_000
	}
	if c.Orgs == 0 {
		c.Orgs = 100
	}
	if c.SteadyDuration == 0 {
		c.SteadyDuration = 10 * time.Second
	}
	if c.HotShare > 0 && c.HotOrgs == 0 {
		c.HotOrgs = 0.1
	}
	if c.SteadyClients == 0 {
		c.SteadyClients = 64
	}
	if c.Out == nil {
		c.Out = os.Stdout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c
}

// Report is what a run measured.
type Report struct {
	Rows           int
	NativeDuration time.Duration
	FanoutDuration time.Duration
	Ratio          float64 // fanout rows/s over native rows/s
	SteadyRows     int
	LagP50, LagP99 time.Duration // from ingest's receipt to org commit
	LagMax         time.Duration
	// WorstOrgP99 is the highest per-org p99 lag of the steady phase (WorstOrgMax that org's max).
	WorstOrgP99, WorstOrgMax time.Duration
	WorstOrg                 string
	SteadyAchievedRate       float64 // accepted deliveries per second
	PeakRSS                  int64   // bytes; the bench process' during the steady phase, 0 when unknown
	DrainPeakRSS             int64   // bytes; the bench process' peak up to the end of the drain
	OrgRowsExpected          int
	OrgRowsFound             int
}

// bench is one run's state.
type bench struct {
	cfg      Config
	adminURL string
	private  bool   // the cluster is the run's own
	dataDir  string // the private cluster's data directory, for CPU accounting ("" otherwise)
	suffix   string
	appDB    string
	appURL   string
	pool     *pgxpool.Pool
	keyEntry string
	box      secrets.Box
	orgs     []benchOrg
	cleanup  []func(context.Context)
}

type benchOrg struct {
	id, integrationID int64
	key, opaqueID     string
}

// Run runs the benchmark and prints its report.
func Run(ctx context.Context, cfg Config) (rep *Report, err error) {
	cfg = cfg.withDefaults()
	// Negative rows or orgs would "measure" a drain of nothing (or index an empty org list) rather than fail.
	if cfg.Rows < 0 || cfg.Orgs < 0 || cfg.Rate < 0 || cfg.SteadyDuration < 0 || cfg.SteadyClients < 0 {
		return nil, fmt.Errorf("rows (%d), orgs (%d), rate (%d), steady duration (%s) and steady clients (%d) must not be negative",
			cfg.Rows, cfg.Orgs, cfg.Rate, cfg.SteadyDuration, cfg.SteadyClients)
	}
	if cfg.HotShare < 0 || cfg.HotShare > 1 || cfg.HotOrgs < 0 || cfg.HotOrgs > 1 || (cfg.HotShare > 0 && cfg.HotOrgs == 0) {
		return nil, fmt.Errorf("hot share (%g) and hot orgs (%g) must be between 0 and 1", cfg.HotShare, cfg.HotOrgs)
	}
	b := &bench{cfg: cfg, adminURL: cfg.AdminURL, dataDir: cfg.DataDir, suffix: fmt.Sprintf("%d", time.Now().UnixNano()%1_000_000)}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		for i := len(b.cleanup) - 1; i >= 0; i-- {
			b.cleanup[i](cctx)
		}
	}()
	var warmWAL func(context.Context, int) error
	if b.adminURL == "" {
		dir, err := os.MkdirTemp("", "whdb-fanoutbench-")
		if err != nil {
			return nil, err
		}
		_ = os.Chmod(dir, 0o755)
		b.cleanup = append(b.cleanup, func(context.Context) { _ = os.RemoveAll(dir) })
		// Room for the run's WAL without a checkpoint, all of it in recycled segments (WarmWAL below).
		settings := map[string]string{"min_wal_size": "'2GB'", "max_wal_size": "'4GB'"}
		maps.Copy(settings, cfg.PGSettings)
		cluster, err := pgcluster.Start(ctx, pgcluster.Config{Dir: filepath.Join(dir, "pg"), Logger: cfg.Logger, Settings: settings})
		if err != nil {
			return nil, err
		}
		// A context of its own: dropping many databases must not use up the time the cluster needs to stop.
		b.cleanup = append(b.cleanup, func(ctx context.Context) {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			_ = cluster.Stop(sctx)
		})
		warmWAL = cluster.WarmWAL
		b.private = true
		b.adminURL = cluster.URL("postgres")
		b.dataDir = cluster.DataDir
	}
	if err := b.setup(ctx); err != nil {
		return nil, err
	}
	if warmWAL != nil {
		// After provisioning, whose CREATE DATABASEs write each org's template into the WAL.
		start := time.Now()
		if err := warmWAL(ctx, walSegments); err != nil {
			return nil, err
		}
		fmt.Fprintf(cfg.Out, "private cluster: %d WAL segments recycled ahead, as on a server in service (%s)\n", walSegments, time.Since(start).Round(time.Millisecond))
	}
	var walFrom string
	_ = b.pool.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&walFrom)
	rep, runErr := b.run(ctx)
	var walMB float64
	if runErr == nil && b.pool.QueryRow(ctx, `SELECT (pg_current_wal_lsn() - $1::text::pg_lsn) / 1048576`, walFrom).Scan(&walMB) == nil {
		fmt.Fprintf(cfg.Out, "WAL written by the measured phases: %.0f MB\n", walMB)
	}
	return rep, runErr
}

// walSegments is how many WAL segments WarmWAL recycles before the measured phases on a private cluster: 1 GB,
// more than they write at 100 orgs (609 MB in one run).
const walSegments = 64

func withDatabase(adminURL, db string) (string, error) {
	u, err := url.Parse(adminURL)
	if err != nil || u.Scheme == "" {
		return "", fmt.Errorf("admin URL must be a postgres:// URL")
	}
	u.Path = "/" + db
	return u.String(), nil
}

func (b *bench) exec(ctx context.Context, db, sql string, args ...any) error {
	dbURL, err := withDatabase(b.adminURL, db)
	if err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

// setup creates the application database, the orgs with their databases and integrations.
func (b *bench) setup(ctx context.Context) error {
	out := b.cfg.Out
	b.appDB = "whdb_fanoutbench_" + b.suffix
	if err := b.exec(ctx, "postgres", "CREATE DATABASE "+pgx.Identifier{b.appDB}.Sanitize()); err != nil {
		return fmt.Errorf("error creating the bench database: %w", err)
	}
	b.cleanup = append(b.cleanup, func(ctx context.Context) {
		_ = b.exec(ctx, "postgres", `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active`, b.appDB)
		_ = b.exec(ctx, "postgres", "DROP DATABASE IF EXISTS "+pgx.Identifier{b.appDB}.Sanitize()+" WITH (FORCE)")
	})
	var err error
	if b.appURL, err = withDatabase(b.adminURL, b.appDB); err != nil {
		return err
	}
	if _, err := migrate.Up(ctx, b.appURL, nil); err != nil {
		return err
	}
	poolCfg, err := pgxpool.ParseConfig(b.appURL)
	if err != nil {
		return err
	}
	poolCfg.MaxConns = 16
	if b.pool, err = pgxpool.NewWithConfig(ctx, poolCfg); err != nil {
		return err
	}
	b.cleanup = append(b.cleanup, func(context.Context) { b.pool.Close() })
	b.keyEntry = secrets.NewKeyEntry(1)
	keyring, err := secrets.ParseKeyring(b.keyEntry)
	if err != nil {
		return err
	}
	b.box = keyring
	enc, err := b.box.Encrypt(ctx, secrets.Binding{Table: "database_servers", Column: "admin_url_enc", Row: "bench"}, []byte(b.adminURL))
	if err != nil {
		return err
	}
	var serverID int64
	if err := b.pool.QueryRow(ctx, `INSERT INTO database_servers (name, admin_url_enc, public_host, public_port) VALUES ('bench', $1, '127.0.0.1', 5432) RETURNING id`, enc).Scan(&serverID); err != nil {
		return fmt.Errorf("error registering the database server: %w", err)
	}
	start := time.Now()
	fmt.Fprintf(out, "provisioning %d org databases...\n", b.cfg.Orgs)
	for i := 0; i < b.cfg.Orgs; i++ {
		o := benchOrg{key: fmt.Sprintf("bench%s_%d", b.suffix, i)}
		if err := pgroles.ProvisionOrg(ctx, b.adminURL, o.key); err != nil {
			return err
		}
		if !b.private { // a private cluster goes as a whole
			b.cleanup = append(b.cleanup, func(ctx context.Context) { _ = pgroles.DropOrg(ctx, b.adminURL, o.key) })
		}
		if err := b.pool.QueryRow(ctx, `
			INSERT INTO organizations (key, name, database_server_id, database_name, provision_state) VALUES ($1, $1, $2, $3, 'ready') RETURNING id`,
			o.key, serverID, pgroles.DatabaseName(o.key)).Scan(&o.id); err != nil {
			return fmt.Errorf("error creating org: %w", err)
		}
		in, _, err := integrations.Create(ctx, b.pool, b.box, integrations.CreateParams{OrgID: o.id, Service: "stripe_charge_v1", Secret: webhookSecret})
		if err != nil {
			return err
		}
		o.integrationID, o.opaqueID = in.ID, in.OpaqueID
		// The integration's table, as creating an integration makes it; the fanout would create it on first
		// use, but that is DDL, not the drain being measured.
		if err := b.createTable(ctx, o, in.TableName); err != nil {
			return err
		}
		b.orgs = append(b.orgs, o)
	}
	fmt.Fprintf(out, "  done in %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}

func (b *bench) createTable(ctx context.Context, o benchOrg, table string) error {
	u, err := withDatabase(b.adminURL, pgroles.DatabaseName(o.key))
	if err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	svc, _ := replicator.Lookup("stripe_charge_v1")
	stmts := append([]string{"SET ROLE " + pgx.Identifier{pgroles.OwnerRole(o.key)}.Sanitize()}, svc.EnsureTableSQL("public", table)...)
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("error creating table %s for org %s: %w", table, o.key, err)
		}
	}
	return nil
}

// event is a Stripe charge event of about 1.9 KB; every charge gets two events, the second newer.
func event(i int) []byte {
	charge := i / 2
	created := 1719000000 + i
	status := "pending"
	if i%2 == 1 {
		status = "succeeded"
	}
	return fmt.Appendf(nil, `{"id":"evt_%024d","object":"event","api_version":"2024-06-20","created":%d,"type":"charge.updated","livemode":false,"pending_webhooks":1,"request":{"id":"req_8a7sd6f5g4h3j2","idempotency_key":"3f1c2d7e-9b8a-4c5d-8e7f-6a5b4c3d2e1f"},"data":{"object":{"id":"ch_%024d","object":"charge","amount":%d,"amount_captured":%d,"amount_refunded":0,"balance_transaction":"txn_3PabcdEFGH1234567890","billing_details":{"address":{"city":"Berlin","country":"DE","line1":"Main St 1","line2":null,"postal_code":"10115","state":null},"email":"jenny@example.com","name":"Jenny Rosen","phone":null},"calculated_statement_descriptor":"ACMEBOOKS","captured":true,"created":%d,"currency":"eur","customer":"cus_QabcdEFGH12345","description":"Order %d","disputed":false,"failure_code":null,"failure_message":null,"fraud_details":{},"invoice":null,"metadata":{"order_id":"%d"},"outcome":{"network_status":"approved_by_network","reason":null,"risk_level":"normal","risk_score":32,"seller_message":"Payment complete.","type":"authorized"},"paid":true,"payment_intent":"pi_3PabcdEFGH1234567890","payment_method":"pm_1PabcdEFGH1234567890","payment_method_details":{"card":{"brand":"visa","checks":{"address_line1_check":"pass","address_postal_code_check":"pass","cvc_check":"pass"},"country":"DE","exp_month":8,"exp_year":2030,"fingerprint":"Xt5EWLLDS7FJjR1c","funding":"credit","last4":"4242","network":"visa"},"type":"card"},"receipt_email":"jenny@example.com","receipt_url":"https://pay.stripe.com/receipts/payment/CAcaFwoVYWNjdF8xMDMyRDgyZVp2S1lsbzJDKNnS","refunded":false,"status":%q}}}`,
		i, created, charge, 1000+charge%5000, 1000+charge%5000, created, charge, charge, status)
}

const headersJSON = `{"Content-Type":"application/json; charset=utf-8","User-Agent":"Stripe/1.0 (+https://stripe.com/docs/webhooks)"}`

// orgOf is the org of event i. Both events of a charge go to the same org: round-robin over the orgs by
// charge, or with HotShare, a charge goes to one of the first HotOrgs*Orgs orgs with probability HotShare
// (by a hash of the charge, so every run places the same charges alike).
func (b *bench) orgOf(i int) benchOrg {
	charge, n := i/2, len(b.orgs)
	if b.cfg.HotShare == 0 {
		return b.orgs[charge%n]
	}
	hot := min(n, max(1, int(math.Round(b.cfg.HotOrgs*float64(n)))))
	h1 := splitmix64(uint64(charge))
	h2 := splitmix64(h1)
	if float64(h1>>11)/(1<<53) < b.cfg.HotShare || hot == n {
		return b.orgs[h2%uint64(hot)]
	}
	return b.orgs[hot+int(h2%uint64(n-hot))]
}

func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// distribution describes how rows are spread over the orgs.
func (b *bench) distribution() string {
	if b.cfg.HotShare == 0 {
		return fmt.Sprintf("round-robin over %d orgs", len(b.orgs))
	}
	hot := min(len(b.orgs), max(1, int(math.Round(b.cfg.HotOrgs*float64(len(b.orgs))))))
	return fmt.Sprintf("%.0f%% of the charges to %d hot orgs, the rest over the other %d", 100*b.cfg.HotShare, hot, len(b.orgs)-hot)
}

// insert stages rows [from, to) in one transaction, spread over the orgs by orgOf.
func (b *bench) insert(ctx context.Context, from, to int) error {
	n := to - from
	org, integ := make([]int64, n), make([]int64, n)
	body := make([][]byte, n)
	for k := 0; k < n; k++ {
		i := from + k
		o := b.orgOf(i)
		org[k], integ[k], body[k] = o.id, o.integrationID, event(i)
	}
	_, err := b.pool.Exec(ctx, `
		INSERT INTO staging.webhooks (received_at, org_id, integration_id, method, path, content_type, headers, body, accepted)
		SELECT clock_timestamp(), o, i, 'POST', '/v1/webhooks/bench', 'application/json; charset=utf-8', $3::jsonb, b, true
		FROM unnest($1::bigint[], $2::bigint[], $4::bytea[]) AS u(o, i, b)`, org, integ, headersJSON, body)
	return err
}

func (b *bench) run(ctx context.Context) (*Report, error) {
	// This process runs the fanout and, in the steady phase, ingest: the GC as serve has it for both.
	defer app.TuneGC([]app.Role{app.RoleIngest, app.RoleFanout}, 0)()
	out, cfg := b.cfg.Out, b.cfg
	rep := &Report{Rows: cfg.Rows}

	// Both slots exist before the preload, so both consumers see every row.
	var settled atomic.Int64
	lags := &lagSamples{byOrg: map[int64][]time.Duration{}}
	var steadyFrom atomic.Int64 // unix nanos; rows received after it are the steady phase's
	fcfg := fanout.Config{
		Slot:             "bench_fanout",
		Workers:          cfg.Workers,
		MaxOrgConns:      cfg.MaxOrgConns,
		MaxInFlightBytes: cfg.MaxInFlightBytes,
		Logger:           cfg.Logger,
		OnApplied: func(a fanout.Applied) {
			settled.Add(int64(len(a.CommitTimes)))
			if from := steadyFrom.Load(); from != 0 {
				lags.mu.Lock()
				for k, t := range a.ReceivedAts {
					if t.UnixNano() >= from {
						l := a.At.Sub(t)
						lags.all = append(lags.all, l)
						lags.fromStaging = append(lags.fromStaging, a.At.Sub(a.CommitTimes[k]))
						lags.byOrg[a.OrgID] = append(lags.byOrg[a.OrgID], l)
					}
				}
				lags.mu.Unlock()
			}
		},
	}
	if b.private {
		// The fanout logs in as it does in service: webhookdb_fanout, with the password orgdb stores. Not on a
		// cluster given with --admin-url, where setting that role's password would lock a running webhookdb's
		// fanout out.
		issuer, err := orgdb.NewPostgresIssuer(pgroles.LoginPolicy{})
		if err != nil {
			return nil, err
		}
		writers, err := orgdb.New(b.pool, orgdb.Config{Issuer: issuer, Box: b.box, Logger: cfg.Logger})
		if err != nil {
			return nil, err
		}
		fcfg.Writers = writers
	}
	reg := prometheus.NewRegistry()
	consumer, err := fanout.New(b.appURL, b.pool, b.box, fcfg, reg)
	if err != nil {
		return nil, err
	}
	if err := consumer.EnsureSlot(ctx); err != nil {
		return nil, err
	}
	if err := b.prepareNative(ctx); err != nil {
		return nil, err
	}

	fmt.Fprintf(out, "preloading %d accepted staging rows (Stripe charge events, ~%d bytes each), %s...\n", cfg.Rows, len(event(0)), b.distribution())
	start := time.Now()
	const perTxn = 500 // what ingest's group commit writes at most per transaction
	for from := 0; from < cfg.Rows; from += perTxn {
		if err := b.insert(ctx, from, min(from+perTxn, cfg.Rows)); err != nil {
			return nil, fmt.Errorf("error preloading: %w", err)
		}
	}
	fmt.Fprintf(out, "  done in %s\n", time.Since(start).Round(time.Millisecond))

	if cfg.StartProfile != nil {
		cfg.StartProfile()
	}
	if cfg.StopProfile != nil {
		defer cfg.StopProfile()
	}
	// Native logical replication.
	cpuNative := cpuacct.Take(b.dataDir)
	nativeEnd := cpuNative
	if rep.NativeDuration, nativeEnd, err = b.runNative(ctx); err != nil {
		return nil, err
	}
	nativeCPU := cpuacct.Report(cpuNative, nativeEnd)
	nativeRate := float64(cfg.Rows) / rep.NativeDuration.Seconds()
	fmt.Fprintf(out, "native logical replication (CREATE SUBSCRIPTION, rows as they are into 1 database): %d rows in %s = %.0f rows/s\n",
		cfg.Rows, rep.NativeDuration.Round(time.Millisecond), nativeRate)
	fmt.Fprintf(out, "  %s\n", nativeCPU)

	// The fanout.
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	start = time.Now()
	cpuFanout := cpuacct.Take(b.dataDir)
	go func() { done <- consumer.Run(runCtx) }()
	defer func() {
		stop()
		<-done
	}()
	for settled.Load() < int64(cfg.Rows) {
		select {
		case err := <-done:
			return nil, fmt.Errorf("the fanout stopped after applying %d of %d rows: %w", settled.Load(), cfg.Rows, err)
		case <-time.After(5 * time.Millisecond):
		}
		if time.Since(start) > 30*time.Minute {
			return nil, fmt.Errorf("the fanout applied %d of %d preloaded rows in 30 minutes", settled.Load(), cfg.Rows)
		}
	}
	rep.FanoutDuration = time.Since(start)
	fanoutEnd := cpuacct.Take(b.dataDir)
	fanoutCPU := cpuacct.Report(cpuFanout, fanoutEnd)
	fanoutRate := float64(cfg.Rows) / rep.FanoutDuration.Seconds()
	eff := fcfg.WithDefaults()
	connCap := fmt.Sprintf("%d%% of the server's connections", eff.ServerConnPercent)
	if eff.MaxOrgConns != 0 {
		connCap = fmt.Sprint(eff.MaxOrgConns)
	}
	fmt.Fprintf(out, "fanout (typed upserts into %d org databases, %d workers, org connections capped at %s, %d MiB in flight): %d rows in %s = %.0f rows/s\n",
		cfg.Orgs, eff.Workers, connCap, eff.MaxInFlightBytes>>20, cfg.Rows, rep.FanoutDuration.Round(time.Millisecond), fanoutRate)
	rep.Ratio = fanoutRate / nativeRate
	fmt.Fprintf(out, "  %s\n", fanoutCPU)
	connects := printMetrics(out, reg)
	if err := b.connectCost(ctx, connects, cpuFanout, fanoutEnd); err != nil {
		return nil, err
	}
	// The targets: 1.0x into 100 org databases, 0.5x into 1,000.
	target := 1.0
	if cfg.Orgs >= 1000 {
		target = 0.5
	}
	fmt.Fprintf(out, "ratio fanout/native: %.2fx (target >= %.1fx)\n", rep.Ratio, target)

	rep.OrgRowsExpected = cfg.Rows / 2
	if rep.OrgRowsFound, err = b.countOrgRows(ctx); err != nil {
		return nil, err
	}
	if rep.OrgRowsFound != rep.OrgRowsExpected {
		return rep, fmt.Errorf("org databases hold %d charges, want %d", rep.OrgRowsFound, rep.OrgRowsExpected)
	}
	fmt.Fprintf(out, "  check: %d charges across the org databases, as expected\n", rep.OrgRowsFound)

	if cfg.Rate > 0 {
		if err := b.steady(ctx, rep, &steadyFrom, lags, &settled); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// prepareNative creates the target database with the staging table's shape and a disabled subscription on
// a slot created beforehand (a subscription to a database of the same cluster cannot create its own slot).
func (b *bench) prepareNative(ctx context.Context) error {
	target := "whdb_native_" + b.suffix
	if err := b.exec(ctx, "postgres", "CREATE DATABASE "+pgx.Identifier{target}.Sanitize()); err != nil {
		return fmt.Errorf("error creating the native target database: %w", err)
	}
	b.cleanup = append(b.cleanup, func(ctx context.Context) {
		_ = b.exec(ctx, target, `ALTER SUBSCRIPTION bench_native DISABLE`)
		_ = b.exec(ctx, target, `ALTER SUBSCRIPTION bench_native SET (slot_name = NONE)`)
		_ = b.exec(ctx, target, `DROP SUBSCRIPTION IF EXISTS bench_native`)
		_ = b.exec(ctx, "postgres", "DROP DATABASE IF EXISTS "+pgx.Identifier{target}.Sanitize()+" WITH (FORCE)")
	})
	// The same columns, primary key and index as staging.webhooks (one table rather than daily partitions).
	if err := b.exec(ctx, target, `
		CREATE SCHEMA staging;
		CREATE TABLE staging.webhooks (
			id bigint NOT NULL, received_at timestamptz NOT NULL, org_id bigint NOT NULL, integration_id bigint NOT NULL,
			delivery_id text, method text NOT NULL, path text NOT NULL, query text NOT NULL DEFAULT '',
			content_type text NOT NULL DEFAULT '', headers jsonb NOT NULL, body bytea NOT NULL,
			body_truncated boolean NOT NULL DEFAULT false, accepted boolean NOT NULL, rejected_reason text, replay_of bigint,
			original_received_at timestamptz, source text NOT NULL DEFAULT 'webhook', backfill_job_id bigint,
			PRIMARY KEY (received_at, id));
		CREATE INDEX ON staging.webhooks (integration_id, received_at DESC);`); err != nil {
		return fmt.Errorf("error creating the native target table: %w", err)
	}
	if _, err := b.pool.Exec(ctx, `SELECT pg_create_logical_replication_slot('bench_native', 'pgoutput')`); err != nil {
		return fmt.Errorf("error creating the native slot: %w", err)
	}
	return b.exec(ctx, target, fmt.Sprintf(`CREATE SUBSCRIPTION bench_native CONNECTION %s PUBLICATION webhookdb_staging
		WITH (create_slot = false, slot_name = 'bench_native', enabled = false, copy_data = false)`, quote(b.appURL)))
}

func quote(s string) string {
	out := []byte{'\''}
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			out = append(out, '\'')
		}
		out = append(out, s[i])
	}
	return string(append(out, '\''))
}

// runNative enables the subscription and waits until the target holds the preload's last row: the apply
// worker commits in the source's commit order, so every row is then in. It samples the cluster's CPU at that
// moment, while the subscription's apply worker and walsender still live and are counted as what they are,
// then stops both and waits for them to exit: a process that exits during the next phase would add its whole
// CPU time to that phase's backends.
func (b *bench) runNative(ctx context.Context) (time.Duration, cpuacct.Sample, error) {
	target := "whdb_native_" + b.suffix
	targetURL, err := withDatabase(b.adminURL, target)
	if err != nil {
		return 0, cpuacct.Sample{}, err
	}
	var lastAt time.Time
	var lastID int64
	if err := b.pool.QueryRow(ctx, `SELECT received_at, id FROM staging.webhooks ORDER BY received_at DESC, id DESC LIMIT 1`).Scan(&lastAt, &lastID); err != nil {
		return 0, cpuacct.Sample{}, fmt.Errorf("error reading the preload's last row: %w", err)
	}
	conn, err := pgx.Connect(ctx, targetURL)
	if err != nil {
		return 0, cpuacct.Sample{}, err
	}
	defer conn.Close(ctx)
	start := time.Now()
	if _, err := conn.Exec(ctx, `ALTER SUBSCRIPTION bench_native ENABLE`); err != nil {
		return 0, cpuacct.Sample{}, fmt.Errorf("error enabling the subscription: %w", err)
	}
	// A primary-key probe: counting the target's rows on each poll would cost native a scan of everything
	// it has copied so far.
	err = waitFor(ctx, 30*time.Minute, 5*time.Millisecond, func() (bool, error) {
		var done bool
		err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM staging.webhooks WHERE received_at = $1 AND id = $2)`, lastAt, lastID).Scan(&done)
		return done, err
	})
	d, end := time.Since(start), cpuacct.Take(b.dataDir)
	if err != nil {
		return 0, end, fmt.Errorf("error waiting for native replication: %w", err)
	}
	if _, err := conn.Exec(ctx, `ALTER SUBSCRIPTION bench_native DISABLE`); err != nil {
		return 0, end, err
	}
	err = waitFor(ctx, time.Minute, 10*time.Millisecond, func() (bool, error) {
		var live int
		err := b.pool.QueryRow(ctx, `SELECT count(*) FROM pg_catalog.pg_replication_slots WHERE slot_name = 'bench_native' AND active`).Scan(&live)
		if err == nil && live == 0 {
			err = conn.QueryRow(ctx, `SELECT count(pid) FROM pg_catalog.pg_stat_subscription WHERE subname = 'bench_native'`).Scan(&live)
		}
		return live == 0, err
	})
	if err != nil {
		return 0, end, fmt.Errorf("error waiting for the native subscription to stop: %w", err)
	}
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM staging.webhooks`).Scan(&n); err != nil {
		return 0, end, err
	}
	if n != b.cfg.Rows {
		return 0, end, fmt.Errorf("native replication copied %d rows, want %d", n, b.cfg.Rows)
	}
	return d, end, nil
}

// waitFor polls done every interval until it reports true, fails, or timeout passes.
func waitFor(ctx context.Context, timeout, interval time.Duration, done func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := done()
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not done after %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

func (b *bench) countOrgRows(ctx context.Context) (int, error) {
	total := 0
	for _, o := range b.orgs {
		u, err := withDatabase(b.adminURL, pgroles.DatabaseName(o.key))
		if err != nil {
			return 0, err
		}
		conn, err := pgx.Connect(ctx, u)
		if err != nil {
			return 0, err
		}
		var n int
		err = conn.QueryRow(ctx, `SELECT count(*) FROM stripe_charge_v1 WHERE status = 'succeeded'`).Scan(&n)
		conn.Close(ctx)
		if err != nil {
			return 0, fmt.Errorf("error counting rows of org %s: %w", o.key, err)
		}
		total += n
	}
	return total, nil
}

// lagSamples are the steady phase's lags, from ingest's receipt to org commit (all and by org), and from
// staging commit to org commit.
type lagSamples struct {
	mu               sync.Mutex
	all, fromStaging []time.Duration
	byOrg            map[int64][]time.Duration
}

// steady runs a real ingest in this process and sends it signed HTTP deliveries at the configured rate, and
// measures the lag from each delivery's receipt (staging's received_at) to the commit of its org row.
func (b *bench) steady(ctx context.Context, rep *Report, steadyFrom *atomic.Int64, lags *lagSamples, settled *atomic.Int64) error {
	cfg := b.cfg
	srv, err := app.New(ctx, app.Config{
		DatabaseURL: b.appURL, Listen: "127.0.0.1:0", Keyring: b.keyEntry,
		Credentials: app.CredentialsPostgres, Encryption: app.EncryptionKeyring,
		Roles: []app.Role{app.RoleIngest}, Logger: cfg.Logger,
	})
	if err != nil {
		return fmt.Errorf("error assembling ingest: %w", err)
	}
	srvCtx, stopSrv := context.WithCancel(ctx)
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Run(srvCtx) }()
	defer func() { stopSrv(); <-srvDone }()
	base := srv.URL() + "/v1/webhooks/"

	// The drain's backlog (up to the fanout's in-flight cap, with its garbage) is the run's peak so far; it is
	// printed, then returned to the OS, so the steady phase's peak is its own and not the drain's leftover pages.
	rep.DrainPeakRSS = peakRSS()
	debug.FreeOSMemory()
	rssScope := "bench process (ingest server, fanout and Go load generator), steady phase"
	if os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) != nil { // resets VmHWM
		rssScope = "bench process (ingest server, fanout and Go load generator), whole run"
	}
	steadyFrom.Store(time.Now().UnixNano())
	before := settled.Load()
	g := b.generate(ctx, base)
	// Wait for every accepted delivery to reach its org.
	wait := time.Now()
	for settled.Load()-before < int64(g.accepted) {
		if time.Since(wait) > time.Minute {
			return fmt.Errorf("the fanout applied %d of the steady phase's %d accepted deliveries within a minute of its end", settled.Load()-before, g.accepted)
		}
		time.Sleep(5 * time.Millisecond)
	}
	rep.PeakRSS = peakRSS()
	if g.accepted == 0 {
		return fmt.Errorf("the steady phase's generator had no delivery accepted (%d sent, %d failed, %d not sent: the generator fell behind): %s",
			g.sent, g.failed, g.skipped, strings.Join(g.firstErrors, "; "))
	}
	lags.mu.Lock()
	l, fromStaging := slices.Clone(lags.all), slices.Clone(lags.fromStaging)
	type orgLag struct {
		id       int64
		p99, max time.Duration
		n        int
	}
	var worst orgLag
	for id, ol := range lags.byOrg {
		ol = slices.Clone(ol)
		slices.Sort(ol)
		o := orgLag{id: id, p99: ol[len(ol)*99/100], max: ol[len(ol)-1], n: len(ol)}
		if o.p99 > worst.p99 {
			worst = o
		}
	}
	orgsSeen := len(lags.byOrg)
	lags.mu.Unlock()
	if len(l) == 0 {
		return fmt.Errorf("the steady phase produced no lag samples: %d deliveries accepted, %d rows applied", g.accepted, settled.Load()-before)
	}
	slices.Sort(l)
	slices.Sort(fromStaging)
	rep.SteadyRows = len(l)
	rep.LagP50, rep.LagP99, rep.LagMax = l[len(l)/2], l[len(l)*99/100], l[len(l)-1]
	rep.WorstOrgP99, rep.WorstOrgMax = worst.p99, worst.max
	for _, o := range b.orgs {
		if o.id == worst.id {
			rep.WorstOrg = o.key
		}
	}
	rep.SteadyAchievedRate = float64(g.accepted) / g.elapsed.Seconds()
	out := cfg.Out
	fmt.Fprintf(out, "steady state: %d webhooks/s configured, %.0f/s achieved (%d accepted in %s by %d HTTP clients, %d failed, %d not sent because the generator fell behind), %s\n",
		cfg.Rate, rep.SteadyAchievedRate, g.accepted, g.elapsed.Round(time.Millisecond), cfg.SteadyClients, g.failed, g.skipped, b.distribution())
	fmt.Fprintf(out, "  lag from ingest receipt to org commit: p50 %s, p99 %s, max %s (target p99 < 1s); worst org by per-org p99: %s, p99 %s, max %s (%d rows; %d orgs received rows)\n",
		ms(rep.LagP50), ms(rep.LagP99), ms(rep.LagMax), rep.WorstOrg, ms(worst.p99), ms(worst.max), worst.n, orgsSeen)
	fmt.Fprintf(out, "  of which from staging commit to org commit: p50 %s, p99 %s\n", ms(fromStaging[len(fromStaging)/2]), ms(fromStaging[len(fromStaging)*99/100]))
	if g.failed > 0 {
		fmt.Fprintf(out, "  first failures: %s\n", strings.Join(g.firstErrors, "; "))
	}
	if rep.PeakRSS > 0 {
		fmt.Fprintf(out, "  peak RSS: %.0f MiB (%s; target < 256 MiB for the server); %.0f MiB by the end of the drain before it\n",
			float64(rep.PeakRSS)/(1<<20), rssScope, float64(rep.DrainPeakRSS)/(1<<20))
	}
	return nil
}

// generated is what the steady phase's generator did.
type generated struct {
	sent, accepted, failed, skipped int
	elapsed                         time.Duration
	firstErrors                     []string
}

// generate sends signed Stripe deliveries to ingest at cfg.Rate for cfg.SteadyDuration from SteadyClients
// keep-alive clients. It is open-loop: every 10ms it queues the deliveries due by then; a delivery that finds
// the queue (one second of traffic) full is not sent, and counted.
func (b *bench) generate(ctx context.Context, base string) generated {
	cfg := b.cfg
	n := cfg.SteadyClients
	transport := &http.Transport{MaxIdleConns: n, MaxIdleConnsPerHost: n, MaxConnsPerHost: n}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: 30 * time.Second}
	jobs := make(chan int, max(1, cfg.Rate))
	var g generated
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < n; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				err := b.deliver(ctx, client, base, i)
				mu.Lock()
				g.sent++
				if err == nil {
					g.accepted++
				} else {
					g.failed++
					if len(g.firstErrors) < 3 && !slices.Contains(g.firstErrors, err.Error()) {
						g.firstErrors = append(g.firstErrors, err.Error())
					}
				}
				mu.Unlock()
			}
		}()
	}
	start := time.Now()
	next := cfg.Rows + 10 // new charges, after the preload's
	queued := 0
	t := time.NewTicker(10 * time.Millisecond)
	for ctx.Err() == nil {
		elapsed := time.Since(start)
		if elapsed > cfg.SteadyDuration {
			elapsed = cfg.SteadyDuration
		}
		for due := int(elapsed.Seconds() * float64(cfg.Rate)); queued < due; queued++ {
			select {
			case jobs <- next:
			default:
				g.skipped++
			}
			next++
		}
		if elapsed >= cfg.SteadyDuration {
			break
		}
		<-t.C
	}
	t.Stop()
	close(jobs)
	wg.Wait()
	g.elapsed = time.Since(start)
	return g
}

// deliver posts event i, signed as Stripe signs it, to its org's integration.
func (b *bench) deliver(ctx context.Context, client *http.Client, base string, i int) error {
	body := event(i)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+b.orgOf(i).opaqueID, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)")
	req.Header.Set("Stripe-Signature", sign(webhookSecret, body, time.Now()))
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(msg)))
	}
	return nil
}

const webhookSecret = "whsec_bench"

func sign(secret string, body []byte, now time.Time) string {
	ts := strconv.FormatInt(now.Unix(), 10)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(m.Sum(nil))
}

// peakRSS is the process' VmHWM in bytes, 0 when unknown.
func peakRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			fields := strings.Fields(rest)
			if len(fields) > 0 {
				kb, _ := strconv.ParseInt(fields[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

// printMetrics prints the fanout's batch and transaction figures.
// printMetrics prints the fanout's org transactions and returns the org connections it opened.
func printMetrics(out io.Writer, reg *prometheus.Registry) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		return 0
	}
	hist := map[string]*dto.Histogram{}
	for _, mf := range mfs {
		if len(mf.GetMetric()) == 1 && mf.GetMetric()[0].Histogram != nil {
			hist[mf.GetName()] = mf.GetMetric()[0].Histogram
		}
	}
	var connects float64
	for _, mf := range mfs {
		if mf.GetName() == "webhookdb_fanout_org_connects_total" && len(mf.GetMetric()) == 1 {
			connects = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	rows, secs := hist["webhookdb_fanout_batch_rows"], hist["webhookdb_fanout_apply_seconds"]
	if rows == nil || secs == nil || rows.GetSampleCount() == 0 || secs.GetSampleCount() == 0 {
		return connects
	}
	fmt.Fprintf(out, "  %d org transactions, %.0f staging rows each on average, %.1fms each on average (extraction included); %.0f org connections opened\n",
		rows.GetSampleCount(), rows.GetSampleSum()/float64(rows.GetSampleCount()), 1000*secs.GetSampleSum()/float64(secs.GetSampleCount()), connects)
	return connects
}

// connectCost measures what a new connection to an org database costs the cluster in CPU (the postmaster's
// fork, the backend's start, a first query), with the drain over, and says how much of the drain's Postgres
// CPU the drain's connections account for: a connection serves one database, so with more orgs than
// connections every org switch pays it.
func (b *bench) connectCost(ctx context.Context, connects float64, from, to cpuacct.Sample) error {
	drainCPU, ok := cpuacct.Postgres(from, to)
	if !ok || len(b.orgs) == 0 {
		return nil
	}
	// Each backend's own CPU, read while it lives (so autovacuum workers finishing meanwhile are not counted),
	// plus the postmaster's for the forks.
	const n = 50
	var cost time.Duration
	pmBefore := cpuacct.PostmasterCPU(b.dataDir)
	for i := 0; i < n; i++ {
		u, err := withDatabase(b.adminURL, pgroles.DatabaseName(b.orgs[i%len(b.orgs)].key))
		if err != nil {
			return err
		}
		conn, err := pgx.Connect(ctx, u)
		if err != nil {
			return fmt.Errorf("error measuring the cost of a connection: %w", err)
		}
		var pid int
		err = conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid)
		cost += cpuacct.ProcessCPU(pid)
		conn.Close(ctx)
		if err != nil {
			return fmt.Errorf("error measuring the cost of a connection: %w", err)
		}
	}
	cost += cpuacct.PostmasterCPU(b.dataDir) - pmBefore
	per := cost / n
	fmt.Fprintf(b.cfg.Out, "  a new org connection costs %.1fms of Postgres CPU (fork, backend start, a first query; %d measured after the drain): the drain's %.0f connections account for about %.1fs of its %.1fs of Postgres CPU\n",
		float64(per.Microseconds())/1000, n, connects, (time.Duration(connects) * per).Seconds(), drainCPU.Seconds())
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000) }
