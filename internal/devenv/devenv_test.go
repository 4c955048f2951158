package devenv_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/internal/devenv"
	"github.com/webhookdb-go/webhookdb/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func startDev(t *testing.T, dir string) (env map[string]string, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := &pgtest.SyncBuffer{}
	done := make(chan error, 1)
	go func() { done <- devenv.Run(ctx, devenv.Config{Dir: dir, Listen: "127.0.0.1:0", Out: out}) }()
	envFile := filepath.Join(dir, "dev.env")
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if b, err := os.ReadFile(envFile); err == nil && strings.Contains(string(b), "WEBHOOKDB_TOKEN=") {
			env = map[string]string{}
			for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				k, v, _ := strings.Cut(line, "=")
				env[k] = v
			}
			break
		}
		select {
		case err := <-done:
			cancel()
			t.Fatalf("dev exited before it was ready: %v\n%s", err, out.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("dev.env did not appear\n%s", out.String())
		}
	}
	if !strings.Contains(out.String(), env["WEBHOOKDB_API_URL"]) {
		t.Errorf("banner does not show the API URL:\n%s", out.String())
	}
	return env, func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("dev stopped with error: %v", err)
			}
		case <-time.After(time.Minute):
			t.Fatal("dev did not stop within a minute")
		}
	}
}

func TestDevRunsAndReusesData(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	// t.TempDir is private to root; the postgres system user must be able to reach the cluster inside it.
	if err := os.Chmod(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}

	env, stop := startDev(t, dir)
	for _, k := range []string{"WEBHOOKDB_API_URL", "WEBHOOKDB_TOKEN", "WEBHOOKDB_DATABASE_URL"} {
		if env[k] == "" {
			t.Fatalf("dev.env lacks %s: %v", k, env)
		}
	}
	resp, err := http.Get(env["WEBHOOKDB_API_URL"] + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %d", resp.StatusCode)
	}
	conn, err := pgx.Connect(ctx, env["WEBHOOKDB_DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	var servers int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM database_servers WHERE name = $1", devenv.LocalServerName).Scan(&servers); err != nil || servers != 1 {
		t.Fatalf("local database server registered: %d %v", servers, err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE kept_between_runs (x int)"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	stop()
	if _, err := os.Stat(filepath.Join(dir, "dev.env")); !os.IsNotExist(err) {
		t.Fatalf("dev.env should be gone once dev stops: %v", err)
	}

	env2, stop2 := startDev(t, dir)
	defer stop2()
	if env2["WEBHOOKDB_TOKEN"] != env["WEBHOOKDB_TOKEN"] {
		t.Errorf("second run issued a new token instead of reusing the first")
	}
	conn, err = pgx.Connect(ctx, env2["WEBHOOKDB_DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "SELECT * FROM kept_between_runs"); err != nil {
		t.Fatalf("data of the first run is gone: %v", err)
	}
}
