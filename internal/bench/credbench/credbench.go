package credbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/webhookdb-go/webhookdb/internal/migrate"
	"github.com/webhookdb-go/webhookdb/internal/orgdb"
	"github.com/webhookdb-go/webhookdb/internal/pgcluster"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
	"github.com/webhookdb-go/webhookdb/internal/vaultdev"
	"github.com/webhookdb-go/webhookdb/pgroles"
	"github.com/webhookdb-go/webhookdb/vault"
)

// Targets from the issue.
const (
	ConnectionTarget = 100 * time.Millisecond
	RollTarget       = 2 * time.Second
)

// Config tunes a run.
type Config struct {
	// Connections is how many `db connection` calls are timed per mode; default 200.
	Connections int
	// Rolls is how many `db roll-credentials` calls are timed per mode; default 15.
	Rolls int
	// Out receives the report; default io.Discard.
	Out io.Writer
}

func (c Config) withDefaults() Config {
	if c.Connections <= 0 {
		c.Connections = 200
	}
	if c.Rolls <= 0 {
		c.Rolls = 15
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	return c
}

// Result holds one mode's timings.
type Result struct {
	Mode             string
	FirstIssue       time.Duration // first `db connection` of an org: issues the credentials
	ConnectionMedian time.Duration
	ConnectionP95    time.Duration
	RollMedian       time.Duration
	RollP95          time.Duration
}

// Run runs the benchmark with defaults and writes the report to out.
func Run(ctx context.Context, out io.Writer) error {
	_, err := RunConfig(ctx, Config{Out: out})
	return err
}

// RunConfig runs the benchmark: both modes against one cluster and one Vault dev server.
func RunConfig(ctx context.Context, cfg Config) ([]Result, error) {
	cfg = cfg.withDefaults()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir, err := os.MkdirTemp("", "whdb-credbench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	_ = os.Chmod(dir, 0o755) // the postgres system user must reach it when we run as root
	cluster, err := pgcluster.Start(ctx, pgcluster.Config{Dir: filepath.Join(dir, "pg"), Logger: quiet})
	if err != nil {
		return nil, err
	}
	defer func() { _ = cluster.Stop(context.WithoutCancel(ctx)) }()
	vs, err := vaultdev.Start(ctx, vaultdev.Config{Logger: quiet})
	if err != nil {
		return nil, err
	}
	defer func() { _ = vs.Stop() }()
	client, err := vs.Client()
	if err != nil {
		return nil, err
	}

	var results []Result
	for _, mode := range []string{orgdb.ModeVault, orgdb.ModePostgres} {
		appDB := "bench_" + mode
		if err := createDatabase(ctx, cluster, appDB); err != nil {
			return nil, err
		}
		if _, err := migrate.Up(ctx, cluster.URL(appDB), nil); err != nil {
			return nil, err
		}
		pool, err := pgxpool.New(ctx, cluster.URL(appDB))
		if err != nil {
			return nil, err
		}
		var issuer orgdb.Issuer
		var box secrets.Box
		switch mode {
		case orgdb.ModeVault:
			tr, err := secrets.NewTransit(secrets.TransitConfig{Client: client})
			if err == nil {
				err = tr.EnsureKey(ctx)
			}
			if err != nil {
				pool.Close()
				return nil, err
			}
			box = tr
			issuer, err = vault.NewIssuer(vault.Config{Client: client, Logger: quiet})
			if err != nil {
				pool.Close()
				return nil, err
			}
		default:
			kr, _ := secrets.ParseKeyring(secrets.NewKeyEntry(1))
			box = kr
			if issuer, err = orgdb.NewPostgresIssuer(pgroles.LoginPolicy{}); err != nil {
				pool.Close()
				return nil, err
			}
		}
		res, err := measure(ctx, cfg, cluster, pool, issuer, box, quiet)
		pool.Close()
		if err != nil {
			return nil, fmt.Errorf("%s mode: %w", mode, err)
		}
		res.Mode = mode
		results = append(results, *res)
	}
	report(cfg.Out, cfg, results)
	return results, nil
}

func measure(ctx context.Context, cfg Config, cluster *pgcluster.Cluster, pool *pgxpool.Pool, issuer orgdb.Issuer, box secrets.Box, logger *slog.Logger) (*Result, error) {
	svc, err := orgdb.New(pool, orgdb.Config{Issuer: issuer, Box: box, Logger: logger})
	if err != nil {
		return nil, err
	}
	if _, err := svc.RegisterServer(ctx, orgdb.ServerSpec{Name: "bench", AdminURL: cluster.URL("postgres"), PublicHost: "127.0.0.1", PublicPort: cluster.Port, SSLMode: "disable"}); err != nil {
		return nil, err
	}
	org, err := svc.CreateOrg(ctx, "bench_"+issuer.Mode(), "Bench")
	if err != nil {
		return nil, err
	}
	defer func() { _ = svc.DeleteOrg(context.WithoutCancel(ctx), org.ID) }()
	if _, err := svc.ProvisionOrg(ctx, org.ID); err != nil {
		return nil, err
	}
	res := &Result{}
	start := time.Now()
	cred, err := svc.Connection(ctx, org.ID)
	if err != nil {
		return nil, fmt.Errorf("error issuing the first credentials: %w", err)
	}
	res.FirstIssue = time.Since(start)
	// The URL works (a benchmark of credentials that do not log in would measure nothing).
	if err := ping(ctx, cred.URL); err != nil {
		return nil, fmt.Errorf("error logging in with the issued credentials: %w", err)
	}
	conns := make([]time.Duration, 0, cfg.Connections)
	for i := 0; i < cfg.Connections; i++ {
		start := time.Now()
		if _, err := svc.Connection(ctx, org.ID); err != nil {
			return nil, fmt.Errorf("error in db connection call %d of %d: %w", i+1, cfg.Connections, err)
		}
		conns = append(conns, time.Since(start))
	}
	rolls := make([]time.Duration, 0, cfg.Rolls)
	for i := 0; i < cfg.Rolls; i++ {
		start := time.Now()
		next, err := svc.RollCredentials(ctx, org.ID)
		if err != nil {
			return nil, fmt.Errorf("error in roll-credentials call %d of %d: %w", i+1, cfg.Rolls, err)
		}
		rolls = append(rolls, time.Since(start))
		if err := ping(ctx, cred.URL); err == nil {
			return nil, errors.New("the old credentials still log in after roll-credentials")
		}
		cred = next
	}
	if len(conns) == 0 || len(rolls) == 0 {
		// A zero median would print as far under target.
		return nil, fmt.Errorf("nothing timed: %d db connection and %d roll-credentials calls", len(conns), len(rolls))
	}
	res.ConnectionMedian, res.ConnectionP95 = quantile(conns, 0.5), quantile(conns, 0.95)
	res.RollMedian, res.RollP95 = quantile(rolls, 0.5), quantile(rolls, 0.95)
	return res, nil
}

func report(out io.Writer, cfg Config, results []Result) {
	fmt.Fprintf(out, "read-only credentials: %d db connection calls and %d roll-credentials per mode\n", cfg.Connections, cfg.Rolls)
	fmt.Fprintf(out, "%-9s %12s %14s %14s %14s %14s\n", "mode", "first issue", "connection p50", "connection p95", "roll p50", "roll p95")
	for _, r := range results {
		fmt.Fprintf(out, "%-9s %12s %14s %14s %14s %14s\n", r.Mode, round(r.FirstIssue), round(r.ConnectionMedian), round(r.ConnectionP95), round(r.RollMedian), round(r.RollP95))
	}
	for _, r := range results {
		if r.Mode != orgdb.ModeVault {
			continue
		}
		fmt.Fprintf(out, "vault: db connection p50 %s = %.3f x target %s (%s); roll-credentials p50 %s = %.3f x target %s (%s)\n",
			round(r.ConnectionMedian), float64(r.ConnectionMedian)/float64(ConnectionTarget), ConnectionTarget, verdict(r.ConnectionMedian, ConnectionTarget),
			round(r.RollMedian), float64(r.RollMedian)/float64(RollTarget), RollTarget, verdict(r.RollMedian, RollTarget))
		for _, b := range results {
			if b.Mode == orgdb.ModePostgres && b.ConnectionMedian > 0 && b.RollMedian > 0 {
				fmt.Fprintf(out, "vault / postgres (baseline, same run): db connection %.2fx, roll-credentials %.2fx\n",
					float64(r.ConnectionMedian)/float64(b.ConnectionMedian), float64(r.RollMedian)/float64(b.RollMedian))
			}
		}
	}
}

func verdict(got, target time.Duration) string {
	if got < target {
		return "ok"
	}
	return "OVER TARGET"
}

func round(d time.Duration) time.Duration {
	switch {
	case d > time.Second:
		return d.Round(time.Millisecond)
	case d > time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1)+0.5)]
}

func ping(ctx context.Context, url string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return conn.Ping(ctx)
}

func createDatabase(ctx context.Context, c *pgcluster.Cluster, name string) error {
	conn, err := c.Connect(ctx, "postgres")
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("error creating database %s: %w", name, err)
	}
	return nil
}
