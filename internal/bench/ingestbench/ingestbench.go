// Package ingestbench measures webhook ingest against a baseline taken in the same run: one-row INSERT
// transactions of the same payload into the same table, at the same concurrency, straight to Postgres; and
// against a ceiling: a no-op handler on the same HTTP stack (app.NewHTTPServer) that reads the whole body and
// answers 202 with ingest's small body, loaded by the same generator with the same payload and concurrency.
// Machines are noisy, so each side runs several alternating rounds and the medians are compared.
package ingestbench

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/webhookdb-go/webhookdb/internal/app"
	"github.com/webhookdb-go/webhookdb/internal/bench/cpuacct"
	"github.com/webhookdb-go/webhookdb/internal/integrations"
	"github.com/webhookdb-go/webhookdb/internal/migrate"
	"github.com/webhookdb-go/webhookdb/internal/pgcluster"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
)

// walSegments is how many WAL segments WarmWAL recycles before the run: 1 GB; the rounds write about 450 MB.
const walSegments = 64

// Config of a benchmark run.
type Config struct {
	// DatabaseURL of an existing, empty database to use; empty starts a private cluster (fsync on).
	DatabaseURL string
	Concurrency int           // default 64
	Duration    time.Duration // per round, default 5s
	Rounds      int           // default 3
	Out         io.Writer
	// PGSettings are extra postgresql.conf settings of the private cluster (ignored with DatabaseURL), for A/B
	// runs.
	PGSettings map[string]string
	// StartProfile and StopProfile, when set, are called around the rounds, leaving setup, warm-up and cleanup
	// out of a CPU profile.
	StartProfile, StopProfile func()
}

func (c Config) withDefaults() Config {
	if c.Concurrency == 0 {
		c.Concurrency = 64
	}
	if c.Duration == 0 {
		c.Duration = 5 * time.Second
	}
	if c.Rounds == 0 {
		c.Rounds = 3
	}
	if c.Out == nil {
		c.Out = os.Stdout
	}
	return c
}

// Result of one side of one round.
type Result struct {
	Ops        int
	RowsPerTxn float64
	Errors     int
	Duration   time.Duration
	P50, P99   time.Duration
}

// PerSecond is the throughput.
func (r Result) PerSecond() float64 { return float64(r.Ops) / r.Duration.Seconds() }

// Report is the whole run.
type Report struct {
	Ingest, Ceiling, Baseline []Result
	Ratio                     float64 // median ingest req/s over median baseline rows/s
	CeilingRatio              float64 // median ingest req/s over median ceiling req/s
}

// Run runs the benchmark and prints its report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg = cfg.withDefaults()
	dbURL := cfg.DatabaseURL
	dir, err := os.MkdirTemp("", "whdb-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	_ = os.Chmod(dir, 0o755)
	dataDir := "" // the private cluster's, for CPU accounting
	if dbURL == "" {
		// Room for the run's WAL (about 1 GB) without a checkpoint, all of it in recycled segments.
		settings := map[string]string{"min_wal_size": "'2GB'", "max_wal_size": "'4GB'"}
		maps.Copy(settings, cfg.PGSettings)
		cluster, err := pgcluster.Start(ctx, pgcluster.Config{Dir: filepath.Join(dir, "pg"), Settings: settings,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			return nil, err
		}
		defer func() { _ = cluster.Stop(context.WithoutCancel(ctx)) }()
		warmStart := time.Now()
		if err := cluster.WarmWAL(ctx, walSegments); err != nil {
			return nil, err
		}
		fmt.Fprintf(cfg.Out, "private cluster: %d WAL segments recycled ahead, as on a server in service (%s)\n", walSegments, time.Since(warmStart).Round(time.Millisecond))
		dataDir = cluster.DataDir
		conn, err := cluster.Connect(ctx, "postgres")
		if err != nil {
			return nil, err
		}
		_, err = conn.Exec(ctx, "CREATE DATABASE webhookdb_bench")
		conn.Close(ctx)
		if err != nil {
			return nil, fmt.Errorf("error creating bench database: %w", err)
		}
		dbURL = cluster.URL("webhookdb_bench")
	}
	if _, err := migrate.Up(ctx, dbURL, nil); err != nil {
		return nil, err
	}
	keyEntry := secrets.NewKeyEntry(1)
	box, _ := secrets.ParseKeyring(keyEntry)
	// The GC as a server running ingest without the fanout has it.
	defer app.TuneGC([]app.Role{app.RoleIngest, app.RoleAPI, app.RoleMaintenance}, 0)()
	srv, err := app.New(ctx, app.Config{
		DatabaseURL: dbURL, Listen: "127.0.0.1:0", Keyring: keyEntry,
		Credentials: app.CredentialsPostgres, Encryption: app.EncryptionKeyring,
		// The fanout has its own benchmark; here it would only park rows for the unprovisioned bench org.
		Roles:  []app.Role{app.RoleIngest, app.RoleAPI, app.RoleMaintenance},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return nil, err
	}
	srvCtx, stopSrv := context.WithCancel(ctx)
	srvDone := make(chan error, 1)
	// Labelled, as the ceiling is, so a profile can tell them apart (go tool pprof -tagfocus side=ingest).
	go pprof.Do(srvCtx, pprof.Labels("side", "ingest"), func(ctx context.Context) { srvDone <- srv.Run(ctx) })
	defer func() { stopSrv(); <-srvDone }()

	pool := srv.Pool()
	var orgID int64
	if err := pool.QueryRow(ctx, `INSERT INTO organizations (key, name) VALUES ('bench', 'bench') RETURNING id`).Scan(&orgID); err != nil {
		return nil, fmt.Errorf("error creating bench org: %w", err)
	}
	const secret = "whsec_benchmark_secret"
	in, _, err := integrations.Create(ctx, pool, box, integrations.CreateParams{OrgID: orgID, Service: "stripe_charge_v1", Secret: secret})
	if err != nil {
		return nil, err
	}

	// Set on the parsed config: appending "&pool_max_conns=" broke a --database-url without a query string.
	baseCfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return nil, fmt.Errorf("error parsing the database URL: %w", err)
	}
	baseCfg.MaxConns = int32(cfg.Concurrency)
	basePool, err := pgxpool.NewWithConfig(ctx, baseCfg)
	if err != nil {
		return nil, err
	}
	defer basePool.Close()

	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS bench_payload AS SELECT $1::jsonb AS headers, $2::bytea AS body`,
		`{"Content-Type":"application/json","User-Agent":"Stripe/1.0 (+https://stripe.com/docs/webhooks)"}`, event("evt_000000000000000000000000")); err != nil {
		return nil, fmt.Errorf("error creating baseline payload: %w", err)
	}
	url := srv.URL() + "/v1/webhooks/" + in.OpaqueID
	ceilingURL, stopCeiling, err := startCeiling()
	if err != nil {
		return nil, fmt.Errorf("error starting the HTTP ceiling: %w", err)
	}
	defer stopCeiling()
	runIngest := func(d time.Duration) (Result, error) {
		return driveHTTP(ctx, url, secret, cfg.Concurrency, d)
	}
	runCeiling := func(d time.Duration) (Result, error) {
		return driveHTTP(ctx, ceilingURL, secret, cfg.Concurrency, d)
	}
	runBaseline := func(d time.Duration) (Result, error) {
		return driveInsert(ctx, basePool, orgID, in.ID, cfg.Concurrency, d)
	}
	warmIngest := func() error { _, err := runIngest(time.Second); return err }
	warmBaseline := func() error { _, err := runBaseline(time.Second); return err }
	generators := "Go HTTP client / pgx (install wrk for a lighter HTTP load generator)"
	if wrk, err := newWrkDriver(dir, secret, 20_000); err == nil {
		if binDir, err := pgcluster.FindBinDir(); err == nil {
			if pgb, err := newPgbenchDriver(binDir, dir, dbURL, orgID, in.ID); err == nil {
				generators = "wrk / pgbench"
				runIngest = func(d time.Duration) (Result, error) { return wrk.run(ctx, url, cfg.Concurrency, d) }
				runCeiling = func(d time.Duration) (Result, error) { return wrk.run(ctx, ceilingURL, cfg.Concurrency, d) }
				runBaseline = func(d time.Duration) (Result, error) { return pgb.run(ctx, cfg.Concurrency, d) }
				warmBaseline = func() error { return pgb.warmUp(ctx, cfg.Concurrency) }
			}
		}
	}
	fmt.Fprintf(cfg.Out, "ingest benchmark: %d concurrent clients, %s rounds x %d, ~%d-byte signed Stripe events, load from %s\n",
		cfg.Concurrency, cfg.Duration, cfg.Rounds, len(event("evt_000000000000000000000000")), generators)
	// Warm up both paths; a warm-up that completes nothing fails like a round would.
	if err := warmIngest(); err != nil {
		return nil, fmt.Errorf("error warming up ingest: %w", err)
	}
	if _, err := runCeiling(time.Second); err != nil {
		return nil, fmt.Errorf("error warming up the HTTP ceiling: %w", err)
	}
	if err := warmBaseline(); err != nil {
		return nil, fmt.Errorf("error warming up the baseline: %w", err)
	}

	var walFrom string
	_ = pool.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&walFrom)
	rep := &Report{}
	if cfg.StartProfile != nil {
		cfg.StartProfile()
	}
	if cfg.StopProfile != nil {
		defer cfg.StopProfile()
	}
	children := cpuacct.Children(dataDir)
	for r := 0; r < cfg.Rounds; r++ {
		// pgbench's backends exit after pgbench does; the CPU of one that exits during the ingest round lands in
		// that round's backends (the postmaster's reaped children), so start once the baseline's are gone.
		if err := waitForBaselineExit(ctx, pool, dataDir, children); err != nil {
			return nil, err
		}
		roundStart := time.Now()
		cpuFrom := cpuacct.Take(dataDir)
		commitsFrom := readCommits(srv.Gatherer())
		ing, err := runIngest(cfg.Duration)
		if err != nil {
			return nil, fmt.Errorf("round %d, ingest: %w", r+1, err)
		}
		ingestCPU := cpuacct.Report(cpuFrom, cpuacct.Take(dataDir))
		commits := readCommits(srv.Gatherer()).since(commitsFrom)
		var rows, txns int
		if err := pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT xmin::text) FROM staging.webhooks WHERE received_at >= $1 AND path <> '/baseline'`, roundStart).Scan(&rows, &txns); err == nil && txns > 0 {
			ing.RowsPerTxn = float64(rows) / float64(txns)
		}
		cpuFrom = cpuacct.Take(dataDir)
		ceil, err := runCeiling(cfg.Duration)
		if err != nil {
			return nil, fmt.Errorf("round %d, HTTP ceiling: %w", r+1, err)
		}
		ceilingCPU := cpuacct.Report(cpuFrom, cpuacct.Take(dataDir))
		children = cpuacct.Children(dataDir)
		base, err := runBaseline(cfg.Duration)
		if err != nil {
			return nil, fmt.Errorf("round %d, baseline: %w", r+1, err)
		}
		rep.Ingest = append(rep.Ingest, ing)
		rep.Ceiling = append(rep.Ceiling, ceil)
		rep.Baseline = append(rep.Baseline, base)
		fmt.Fprintf(cfg.Out, "  round %d: ingest %8.0f req/s (p50 %6s, p99 %6s, errors %d, %.1f rows/txn) | ceiling %8.0f req/s (p50 %6s, p99 %6s) | baseline %8.0f rows/s (p50 %6s, p99 %6s) | ingest/ceiling %.2fx, ingest/baseline %.2fx\n",
			r+1, ing.PerSecond(), ms(ing.P50), ms(ing.P99), ing.Errors, ing.RowsPerTxn, ceil.PerSecond(), ms(ceil.P50), ms(ceil.P99),
			base.PerSecond(), ms(base.P50), ms(base.P99), ing.PerSecond()/ceil.PerSecond(), ing.PerSecond()/base.PerSecond())
		// The load generator (wrk) is a process of its own, not counted in this one.
		fmt.Fprintf(cfg.Out, "    ingest %s\n    ingest commits: %s\n    ceiling %s\n", ingestCPU, commits, ceilingCPU)
	}
	var walMB float64
	if pool.QueryRow(ctx, `SELECT (pg_current_wal_lsn() - $1::text::pg_lsn) / 1048576`, walFrom).Scan(&walMB) == nil {
		fmt.Fprintf(cfg.Out, "WAL written by the rounds: %.0f MB\n", walMB)
	}
	mi, mc, mb := median(rep.Ingest), median(rep.Ceiling), median(rep.Baseline)
	rep.Ratio = mi.PerSecond() / mb.PerSecond()
	rep.CeilingRatio = mi.PerSecond() / mc.PerSecond()
	fmt.Fprintf(cfg.Out, "ingest: median %.0f req/s, p50 %s, p99 %s\n"+
		"ceiling (no-op handler on the same HTTP stack, same load): median %.0f req/s, p50 %s, p99 %s\n"+
		"baseline (one-row INSERT transactions): median %.0f rows/s, p50 %s, p99 %s\n"+
		"ingest/ceiling: %.2fx (target >= 0.5x)   ingest/baseline: %.2fx (target >= 1.5x)\n",
		mi.PerSecond(), ms(mi.P50), ms(mi.P99), mc.PerSecond(), ms(mc.P50), ms(mc.P99),
		mb.PerSecond(), ms(mb.P50), ms(mb.P99), rep.CeilingRatio, rep.Ratio)
	return rep, nil
}

// waitForBaselineExit waits, up to 10 s, until no backend of pgbench is left and the cluster has no more
// processes than children, its count before the baseline ran.
func waitForBaselineExit(ctx context.Context, pool *pgxpool.Pool, dataDir string, children int) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbench'`).Scan(&n); err != nil {
			return fmt.Errorf("error counting the baseline's backends: %w", err)
		}
		// A backend leaves pg_stat_activity before its process has exited and been reaped: wait for the
		// cluster's process count to fall back too.
		if (n == 0 && cpuacct.Children(dataDir) <= children) || time.Now().After(deadline) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// commitStats are the group committer's cumulative histograms, read from the server's metrics.
type commitStats struct{ commits, seconds, rows float64 }

func readCommits(g prometheus.Gatherer) commitStats {
	var c commitStats
	mfs, err := g.Gather()
	if err != nil {
		return c
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch h := m.GetHistogram(); mf.GetName() {
			case "webhookdb_ingest_commit_seconds":
				c.commits, c.seconds = float64(h.GetSampleCount()), h.GetSampleSum()
			case "webhookdb_ingest_batch_rows":
				c.rows = h.GetSampleSum()
			}
		}
	}
	return c
}

func (c commitStats) since(from commitStats) commitStats {
	return commitStats{c.commits - from.commits, c.seconds - from.seconds, c.rows - from.rows}
}

// String gives what a commit takes on average: with one committer and closed-loop clients, a request waits about
// one and a half commits, so this bounds the rate (clients / latency).
func (c commitStats) String() string {
	if c.commits == 0 {
		return "none"
	}
	return fmt.Sprintf("%.0f transactions, mean %.2fms and %.1f rows each", c.commits, 1000*c.seconds/c.commits, c.rows/c.commits)
}

// ceilingBody is what ingest answers an accepted webhook with.
const ceilingBody = `{"ok":true}`

// ceilingHandler is the HTTP ceiling: it does what ingest's handler cannot avoid (read the whole body, answer
// 202 with the same headers and body) and nothing else.
func ceilingHandler(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_, _ = io.WriteString(w, ceilingBody)
}

// startCeiling serves ceilingHandler with the server's own net/http settings on a loopback port.
func startCeiling() (url string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := app.NewHTTPServer(http.HandlerFunc(ceilingHandler), slog.New(slog.NewTextHandler(io.Discard, nil)))
	done := make(chan struct{})
	go pprof.Do(context.Background(), pprof.Labels("side", "ceiling"), func(context.Context) { _ = srv.Serve(ln); close(done) })
	return "http://" + ln.Addr().String() + "/v1/webhooks/ceiling", func() { _ = srv.Close(); <-done }, nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d.Microseconds())/1000) }

func median(rs []Result) Result {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b Result) int {
		switch {
		case a.PerSecond() < b.PerSecond():
			return -1
		case a.PerSecond() > b.PerSecond():
			return 1
		}
		return 0
	})
	return s[len(s)/2]
}

// event is a realistic ~800-byte Stripe charge event.
func event(id string) []byte {
	return []byte(`{"id":"` + id + `","object":"event","api_version":"2024-06-20","created":1719000000,"type":"charge.succeeded","livemode":false,"pending_webhooks":1,"request":{"id":"req_8a7sd6f5g4h3j2","idempotency_key":"3f1c2d7e-9b8a-4c5d-8e7f-6a5b4c3d2e1f"},"data":{"object":{"id":"ch_3PabcdEFGH1234567890","object":"charge","amount":2500,"amount_captured":2500,"amount_refunded":0,"balance_transaction":"txn_3PabcdEFGH1234567890","billing_details":{"address":{"city":"Berlin","country":"DE","line1":"Main St 1","postal_code":"10115"},"email":"jenny@example.com","name":"Jenny Rosen"},"captured":true,"created":1719000000,"currency":"eur","customer":"cus_QabcdEFGH12345","description":"Order 1042","paid":true,"payment_intent":"pi_3PabcdEFGH1234567890","payment_method":"pm_1PabcdEFGH1234567890","refunded":false,"status":"succeeded"}}}`)
}

func sign(secret string, body []byte, now time.Time) string {
	ts := strconv.FormatInt(now.Unix(), 10)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(m.Sum(nil))
}

var seq atomic.Int64

func driveHTTP(ctx context.Context, url, secret string, n int, d time.Duration) (Result, error) {
	transport := &http.Transport{MaxIdleConns: n, MaxIdleConnsPerHost: n, MaxConnsPerHost: n}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: 30 * time.Second}
	return drive(ctx, "the Go HTTP client", n, d, func() error {
		body := event(fmt.Sprintf("evt_%024d", seq.Add(1)))
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Stripe-Signature", sign(secret, body, time.Now()))
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
}

func driveInsert(ctx context.Context, pool *pgxpool.Pool, orgID, integrationID int64, n int, d time.Duration) (Result, error) {
	headers := []byte(`{"Content-Type":"application/json","User-Agent":"Stripe/1.0 (+https://stripe.com/docs/webhooks)"}`)
	return drive(ctx, "pgx", n, d, func() error {
		id := fmt.Sprintf("evt_%024d", seq.Add(1))
		_, err := pool.Exec(ctx, `INSERT INTO staging.webhooks (received_at, org_id, integration_id, delivery_id, method, path, query, content_type, headers, body, accepted)
			VALUES (now(), $1, $2, $3, 'POST', '/baseline', '', 'application/json', $4, $5, true)`,
			orgID, integrationID, id, headers, event(id))
		return err
	})
}

// drive runs op from n goroutines for d. Without one successful op it returns an error with the first
// failures, the Go drivers' counterpart of an external generator's output.
func drive(ctx context.Context, name string, n int, d time.Duration, op func() error) (Result, error) {
	var wg sync.WaitGroup
	lat := make([][]time.Duration, n)
	errs := make([]int, n)
	var firstMu sync.Mutex
	var first []string // the first few distinct failures
	deadline := time.Now().Add(d)
	start := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				t0 := time.Now()
				if err := op(); err != nil {
					errs[i]++
					firstMu.Lock()
					if len(first) < 3 && !slices.Contains(first, err.Error()) {
						first = append(first, err.Error())
					}
					firstMu.Unlock()
					continue
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		}(i)
	}
	wg.Wait()
	res := Result{Duration: time.Since(start)}
	var all []time.Duration
	for i := range lat {
		all = append(all, lat[i]...)
		res.Errors += errs[i]
	}
	res.Ops = len(all)
	if res.Ops == 0 {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		return res, fmt.Errorf("%s completed no successful request in %s (%d errors): %s", name, d, res.Errors, strings.Join(first, "; "))
	}
	slices.Sort(all)
	res.P50 = all[len(all)/2]
	res.P99 = all[len(all)*99/100]
	return res, nil
}
