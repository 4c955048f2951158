// Package backfillbench measures backfill: objects per second from a fake Stripe into an org's table, and the
// lag of another org's webhooks while it runs against the same lag without a backfill.
package backfillbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/webhookdb-go/webhookdb/fanout"
	"github.com/webhookdb-go/webhookdb/internal/app"
	"github.com/webhookdb-go/webhookdb/internal/backfill"
	"github.com/webhookdb-go/webhookdb/internal/backfill/backfilltest"
	"github.com/webhookdb-go/webhookdb/internal/integrations"
	"github.com/webhookdb-go/webhookdb/internal/migrate"
	"github.com/webhookdb-go/webhookdb/internal/orgdb"
	"github.com/webhookdb-go/webhookdb/internal/pgcluster"
	"github.com/webhookdb-go/webhookdb/internal/pgerr"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
	"github.com/webhookdb-go/webhookdb/internal/staging"
)

// Config tunes the benchmark.
type Config struct {
	// Objects is how many charges the fake Stripe holds; default 100,000.
	Objects int
	// Rate is the other org's webhooks per second, staged during both phases; default 200.
	Rate int
	// Quiet is how long the lag is measured without a backfill; default 5 s.
	Quiet time.Duration
	// BackfillRate and Workers are the backfill's --backfill-rate and --backfill-workers (0: the defaults).
	BackfillRate, Workers int
	Out                   io.Writer
	Logger                *slog.Logger
}

// Report is what the benchmark measured.
type Report struct {
	ObjectsPerSecond float64 // from the job's start until the last row is in the org's table
	StagedPerSecond  float64 // from the job's start until it finished
	QuietP50         time.Duration
	QuietP99         time.Duration
	BusyP50          time.Duration
	BusyP99          time.Duration
	BusyMax          time.Duration
	// PeakRSS is the bench process's peak resident memory during the backfill (VmHWM, reset at its start; 0
	// where /proc does not tell).
	PeakRSS int64
}

// lags collects webhook lags (staging received_at to org commit) of one org.
type lags struct {
	mu    sync.Mutex
	orgID int64
	all   []time.Duration
}

func (l *lags) record(a fanout.Applied) {
	if a.OrgID != l.orgID {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range a.ReceivedAts {
		l.all = append(l.all, a.At.Sub(r))
	}
}

func (l *lags) take() []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.all
	l.all = nil
	slices.Sort(out)
	return out
}

// Run runs the benchmark on a private cluster.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Objects <= 0 {
		cfg.Objects = 100_000
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 200
	}
	if cfg.Quiet <= 0 {
		cfg.Quiet = 5 * time.Second
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	out := cfg.Out
	dir, err := os.MkdirTemp("", "whdb-backfillbench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	_ = os.Chmod(dir, 0o755)
	cluster, err := pgcluster.Start(ctx, pgcluster.Config{Dir: filepath.Join(dir, "pg"), Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		_ = cluster.Stop(sctx)
	}()
	super, err := pgx.Connect(ctx, cluster.URL("postgres"))
	if err != nil {
		return nil, err
	}
	defer super.Close(context.WithoutCancel(ctx))
	if _, err := super.Exec(ctx, `CREATE DATABASE whdb_backfillbench`); err != nil {
		return nil, err
	}
	appURL := cluster.URL("whdb_backfillbench")
	if _, err := migrate.Up(ctx, appURL, nil); err != nil {
		return nil, err
	}

	// Charges made page by page: the fake holds none, so the process's memory is the server's.
	fake := backfilltest.NewStripe(backfilltest.StripeConfig{Generated: cfg.Objects})
	defer fake.Close()

	quiet := &lags{}
	acfg := app.Config{
		DatabaseURL: appURL, Listen: "127.0.0.1:0", Keyring: secrets.NewKeyEntry(1),
		Credentials: app.CredentialsPostgres, Encryption: app.EncryptionKeyring,
		Roles: []app.Role{app.RoleFanout, app.RoleMaintenance}, Logger: cfg.Logger, Slot: "backfillbench",
	}
	acfg.Fanout.OnApplied = quiet.record
	acfg.Backfill.ObjectsPerSecond, acfg.Backfill.Workers = cfg.BackfillRate, cfg.Workers
	defer app.TuneGC(acfg.Roles, 0)()
	srv, err := app.New(ctx, acfg)
	if err != nil {
		return nil, fmt.Errorf("error assembling the server: %w", err)
	}
	pool, box := srv.Pool(), srv.Box()
	if _, err := srv.Orgs().RegisterServer(ctx, orgdb.ServerSpec{Name: "local", AdminURL: cluster.URL("postgres"), PublicHost: "127.0.0.1", PublicPort: cluster.Port}); err != nil {
		srv.Close()
		return nil, err
	}
	var filled, hooked *integrations.Integration
	var filledDB string
	for i, key := range []string{"backfilled", "webhooks"} {
		o, err := srv.Orgs().CreateOrg(ctx, key, key)
		if err == nil {
			o, err = srv.Orgs().ProvisionOrg(ctx, o.ID)
		}
		if err != nil {
			srv.Close()
			return nil, fmt.Errorf("error provisioning org %s: %w", key, err)
		}
		in, _, err := integrations.Create(ctx, pool, box, integrations.CreateParams{OrgID: o.ID, Service: "stripe_charge_v1"})
		if err != nil {
			srv.Close()
			return nil, err
		}
		if i == 0 {
			filled, filledDB = in, *o.DatabaseName
		} else {
			hooked, quiet.orgID = in, o.ID
		}
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Run(runCtx) }()
	defer func() { stop(); <-done }()

	orgConn, err := pgx.Connect(ctx, cluster.URL(filledDB))
	if err != nil {
		return nil, err
	}
	defer orgConn.Close(context.WithoutCancel(ctx))
	rep := &Report{}

	// The other org's webhooks, staged at cfg.Rate as ingest would, for both phases.
	genCtx, stopGen := context.WithCancel(ctx)
	genDone := make(chan error, 1)
	go func() { genDone <- generate(genCtx, pool, hooked, cfg.Rate) }()
	defer func() { stopGen(); <-genDone }()

	fmt.Fprintf(out, "webhooks of another org at %d/s; %s without a backfill...\n", cfg.Rate, cfg.Quiet)
	time.Sleep(cfg.Quiet)
	q := quiet.take()
	if len(q) == 0 {
		return nil, errors.New("no webhook was applied in the quiet phase")
	}
	rep.QuietP50, rep.QuietP99 = q[len(q)/2], q[len(q)*99/100]

	if _, err := srv.Backfill().SetCredentials(ctx, filled, backfill.CredentialParams{Key: ptr(fake.Key()), BaseURL: ptr(fake.URL), ServerAdmin: true}); err != nil {
		return nil, err
	}
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) // resets VmHWM
	start := time.Now()
	job, err := srv.Backfill().Start(ctx, filled, true)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "backfilling %d charges from a fake Stripe (job %d)...\n", cfg.Objects, job.ID)
	var staged time.Duration
	for {
		if staged == 0 {
			j, err := backfill.GetJob(ctx, pool, filled.OrgID, job.ID)
			if err != nil {
				return nil, err
			}
			if !j.Active() {
				if j.State != backfill.StateSucceeded {
					return nil, fmt.Errorf("the backfill job %s: %v", j.State, j.LastError)
				}
				staged = time.Since(start)
			}
		}
		var n int
		if err := orgConn.QueryRow(ctx, `SELECT count(*) FROM stripe_charge_v1`).Scan(&n); err != nil && !isUndefinedTable(err) {
			return nil, err
		}
		if n == cfg.Objects {
			break
		}
		if time.Since(start) > 30*time.Minute {
			return nil, fmt.Errorf("only %d of %d rows after 30 minutes", n, cfg.Objects)
		}
		time.Sleep(100 * time.Millisecond)
	}
	applied := time.Since(start)
	rep.PeakRSS = peakRSS()
	b := quiet.take()
	if len(b) == 0 {
		return nil, errors.New("no webhook was applied during the backfill")
	}
	rep.ObjectsPerSecond = float64(cfg.Objects) / applied.Seconds()
	rep.StagedPerSecond = float64(cfg.Objects) / staged.Seconds()
	rep.BusyP50, rep.BusyP99, rep.BusyMax = b[len(b)/2], b[len(b)*99/100], b[len(b)-1]
	fmt.Fprintf(out, "backfill: %d objects in the org's table in %s: %.0f objects/s (staged in %s: %.0f/s)\n",
		cfg.Objects, applied.Round(time.Millisecond), rep.ObjectsPerSecond, staged.Round(time.Millisecond), rep.StagedPerSecond)
	if rep.PeakRSS > 0 {
		fmt.Fprintf(out, "peak RSS of the bench process (fake Stripe, backfill workers, fanout, webhook generator) during the backfill: %.0f MiB\n", float64(rep.PeakRSS)/(1<<20))
	}
	fmt.Fprintf(out, "webhook lag of the other org (staging receipt to org commit): without a backfill p50 %s p99 %s; during it p50 %s p99 %s max %s (target p99 < 1s)\n",
		ms(rep.QuietP50), ms(rep.QuietP99), ms(rep.BusyP50), ms(rep.BusyP99), ms(rep.BusyMax))
	return rep, nil
}

func ptr[T any](v T) *T { return &v }

// peakRSS is VmHWM from /proc/self/status in bytes, or 0.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000) }

// isUndefinedTable: the fanout creates the table with the first row.
func isUndefinedTable(err error) bool { return pgerr.Is(err, pgerrcode.UndefinedTable) }

// generate stages Stripe charge events for in at rate per second, as ingest stores deliveries, until ctx ends.
func generate(ctx context.Context, pool *pgxpool.Pool, in *integrations.Integration, rate int) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	start, sent := time.Now(), 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		due := int(time.Since(start).Seconds()*float64(rate)) - sent
		if due <= 0 {
			continue
		}
		rows := make([]staging.Row, due)
		now := time.Now()
		for i := range rows {
			id := fmt.Sprintf("ch_hook_%d", sent+i)
			rows[i] = staging.Row{ReceivedAt: now, OrgID: in.OrgID, IntegrationID: in.ID, Method: "POST", Path: "/v1/webhooks/" + in.OpaqueID,
				ContentType: "application/json", Headers: []byte(`{"Content-Type":"application/json"}`), Accepted: true,
				Body: fmt.Appendf(nil, `{"id":"evt_%s","object":"event","type":"charge.succeeded","created":%d,"data":{"object":{"id":%q,"object":"charge","amount":100,"currency":"usd","status":"succeeded"}}}`, id, now.Unix(), id)}
		}
		if err := staging.Insert(ctx, pool, rows); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		sent += due
	}
}
