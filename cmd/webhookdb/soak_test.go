package main_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// soakOrg is one org of the soak with a json_v1 integration behind a shared-secret header.
type soakOrg struct {
	key, url string
	db       *pgx.Conn
}

const soakSecret = "soak-secret-header-value"

// One server, four orgs. Three send good traffic; the fourth sends what has hurt shared ingest before: bytes
// that are not UTF-8 in the query and Content-Type, 32 senders that announce 64 MiB, send 40 MiB and stall,
// and a delivery whose key is too long to index; then ordinary deliveries. The three orgs never see a 5xx and
// every good delivery becomes a row, the fourth org's later deliveries too, and the server stays under 512 MiB.
// Bounded: a fixed number of requests, loopback only, and a deadline of a few minutes.
func TestSoakOneTenantsBadInputCostsOthersNothing(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	tp := newTopology(t, "soak_slot")
	serve := tp.start("serve", nil, "serve", "--log-level", "error")
	waitHTTP(t, "http://"+tp.listen+"/healthz")

	token := strings.TrimSpace(tp.cli("admin", "create-user", "--email", "ops@soak.example", "--server-admin"))
	tp.cli("auth", "login", "--url", "http://"+tp.listen, "--token", token)
	tp.cli("servers", "add", "local", "--admin-url", tp.cluster.URL("postgres"), "--public-host", "127.0.0.1", "--public-port", fmt.Sprint(tp.cluster.Port), "--sslmode", "disable")
	orgs := make([]*soakOrg, 4)
	for i := range orgs {
		key := fmt.Sprintf("soak%d", i)
		tp.cli("org", "create", key)
		args := []string{"integrations", "create", "json_v1", "--org", key, "--config", `{"remote_key_path":"id"}`,
			"--verifier", `{"scheme":"secret_header"}`, "--secret", soakSecret, "-o", "json"}
		if i == 3 {
			args = append(args, "--body-limit", strconv.Itoa(64<<20)) // an allowed per-integration limit
		}
		var created struct {
			Integration struct {
				WebhookURL string `json:"webhook_url"`
			} `json:"integration"`
		}
		if err := json.Unmarshal([]byte(tp.cli(args...)), &created); err != nil {
			t.Fatal(err)
		}
		orgs[i] = &soakOrg{key: key, url: created.Integration.WebhookURL, db: connect(t, tp.cluster.URL(orgDatabase(t, tp, key)))}
	}

	// RSS of the server, sampled throughout.
	var peakRSS atomic.Int64
	sampleDone := make(chan struct{})
	go func() {
		defer close(sampleDone)
		for ctx.Err() == nil {
			if rss := processRSS(serve.cmd.Process.Pid); rss > peakRSS.Load() {
				peakRSS.Store(rss)
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()

	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	post := func(url, contentType, body string) (int, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		req.Header.Set("Whdb-Webhook-Secret", soakSecret)
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}

	var bad sync.WaitGroup
	var stalledAnswers sync.Map
	// 32 stalled senders.
	for i := range 32 {
		bad.Add(1)
		go func() {
			defer bad.Done()
			stalledAnswers.Store(i, stalledSender(ctx, orgs[3].url, 64<<20, 40<<20))
		}()
	}
	// Bytes that are not UTF-8, in the query and the Content-Type.
	var poisonStatuses sync.Map
	for i := range 30 {
		bad.Add(1)
		go func() {
			defer bad.Done()
			s, err := post(orgs[3].url+"?q=%ff%fe"+"\xff", "application/json; charset=\xff\xfe", fmt.Sprintf(`{"id":"poison%d"}`, i))
			if err != nil {
				s = -1
			}
			poisonStatuses.Store(i, s)
		}()
	}
	// A key too long to index: random bytes do not compress.
	raw := make([]byte, 2400)
	_, _ = rand.Read(raw)
	// Sent as a sender would: while org 4's stalled senders hold its budget it is told to retry, and does.
	var unindexable int
	bad.Add(1)
	go func() {
		defer bad.Done()
		for attempt := 0; attempt < 300 && ctx.Err() == nil; attempt++ {
			s, err := post(orgs[3].url, "application/json", fmt.Sprintf(`{"id":%q}`, base64.StdEncoding.EncodeToString(raw)))
			if err != nil {
				s = -1
			}
			unindexable = s
			if s != http.StatusServiceUnavailable {
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond): // a sender's retry delay, not a wait for a condition
			}
		}
	}()

	// Good traffic of three orgs meanwhile: 3 x 400 deliveries from 12 workers, paced at 100 a second so that
	// it spans the stalled senders' whole life (the idle deadline is 10 s).
	const perOrg = 400
	type result struct {
		org, status int
		err         error
	}
	results := make(chan result, 3*perOrg)
	jobs := make(chan [2]int)
	var good sync.WaitGroup
	start := time.Now()
	for range 12 {
		good.Add(1)
		go func() {
			defer good.Done()
			for j := range jobs {
				s, err := post(orgs[j[0]].url, "application/json", fmt.Sprintf(`{"id":"k%d","n":%d}`, j[1], j[1]))
				results <- result{j[0], s, err}
			}
		}()
	}
	pace := time.NewTicker(10 * time.Millisecond)
	for n := range perOrg {
		for o := range 3 {
			<-pace.C
			jobs <- [2]int{o, n}
		}
	}
	pace.Stop()
	close(jobs)
	good.Wait()
	close(results)
	goodTook := time.Since(start)
	bad.Wait()
	if unindexable != http.StatusAccepted {
		t.Fatalf("the unindexable key's delivery answered %d", unindexable)
	}
	var fiveXX, errs int
	for r := range results {
		if r.err != nil {
			errs++
			t.Errorf("org %d: %v", r.org, r.err)
		} else if r.status >= 500 {
			fiveXX++
		}
	}
	if fiveXX > 0 || errs > 0 {
		t.Fatalf("good traffic of the three orgs: %d 5xx answers and %d errors", fiveXX, errs)
	}
	// The fourth org's later, ordinary deliveries.
	for n := range 20 {
		if s, err := post(orgs[3].url, "application/json", fmt.Sprintf(`{"id":"later%d"}`, n)); err != nil || s != http.StatusAccepted {
			t.Fatalf("org 4's later delivery %d: %d %v", n, s, err)
		}
	}
	applyStart := time.Now()
	for i, o := range orgs {
		want := perOrg
		if i == 3 {
			want = 20
		}
		waitFor(t, 2*time.Minute, "the rows of "+o.key, func() (bool, error) {
			var n int
			q := `SELECT count(*) FROM json_v1 WHERE remote_key LIKE 'k%'`
			if i == 3 {
				q = `SELECT count(*) FROM json_v1 WHERE remote_key LIKE 'later%'`
			}
			err := o.db.QueryRow(ctx, q).Scan(&n)
			return n == want, err
		})
	}
	applyTook := time.Since(applyStart)
	// What org 4 sent that could be stored is there: the requests with bytes that are not UTF-8 (escaped; those
	// that came while its stalled senders held its whole budget were told to retry), and the unindexable key as
	// a failed change it can see, holding nothing back.
	accepted := 0
	poisonStatuses.Range(func(_, v any) bool {
		switch v.(int) {
		case http.StatusAccepted:
			accepted++
		case http.StatusServiceUnavailable:
		default:
			t.Errorf("a non-UTF-8 request answered %d: want 202, or 503 while org 4 is over its budget", v.(int))
		}
		return true
	})
	var poisonRows int
	if err := orgs[3].db.QueryRow(ctx, `SELECT count(*) FROM json_v1 WHERE remote_key LIKE 'poison%'`).Scan(&poisonRows); err != nil || poisonRows != accepted || accepted == 0 {
		t.Fatalf("org 4's non-UTF-8 deliveries applied: %d (%v), want the %d accepted", poisonRows, err, accepted)
	}
	var failed []struct {
		Kind  string `json:"kind"`
		Error string `json:"error"`
	}
	var list struct {
		Errors json.RawMessage `json:"errors"`
	}
	if err := json.Unmarshal([]byte(tp.cli("errors", "list", "--org", orgs[3].key, "-o", "json")), &list); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(list.Errors, &failed); err != nil || len(failed) != 1 || failed[0].Kind != "failed" || !strings.Contains(failed[0].Error, "remote key is") {
		t.Fatalf("org 4's errors: %+v (%v), want the unindexable key as one failed change", failed, err)
	}
	cancel()
	<-sampleDone

	counts := map[int]int{}
	poisonStatuses.Range(func(_, v any) bool { counts[v.(int)]++; return true })
	stalled := map[string]int{}
	stalledAnswers.Range(func(_, v any) bool { stalled[v.(string)]++; return true })
	t.Logf("good: %d deliveries of 3 orgs in %s, none 5xx; all applied %s after the last one", 3*perOrg, goodTook.Round(time.Millisecond), applyTook.Round(time.Millisecond))
	t.Logf("org 4: non-UTF-8 requests answered %v; stalled senders %v; unindexable key answered %d; 20 later deliveries applied", counts, stalled, unindexable)
	t.Logf("server peak RSS %d MiB", peakRSS.Load()>>20)
	if peakRSS.Load() == 0 {
		t.Fatal("the server's RSS was never read")
	}
	if peakRSS.Load() >= 512<<20 {
		t.Fatalf("server peak RSS %d MiB, want under 512 MiB", peakRSS.Load()>>20)
	}
}

// stalledSender announces a body of announce bytes, sends send bytes and stops sending; it returns what the
// server did: its answer's status line, or how the connection ended.
func stalledSender(ctx context.Context, url string, announce, send int) string {
	u := strings.TrimPrefix(url, "http://")
	host, path, _ := strings.Cut(u, "/")
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", host)
	if err != nil {
		return "dial error"
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	fmt.Fprintf(conn, "POST /%s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nWhdb-Webhook-Secret: %s\r\nContent-Length: %d\r\n\r\n",
		path, host, soakSecret, announce)
	chunk := make([]byte, 64<<10)
	for i := range chunk {
		chunk[i] = ' '
	}
	for sent := 0; sent < send; sent += len(chunk) {
		if _, err := conn.Write(chunk); err != nil {
			break // the server stopped reading: it answered or cut us
		}
	}
	// Stalled: wait for the server's verdict.
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Minute))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		if strings.Contains(err.Error(), "reset") || err == io.EOF {
			return "connection closed"
		}
		return "no answer: " + err.Error()
	}
	return strings.TrimSpace(line)
}

// processRSS is a process's resident set size in bytes (0 when unreadable).
func processRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
