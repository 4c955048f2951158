// Package pgtest gives each test its own PostgreSQL database on a real server.
//
// One cluster is started per test binary (lazily, on the first test that asks for a database) and stopped
// when the binary exits. NewDB clones a template database that already has every migration applied, which
// takes milliseconds, so tests run with t.Parallel(). Wire it up with
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// A test that needs PostgreSQL fails, never skips, when the server binaries are missing.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/webhookdb-go/webhookdb/internal/migrate"
	"github.com/webhookdb-go/webhookdb/internal/pgcluster"
)

const templateDB = "webhookdb_template"

var (
	mu          sync.Mutex
	clusters    []*pgcluster.Cluster
	atExit      []func()
	primary     *pgcluster.Cluster
	startErr    error
	primaryOnce sync.Once
	template    sync.Once
	tmplErr     error
)

// Main runs the tests and stops every cluster this binary started.
func Main(m *testing.M) {
	code := m.Run()
	mu.Lock()
	for _, c := range clusters {
		if err := c.Stop(context.Background()); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		}
		_ = os.RemoveAll(c.Dir)
	}
	hooks := atExit
	mu.Unlock()
	for _, h := range hooks {
		h()
	}
	os.Exit(code)
}

// AtExit registers f to run when Main finishes (other harnesses, such as vaulttest, stop their servers there).
func AtExit(f func()) {
	mu.Lock()
	defer mu.Unlock()
	atExit = append(atExit, f)
}

// tempPattern names the directories of throwaway clusters, so orphans of a killed run can be found.
func tempPattern() string { return filepath.Join(os.TempDir(), "whdb-pgtest-*") }

// NewCluster starts an extra cluster for this test binary (tests that place orgs on two servers, or stop one).
// It is stopped when the binary exits; stopping or killing it earlier is the test's business.
func NewCluster(t testing.TB) *pgcluster.Cluster {
	t.Helper()
	c, err := startCluster()
	if err != nil {
		t.Fatalf("pgtest: cannot start PostgreSQL: %v", err)
	}
	return c
}

// NewDurableCluster starts a cluster of its own with fsync and synchronous commit on, as in production, for
// benchmarks of what Postgres spends (the shared cluster trades durability for speed). It is stopped and its
// files removed when tb ends.
func NewDurableCluster(tb testing.TB) *pgcluster.Cluster {
	tb.Helper()
	dir, err := os.MkdirTemp("", "whdb-bench-")
	if err != nil {
		tb.Fatal(err)
	}
	_ = os.Chmod(dir, 0o755) // the postgres system user must reach it
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, pgcluster.Config{Dir: filepath.Join(dir, "pg"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		_ = os.RemoveAll(dir)
		tb.Fatalf("pgtest: cannot start PostgreSQL: %v", err)
	}
	tb.Cleanup(func() {
		_ = c.Stop(context.Background())
		_ = os.RemoveAll(dir)
	})
	return c
}

func startCluster() (*pgcluster.Cluster, error) {
	pgcluster.ReapOrphans(tempPattern())
	dir, err := os.MkdirTemp("", "whdb-pgtest-")
	if err != nil {
		return nil, fmt.Errorf("error creating cluster dir: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, pgcluster.Config{
		Dir:    dir,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		// Throwaway data: trade crash safety for speed. The durability tests start their own cluster with fsync on.
		Settings: map[string]string{"fsync": "off", "full_page_writes": "off", "synchronous_commit": "off"},
	})
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	mu.Lock()
	clusters = append(clusters, c)
	mu.Unlock()
	return c, nil
}

// Cluster returns the shared cluster of this test binary, starting it on first use.
func Cluster(t testing.TB) *pgcluster.Cluster {
	t.Helper()
	primaryOnce.Do(func() { primary, startErr = startCluster() })
	if startErr != nil {
		t.Fatalf("pgtest: cannot start PostgreSQL: %v", startErr)
	}
	return primary
}

// NewDB returns a pool on a fresh, fully migrated application database, dropped when the test ends.
func NewDB(t testing.TB) *pgxpool.Pool {
	t.Helper()
	return pool(t, NewDBURL(t))
}

// NewDBURL creates a fresh migrated database and returns its superuser URL (TCP, with password).
func NewDBURL(t testing.TB) string {
	t.Helper()
	c := Cluster(t)
	template.Do(func() { tmplErr = buildTemplate(c) })
	if tmplErr != nil {
		t.Fatalf("pgtest: cannot build the migrated template database: %v", tmplErr)
	}
	return createDB(t, c, templateDB)
}

// NewMigratedDBURL creates a fresh database on cluster c, applies the migrations, and returns its superuser URL.
func NewMigratedDBURL(t testing.TB, c *pgcluster.Cluster) string {
	t.Helper()
	url := createDB(t, c, "template0")
	if _, err := migrate.Up(context.Background(), url, nil); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return url
}

// NewEmptyDB returns a pool on a fresh empty database (an org database, say), dropped when the test ends.
func NewEmptyDB(t testing.TB) *pgxpool.Pool {
	t.Helper()
	return pool(t, createDB(t, Cluster(t), "template0"))
}

// NewEmptyDBURL creates a fresh empty database on cluster c and returns its superuser URL.
func NewEmptyDBURL(t testing.TB, c *pgcluster.Cluster) string {
	t.Helper()
	return createDB(t, c, "template0")
}

func pool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	cfg.MaxConns = 8
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

func buildTemplate(c *pgcluster.Cluster) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := c.Connect(ctx, "postgres")
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{templateDB}.Sanitize()); err != nil {
		return fmt.Errorf("error creating template: %w", err)
	}
	if _, err := migrate.Up(ctx, c.SocketURL(templateDB), nil); err != nil {
		return err
	}
	return nil
}

func createDB(t testing.TB, c *pgcluster.Cluster, template string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := "test_" + randomHex(8)
	conn, err := c.Connect(ctx, "postgres")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	defer conn.Close(ctx)
	sql := fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", pgx.Identifier{name}.Sanitize(), pgx.Identifier{template}.Sanitize())
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("pgtest: error creating database: %v", err)
	}
	t.Cleanup(func() { DropDB(t, c, name) })
	return c.URL(name)
}

// DropDB drops a database and the replication slots in it (a logical slot blocks DROP DATABASE).
func DropDB(t testing.TB, c *pgcluster.Cluster, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := c.Connect(ctx, "postgres")
	if err != nil {
		t.Logf("pgtest: cannot drop %s: %v", name, err)
		return
	}
	defer conn.Close(ctx)
	_, _ = conn.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL`, name)
	_, _ = conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1`, name)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		t.Logf("pgtest: cannot drop %s: %v", name, err)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
