package ingest_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/webhookdb-go/webhookdb/ingest"
	"github.com/webhookdb-go/webhookdb/ingest/verify"
	"github.com/webhookdb-go/webhookdb/internal/integrations"
	"github.com/webhookdb-go/webhookdb/internal/pgtest"
)

// unsigned creates a json_v1 integration of org that verifies nothing.
func (e *env) unsigned(org int64, limit int64) *integrations.Integration {
	e.t.Helper()
	p := integrations.CreateParams{OrgID: org, Service: "json_v1", Config: []byte(`{"remote_key_path":"id"}`),
		VerifierOverride: &verify.Config{Scheme: verify.SchemeNone}}
	if limit > 0 {
		// Set at creation: the cache may read the row at once, and a later update would reach it only at a poll.
		p.BodyLimitBytes = &limit
	}
	in, _, err := integrations.Create(context.Background(), e.pool, e.box, p)
	if err != nil {
		e.t.Fatal(err)
	}
	return in
}

// rawRequest sends head (request line and headers, CRLF-separated, without the final blank line) and body over a
// new connection, byte for byte, and reads the answer.
func rawRequest(t testing.TB, addr, head string, body []byte) *http.Response {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, head+"\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(body); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp
}

// Requests whose query, Content-Type or other header values hold bytes that are not UTF-8 are stored (escaped),
// and well-signed deliveries of another integration sent at the same moment all get 2xx.
func TestNonUTF8RequestsDoNotFailOthers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, nil)
	good := e.integration("stripe_charge_v1", "whsec_good")
	bad := e.unsigned(e.org, 0)
	addr := e.srv.Listener.Addr().String()
	// Prime the cache so both kinds share batches from the first request on.
	resp := rawRequest(t, addr, "POST /v1/webhooks/"+bad.OpaqueID+" HTTP/1.1\r\nHost: x", []byte(`{"id":"prime"}`))
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("prime: %d", resp.StatusCode)
	}

	const n = 40
	var wg sync.WaitGroup
	var goodFailed, badStatus sync.Map
	for i := 0; i < n; i++ {
		wg.Add(2)
		go func(i int) {
			defer wg.Done()
			head := fmt.Sprintf("POST /v1/webhooks/%s/p\xffth?a=\xff\xfe&b=%d HTTP/1.1\r\nHost: x\r\nContent-Type: application/json; charset=\xff\r\nX-Note: caf\xe9 \xc3\x28", bad.OpaqueID, i)
			resp := rawRequest(t, addr, head, []byte(fmt.Sprintf(`{"id":"bad%d"}`, i)))
			badStatus.Store(i, resp.StatusCode)
		}(i)
		go func(i int) {
			defer wg.Done()
			body := stripeEvent(fmt.Sprintf("evt_good_%d", i))
			resp := post(t, e.url(good), body, stripeHeaders("whsec_good", body, time.Now()))
			readAll(t, resp)
			if resp.StatusCode != http.StatusAccepted {
				goodFailed.Store(i, resp.StatusCode)
			}
		}(i)
	}
	wg.Wait()
	goodFailed.Range(func(k, v any) bool {
		t.Errorf("good delivery %v answered %v", k, v)
		return true
	})
	badStatus.Range(func(k, v any) bool {
		if v.(int) != http.StatusAccepted {
			t.Errorf("non-UTF-8 delivery %v answered %v, want it stored (202)", k, v)
		}
		return true
	})
	if got := len(staged(t, e.pool, good.ID)); got != n {
		t.Errorf("%d good rows stored, want %d", got, n)
	}
	rows := staged(t, e.pool, bad.ID)
	if len(rows) != n+1 {
		t.Fatalf("%d non-UTF-8 rows stored, want %d", len(rows), n+1)
	}
	r := rows[len(rows)-1]
	if !strings.HasPrefix(r.Query, "a=%FF%FE&b=") || !strings.HasSuffix(r.Path, "/p%FFth") {
		t.Errorf("stored path %q query %q", r.Path, r.Query)
	}
	if r.Headers["X-Note"] != "caf\uFFFD \uFFFD(" || !strings.HasPrefix(r.Headers["Content-Type"], "application/json; charset=") {
		t.Errorf("stored headers %q", r.Headers)
	}
}

// Secret headers are never stored, even when the integration's verifier configuration cannot be built, and a
// rejected request's stored query and headers are capped.
func TestRejectedRowsStripSecretsAndCapHeaders(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, nil)
	in := e.integration("stripe_charge_v1", "whsec_broken")
	// A verifier configuration that no longer parses: the integration is "broken".
	if _, err := e.pool.Exec(context.Background(), `UPDATE service_integrations SET verifier = '{"scheme":"nope"}', updated_at = now() WHERE id = $1`, in.ID); err != nil {
		t.Fatal(err)
	}
	addr := e.srv.Listener.Addr().String()
	head := "POST /v1/webhooks/" + in.OpaqueID + "?q=" + strings.Repeat("x", 64<<10) + " HTTP/1.1\r\nHost: x\r\n" +
		"Whdb-Webhook-Secret: s3cret\r\nAuthorization: Bearer s3cret\r\nCookie: s=s3cret\r\nStripe-Signature: t=1,v1=s3cret\r\n" +
		"X-Hub-Signature-256: sha256=s3cret\r\nX-Custom-Signature: s3cret\r\nX-Big: " + strings.Repeat("y", 64<<10)
	eventuallyStatus(t, 2*time.Second, http.StatusServiceUnavailable, func() *http.Response {
		return rawRequest(t, addr, head, []byte(`{}`))
	})
	rows := staged(t, e.pool, in.ID)
	if len(rows) == 0 {
		t.Fatal("the rejected request was not stored")
	}
	r := rows[len(rows)-1]
	if r.Accepted {
		t.Fatalf("stored as accepted: %+v", r)
	}
	for k, v := range r.Headers {
		if strings.Contains(v, "s3cret") {
			t.Errorf("secret header %s stored: %q", k, v)
		}
	}
	if len(r.Query) > 8<<10 || len(r.Headers["X-Big"]) > 8<<10 {
		t.Errorf("stored query %d bytes, X-Big %d bytes: not capped", len(r.Query), len(r.Headers["X-Big"]))
	}
}

// gauge reads a metric of reg by name (summed over labels); -1 when absent.
func gauge(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var sum float64
		for _, m := range mf.GetMetric() {
			sum += m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
		return sum
	}
	return -1
}

func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stall opens a connection that announces a body of announced bytes, sends sent of them, and stops.
func stall(t testing.TB, addr, opaqueID string, announced, sent int) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	head := fmt.Sprintf("POST /v1/webhooks/%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", opaqueID, announced)
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = conn.Write(bytes.Repeat([]byte("a"), sent)) }()
	return conn
}

// A sender announcing 64 MiB that sends 1 MiB and stalls holds about 1 MiB, not 64, and is cut after the idle
// deadline. Not parallel: it measures the process's allocations.
func TestStalledSenderHoldsWhatItSent(t *testing.T) {
	reg := prometheus.NewRegistry()
	// Long enough that a loaded machine's pauses between reads never cut the sender before it is measured.
	e := newEnvReg(t, reg, func(c *ingest.Config) { c.IdleTimeout = 2 * time.Second })
	in := e.unsigned(e.org, 64<<20)
	addr := e.srv.Listener.Addr().String()
	// Warm the cache so the measurement sees the body alone.
	if resp := rawRequest(t, addr, "POST /v1/webhooks/"+in.OpaqueID+" HTTP/1.1\r\nHost: x", []byte(`{"id":"1"}`)); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("warm-up: %d", resp.StatusCode)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	conn := stall(t, addr, in.OpaqueID, 64<<20, 1<<20)
	deadline := time.Now().Add(10 * time.Second)
	for gauge(t, reg, "webhookdb_ingest_body_bytes_in_flight") < 1<<20 {
		if time.Now().After(deadline) {
			// Say what the server did instead.
			_ = conn.SetReadDeadline(time.Now().Add(time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err == nil {
				t.Fatalf("the server never read the first MiB: it answered %d %q", resp.StatusCode, resp.Header.Get(ingest.RejectedReasonHeader))
			}
			t.Fatalf("the server never read the first MiB (no answer: %v; %.0f bytes in flight)", err, gauge(t, reg, "webhookdb_ingest_body_bytes_in_flight"))
		}
		time.Sleep(5 * time.Millisecond)
	}
	runtime.ReadMemStats(&after)
	if held := gauge(t, reg, "webhookdb_ingest_body_bytes_in_flight"); held > 3<<20 {
		t.Errorf("%.0f body bytes reserved for a sender that sent 1 MiB", held)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
		t.Errorf("%d bytes allocated while a sender sent 1 MiB of an announced 64 MiB", alloc)
	}
	// Cut after the idle deadline: the server answers 408 (or closes) and releases the bytes.
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err == nil && resp.StatusCode != http.StatusRequestTimeout {
		t.Errorf("stalled sender answered %d, want 408", resp.StatusCode)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("stalled sender cut after %s, idle deadline 2s", d)
	}
	waitFor(t, 5*time.Second, "the stalled sender's bytes were never released", func() bool {
		return gauge(t, reg, "webhookdb_ingest_body_bytes_in_flight") == 0
	})
}

// Senders of one org over the org's budget get 503 with Retry-After, while another org's delivery at the same
// moment gets 202.
func TestBodyBudgetPerOrg(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	e := newEnvReg(t, reg, func(c *ingest.Config) {
		c.MemoryPerOrg = 2 << 20
		c.Memory = 64 << 20
		c.IdleTimeout = 30 * time.Second
	})
	greedy := e.unsigned(e.org, 8<<20)
	other := e.unsigned(createOrg(t, e.pool, "other"), 8<<20)
	addr := e.srv.Listener.Addr().String()
	for _, in := range []*integrations.Integration{greedy, other} {
		if resp := rawRequest(t, addr, "POST /v1/webhooks/"+in.OpaqueID+" HTTP/1.1\r\nHost: x", []byte(`{"id":"1"}`)); resp.StatusCode != http.StatusAccepted {
			t.Fatalf("warm-up: %d", resp.StatusCode)
		}
	}
	// Two stalled senders of the greedy org hold 1.5 MiB each: the second one already goes over.
	c1 := stall(t, addr, greedy.OpaqueID, 4<<20, 3<<19)
	waitFor(t, 10*time.Second, "first greedy sender not read", func() bool {
		return gauge(t, reg, "webhookdb_ingest_body_bytes_in_flight") >= 3<<19
	})
	c2 := stall(t, addr, greedy.OpaqueID, 4<<20, 3<<19)
	_ = c2.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c2), nil)
	if err != nil {
		t.Fatalf("second greedy sender: %v", err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || resp.Header.Get(ingest.RejectedReasonHeader) == "" {
		t.Errorf("greedy org over its budget: %d Retry-After=%q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	// The other org, meanwhile, is unaffected, even with a body larger than the greedy org's whole budget.
	big := []byte(`{"id":"big","pad":"` + strings.Repeat("z", 3<<20) + `"}`)
	if resp := rawRequest(t, addr, "POST /v1/webhooks/"+other.OpaqueID+" HTTP/1.1\r\nHost: x", big); resp.StatusCode != http.StatusAccepted {
		t.Errorf("another org's delivery answered %d while the greedy org is over budget", resp.StatusCode)
	}
	c1.Close()
	waitFor(t, 10*time.Second, "bytes never released", func() bool {
		return gauge(t, reg, "webhookdb_ingest_body_bytes_in_flight") == 0
	})
}

// A large body sent slowly but steadily is accepted, even past the server's whole-request read timeout: the
// deadline is an idle one, extended as bytes arrive.
func TestSlowSteadyBodyIsAccepted(t *testing.T) {
	t.Parallel()
	e := newEnvServer(t, prometheus.NewRegistry(), func(srv *http.Server) { srv.ReadTimeout = 2 * time.Second },
		// Each 100 ms gap is well inside the idle deadline even when a loaded machine delays the sender.
		func(c *ingest.Config) { c.IdleTimeout = 1500 * time.Millisecond })
	in := e.unsigned(e.org, 4<<20)
	if resp := rawRequest(t, e.srv.Listener.Addr().String(), "POST /v1/webhooks/"+in.OpaqueID+" HTTP/1.1\r\nHost: x", []byte(`{"id":"1"}`)); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("warm-up: %d", resp.StatusCode)
	}
	body := []byte(`{"id":"slow","pad":"` + strings.Repeat("s", 1<<20) + `"}`)
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/webhooks/%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", in.OpaqueID, len(body))
	// 40 chunks, one every 100 ms: 4 s in all (twice the server's ReadTimeout, which a loaded machine's slow
	// start of the handler must not reach), each gap well inside the idle deadline.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for rest := body; len(rest) > 0; {
		n := min(len(rest), len(body)/40+1)
		if _, err := conn.Write(rest[:n]); err != nil {
			_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			resp, rerr := http.ReadResponse(bufio.NewReader(conn), nil)
			if rerr == nil {
				t.Fatalf("sending: %v; the server had answered %d %q", err, resp.StatusCode, resp.Header.Get(ingest.RejectedReasonHeader))
			}
			t.Fatalf("sending: %v (no answer: %v)", err, rerr)
		}
		rest = rest[n:]
		<-tick.C
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("slow steady body answered %d %q", resp.StatusCode, resp.Header.Get(ingest.RejectedReasonHeader))
	}
}

// countingPool is a pool on url that counts the statements that read service_integrations.
func countingPool(t testing.TB, url string, n *atomic.Int64) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.Tracer = tracer{n}
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

type tracer struct{ n *atomic.Int64 }

func (tr tracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if strings.Contains(d.SQL, "opaque_id = $1") {
		tr.n.Add(1)
	}
	return ctx
}
func (tracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// Malformed ids are 404 without a query; unknown well-formed ids are looked up on the lookup pool, never the
// committer's, and a flood of them from one client gets 429 while another client's delivery gets 202.
func TestUnknownIDsAtTheDoor(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDBURL(t)
	var mainLookups, sideLookups atomic.Int64
	main := countingPool(t, url, &mainLookups)
	side := countingPool(t, url, &sideLookups)
	e := newEnvReg(t, nil, func(c *ingest.Config) {
		c.LookupPool = side
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
		c.UnknownRate, c.UnknownBurst = 1, 5
	}, main)
	for _, id := range []string{"nope", "svi_" + strings.Repeat("A", 32), "svi_short", "svi_" + strings.Repeat("a", 300), "svi_abc%27%20OR%201=1aaaaaaaaaaaaaaaaaaaaaaa"} {
		resp := post(t, e.srv.URL+"/v1/webhooks/"+id, []byte("{}"), nil)
		readAll(t, resp)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("malformed id %.40q: %d, want 404", id, resp.StatusCode)
		}
	}
	if n := mainLookups.Load() + sideLookups.Load(); n != 0 {
		t.Errorf("malformed ids made %d lookups", n)
	}

	in := e.unsigned(e.org, 0)
	flood := map[string]string{"X-Forwarded-For": "203.0.113.9"}
	var limited int
	for i := 0; i < 50 && limited == 0; i++ {
		resp := post(t, e.srv.URL+"/v1/webhooks/"+integrations.NewOpaqueID(), []byte("{}"), flood)
		readAll(t, resp)
		switch resp.StatusCode {
		case http.StatusNotFound:
		case http.StatusTooManyRequests:
			limited++
			if resp.Header.Get("Retry-After") == "" {
				t.Error("429 without Retry-After")
			}
		default:
			t.Fatalf("unknown id: %d", resp.StatusCode)
		}
	}
	if limited == 0 {
		t.Fatal("50 unknown ids from one client were never rate limited")
	}
	resp := post(t, e.url(in), []byte(`{"id":"ok"}`), map[string]string{"X-Forwarded-For": "198.51.100.7"})
	readAll(t, resp)
	if resp.StatusCode != http.StatusAccepted {
		t.Errorf("another client's delivery answered %d during the flood", resp.StatusCode)
	}
	if mainLookups.Load() != 0 {
		t.Errorf("%d integration lookups used the committer's pool", mainLookups.Load())
	}
	if sideLookups.Load() == 0 {
		t.Error("no lookup went to the lookup pool")
	}
}
