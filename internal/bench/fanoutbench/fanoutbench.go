// Package fanoutbench measures the fanout against Postgres' own logical replication in the same run, on the
// same cluster and the same WAL: N accepted staging rows are preloaded while neither consumer runs, then each
// drains them in turn — native logical replication (CREATE SUBSCRIPTION) copying the rows as they are into
// one target database, and the fanout turning them into typed upserts in one database per org. A second
// phase inserts staging rows at a fixed rate with the fanout running and reports the lag from staging commit
// to org commit.
package fanoutbench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/webhookdb-go/webhookdb/fanout"
	"github.com/webhookdb-go/webhookdb/internal/integrations"
	"github.com/webhookdb-go/webhookdb/internal/migrate"
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
	Rows     int // staging rows to preload; default 100,000
	Orgs     int // default 100
	Workers  int // fanout workers; 0 keeps the fanout's default
	// MaxOrgConns caps the fanout's org connections; 0 keeps the fanout's default
	MaxOrgConns int
	// Rate is the steady-state phase's webhooks per second (0 skips the phase); SteadyDuration its length.
	Rate           int
	SteadyDuration time.Duration
	Out            io.Writer
	Logger         *slog.Logger
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
	Rows            int
	NativeDuration  time.Duration
	FanoutDuration  time.Duration
	Ratio           float64 // fanout rows/s over native rows/s
	SteadyRows      int
	LagP50, LagP99  time.Duration
	OrgRowsExpected int
	OrgRowsFound    int
}

// bench is one run's state.
type bench struct {
	cfg      Config
	adminURL string
	suffix   string
	appDB    string
	appURL   string
	pool     *pgxpool.Pool
	box      secrets.Box
	orgs     []benchOrg
	cleanup  []func(context.Context)
}

type benchOrg struct {
	id, integrationID int64
	key               string
}

// Run runs the benchmark and prints its report.
func Run(ctx context.Context, cfg Config) (rep *Report, err error) {
	cfg = cfg.withDefaults()
	// Negative rows or orgs would "measure" a drain of nothing (or index an empty org list) rather than fail.
	if cfg.Rows < 0 || cfg.Orgs < 0 || cfg.Rate < 0 || cfg.SteadyDuration < 0 {
		return nil, fmt.Errorf("rows (%d), orgs (%d), rate (%d) and steady duration (%s) must not be negative", cfg.Rows, cfg.Orgs, cfg.Rate, cfg.SteadyDuration)
	}
	b := &bench{cfg: cfg, adminURL: cfg.AdminURL, suffix: fmt.Sprintf("%d", time.Now().UnixNano()%1_000_000)}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		for i := len(b.cleanup) - 1; i >= 0; i-- {
			b.cleanup[i](cctx)
		}
	}()
	if b.adminURL == "" {
		dir, err := os.MkdirTemp("", "whdb-fanoutbench-")
		if err != nil {
			return nil, err
		}
		_ = os.Chmod(dir, 0o755)
		b.cleanup = append(b.cleanup, func(context.Context) { _ = os.RemoveAll(dir) })
		cluster, err := pgcluster.Start(ctx, pgcluster.Config{Dir: filepath.Join(dir, "pg"), Logger: cfg.Logger,
			Settings: map[string]string{"max_wal_size": "'4GB'"}})
		if err != nil {
			return nil, err
		}
		b.cleanup = append(b.cleanup, func(ctx context.Context) { _ = cluster.Stop(ctx) })
		b.adminURL = cluster.URL("postgres")
	}
	if err := b.setup(ctx); err != nil {
		return nil, err
	}
	return b.run(ctx)
}

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
	keyring, err := secrets.ParseKeyring(secrets.NewKeyEntry(1))
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
		b.cleanup = append(b.cleanup, func(ctx context.Context) { _ = pgroles.DropOrg(ctx, b.adminURL, o.key) })
		if err := b.pool.QueryRow(ctx, `
			INSERT INTO organizations (key, name, database_server_id, database_name, provision_state) VALUES ($1, $1, $2, $3, 'ready') RETURNING id`,
			o.key, serverID, pgroles.DatabaseName(o.key)).Scan(&o.id); err != nil {
			return fmt.Errorf("error creating org: %w", err)
		}
		in, _, err := integrations.Create(ctx, b.pool, b.box, integrations.CreateParams{OrgID: o.id, Service: "stripe_charge_v1", Secret: "whsec_bench"})
		if err != nil {
			return err
		}
		o.integrationID = in.ID
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

// insert stages rows [from, to) in one transaction, spread round-robin over the orgs.
func (b *bench) insert(ctx context.Context, from, to int) error {
	n := to - from
	org, integ := make([]int64, n), make([]int64, n)
	body := make([][]byte, n)
	for k := 0; k < n; k++ {
		i := from + k
		o := b.orgs[(i/2)%len(b.orgs)] // both events of a charge go to the same org
		org[k], integ[k], body[k] = o.id, o.integrationID, event(i)
	}
	_, err := b.pool.Exec(ctx, `
		INSERT INTO staging.webhooks (received_at, org_id, integration_id, method, path, content_type, headers, body, accepted)
		SELECT clock_timestamp(), o, i, 'POST', '/v1/webhooks/bench', 'application/json; charset=utf-8', $3::jsonb, b, true
		FROM unnest($1::bigint[], $2::bigint[], $4::bytea[]) AS u(o, i, b)`, org, integ, headersJSON, body)
	return err
}

func (b *bench) run(ctx context.Context) (*Report, error) {
	out, cfg := b.cfg.Out, b.cfg
	rep := &Report{Rows: cfg.Rows}

	// Both slots exist before the preload, so both consumers see every row.
	var settled atomic.Int64
	var lagMu sync.Mutex
	var lags []time.Duration
	var steadyFrom atomic.Int64 // unix nanos; rows committed after it are the steady phase's
	fcfg := fanout.Config{
		Slot:        "bench_fanout",
		Workers:     cfg.Workers,
		MaxOrgConns: cfg.MaxOrgConns,
		Logger:      cfg.Logger,
		OnApplied: func(a fanout.Applied) {
			settled.Add(int64(len(a.CommitTimes)))
			if from := steadyFrom.Load(); from != 0 {
				lagMu.Lock()
				for _, t := range a.CommitTimes {
					if t.UnixNano() >= from {
						lags = append(lags, a.At.Sub(t))
					}
				}
				lagMu.Unlock()
			}
		},
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

	fmt.Fprintf(out, "preloading %d accepted staging rows (Stripe charge events, ~%d bytes each) over %d orgs...\n", cfg.Rows, len(event(0)), cfg.Orgs)
	start := time.Now()
	const perTxn = 500 // what ingest's group commit writes at most per transaction
	for from := 0; from < cfg.Rows; from += perTxn {
		if err := b.insert(ctx, from, min(from+perTxn, cfg.Rows)); err != nil {
			return nil, fmt.Errorf("error preloading: %w", err)
		}
	}
	fmt.Fprintf(out, "  done in %s\n", time.Since(start).Round(time.Millisecond))

	// Native logical replication.
	if rep.NativeDuration, err = b.runNative(ctx); err != nil {
		return nil, err
	}
	nativeRate := float64(cfg.Rows) / rep.NativeDuration.Seconds()
	fmt.Fprintf(out, "native logical replication (CREATE SUBSCRIPTION, rows as they are into 1 database): %d rows in %s = %.0f rows/s\n",
		cfg.Rows, rep.NativeDuration.Round(time.Millisecond), nativeRate)

	// The fanout.
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	start = time.Now()
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
	fanoutRate := float64(cfg.Rows) / rep.FanoutDuration.Seconds()
	workers := cfg.Workers
	if workers == 0 {
		workers = fanout.Config{}.WithDefaults().Workers
	}
	fmt.Fprintf(out, "fanout (typed upserts into %d org databases, %d workers): %d rows in %s = %.0f rows/s\n",
		cfg.Orgs, workers, cfg.Rows, rep.FanoutDuration.Round(time.Millisecond), fanoutRate)
	rep.Ratio = fanoutRate / nativeRate
	printMetrics(out, reg)
	fmt.Fprintf(out, "ratio fanout/native: %.2fx (target >= 1.0x)\n", rep.Ratio)

	rep.OrgRowsExpected = cfg.Rows / 2
	if rep.OrgRowsFound, err = b.countOrgRows(ctx); err != nil {
		return nil, err
	}
	if rep.OrgRowsFound != rep.OrgRowsExpected {
		return rep, fmt.Errorf("org databases hold %d charges, want %d", rep.OrgRowsFound, rep.OrgRowsExpected)
	}
	fmt.Fprintf(out, "  check: %d charges across the org databases, as expected\n", rep.OrgRowsFound)

	if cfg.Rate > 0 {
		if err := b.steady(ctx, rep, &steadyFrom, &lagMu, &lags, &settled); err != nil {
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
			original_received_at timestamptz,
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

// runNative enables the subscription and waits until the target holds every row.
func (b *bench) runNative(ctx context.Context) (time.Duration, error) {
	target := "whdb_native_" + b.suffix
	targetURL, err := withDatabase(b.adminURL, target)
	if err != nil {
		return 0, err
	}
	conn, err := pgx.Connect(ctx, targetURL)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	start := time.Now()
	if _, err := conn.Exec(ctx, `ALTER SUBSCRIPTION bench_native ENABLE`); err != nil {
		return 0, fmt.Errorf("error enabling the subscription: %w", err)
	}
	for {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM staging.webhooks`).Scan(&n); err != nil {
			return 0, err
		}
		if n >= b.cfg.Rows {
			d := time.Since(start)
			_, err := conn.Exec(ctx, `ALTER SUBSCRIPTION bench_native DISABLE`)
			return d, err
		}
		if time.Since(start) > 30*time.Minute {
			return 0, fmt.Errorf("native replication copied %d of %d rows in 30 minutes", n, b.cfg.Rows)
		}
		time.Sleep(20 * time.Millisecond)
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

// steady inserts staging rows at the configured rate, in transactions every 10ms as group commit would, and
// measures lag from staging commit to org commit.
func (b *bench) steady(ctx context.Context, rep *Report, steadyFrom *atomic.Int64, lagMu *sync.Mutex, lags *[]time.Duration, settled *atomic.Int64) error {
	cfg := b.cfg
	const tick = 10 * time.Millisecond
	perTick := max(1, cfg.Rate/int(time.Second/tick))
	steadyFrom.Store(time.Now().UnixNano())
	before := settled.Load()
	next := cfg.Rows + 10 // new charges, after the preload's
	t := time.NewTicker(tick)
	deadline := time.Now().Add(cfg.SteadyDuration)
	sent := 0
	for time.Now().Before(deadline) {
		<-t.C
		if err := b.insert(ctx, next, next+perTick); err != nil {
			t.Stop()
			return fmt.Errorf("error inserting: %w", err)
		}
		next += perTick
		sent += perTick
	}
	t.Stop()
	wait := time.Now()
	for settled.Load()-before < int64(sent) {
		if time.Since(wait) > time.Minute {
			return fmt.Errorf("the fanout applied %d of the steady phase's %d rows within a minute of its end", settled.Load()-before, sent)
		}
		time.Sleep(5 * time.Millisecond)
	}
	lagMu.Lock()
	l := slices.Clone(*lags)
	lagMu.Unlock()
	slices.Sort(l)
	if len(l) == 0 {
		return fmt.Errorf("the steady phase produced no lag samples: %d rows sent, %d applied", sent, settled.Load()-before)
	}
	rep.SteadyRows = len(l)
	rep.LagP50 = l[len(l)/2]
	rep.LagP99 = l[len(l)*99/100]
	fmt.Fprintf(cfg.Out, "steady state: %d webhooks/s for %s (%d rows, %d per transaction): lag from staging commit to org commit p50 %s, p99 %s, max %s (target p99 < 1s)\n",
		cfg.Rate, cfg.SteadyDuration, len(l), perTick, ms(rep.LagP50), ms(rep.LagP99), ms(l[len(l)-1]))
	return nil
}

// printMetrics prints the fanout's batch and transaction figures.
func printMetrics(out io.Writer, reg *prometheus.Registry) {
	mfs, err := reg.Gather()
	if err != nil {
		return
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
		return
	}
	fmt.Fprintf(out, "  %d org transactions, %.0f staging rows each on average, %.1fms each on average (extraction included); %.0f org connections opened\n",
		rows.GetSampleCount(), rows.GetSampleSum()/float64(rows.GetSampleCount()), 1000*secs.GetSampleSum()/float64(secs.GetSampleCount()), connects)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000) }
