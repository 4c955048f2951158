package subscriptions_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/webhookdb-go/webhookdb/fanout"
	"github.com/webhookdb-go/webhookdb/internal/alerts"
	"github.com/webhookdb-go/webhookdb/internal/outgoing"
	"github.com/webhookdb-go/webhookdb/internal/pgtest"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
	"github.com/webhookdb-go/webhookdb/internal/subscriptions"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// clock is the schedule's injectable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	if t.After(c.t) {
		c.t = t
	}
	c.mu.Unlock()
}

type env struct {
	t     *testing.T
	pool  *pgxpool.Pool
	box   secrets.Box
	clock *clock
	orgID int64
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, pool: pgtest.NewDB(t), clock: &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}}
	k, err := secrets.ParseKeyring(secrets.NewKeyEntry(1))
	if err != nil {
		t.Fatal(err)
	}
	e.box = k
	if err := e.pool.QueryRow(context.Background(), `INSERT INTO organizations (key, name, provision_state) VALUES ('acme', 'Acme', 'ready') RETURNING id`).Scan(&e.orgID); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) service(mod func(*subscriptions.Config)) *subscriptions.Service {
	e.t.Helper()
	cfg := subscriptions.Config{Pool: e.pool, Box: e.box, Now: e.clock.Now, Logger: quiet(), PollInterval: 10 * time.Millisecond,
		Client: outgoing.NewClient(outgoing.Config{AllowPrivate: true})}
	if mod != nil {
		mod(&cfg)
	}
	s, err := subscriptions.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

func run(t *testing.T, runs ...func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, r := range runs {
		wg.Add(1)
		go func() { defer wg.Done(); _ = r(ctx) }()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// note is a notification as the fanout's relay hands it over.
func note(id, key string) fanout.Notification {
	return fanout.Notification{MessageID: id, IntegrationID: 1, Table: "t", Service: "json_v1", Operation: "insert",
		RemoteKey: key, Source: "webhook", Row: []byte(`{"id":"` + key + `"}`), At: time.Now()}
}

// attempt is one request a receiver got.
type attempt struct {
	msgID string
	ts    int64
	ok    bool
}

// flaky answers 500 to the first fail requests of each message, then 204; it verifies signatures with the
// Standard Webhooks library (ignoring the timestamp: the schedule runs on a test clock).
type flaky struct {
	t    *testing.T
	srv  *httptest.Server
	fail int // <0: always
	wh   *standardwebhooks.Webhook

	mu       sync.Mutex
	attempts []attempt
	perMsg   map[string]int
}

func newFlaky(t *testing.T, fail int) *flaky {
	f := &flaky{t: t, fail: fail, perMsg: map[string]int{}}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		defer f.mu.Unlock()
		if err := f.wh.VerifyIgnoringTimestamp(body, r.Header); err != nil {
			t.Errorf("a message did not verify: %v", err)
		}
		id := r.Header.Get("webhook-id")
		ts, _ := strconv.ParseInt(r.Header.Get("webhook-timestamp"), 10, 64)
		f.perMsg[id]++
		ok := f.fail >= 0 && f.perMsg[id] > f.fail
		f.attempts = append(f.attempts, attempt{id, ts, ok})
		if !ok {
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte("down for maintenance"))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *flaky) got() []attempt {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]attempt(nil), f.attempts...)
}

func (e *env) subscribe(s *subscriptions.Service, f *flaky) *subscriptions.Subscription {
	e.t.Helper()
	sub, secret, err := s.Create(context.Background(), e.orgID, subscriptions.CreateParams{URL: f.srv.URL})
	if err != nil {
		e.t.Fatal(err)
	}
	if f.wh, err = standardwebhooks.NewWebhook(secret); err != nil {
		e.t.Fatal(err)
	}
	return sub
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// delivery returns the log entry of a message.
func (e *env) delivery(s *subscriptions.Service, sub, msgID string) subscriptions.Delivery {
	e.t.Helper()
	log, err := s.Deliveries(context.Background(), e.orgID, sub, subscriptions.ListParams{})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, d := range log {
		if d.MessageID == msgID {
			return d
		}
	}
	e.t.Fatalf("no delivery of %s", msgID)
	return subscriptions.Delivery{}
}

// A receiver failing 3 times then succeeding gets the message on the schedule (at once, 5 s, 5 min, 30 min
// later, each with up to 10% jitter), always with the same message id, and the log says what happened.
func TestRetriesOnTheSchedule(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.service(nil)
	f := newFlaky(t, 3)
	sub := e.subscribe(s, f)
	if err := s.Record(context.Background(), e.orgID, []fanout.Notification{note("msg_a", "k1")}); err != nil {
		t.Fatal(err)
	}
	// relayed twice (a crash between the relay's commit and its outbox delete): stored once
	if err := s.Record(context.Background(), e.orgID, []fanout.Notification{note("msg_a", "k1")}); err != nil {
		t.Fatal(err)
	}
	run(t, s.Run)
	for i := 1; i <= 3; i++ {
		eventually(t, fmt.Sprintf("attempt %d", i), func() bool { return len(f.got()) == i && e.delivery(s, sub.ID, "msg_a").Attempts == i })
		d := e.delivery(s, sub.ID, "msg_a")
		if d.Status != "pending" || d.NextAttemptAt == nil || d.ResponseStatus == nil || *d.ResponseStatus != 500 ||
			d.ResponseBody == nil || *d.ResponseBody != "down for maintenance" {
			t.Fatalf("after attempt %d: %+v", i, d)
		}
		e.clock.Set(*d.NextAttemptAt)
	}
	eventually(t, "delivery", func() bool { return e.delivery(s, sub.ID, "msg_a").Status == "delivered" })
	got := f.got()
	if len(got) != 4 || !got[3].ok {
		t.Fatalf("attempts %+v", got)
	}
	for i, wantDelay := range []time.Duration{5 * time.Second, 5 * time.Minute, 30 * time.Minute} {
		delay := time.Duration(got[i+1].ts-got[i].ts) * time.Second
		if got[i+1].msgID != "msg_a" || delay < wantDelay-time.Second || delay > wantDelay+wantDelay/10+time.Second {
			t.Errorf("attempt %d came %s after the previous one, want %s (+10%%)", i+2, delay, wantDelay)
		}
	}
	if d := e.delivery(s, sub.ID, "msg_a"); d.Attempts != 4 || d.DeliveredAt == nil || d.NextAttemptAt != nil {
		t.Errorf("delivered: %+v", d)
	}
}

// Deliveries of one remote key go in order: a later one waits while an earlier one is retried, while
// other keys go on. Past the pending cap, new notifications are recorded as failed, and recover resends them.
func TestInOrderPerKeyAndThePendingCap(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.service(func(c *subscriptions.Config) { c.PendingCap = 3 })
	f := newFlaky(t, 1)
	sub := e.subscribe(s, f)
	if err := s.Record(context.Background(), e.orgID, []fanout.Notification{note("msg_1", "k"), note("msg_2", "k"), note("msg_3", "other"), note("msg_4", "k")}); err != nil {
		t.Fatal(err)
	}
	if d := e.delivery(s, sub.ID, "msg_4"); d.Status != "failed" || d.LastError == nil || !strings.Contains(*d.LastError, "pending") {
		t.Fatalf("past the cap: %+v", d)
	}
	run(t, s.Run)
	eventually(t, "first attempts", func() bool {
		return e.delivery(s, sub.ID, "msg_1").Attempts == 1 && e.delivery(s, sub.ID, "msg_3").Attempts == 1
	})
	if d := e.delivery(s, sub.ID, "msg_2"); d.Attempts != 0 {
		t.Fatalf("msg_2 was sent while msg_1 of the same key was pending: %+v", d)
	}
	e.clock.Set(*e.delivery(s, sub.ID, "msg_1").NextAttemptAt)
	e.clock.Set(*e.delivery(s, sub.ID, "msg_3").NextAttemptAt)
	eventually(t, "msg_1 and msg_3 delivered", func() bool {
		return e.delivery(s, sub.ID, "msg_1").Status == "delivered" && e.delivery(s, sub.ID, "msg_3").Status == "delivered"
	})
	eventually(t, "msg_2's first attempt", func() bool { return e.delivery(s, sub.ID, "msg_2").Attempts == 1 })
	e.clock.Set(*e.delivery(s, sub.ID, "msg_2").NextAttemptAt)
	eventually(t, "msg_2 delivered", func() bool { return e.delivery(s, sub.ID, "msg_2").Status == "delivered" })
	var order []string
	for _, a := range f.got() {
		if a.ok && a.msgID != "msg_3" {
			order = append(order, a.msgID)
		}
	}
	if strings.Join(order, ",") != "msg_1,msg_2" {
		t.Fatalf("key k delivered in the order %v", order)
	}
	n, err := s.Recover(context.Background(), e.orgID, sub.ID, time.Time{}, false)
	if err != nil || n != 1 {
		t.Fatalf("recover: %d, %v", n, err)
	}
	eventually(t, "msg_4 recovered", func() bool { return e.delivery(s, sub.ID, "msg_4").Attempts == 1 })
	e.clock.Set(*e.delivery(s, sub.ID, "msg_4").NextAttemptAt)
	eventually(t, "msg_4 delivered", func() bool { return e.delivery(s, sub.ID, "msg_4").Status == "delivered" })
	// redeliver sends a delivered message again, with the same id
	before := len(f.got())
	d, err := s.Redeliver(context.Background(), e.orgID, e.delivery(s, sub.ID, "msg_3").ID)
	if err != nil || d.Status != "pending" {
		t.Fatalf("redeliver: %+v %v", d, err)
	}
	eventually(t, "msg_3 redelivered", func() bool { g := f.got(); return len(g) > before && g[len(g)-1].msgID == "msg_3" })
}

// smtpSink is a local SMTP server that keeps the messages it receives.
type smtpSink struct {
	ln   net.Listener
	mu   sync.Mutex
	msgs []string
}

func newSMTPSink(t *testing.T) *smtpSink {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &smtpSink{ln: ln}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s
}

func (s *smtpSink) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	say := func(line string) { _, _ = c.Write([]byte(line + "\r\n")) }
	say("220 sink ESMTP")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		switch {
		case strings.HasPrefix(cmd, "EHLO"), strings.HasPrefix(cmd, "HELO"):
			say("250 sink")
		case strings.HasPrefix(cmd, "DATA"):
			say("354 go ahead")
			var msg strings.Builder
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				msg.WriteString(l)
			}
			s.mu.Lock()
			s.msgs = append(s.msgs, msg.String())
			s.mu.Unlock()
			say("250 queued")
		case strings.HasPrefix(cmd, "QUIT"):
			say("221 bye")
			return
		default:
			say("250 ok")
		}
	}
}

func (s *smtpSink) got() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.msgs...)
}

// An endpoint that always fails is disabled once every delivery has failed for DisableAfter, its pending
// deliveries fail, new notifications are recorded as failed, and the org's handlers (a signed URL and an
// email) are alerted once.
func TestAnAlwaysFailingEndpointIsDisabledAndAlertedOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	client := outgoing.NewClient(outgoing.Config{AllowPrivate: true})
	sink := newSMTPSink(t)
	al, err := alerts.New(alerts.Config{Pool: e.pool, Box: e.box, Client: client, Now: e.clock.Now, Logger: quiet(),
		SMTP: alerts.SMTPConfig{Addr: sink.ln.Addr().String(), From: "alerts@webhookdb.test"}})
	if err != nil {
		t.Fatal(err)
	}
	s := e.service(func(c *subscriptions.Config) { c.DisableAfter = 6 * time.Hour; c.Alerts = al })
	f := newFlaky(t, -1)
	sub := e.subscribe(s, f)

	var mu sync.Mutex
	var alertBodies []string
	var alertWH *standardwebhooks.Webhook
	alertRcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if err := alertWH.VerifyIgnoringTimestamp(body, r.Header); err != nil {
			t.Errorf("an alert did not verify: %v", err)
		}
		alertBodies = append(alertBodies, string(body))
	}))
	t.Cleanup(alertRcv.Close)
	h, alertSecret, err := al.AddHandler(context.Background(), e.orgID, alertRcv.URL+"/alerts")
	if err != nil || h.Kind != "url" {
		t.Fatalf("add URL handler: %+v %v", h, err)
	}
	mu.Lock()
	alertWH, err = standardwebhooks.NewWebhook(alertSecret)
	mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := al.AddHandler(context.Background(), e.orgID, "ops@acme.test"); err != nil {
		t.Fatal(err)
	}

	run(t, s.Run) // running first: the notifications are handed over in memory, then retried through claims
	if err := s.Record(context.Background(), e.orgID, []fanout.Notification{note("msg_x", "x"), note("msg_y", "y")}); err != nil {
		t.Fatal(err)
	}
	// 0, 5 s, 5 min, 30 min, 2 h, 5 h: the sixth attempt comes 7h35m after the first, past 6 h
	for i := 1; i <= 6; i++ {
		eventually(t, fmt.Sprintf("attempt %d", i), func() bool {
			return e.delivery(s, sub.ID, "msg_x").Attempts == i && e.delivery(s, sub.ID, "msg_y").Attempts == i
		})
		if i < 6 {
			x, y := e.delivery(s, sub.ID, "msg_x"), e.delivery(s, sub.ID, "msg_y")
			at := *x.NextAttemptAt
			if y.NextAttemptAt.After(at) {
				at = *y.NextAttemptAt
			}
			e.clock.Set(at)
		}
	}
	eventually(t, "disabled", func() bool {
		got, err := s.Get(context.Background(), e.orgID, sub.ID)
		return err == nil && got.DisabledAt != nil
	})
	for _, id := range []string{"msg_x", "msg_y"} {
		if d := e.delivery(s, sub.ID, id); d.Status != "failed" {
			t.Errorf("%s after disabling: %+v", id, d)
		}
	}
	if err := s.Record(context.Background(), e.orgID, []fanout.Notification{note("msg_z", "z")}); err != nil {
		t.Fatal(err)
	}
	if d := e.delivery(s, sub.ID, "msg_z"); d.Status != "failed" || d.Attempts != 0 {
		t.Errorf("a notification for a disabled endpoint: %+v", d)
	}
	for range 3 {
		if err := al.Pass(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	bodies := append([]string(nil), alertBodies...)
	mu.Unlock()
	if len(bodies) != 1 || !strings.Contains(bodies[0], "alert.subscription_disabled") || !strings.Contains(bodies[0], sub.ID) {
		t.Fatalf("alerts at the URL: %q", bodies)
	}
	if mails := sink.got(); len(mails) != 1 || !strings.Contains(mails[0], sub.ID) || !strings.Contains(mails[0], "To: ops@acme.test") {
		t.Fatalf("alert emails: %q", mails)
	}
	list, err := al.List(context.Background(), e.orgID, 10)
	if err != nil || len(list) != 1 || list[0].State != "sent" {
		t.Fatalf("alert log: %+v %v", list, err)
	}
	// recovering enables the endpoint again and resends what failed
	n, err := s.Recover(context.Background(), e.orgID, sub.ID, time.Time{}, false)
	if err != nil || n != 3 {
		t.Fatalf("recover: %d %v", n, err)
	}
	if got, _ := s.Get(context.Background(), e.orgID, sub.ID); got.DisabledAt != nil || got.Pending != 3 {
		t.Fatalf("after recover: %+v", got)
	}
}

// A subscription gets the rows of its integration only (or of every table), and rows of sources it opted in
// to; a deleted subscription gets nothing more.
func TestRecordMatchesIntegrationAndSources(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.service(nil)
	ctx := context.Background()
	var integ int64
	var opaque string
	if err := e.pool.QueryRow(ctx, `INSERT INTO service_integrations (opaque_id, org_id, service, table_name)
		VALUES ('svi_aaaaaaaaaaaaaaaaaaaaaaaaaaaa', $1, 'json_v1', 'json_v1') RETURNING id, opaque_id`, e.orgID).Scan(&integ, &opaque); err != nil {
		t.Fatal(err)
	}
	all, _, err := s.Create(ctx, e.orgID, subscriptions.CreateParams{URL: "http://127.0.0.1:1/all"})
	if err != nil {
		t.Fatal(err)
	}
	one, _, err := s.Create(ctx, e.orgID, subscriptions.CreateParams{URL: "http://127.0.0.1:1/one", Integration: opaque, Sources: []string{"webhook", "backfill"}})
	if err != nil {
		t.Fatal(err)
	}
	mine, other, backfill := note("msg_mine", "a"), note("msg_other", "b"), note("msg_backfill", "c")
	mine.IntegrationID, backfill.IntegrationID, backfill.Source = integ, integ, "backfill"
	other.IntegrationID = integ + 1000
	if err := s.Record(ctx, e.orgID, []fanout.Notification{mine, other, backfill}); err != nil {
		t.Fatal(err)
	}
	ids := func(sub string) []string {
		log, err := s.Deliveries(ctx, e.orgID, sub, subscriptions.ListParams{})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, d := range log {
			out = append(out, d.MessageID)
		}
		slices.Sort(out)
		return out
	}
	if got := ids(all.ID); !slices.Equal(got, []string{"msg_mine", "msg_other"}) {
		t.Errorf("every table, webhook rows: %v", got)
	}
	if got := ids(one.ID); !slices.Equal(got, []string{"msg_backfill", "msg_mine"}) {
		t.Errorf("one integration, webhook and backfill rows: %v", got)
	}
	if err := s.Delete(ctx, e.orgID, one.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Deliveries(ctx, e.orgID, one.ID, subscriptions.ListParams{}); !errors.Is(err, subscriptions.ErrNotFound) {
		t.Fatalf("deliveries of a deleted subscription: %v", err)
	}
}

// Key rotation rewraps signing secrets (internal/secrets declares the columns): after it, the subscription
// still signs with the secret shown at creation.
func TestSecretsSurviveKeyRotation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	v1 := secrets.NewKeyEntry(1)
	old, err := secrets.ParseKeyring(v1)
	if err != nil {
		t.Fatal(err)
	}
	e.box = old
	f := newFlaky(t, 0)
	sub := e.subscribe(e.service(nil), f)
	both, err := secrets.ParseKeyring(v1 + "," + secrets.NewKeyEntry(2))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := secrets.Rotate(ctx, e.pool, both, secrets.RotateOptions{}); err != nil {
		t.Fatal(err)
	}
	var enc string
	if err := e.pool.QueryRow(ctx, `SELECT secret_enc FROM subscriptions`).Scan(&enc); err != nil {
		t.Fatal(err)
	}
	if v, err := both.KeyVersion(enc); err != nil || v != 2 {
		t.Fatalf("secret under key version %d (%v), want 2", v, err)
	}
	e.box, err = secrets.ParseKeyring(secrets.NewKeyEntry(3)) // a keyring without the old versions cannot sign
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.service(nil).Test(ctx, e.orgID, sub.ID); err == nil {
		t.Fatal("signed without the key")
	}
	e.box = both
	res, err := e.service(nil).Test(ctx, e.orgID, sub.ID)
	if err != nil || !res.OK {
		t.Fatalf("test after rotation: %+v %v", res, err)
	}
}

// The webhookdb_subscription_* metrics count what really happened. Here the dispatcher runs before the
// notifications are recorded, so they are handed over in memory: the second delivery of a key waits behind
// the first, and goes back to the claims when the first is retried, which then send it after the first.
func TestMetricsCountRealDeliveries(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	s := e.service(func(c *subscriptions.Config) { c.Registerer = reg; c.PendingCap = 2 })
	f := newFlaky(t, 1)
	sub := e.subscribe(s, f)
	run(t, s.Run)
	if err := s.Record(context.Background(), e.orgID, []fanout.Notification{note("msg_a", "k1"), note("msg_b", "k1"), note("msg_c", "k2")}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"msg_a", "msg_b"} {
		eventually(t, id+" failing once", func() bool { return e.delivery(s, sub.ID, id).Attempts == 1 })
		e.clock.Set(*e.delivery(s, sub.ID, id).NextAttemptAt)
		eventually(t, id+" delivered", func() bool { return e.delivery(s, sub.ID, id).Status == "delivered" })
	}
	var order []string
	for _, a := range f.got() {
		order = append(order, fmt.Sprintf("%s:%v", a.msgID, a.ok))
	}
	if want := []string{"msg_a:false", "msg_a:true", "msg_b:false", "msg_b:true"}; !slices.Equal(order, want) {
		t.Fatalf("attempts %v, want %v", order, want)
	}
	want := map[string]float64{
		`webhookdb_subscription_deliveries_recorded_total{status="pending"}`: 2,
		`webhookdb_subscription_deliveries_recorded_total{status="failed"}`:  1, // over the pending cap
		`webhookdb_subscription_attempts_total{outcome="retry"}`:             2,
		`webhookdb_subscription_attempts_total{outcome="delivered"}`:         2,
		`webhookdb_subscription_endpoints_disabled_total`:                    0,
	}
	eventually(t, "the metrics", func() bool { return maps.Equal(metricValues(t, reg), want) })
}

// metricValues reads a registry's counters as name{labels} -> value.
func metricValues(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			if len(labels) > 0 {
				name += "{" + strings.Join(labels, ",") + "}"
			}
			out[name] = m.GetCounter().GetValue()
		}
	}
	return out
}
