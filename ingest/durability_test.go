package ingest_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/webhookdb-go/webhookdb/internal/integrations"
	"github.com/webhookdb-go/webhookdb/internal/pgtest"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
)

// buildBinary builds cmd/webhookdb into a temporary directory.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "webhookdb")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/webhookdb-go/webhookdb/cmd/webhookdb").CombinedOutput()
	if err != nil {
		t.Fatalf("building webhookdb: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type serveProcess struct {
	cmd *exec.Cmd
	log *bytes.Buffer
}

func startServe(t *testing.T, bin, dbURL, keyring, addr string) *serveProcess {
	t.Helper()
	cmd := exec.Command(bin, "serve", "--listen", addr, "--database-url", dbURL, "--log-level", "warn")
	cmd.Env = append(os.Environ(), "WEBHOOKDB_KEYRING="+keyring, "WEBHOOKDB_CREDENTIALS=postgres", "WEBHOOKDB_SLOT_NAME=durability_"+filepath.Base(t.TempDir()))
	log := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serveProcess{cmd: cmd, log: log}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not become healthy: %v\n%s", err, log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestKill9LosesNoAcknowledgedWebhook loads a real server process, kills it with SIGKILL mid-load, and checks
// that every delivery that got a 2xx is in staging.webhooks.
func TestKill9LosesNoAcknowledgedWebhook(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	bin := buildBinary(t)
	dbURL := pgtest.NewDBURL(t)
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	keyEntry := secrets.NewKeyEntry(1)
	box, _ := secrets.ParseKeyring(keyEntry)
	org := createOrg(t, pool, "durable")
	in, _, err := integrations.Create(ctx, pool, box, integrations.CreateParams{OrgID: org, Service: "stripe_charge_v1", Secret: "whsec_durable"})
	if err != nil {
		t.Fatal(err)
	}

	addr := freeAddr(t)
	var acked sync.Map // event id -> true
	var ackCount, sent atomic.Int64
	for round := 0; round < 2; round++ {
		srv := startServe(t, bin, dbURL, keyEntry, addr)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
		for w := 0; w < 16; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					id := fmt.Sprintf("evt_r%d_w%d_%d", round, w, i)
					body := stripeEvent(id)
					req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/webhooks/"+in.OpaqueID, bytes.NewReader(body))
					for k, v := range stripeHeaders("whsec_durable", body, time.Now()) {
						req.Header.Set(k, v)
					}
					sent.Add(1)
					resp, err := client.Do(req)
					if err != nil {
						continue // the server died under us: no 2xx, no promise
					}
					resp.Body.Close()
					if resp.StatusCode/100 == 2 {
						acked.Store(id, true)
						ackCount.Add(1)
					}
				}
			}(w)
		}
		time.Sleep(1500 * time.Millisecond)
		if err := srv.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = srv.cmd.Wait()
		close(stop)
		wg.Wait()
	}
	if ackCount.Load() < 100 {
		t.Fatalf("only %d deliveries acknowledged: the load did not run", ackCount.Load())
	}

	stored := map[string]bool{}
	rows, err := pool.Query(ctx, `SELECT delivery_id FROM staging.webhooks WHERE integration_id = $1 AND accepted`, in.ID)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		stored[id] = true
	}
	rows.Close()
	var missing []string
	acked.Range(func(k, _ any) bool {
		if !stored[k.(string)] {
			missing = append(missing, k.(string))
		}
		return true
	})
	if len(missing) > 0 {
		t.Fatalf("%d acknowledged deliveries are not stored, e.g. %v", len(missing), missing[:min(5, len(missing))])
	}
	t.Logf("sent %d, acknowledged %d, stored %d (stored but unacknowledged: %d, the sender retries those)", sent.Load(), ackCount.Load(), len(stored), len(stored)-int(ackCount.Load()))
}
