package main_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// notifications is a subscription receiver: every message is verified with the Standard Webhooks library
// (not webhookdb's code), and kept by remote key.
type notifications struct {
	mu    sync.Mutex
	wh    *standardwebhooks.Webhook
	byKey map[string]map[string]int // remote key -> message id -> copies received
	ops   map[string]string         // message id -> operation
	bad   int
}

func (n *notifications) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.wh == nil || n.wh.Verify(body, r.Header) != nil {
		n.bad++
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var p struct {
		Type string `json:"type"`
		Data struct {
			RemoteKey string `json:"remote_key"`
			Operation string `json:"operation"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		n.bad++
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if p.Type == "webhookdb.test" {
		w.WriteHeader(http.StatusOK)
		return
	}
	id := r.Header.Get("webhook-id")
	if n.byKey[p.Data.RemoteKey] == nil {
		n.byKey[p.Data.RemoteKey] = map[string]int{}
	}
	n.byKey[p.Data.RemoteKey][id]++
	n.ops[id] = p.Data.Operation
	w.WriteHeader(http.StatusOK)
}

// A load of signed webhooks while the fanout process is killed with SIGKILL again and again (and serve, which
// delivers, twice): every row written gets at least one notification, every copy of a notification carries
// the same message id (one id per row write), and all of them verify with the Standard Webhooks library.
func TestSubscriptionsSurviveKilledFanout(t *testing.T) {
	t.Parallel()
	tp := newTopology(t, "subs_kill_slot")
	// A killed serve's deliveries wait out their lease before another dispatcher sends them again.
	tp.env = append(tp.env, "WEBHOOKDB_OUTGOING_ALLOW_PRIVATE=true", "WEBHOOKDB_SUBSCRIPTION_LEASE=10s")
	rcv := &notifications{byKey: map[string]map[string]int{}, ops: map[string]string{}}
	srv := httptest.NewServer(rcv)
	t.Cleanup(srv.Close)

	serve := tp.start("serve", nil, "serve", "--no-fanout", "--log-level", "warn")
	waitHTTP(t, "http://"+tp.listen+"/healthz")
	orgDB, webhookURL := tp.setup()
	var created struct {
		Subscription struct {
			ID string `json:"id"`
		} `json:"subscription"`
		Secret string `json:"secret"`
	}
	if err := json.Unmarshal([]byte(tp.cli("subscriptions", "create", srv.URL+"/hooks", "-o", "json")), &created); err != nil {
		t.Fatal(err)
	}
	wh, err := standardwebhooks.NewWebhook(created.Secret)
	if err != nil {
		t.Fatal(err)
	}
	rcv.mu.Lock()
	rcv.wh = wh
	rcv.mu.Unlock()
	if out := tp.cli("subscriptions", "test", created.Subscription.ID); !strings.Contains(out, "true") {
		t.Fatalf("subscriptions test:\n%s", out)
	}

	// Load: distinct charges from a dozen senders, each sent until it gets its 202.
	const total = 800
	var next, sent atomic.Int64
	loadDone := make(chan struct{})
	var wg sync.WaitGroup
	for range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > total {
					return
				}
				for !tp.sendStripe(webhookURL, fmt.Sprintf("ch_kill_%04d", i)) {
					time.Sleep(20 * time.Millisecond)
				}
				sent.Add(1)
			}
		}()
	}
	go func() { wg.Wait(); close(loadDone) }()

	// The fanout, killed with SIGKILL at a few points of the load and started again each time.
	kills := 0
	for kills < 4 {
		fan := tp.start(fmt.Sprintf("fanout-%d", kills), nil, "fanout", "--log-level", "warn")
		target := int64(total * (kills + 1) / 5)
		waitFor(t, time.Minute, "deliveries to reach the fanout", func() (bool, error) { return sent.Load() >= target, nil })
		time.Sleep(150 * time.Millisecond) // let it be mid-apply
		var inOutbox int
		_ = orgDB.QueryRow(context.Background(), `SELECT count(*) FROM webhookdb_meta.notify_outbox`).Scan(&inOutbox)
		t.Logf("kill %d: %d of %d sent, %d notifications in the outbox", kills+1, sent.Load(), total, inOutbox)
		_ = fan.cmd.Process.Signal(syscall.SIGKILL)
		_, _ = fan.cmd.Process.Wait()
		if kills%2 == 1 {
			// serve too (ingest, and the deliveries mid-send): senders retry until ingest takes them again,
			// and deliveries in flight are sent again, under their message ids
			_ = serve.cmd.Process.Signal(syscall.SIGKILL)
			_, _ = serve.cmd.Process.Wait()
			serve = tp.start(fmt.Sprintf("serve-%d", kills), nil, "serve", "--no-fanout", "--log-level", "warn")
			waitHTTP(t, "http://"+tp.listen+"/healthz")
		}
		kills++
	}
	<-loadDone
	tp.start("fanout-final", nil, "fanout", "--log-level", "warn")

	waitFor(t, 3*time.Minute, "a notification for every row", func() (bool, error) {
		rcv.mu.Lock()
		defer rcv.mu.Unlock()
		return len(rcv.byKey) >= total, nil
	})
	// The delivery log shows them all delivered, once the lease of what a killed serve held has run out and
	// another dispatcher has sent it again (under its message id).
	waitFor(t, 2*time.Minute, "no delivery left pending", func() (bool, error) {
		var log struct {
			Deliveries []struct {
				Status string `json:"status"`
			} `json:"deliveries"`
		}
		if err := json.Unmarshal([]byte(tp.cli("subscriptions", "deliveries", created.Subscription.ID, "--status", "pending", "-o", "json")), &log); err != nil {
			return false, err
		}
		return len(log.Deliveries) == 0, nil
	})
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	if rcv.bad != 0 {
		t.Fatalf("%d messages did not verify", rcv.bad)
	}
	dups := 0
	for i := 1; i <= total; i++ {
		key := fmt.Sprintf("ch_kill_%04d", i)
		ids := rcv.byKey[key]
		if len(ids) != 1 {
			t.Errorf("%s: %d message ids (%v), want one: a row write notified under two ids", key, len(ids), ids)
		}
		for id, copies := range ids {
			if rcv.ops[id] != "insert" {
				t.Errorf("%s: operation %q", key, rcv.ops[id])
			}
			dups += copies - 1
		}
	}
	t.Logf("%d rows, %d fanout kills (2 of serve), %d duplicate copies (same message id)", total, kills, dups)
}

// sendStripe sends a signed Stripe charge event; false when ingest did not take it (it is sent again).
func (tp *topology) sendStripe(webhookURL, chargeID string) bool {
	body := fmt.Sprintf(`{"id":"evt_%s","object":"event","type":"charge.succeeded","created":1700000000,"data":{"object":{"id":%q,"object":"charge","amount":100,"currency":"usd","status":"succeeded","created":1700000000}}}`,
		chargeID, chargeID)
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	mac := hmac.New(sha256.New, []byte("whsec_topology"))
	mac.Write([]byte(ts + "." + body))
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, webhookURL, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Stripe-Signature", "t="+ts+",v1="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusAccepted
}
