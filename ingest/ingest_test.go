package ingest_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/webhookdb-go/webhookdb/ingest"
	"github.com/webhookdb-go/webhookdb/ingest/verify"
	"github.com/webhookdb-go/webhookdb/internal/integrations"
	"github.com/webhookdb-go/webhookdb/internal/pgtest"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type env struct {
	t    *testing.T
	pool *pgxpool.Pool
	box  secrets.Box
	srv  *httptest.Server
	org  int64
}

func newKeyring(t testing.TB) secrets.Box {
	k, err := secrets.ParseKeyring(secrets.NewKeyEntry(1))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func createOrg(t testing.TB, pool *pgxpool.Pool, key string) int64 {
	t.Helper()
	var id int64
	if err := pool.QueryRow(context.Background(), `INSERT INTO organizations (key, name) VALUES ($1, $1) RETURNING id`, key).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

func newEnv(t *testing.T, pool *pgxpool.Pool, mutate func(*ingest.Config)) *env {
	t.Helper()
	return newEnvFull(t, pool, nil, nil, mutate)
}

// newEnvReg is newEnv with the metrics in reg (nil: a registry of its own) and, optionally, the pool.
func newEnvReg(t *testing.T, reg *prometheus.Registry, mutate func(*ingest.Config), pool ...*pgxpool.Pool) *env {
	t.Helper()
	var p *pgxpool.Pool
	if len(pool) > 0 {
		p = pool[0]
	}
	return newEnvFull(t, p, reg, nil, mutate)
}

// newEnvServer is newEnvReg with the test server's http.Server settings changed by srvMutate.
func newEnvServer(t *testing.T, reg *prometheus.Registry, srvMutate func(*http.Server), mutate func(*ingest.Config)) *env {
	t.Helper()
	return newEnvFull(t, nil, reg, srvMutate, mutate)
}

func newEnvFull(t *testing.T, pool *pgxpool.Pool, reg *prometheus.Registry, srvMutate func(*http.Server), mutate func(*ingest.Config)) *env {
	t.Helper()
	return newEnvBox(t, nil, pool, reg, srvMutate, mutate)
}

// newEnvBox is newEnvFull with the secrets box given (nil: a new keyring).
func newEnvBox(t *testing.T, box secrets.Box, pool *pgxpool.Pool, reg *prometheus.Registry, srvMutate func(*http.Server), mutate func(*ingest.Config)) *env {
	t.Helper()
	if box == nil {
		box = newKeyring(t)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	if pool == nil {
		pool = pgtest.NewDB(t)
	}
	e := &env{t: t, pool: pool, box: box}
	e.org = createOrg(t, pool, "acme")
	r := mux.NewRouter()
	// Served as the app serves it: webhook routes through Front, the rest through the router.
	front := &frontHandler{next: r}
	e.srv = httptest.NewUnstartedServer(front)
	if srvMutate != nil {
		srvMutate(e.srv.Config)
	}
	cfg := ingest.Config{PublicURL: "http://" + e.srv.Listener.Addr().String(), Cache: ingest.CacheConfig{PollInterval: 100 * time.Millisecond}}
	if mutate != nil {
		mutate(&cfg)
	}
	svc := ingest.New(pool, e.box, ingest.NewMetrics(reg), cfg)
	svc.Register(r)
	front.h = svc.Front(r)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	e.srv.Start()
	t.Cleanup(func() {
		e.srv.Close()
		cancel()
		<-done
	})
	return e
}

// frontHandler serves through h once the service exists (the server's address goes into the service's config).
type frontHandler struct{ h, next http.Handler }

func (f *frontHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f.h == nil {
		f.next.ServeHTTP(w, r)
		return
	}
	f.h.ServeHTTP(w, r)
}

func (e *env) integration(service, secret string) *integrations.Integration {
	e.t.Helper()
	in, _, err := integrations.Create(context.Background(), e.pool, e.box, integrations.CreateParams{OrgID: e.org, Service: service, Secret: secret})
	if err != nil {
		e.t.Fatal(err)
	}
	return in
}

func (e *env) url(in *integrations.Integration) string {
	return e.srv.URL + "/v1/webhooks/" + in.OpaqueID
}

func post(t testing.TB, url string, body []byte, headers map[string]string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func readAll(t testing.TB, resp *http.Response) string {
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// eventuallyStatus repeats send until it answers want, failing after within.
func eventuallyStatus(t *testing.T, within time.Duration, want int, send func() *http.Response) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		resp := send()
		readAll(t, resp)
		if resp.StatusCode == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %d after %s, want %d", resp.StatusCode, within, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func stripeHeaders(secret string, body []byte, ts time.Time) map[string]string {
	t := strconv.FormatInt(ts.Unix(), 10)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(t + "." + string(body)))
	return map[string]string{"Stripe-Signature": "t=" + t + ",v1=" + hex.EncodeToString(m.Sum(nil)), "Content-Type": "application/json"}
}

func stripeEvent(id string) []byte {
	return []byte(fmt.Sprintf(`{"id":%q,"object":"event","type":"charge.succeeded","created":1700000000,"data":{"object":{"id":"ch_1","object":"charge","amount":500}}}`, id))
}

type stagedRow struct {
	Accepted      bool
	Reason        *string
	DeliveryID    *string
	Headers       map[string]string
	Body          []byte
	BodyTruncated bool
	Query         string
	Path          string
}

func staged(t testing.TB, pool *pgxpool.Pool, integrationID int64) []stagedRow {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT accepted, rejected_reason, delivery_id, headers, body, body_truncated, query, path FROM staging.webhooks WHERE integration_id = $1 ORDER BY id`, integrationID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []stagedRow
	for rows.Next() {
		var r stagedRow
		if err := rows.Scan(&r.Accepted, &r.Reason, &r.DeliveryID, &r.Headers, &r.Body, &r.BodyTruncated, &r.Query, &r.Path); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func TestAcceptedWebhookIsStoredBeforeAnswer(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, nil)
	in := e.integration("stripe_charge_v1", "whsec_test")
	body := stripeEvent("evt_accepted")
	h := stripeHeaders("whsec_test", body, time.Now())
	h["Authorization"] = "Bearer leak"
	h["Cookie"] = "c=leak"
	resp := post(t, e.url(in)+"/extra/path?x=1", body, h)
	got := readAll(t, resp)
	if resp.StatusCode != http.StatusAccepted || got != `{"ok":true}` {
		t.Fatalf("answer %d %q", resp.StatusCode, got)
	}
	// The 2xx came back, so the row must already be committed: no waiting here.
	rows := staged(t, e.pool, in.ID)
	if len(rows) != 1 {
		t.Fatalf("%d staged rows, want 1", len(rows))
	}
	r := rows[0]
	if !r.Accepted || r.Reason != nil || r.DeliveryID == nil || *r.DeliveryID != "evt_accepted" || !bytes.Equal(r.Body, body) {
		t.Fatalf("staged row: %+v", r)
	}
	if r.Query != "x=1" || !strings.HasSuffix(r.Path, "/extra/path") {
		t.Fatalf("path/query: %q %q", r.Path, r.Query)
	}
	for _, secret := range []string{"Stripe-Signature", "Authorization", "Cookie"} {
		if _, ok := r.Headers[secret]; ok {
			t.Errorf("header %s was stored", secret)
		}
	}
	if r.Headers["Content-Type"] != "application/json" {
		t.Errorf("headers: %v", r.Headers)
	}
}

func TestServiceIntegrationsRouteAndMethods(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, nil)
	in, _, err := integrations.Create(context.Background(), e.pool, e.box, integrations.CreateParams{
		OrgID: e.org, Service: "json_v1", Config: []byte(`{"remote_key_path":"id"}`), VerifierOverride: &verify.Config{Scheme: verify.SchemeNone},
	})
	if err != nil {
		t.Fatal(err)
	}
	eventuallyStatus(t, 2*time.Second, http.StatusAccepted, func() *http.Response {
		req, _ := http.NewRequest(http.MethodPut, e.srv.URL+"/v1/service_integrations/"+in.OpaqueID, strings.NewReader(`{"id":"1"}`))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	})
}

func TestRejections(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, nil)
	in := e.integration("stripe_charge_v1", "whsec_right")
	body := stripeEvent("evt_bad")

	cases := []struct {
		name    string
		headers map[string]string
		body    []byte
		reason  string
	}{
		{"wrong secret", stripeHeaders("whsec_wrong", body, time.Now()), body, "signature"},
		{"missing header", map[string]string{"Content-Type": "application/json"}, body, "Stripe-Signature"},
		{"tampered body", stripeHeaders("whsec_right", body, time.Now()), append(bytes.Clone(body), ' '), "signature"},
		{"stale timestamp", stripeHeaders("whsec_right", body, time.Now().Add(-time.Hour)), body, "tolerance"},
	}
	for _, c := range cases {
		resp := post(t, e.url(in), c.body, c.headers)
		readAll(t, resp)
		reason := resp.Header.Get(ingest.RejectedReasonHeader)
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(reason, c.reason) {
			t.Errorf("%s: status %d reason %q, want 401 mentioning %q", c.name, resp.StatusCode, reason, c.reason)
		}
	}
	rows := staged(t, e.pool, in.ID)
	if len(rows) != len(cases) {
		t.Fatalf("%d rejected rows stored, want %d", len(rows), len(cases))
	}
	for _, r := range rows {
		if r.Accepted || r.Reason == nil || *r.Reason == "" {
			t.Errorf("rejected row: %+v", r)
		}
	}
}

func TestUnknownAndDeletedIntegrations(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, nil)
	resp := post(t, e.srv.URL+"/v1/webhooks/"+integrations.NewOpaqueID(), []byte("{}"), nil)
	readAll(t, resp)
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown: %d", resp.StatusCode)
	}

	in := e.integration("stripe_charge_v1", "whsec_x")
	body := stripeEvent("evt_del")
	resp = post(t, e.url(in), body, stripeHeaders("whsec_x", body, time.Now()))
	readAll(t, resp)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("before delete: %d", resp.StatusCode)
	}
	if err := integrations.Delete(context.Background(), e.pool, in.OpaqueID); err != nil {
		t.Fatal(err)
	}
	eventuallyStatus(t, 1500*time.Millisecond, http.StatusGone, func() *http.Response {
		return post(t, e.url(in), body, stripeHeaders("whsec_x", body, time.Now()))
	})
}

func TestNewIntegrationIsSeenAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, nil)
	// Warm the cache with a miss first: a just-created integration must still be found within a second.
	id := integrations.NewOpaqueID()
	resp := post(t, e.srv.URL+"/v1/webhooks/"+id, []byte("{}"), nil)
	readAll(t, resp)
	in := e.integration("stripe_charge_v1", "whsec_new")
	body := stripeEvent("evt_new")
	eventuallyStatus(t, time.Second, http.StatusAccepted, func() *http.Response {
		return post(t, e.url(in), body, stripeHeaders("whsec_new", body, time.Now()))
	})
}

func TestBodyLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, func(c *ingest.Config) { c.DefaultBodyLimit = 10_000 })
	in := e.integration("stripe_charge_v1", "whsec_big")
	big := bytes.Repeat([]byte("a"), 10_001)
	resp := post(t, e.url(in), big, stripeHeaders("whsec_big", big, time.Now()))
	readAll(t, resp)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || resp.Header.Get(ingest.RejectedReasonHeader) == "" {
		t.Fatalf("too large: %d %q", resp.StatusCode, resp.Header.Get(ingest.RejectedReasonHeader))
	}
	rows := staged(t, e.pool, in.ID)
	if len(rows) != 1 || rows[0].Accepted || !rows[0].BodyTruncated || len(rows[0].Body) != 4096 {
		t.Fatalf("stored: %d rows, first %+v", len(rows), rows)
	}

	// A per-integration override raises the limit.
	_, err := e.pool.Exec(context.Background(), `UPDATE service_integrations SET body_limit_bytes = 20000 WHERE id = $1`, in.ID)
	if err != nil {
		t.Fatal(err)
	}
	eventuallyStatus(t, 2*time.Second, http.StatusAccepted, func() *http.Response {
		return post(t, e.url(in), big, stripeHeaders("whsec_big", big, time.Now()))
	})
}

func TestRejectedStorageIsCapped(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, nil)
	in := e.integration("stripe_charge_v1", "whsec_cap")
	for i := 0; i < 100; i++ {
		resp := post(t, e.url(in), []byte("garbage"), nil)
		readAll(t, resp)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("garbage answered %d", resp.StatusCode)
		}
	}
	n := len(staged(t, e.pool, in.ID))
	if n < 60 || n >= 100 {
		t.Fatalf("%d of 100 rejected requests stored; want the burst of 60 (+ refill) and not all", n)
	}
}

func TestTwilioAnswersTwiML(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, nil)
	in := e.integration("twilio_sms_v1", "authtoken")
	form := url.Values{"MessageSid": {"SM1"}, "MessageStatus": {"delivered"}, "To": {"+15550001"}}
	body := []byte(form.Encode())
	signed := e.url(in)
	keys := make([]string, 0, len(form))
	for k := range form {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		signed += k + form.Get(k)
	}
	m := hmac.New(sha1.New, []byte("authtoken"))
	m.Write([]byte(signed))
	resp := post(t, e.url(in), body, map[string]string{
		"Content-Type":       "application/x-www-form-urlencoded",
		"X-Twilio-Signature": base64.StdEncoding.EncodeToString(m.Sum(nil)),
	})
	got := readAll(t, resp)
	if resp.StatusCode != http.StatusOK || got != "<Response></Response>" || resp.Header.Get("Content-Type") != "text/xml" {
		t.Fatalf("twilio answer: %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), got)
	}
}

func TestSecretRotationKeepsPreviousDuringGrace(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, nil)
	in := e.integration("stripe_charge_v1", "whsec_old")
	if _, err := integrations.RollSecret(context.Background(), e.pool, e.box, in.OpaqueID, "whsec_new", time.Hour); err != nil {
		t.Fatal(err)
	}
	body := stripeEvent("evt_rot")
	eventuallyStatus(t, 2*time.Second, http.StatusAccepted, func() *http.Response {
		return post(t, e.url(in), body, stripeHeaders("whsec_new", body, time.Now()))
	})
	resp := post(t, e.url(in), body, stripeHeaders("whsec_old", body, time.Now()))
	readAll(t, resp)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("previous secret refused during grace: %d", resp.StatusCode)
	}
	resp = post(t, e.url(in), body, stripeHeaders("whsec_other", body, time.Now()))
	readAll(t, resp)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("unknown secret: %d", resp.StatusCode)
	}
}

func TestGroupCommitSharesTransactions(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, nil)
	in := e.integration("stripe_charge_v1", "whsec_gc")
	const n = 400
	var wg sync.WaitGroup
	errs := make(chan string, n)
	sem := make(chan struct{}, 64)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			body := stripeEvent(fmt.Sprintf("evt_gc_%d", i))
			resp := post(t, e.url(in), body, stripeHeaders("whsec_gc", body, time.Now()))
			readAll(t, resp)
			if resp.StatusCode != http.StatusAccepted {
				errs <- strconv.Itoa(resp.StatusCode)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for s := range errs {
		t.Fatalf("a request got %s", s)
	}
	var rows, txns int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*), count(DISTINCT xmin::text) FROM staging.webhooks WHERE integration_id = $1`, in.ID).Scan(&rows, &txns); err != nil {
		t.Fatal(err)
	}
	if rows != n {
		t.Fatalf("%d rows, want %d", rows, n)
	}
	if txns >= rows {
		t.Fatalf("%d transactions for %d rows: no group commit", txns, rows)
	}
	t.Logf("%d rows in %d transactions", rows, txns)
}

func TestMissingPartitionIsCreatedOnDemand(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, func(c *ingest.Config) {
		c.Now = func() time.Time { return time.Date(2031, 5, 4, 12, 0, 0, 0, time.UTC) }
	})
	in := e.integration("stripe_charge_v1", "whsec_p")
	body := stripeEvent("evt_future")
	// Stripe's tolerance is checked against the (fake) server clock.
	resp := post(t, e.url(in), body, stripeHeaders("whsec_p", body, time.Date(2031, 5, 4, 12, 0, 0, 0, time.UTC)))
	readAll(t, resp)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("webhook for a day without partition: %d", resp.StatusCode)
	}
	var n int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM staging.webhooks_20310504`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("partition 2031-05-04: %d rows, %v", n, err)
	}
}

func TestUnavailableDatabaseAnswers503(t *testing.T) {
	t.Parallel()
	c := pgtest.NewCluster(t)
	pool, err := pgxpool.New(context.Background(), pgtest.NewMigratedDBURL(t, c))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	e := newEnv(t, pool, func(cfg *ingest.Config) { cfg.SubmitTimeout = 2 * time.Second })
	in := e.integration("stripe_charge_v1", "whsec_down")
	body := stripeEvent("evt_down")
	// Prime the cache, then take the database away.
	resp := post(t, e.url(in), body, stripeHeaders("whsec_down", body, time.Now()))
	readAll(t, resp)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("before stop: %d", resp.StatusCode)
	}
	if err := c.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	resp = post(t, e.url(in), body, stripeHeaders("whsec_down", body, time.Now()))
	readAll(t, resp)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("database down: %d Retry-After=%q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if err := c.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	eventuallyStatus(t, 10*time.Second, http.StatusAccepted, func() *http.Response {
		return post(t, e.url(in), body, stripeHeaders("whsec_down", body, time.Now()))
	})
}
