package subsbench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/webhookdb-go/webhookdb/fanout"
	"github.com/webhookdb-go/webhookdb/internal/bench/cpuacct"
	"github.com/webhookdb-go/webhookdb/internal/integrations"
	"github.com/webhookdb-go/webhookdb/internal/migrate"
	"github.com/webhookdb-go/webhookdb/internal/outgoing"
	"github.com/webhookdb-go/webhookdb/internal/pgcluster"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
	"github.com/webhookdb-go/webhookdb/internal/subscriptions"
	"github.com/webhookdb-go/webhookdb/pgroles"
)

// LagTarget is the target for the p99 change-to-delivery lag at 2,000 changes/s.
const LagTarget = time.Second

// Config tunes a run.
type Config struct {
	// Rate is changes per second; default 2,000.
	Rate int
	// Duration of the steady phase; default 10s.
	Duration time.Duration
	// Orgs the changes are spread over, each with one subscription; default 4.
	Orgs int
	// Out receives the report; default io.Discard.
	Out io.Writer
	// Concurrency is each endpoint's sending concurrency (subscriptions.Config.Concurrency); default its
	// default, 8.
	Concurrency int
	// Statements loads pg_stat_statements and prints the statements that took the most time (--statements).
	Statements bool
	// StartProfile and StopProfile bracket the measured phase (--cpuprofile).
	StartProfile, StopProfile func()
}

func (c Config) withDefaults() Config {
	if c.Rate <= 0 {
		c.Rate = 2_000
	}
	if c.Duration <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.Orgs <= 0 {
		c.Orgs = 4
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	return c
}

// Result is what a run measured.
type Result struct {
	Changes       int
	Notifications int
	// PerSecond is notifications delivered per second over the phase (from its start to the last delivery).
	PerSecond           float64
	LagP50, LagP99, Max time.Duration
	// AppliedP50 and AppliedP99 are the part of the lag up to the org transaction that wrote the row.
	AppliedP50, AppliedP99 time.Duration
	Verified               bool
	// SelfCPU and BackendCPU are the CPU time the bench process (fanout, relay, deliveries, receiver, load) and
	// the cluster's client backends spent over the phase.
	SelfCPU, BackendCPU time.Duration
}

// Run starts a private cluster, an app database with orgs, integrations and subscriptions, the fanout with its
// relay and the deliveries, and a receiver; stages changes at Rate for Duration and waits for every one to be
// delivered.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg = cfg.withDefaults()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir, err := os.MkdirTemp("", "whdb-subsbench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	_ = os.Chmod(dir, 0o755) // the postgres system user must reach it when we run as root
	pgc := pgcluster.Config{Dir: filepath.Join(dir, "pg"), Logger: quiet}
	if cfg.Statements {
		pgc.Settings = map[string]string{"shared_preload_libraries": "pg_stat_statements", "pg_stat_statements.track": "all"}
	}
	cluster, err := pgcluster.Start(ctx, pgc)
	if err != nil {
		return nil, err
	}
	defer func() { _ = cluster.Stop(context.WithoutCancel(ctx)) }()
	admin, err := cluster.Connect(ctx, "postgres")
	if err != nil {
		return nil, err
	}
	if _, err := admin.Exec(ctx, `CREATE DATABASE bench_subs`); err != nil {
		admin.Close(ctx)
		return nil, err
	}
	admin.Close(ctx)
	appURL := cluster.URL("bench_subs")
	if _, err := migrate.Up(ctx, appURL, quiet); err != nil {
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig(appURL)
	if err != nil {
		return nil, err
	}
	pcfg.MaxConns = 20 // as a server's main pool: the fanout, its relay, the deliveries and the load share it
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	box, err := secrets.ParseKeyring(secrets.NewKeyEntry(1))
	if err != nil {
		return nil, err
	}

	// One receiver (an endpoint of its own) per org, all feeding one tally.
	rcv := newReceiver()
	var urls []string
	for range cfg.Orgs {
		srv := httptest.NewServer(rcv)
		defer srv.Close()
		urls = append(urls, srv.URL)
	}
	subs, err := subscriptions.New(subscriptions.Config{Pool: pool, Box: box, Logger: quiet, Concurrency: cfg.Concurrency,
		Client: outgoing.NewClient(outgoing.Config{AllowPrivate: true})})
	if err != nil {
		return nil, err
	}
	ins, err := setup(ctx, cluster, pool, box, subs, rcv, urls)
	if err != nil {
		return nil, err
	}

	fcfg := fanout.Config{Slot: "bench_subs", Logger: quiet, Notify: subs}
	consumer, err := fanout.New(appURL, pool, box, fcfg, nil)
	if err != nil {
		return nil, err
	}
	if err := consumer.EnsureSlot(ctx); err != nil {
		return nil, err
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{consumer.Run, consumer.RunRelay, subs.Run} {
		wg.Add(1)
		go func() { defer wg.Done(); _ = run(runCtx) }()
	}
	defer func() { stop(); wg.Wait() }()

	if err := warmUp(ctx, pool, ins, rcv); err != nil {
		return nil, err
	}
	if cfg.StartProfile != nil {
		cfg.StartProfile()
	}
	start := time.Now()
	cpuFrom := cpuacct.Take(cluster.DataDir)
	staged, err := stage(ctx, pool, ins, cfg.Rate, cfg.Duration, rcv)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(cfg.Duration + 2*time.Minute)
	for rcv.count() < staged {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%d of %d notifications delivered after waiting %s", rcv.count(), staged, time.Since(start).Round(time.Second))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	if cfg.StopProfile != nil {
		cfg.StopProfile()
	}
	cpuTo := cpuacct.Take(cluster.DataDir)
	if cfg.Statements {
		printStatements(ctx, cfg.Out, cluster)
	}
	res := rcv.result(start, staged)
	res.SelfCPU, res.BackendCPU = cpuTo.Self-cpuFrom.Self, cpuTo.Backends-cpuFrom.Backends
	fmt.Fprintf(cfg.Out, "subscriptions (after one delivered change per org as warm-up): %d changes at %d/s over %s, %d orgs: %d notifications, %.0f/s delivered\n",
		staged, cfg.Rate, cfg.Duration, cfg.Orgs, res.Notifications, res.PerSecond)
	fmt.Fprintf(cfg.Out, "change-to-delivery lag (staging commit to receipt): p50 %s, p99 %s, max %s (target p99 < %s at 2000/s)\n",
		res.LagP50.Round(time.Millisecond), res.LagP99.Round(time.Millisecond), res.Max.Round(time.Millisecond), LagTarget)
	fmt.Fprintf(cfg.Out, "  of which staging commit to the org transaction writing the row (the fanout): p50 %s, p99 %s\n",
		res.AppliedP50.Round(time.Millisecond), res.AppliedP99.Round(time.Millisecond))
	if res.Notifications > 0 {
		// Per notification, so runs on a machine shared with other work compare: wall-clock lag does not.
		per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(res.Notifications) }
		fmt.Fprintf(cfg.Out, "  %s\n  per notification (staging, fanout, relay, delivery, receipt): this process %.0f µs, postgres backends %.0f µs\n",
			cpuacct.Report(cpuFrom, cpuTo), per(res.SelfCPU), per(res.BackendCPU))
	}
	if !res.Verified {
		return res, errors.New("a notification did not verify with the Standard Webhooks library")
	}
	return res, nil
}

// setup registers the cluster as a database server and makes orgs with a Stripe integration and a
// subscription to the receiver each.
func setup(ctx context.Context, cluster *pgcluster.Cluster, pool *pgxpool.Pool, box secrets.Box, subs *subscriptions.Service,
	rcv *receiver, urls []string) ([]*integrations.Integration, error) {
	enc, err := box.Encrypt(ctx, secrets.Binding{Table: "database_servers", Column: "admin_url_enc", Row: "local"}, []byte(cluster.URL("postgres")))
	if err != nil {
		return nil, err
	}
	var serverID int64
	if err := pool.QueryRow(ctx, `INSERT INTO database_servers (name, admin_url_enc, public_host, public_port) VALUES ('local', $1, '127.0.0.1', $2) RETURNING id`,
		enc, cluster.Port).Scan(&serverID); err != nil {
		return nil, err
	}
	var out []*integrations.Integration
	for i, url := range urls {
		key := fmt.Sprintf("bench%d", i)
		if err := pgroles.ProvisionOrg(ctx, cluster.URL("postgres"), key); err != nil {
			return nil, err
		}
		var orgID int64
		if err := pool.QueryRow(ctx, `INSERT INTO organizations (key, name, database_server_id, database_name, provision_state) VALUES ($1, $1, $2, $3, 'ready') RETURNING id`,
			key, serverID, pgroles.DatabaseName(key)).Scan(&orgID); err != nil {
			return nil, err
		}
		in, _, err := integrations.Create(ctx, pool, box, integrations.CreateParams{OrgID: orgID, Service: "stripe_charge_v1", Secret: "whsec_bench"})
		if err != nil {
			return nil, err
		}
		_, secret, err := subs.Create(ctx, orgID, subscriptions.CreateParams{URL: url})
		if err != nil {
			return nil, err
		}
		if err := rcv.addSecret(secret); err != nil {
			return nil, err
		}
		out = append(out, in)
	}
	return out, nil
}

// stage inserts changes into staging at rate for d, in batches every 10 ms, round-robin over the
// integrations, recording each key's commit time; it returns how many it staged.
func stage(ctx context.Context, pool *pgxpool.Pool, ins []*integrations.Integration, rate int, d time.Duration, rcv *receiver) (int, error) {
	const tick = 10 * time.Millisecond
	start := time.Now()
	n := 0
	for time.Since(start) < d {
		due := int(float64(rate) * time.Since(start).Seconds())
		if due > n {
			keys := make([]string, due-n)
			for j := range keys {
				keys[j] = fmt.Sprintf("ch_%d", n+j)
			}
			if err := stageKeys(ctx, pool, ins, n, keys); err != nil {
				return n, err
			}
			rcv.committed(keys, time.Now())
			n = due
		}
		select {
		case <-ctx.Done():
			return n, ctx.Err()
		case <-time.After(tick):
		}
	}
	return n, nil
}

// stageKeys stages a Stripe charge event for each key, the first going to ins[first % len(ins)], the next to
// the next integration, and so on.
func stageKeys(ctx context.Context, pool *pgxpool.Pool, ins []*integrations.Integration, first int, keys []string) error {
	k := len(keys)
	org, integ, bodies := make([]int64, k), make([]int64, k), make([][]byte, k)
	for j, key := range keys {
		in := ins[(first+j)%len(ins)]
		org[j], integ[j] = in.OrgID, in.ID
		bodies[j] = fmt.Appendf(nil, `{"id":"evt_%s","object":"event","type":"charge.succeeded","created":1700000000,"data":{"object":{"id":%q,"object":"charge","amount":%d,"currency":"usd","status":"succeeded","created":1700000000}}}`,
			key, key, first+j)
	}
	if _, err := pool.Exec(ctx, `
		INSERT INTO staging.webhooks (received_at, org_id, integration_id, method, path, content_type, headers, body, accepted)
		SELECT clock_timestamp(), o, i, 'POST', '/', 'application/json', '{"Content-Type":"application/json"}', b, true
		FROM unnest($1::bigint[], $2::bigint[], $3::bytea[]) AS u(o, i, b)`, org, integ, bodies); err != nil {
		return fmt.Errorf("error staging changes: %w", err)
	}
	return nil
}

// warmUp stages one change per org and waits for its notification, then forgets them: the measured load
// starts on a running pipeline (the replication stream read, each org's connection and first transaction,
// each endpoint's first delivery), not on processes still starting.
func warmUp(ctx context.Context, pool *pgxpool.Pool, ins []*integrations.Integration, rcv *receiver) error {
	keys := make([]string, len(ins))
	for i := range keys {
		keys[i] = fmt.Sprintf("warm_%d", i)
	}
	if err := stageKeys(ctx, pool, ins, 0, keys); err != nil {
		return err
	}
	rcv.committed(keys, time.Now())
	deadline := time.Now().Add(time.Minute)
	for rcv.count() < len(keys) {
		if time.Now().After(deadline) {
			return fmt.Errorf("warm-up: %d of %d notifications delivered in a minute", rcv.count(), len(keys))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	rcv.reset()
	return nil
}

// receiver verifies each notification with the Standard Webhooks library and times it against its
// change's staging commit.
type receiver struct {
	mu       sync.Mutex
	whs      []*standardwebhooks.Webhook
	commitAt map[string]time.Time
	seen     map[string]bool
	lags     []time.Duration
	// applied are the lags from the staging commit to the org transaction that wrote the row (the message's
	// timestamp): what the fanout takes; the rest is the relay's and the delivery's
	applied   []time.Duration
	writtenAt map[string]time.Time
	early     map[string]time.Time // deliveries that came before their commit was recorded
	last      time.Time
	badVerify bool
}

func newReceiver() *receiver {
	return &receiver{commitAt: map[string]time.Time{}, seen: map[string]bool{}, early: map[string]time.Time{}, writtenAt: map[string]time.Time{}}
}

func (r *receiver) addSecret(secret string) error {
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.whs = append(r.whs, wh)
	r.mu.Unlock()
	return nil
}

func (r *receiver) committed(keys []string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, k := range keys {
		if got, ok := r.early[k]; ok {
			r.lags = append(r.lags, max(0, got.Sub(at)))
			r.applied = append(r.applied, max(0, r.writtenAt[k].Sub(at)))
			delete(r.early, k)
			continue
		}
		r.commitAt[k] = at
	}
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	now := time.Now()
	body, _ := io.ReadAll(req.Body)
	var p subscriptions.Payload
	_ = json.Unmarshal(body, &p)
	r.mu.Lock()
	defer r.mu.Unlock()
	ok := false
	for _, wh := range r.whs {
		if wh.Verify(body, req.Header) == nil {
			ok = true
			break
		}
	}
	if !ok {
		r.badVerify = true
	}
	key := p.Data.RemoteKey
	if !r.seen[key] {
		r.seen[key] = true
		if at, ok := r.commitAt[key]; ok {
			r.lags = append(r.lags, now.Sub(at))
			r.applied = append(r.applied, max(0, p.Timestamp.Sub(at)))
		} else {
			r.early[key] = now
			r.writtenAt[key] = p.Timestamp
		}
		r.last = now
	}
	w.WriteHeader(http.StatusNoContent)
}

// reset forgets what was received (the warm-up's), keeping the secrets and any failed verification.
func (r *receiver) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.commitAt, r.seen, r.early, r.writtenAt = map[string]time.Time{}, map[string]bool{}, map[string]time.Time{}, map[string]time.Time{}
	r.lags, r.applied, r.last = nil, nil, time.Time{}
}

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}

func (r *receiver) result(start time.Time, staged int) *Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := slices.Clone(r.lags)
	slices.Sort(l)
	a := slices.Clone(r.applied)
	slices.Sort(a)
	q := func(l []time.Duration, p float64) time.Duration {
		if len(l) == 0 {
			return 0
		}
		return l[min(len(l)-1, int(p*float64(len(l))))]
	}
	res := &Result{Changes: staged, Notifications: len(r.seen), LagP50: q(l, 0.5), LagP99: q(l, 0.99), Verified: !r.badVerify,
		AppliedP50: q(a, 0.5), AppliedP99: q(a, 0.99)}
	if len(l) > 0 {
		res.Max = l[len(l)-1]
	}
	if el := r.last.Sub(start).Seconds(); el > 0 {
		res.PerSecond = float64(len(r.seen)) / el
	}
	return res
}

// printStatements prints the statements that took the most time (pg_stat_statements) and how the delivery
// log's indexes were used: where the Postgres backends' time went.
func printStatements(ctx context.Context, out io.Writer, cluster *pgcluster.Cluster) {
	app, err := cluster.Connect(ctx, "bench_subs")
	if err != nil {
		fmt.Fprintf(out, "  cannot read statement statistics: %v\n", err)
		return
	}
	defer app.Close(ctx)
	fmt.Fprintln(out, "  subscription_deliveries indexes (scans, entries read):")
	if rows, err := app.Query(ctx, `SELECT indexrelname, idx_scan, idx_tup_read FROM pg_stat_user_indexes
		WHERE relname = 'subscription_deliveries' ORDER BY indexrelname`); err == nil {
		for rows.Next() {
			var name string
			var scans, read int64
			if rows.Scan(&name, &scans, &read) == nil {
				fmt.Fprintf(out, "    %-55s %8d %10d\n", name, scans, read)
			}
		}
		rows.Close()
	}
	if _, err := app.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`); err != nil {
		fmt.Fprintf(out, "  cannot read statement statistics: %v\n", err)
		return
	}
	fmt.Fprintln(out, "  statements by total time (ms, calls, rows):")
	rows, err := app.Query(ctx, `SELECT round(total_exec_time)::bigint, calls, rows, left(regexp_replace(query, '\s+', ' ', 'g'), 110)
		FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 12`)
	if err != nil {
		fmt.Fprintf(out, "  cannot read statement statistics: %v\n", err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		var ms, calls, n int64
		var q string
		if rows.Scan(&ms, &calls, &n, &q) == nil {
			fmt.Fprintf(out, "    %7d %6d %7d  %s\n", ms, calls, n, q)
		}
	}
}
