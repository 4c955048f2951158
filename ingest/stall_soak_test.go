package ingest_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/webhookdb-go/webhookdb/ingest"
	"github.com/webhookdb-go/webhookdb/ingest/verify"
	"github.com/webhookdb-go/webhookdb/internal/integrations"
)

// TestStalledSendersRSS is the scenario, bounded: 32 senders each announce 64 MiB, send 40 MiB and
// stall, against one integration allowed 64 MiB bodies. It reports the test process's peak RSS (server and
// clients; the clients share one 40 MiB buffer). Run with WEBHOOKDB_SOAK=1; GC is set as `serve` sets it.
func TestStalledSendersRSS(t *testing.T) {
	if os.Getenv("WEBHOOKDB_SOAK") == "" {
		t.Skip("set WEBHOOKDB_SOAK=1 to run")
	}
	debug.SetGCPercent(400)
	if v := os.Getenv("WEBHOOKDB_SOAK_MEMLIMIT"); v != "" {
		n, _ := strconv.ParseInt(v, 10, 64)
		debug.SetMemoryLimit(n)
	}
	e := newEnv(t, nil, func(c *ingest.Config) { c.DefaultBodyLimit = 64 << 20 })
	in, _, err := integrations.Create(context.Background(), e.pool, e.box, integrations.CreateParams{OrgID: e.org, Service: "json_v1",
		Config: []byte(`{"remote_key_path":"id"}`), VerifierOverride: &verify.Config{Scheme: verify.SchemeNone}})
	if err != nil {
		t.Fatal(err)
	}
	addr := e.srv.Listener.Addr().String()
	payload := bytes.Repeat([]byte("a"), 40<<20)
	base := rss(t)
	peak := base
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				peak = max(peak, rss(t))
			}
		}
	}()
	var wg sync.WaitGroup
	conns := make([]net.Conn, 32)
	var sentAll, cut int
	var mu sync.Mutex
	start := time.Now()
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			fmt.Fprintf(c, "POST /v1/webhooks/%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", in.OpaqueID, 64<<20)
			_ = c.SetWriteDeadline(time.Now().Add(60 * time.Second))
			_, err := c.Write(payload)
			mu.Lock()
			if err == nil {
				sentAll++
			} else {
				cut++
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	// Hold the stalled connections a moment longer while sampling (pacing the measurement, not waiting for a condition).
	hold := time.NewTimer(time.Second)
	<-hold.C
	close(stop)
	<-sampled
	statuses := map[string]int{}
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		b, _ := io.ReadAll(io.LimitReader(c, 64))
		line, _, _ := strings.Cut(string(b), "\r\n")
		statuses[line]++
		c.Close()
	}
	t.Logf("32 stalled senders: %d sent all 40 MiB, %d were cut; answers before close %v; peak RSS %d MiB (base %d MiB) in %s",
		sentAll, cut, statuses, peak>>20, base>>20, time.Since(start).Round(time.Millisecond))
}

func rss(t testing.TB) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
