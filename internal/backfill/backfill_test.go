package backfill_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/webhookdb-go/webhookdb/internal/backfill"
	"github.com/webhookdb-go/webhookdb/internal/backfill/backfilltest"
	"github.com/webhookdb-go/webhookdb/internal/integrations"
	"github.com/webhookdb-go/webhookdb/internal/pgtest"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type env struct {
	t    *testing.T
	ids  []string // the fake's charges, oldest first (pagedStripeJob)
	reg  *prometheus.Registry
	pool *pgxpool.Pool
	box  secrets.Box
	svc  *backfill.Service
}

func newEnv(t *testing.T, cfg backfill.Config) *env {
	t.Helper()
	e := &env{t: t, pool: pgtest.NewDB(t)}
	k, err := secrets.ParseKeyring(secrets.NewKeyEntry(1))
	if err != nil {
		t.Fatal(err)
	}
	e.box = k
	e.reg = prometheus.NewRegistry()
	cfg.Pool, cfg.Box, cfg.Registerer = e.pool, e.box, e.reg
	if cfg.Poll == 0 {
		cfg.Poll = 50 * time.Millisecond
	}
	cfg.HTTP.BaseDelay, cfg.HTTP.MaxDelay = 10*time.Millisecond, 100*time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if e.svc, err = backfill.New(cfg); err != nil {
		t.Fatal(err)
	}
	return e
}

// metric is a counter's value with the given labels (0 when absent).
func (e *env) metric(name string, labels map[string]string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func randomKey() string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return "t" + hex.EncodeToString(b)
}

func (e *env) org() int64 {
	e.t.Helper()
	var id int64
	key := randomKey()
	if err := e.pool.QueryRow(context.Background(), `INSERT INTO organizations (key, name) VALUES ($1, $1) RETURNING id`, key).Scan(&id); err != nil {
		e.t.Fatal(err)
	}
	return id
}

func (e *env) integration(orgID int64, service string) *integrations.Integration {
	e.t.Helper()
	in, _, err := integrations.Create(context.Background(), e.pool, e.box, integrations.CreateParams{OrgID: orgID, Service: service})
	if err != nil {
		e.t.Fatal(err)
	}
	return in
}

// credentials points in at the fake Stripe (as a server admin may) with its key.
func (e *env) credentials(in *integrations.Integration, fake *backfilltest.Stripe) {
	e.t.Helper()
	e.setCredentials(in, backfill.CredentialParams{Key: ptr(fake.Key()), BaseURL: ptr(fake.URL)})
}

func (e *env) setCredentials(in *integrations.Integration, p backfill.CredentialParams) {
	e.t.Helper()
	p.ServerAdmin = true
	if _, err := e.svc.SetCredentials(context.Background(), in, p); err != nil {
		e.t.Fatalf("setting credentials: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }

func (e *env) run() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.svc.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		<-done
	})
}

func (e *env) waitJob(orgID, id int64, timeout time.Duration) *backfill.Job {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		j, err := backfill.GetJob(context.Background(), e.pool, orgID, id)
		if err != nil {
			e.t.Fatal(err)
		}
		if !j.Active() {
			return j
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("job %d still %s after %s (%d pages)", id, j.State, timeout, j.PagesDone)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// backfillOnce queues a job (incremental when the integration has a mark, unless full), waits for it and checks
// it succeeded as kind with want objects staged, each once.
func (e *env) backfillOnce(in *integrations.Integration, full bool, kind string, want int) *backfill.Job {
	e.t.Helper()
	job, err := e.svc.Start(context.Background(), in, full)
	if err != nil {
		e.t.Fatal(err)
	}
	job = e.waitJob(in.OrgID, job.ID, 60*time.Second)
	if got, distinct := e.stagedCount(job.ID); job.State != backfill.StateSucceeded || job.Kind != kind || got != want || distinct != want {
		e.t.Fatalf("%s job %s (error %v): %d staged (%d distinct), want %d", job.Kind, job.State, job.LastError, got, distinct, want)
	}
	return job
}

// pagedStripeJob is a job of an integration of a new org over a fake Stripe holding n charges, queued and not
// run yet; the env's workers run a page per RunOnce.
func pagedStripeJob(t *testing.T, prefix string, n int) (*env, *backfilltest.Stripe, *integrations.Integration, *backfill.Job) {
	t.Helper()
	return pagedStripeJobWith(t, prefix, n, backfill.Config{Slice: time.Nanosecond})
}

func pagedStripeJobWith(t *testing.T, prefix string, n int, cfg backfill.Config) (*env, *backfilltest.Stripe, *integrations.Integration, *backfill.Job) {
	t.Helper()
	e := newEnv(t, cfg)
	fake := backfilltest.NewStripe(backfilltest.StripeConfig{})
	t.Cleanup(fake.Close)
	ids := fake.AddCharges(prefix, n, time.Now().Add(-time.Hour))
	in := e.integration(e.org(), "stripe_charge_v1")
	e.credentials(in, fake)
	job, err := e.svc.Start(context.Background(), in, false)
	if err != nil {
		t.Fatal(err)
	}
	e.ids = ids
	return e, fake, in, job
}

func (e *env) stagedCount(jobID int64) (n, distinct int) {
	e.t.Helper()
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*), count(DISTINCT body) FROM staging.webhooks
		WHERE backfill_job_id = $1 AND source = 'backfill' AND accepted`, jobID).Scan(&n, &distinct); err != nil {
		e.t.Fatal(err)
	}
	return n, distinct
}

// A full Stripe backfill through 429s with Retry-After and a 500 stores every charge exactly once, page by
// page, and saves the high-water mark; the next job is incremental from it, through /v1/events.
func TestStripeFullThenIncremental(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, backfill.Config{})
	fake := backfilltest.NewStripe(backfilltest.StripeConfig{RateLimitEvery: 4, FailOnce: true})
	defer fake.Close()
	const n = 250
	ids := fake.AddCharges("a", n, time.Now().Add(-48*time.Hour))
	orgID := e.org()
	in := e.integration(orgID, "stripe_charge_v1")
	e.credentials(in, fake)
	e.run()

	job, err := e.svc.Start(ctx, in, false)
	if err != nil {
		t.Fatal(err)
	}
	if job.Kind != backfill.KindFull {
		t.Fatalf("first job without a high-water mark: %s, want full", job.Kind)
	}
	if _, err := e.svc.Start(ctx, in, true); !errors.Is(err, backfill.ErrJobActive) {
		t.Fatalf("a second job while one is active: %v, want ErrJobActive", err)
	}
	job = e.waitJob(orgID, job.ID, 30*time.Second)
	if job.State != backfill.StateSucceeded || job.ItemsDone != n || job.PagesDone != 3 {
		t.Fatalf("job: %s, %d items, %d pages, error %v; want succeeded, %d items, 3 pages", job.State, job.ItemsDone, job.PagesDone, job.LastError, n)
	}
	if got, distinct := e.stagedCount(job.ID); got != n || distinct != n {
		t.Fatalf("staged %d rows (%d distinct), want %d", got, distinct, n)
	}
	if fake.Refetched() != 0 {
		t.Fatalf("%d pages fetched twice in an uninterrupted job", fake.Refetched())
	}
	set, err := backfill.GetSettings(ctx, e.pool, in.ID)
	if err != nil || set.HighWater == nil || !set.CredentialsSet || !strings.HasPrefix(set.Fingerprint, "sha256:") {
		t.Fatalf("settings after the job: %+v, %v", set, err)
	}

	// Changes since: two events about charges, one about a customer (not this table's).
	fake.AddEvent("evt_1", "charge.refunded", time.Now(), backfilltest.Charge(ids[3], 0, 1))
	fake.AddEvent("evt_2", "customer.updated", time.Now(), map[string]any{"id": "cus_1", "object": "customer"})
	fake.AddEvent("evt_3", "charge.updated", time.Now(), backfilltest.Charge(ids[4], 0, 2))
	inc, err := e.svc.Start(ctx, in, false)
	if err != nil {
		t.Fatal(err)
	}
	if inc.Kind != backfill.KindIncremental || inc.Since == nil {
		t.Fatalf("second job: %s since %v, want incremental from the mark", inc.Kind, inc.Since)
	}
	inc = e.waitJob(orgID, inc.ID, 30*time.Second)
	if got, _ := e.stagedCount(inc.ID); inc.State != backfill.StateSucceeded || got != 2 {
		t.Fatalf("incremental: %s, %d staged, error %v; want succeeded, the 2 charge events", inc.State, got, inc.LastError)
	}

	// Stripe keeps events 30 days: a mark older than that makes a full job.
	if _, err := e.pool.Exec(ctx, `UPDATE backfill_credentials SET high_water = now() - interval '31 days' WHERE integration_id = $1`, in.ID); err != nil {
		t.Fatal(err)
	}
	e.backfillOnce(in, false, backfill.KindFull, n)
}

// Credentials the vendor refuses are not stored, and the vendor's reason is the error.
func TestBadCredentialsRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, backfill.Config{})
	fake := backfilltest.NewStripe(backfilltest.StripeConfig{})
	defer fake.Close()
	in := e.integration(e.org(), "stripe_charge_v1")
	key, base := "sk_test_wrongwrongwrong", fake.URL
	_, err := e.svc.SetCredentials(ctx, in, backfill.CredentialParams{Key: &key, BaseURL: &base, ServerAdmin: true})
	var ve *backfill.VendorError
	if !errors.As(err, &ve) || ve.Status != 401 || !strings.Contains(ve.Message, "Invalid API Key provided") {
		t.Fatalf("a wrong key: %v, want Stripe's 401 with its message", err)
	}
	if set, err := backfill.GetSettings(ctx, e.pool, in.ID); err != nil || set.CredentialsSet {
		t.Fatalf("refused credentials were stored: %+v, %v", set, err)
	}
	// An org member may not point the client at an arbitrary host.
	good := fake.Key()
	if _, err := e.svc.SetCredentials(ctx, in, backfill.CredentialParams{Key: &good, BaseURL: &base}); !errors.Is(err, backfill.ErrBaseURL) {
		t.Fatalf("a base URL from a non-admin: %v, want ErrBaseURL", err)
	}
	stripeHost := "https://api.stripe.com"
	if _, err := e.svc.SetCredentials(ctx, in, backfill.CredentialParams{Key: &good, BaseURL: &stripeHost}); errors.Is(err, backfill.ErrBaseURL) {
		t.Fatalf("Stripe's own host refused: %v", err)
	}
	if _, err := e.svc.Start(ctx, in, false); !errors.Is(err, backfill.ErrNoCredentials) {
		t.Fatalf("a job without credentials: %v, want ErrNoCredentials", err)
	}
}

// Credentials revoked mid-job fail it with Stripe's reason and status; nothing of the refused page is stored.
func TestRevokedMidJob(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	type refusal struct {
		orgID, integrationID int64
		err                  error
	}
	var refused []refusal
	var mu sync.Mutex
	e, fake, in, job := pagedStripeJobWith(t, "r", 300, backfill.Config{Slice: time.Nanosecond, // a page per RunOnce
		OnCredentialsFailed: func(_ context.Context, orgID, integrationID int64, err error) {
			mu.Lock()
			refused = append(refused, refusal{orgID, integrationID, err})
			mu.Unlock()
		}})
	orgID := in.OrgID
	if ran, err := e.svc.RunOnce(ctx); !ran || err != nil {
		t.Fatalf("first slice: %v %v", ran, err)
	}
	fake.Revoke()
	if ran, err := e.svc.RunOnce(ctx); !ran || err != nil {
		t.Fatalf("second slice: %v %v", ran, err)
	}
	j, err := backfill.GetJob(ctx, e.pool, orgID, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if j.State != backfill.StateFailed || j.ErrorStatus == nil || *j.ErrorStatus != 401 || j.LastError == nil || !strings.Contains(*j.LastError, "Expired API Key provided") {
		t.Fatalf("revoked mid-job: %+v", j)
	}
	if got, _ := e.stagedCount(job.ID); got != 100 || j.ItemsDone != 100 || j.PagesDone != 1 {
		t.Fatalf("staged %d, job says %d items in %d pages; want the first page's 100", got, j.ItemsDone, j.PagesDone)
	}
	if got := e.metric("webhookdb_backfill_jobs_finished_total", map[string]string{"vendor": "Stripe", "state": "failed"}); got != 1 {
		t.Fatalf("failed jobs counted: %v", got)
	}
	if got := e.metric("webhookdb_backfill_objects_total", map[string]string{"vendor": "Stripe"}); got != 100 {
		t.Fatalf("objects counted: %v", got)
	}
	if failed, err := backfill.FailedJobs(ctx, e.pool, orgID, 0); err != nil || len(failed) != 1 || failed[0].ID != job.ID {
		t.Fatalf("failed jobs for errors list: %+v, %v", failed, err)
	}
	// The org is told (alerts): once, with the vendor's reason.
	mu.Lock()
	defer mu.Unlock()
	if len(refused) != 1 || refused[0].orgID != orgID || refused[0].integrationID != in.ID || !strings.Contains(refused[0].err.Error(), "Expired API Key provided") {
		t.Fatalf("credential failures reported: %+v", refused)
	}
	// Not retried in a loop: nothing more to run.
	if ran, err := e.svc.RunOnce(ctx); ran || err != nil {
		t.Fatalf("a failed job was taken up again: %v %v", ran, err)
	}
}

// A page that is not what Stripe documents fails the job naming the page, the status and the body's start.
func TestBadAnswerFailsJob(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e, fake, in, job := pagedStripeJob(t, "b", 150) // a page per RunOnce
	orgID := in.OrgID
	ids := e.ids
	if _, err := e.svc.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	fake.MalformNext("/v1/charges", "<html><body>Bad gateway</body></html>")
	if _, err := e.svc.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	j, err := backfill.GetJob(ctx, e.pool, orgID, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	// Newest first: the first page ends with the 51st newest charge.
	cursor := ids[len(ids)-100]
	if j.State != backfill.StateFailed || j.LastError == nil {
		t.Fatalf("job after a malformed page: %+v", j)
	}
	for _, want := range []string{"/v1/charges after " + cursor, "HTTP 200", "<html><body>Bad gateway"} {
		if !strings.Contains(*j.LastError, want) {
			t.Fatalf("error %q does not name %q", *j.LastError, want)
		}
	}
}

// Deleting the integration cancels its job before another page is stored.
func TestDeleteCancels(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e, _, in, job := pagedStripeJob(t, "d", 300) // a page per RunOnce
	orgID := in.OrgID
	if _, err := e.svc.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if err := integrations.Delete(ctx, e.pool, in.OpaqueID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	j, err := backfill.GetJob(ctx, e.pool, orgID, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := e.stagedCount(job.ID); j.State != backfill.StateCanceled || got != 100 {
		t.Fatalf("after delete: %s with %d staged, want canceled with the first page's 100", j.State, got)
	}
	// The schedule's sweep forgets the deleted integration's credentials.
	if err := e.svc.ScheduleOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if set, err := backfill.GetSettings(ctx, e.pool, in.ID); err != nil || set.CredentialsSet {
		t.Fatalf("credentials of a deleted integration: %+v, %v", set, err)
	}
}

// Workers take up the org served longest ago first: an org with many jobs does not starve one with one.
func TestFairAcrossOrgs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, backfill.Config{Slice: time.Nanosecond})
	fake := backfilltest.NewStripe(backfilltest.StripeConfig{})
	defer fake.Close()
	fake.AddCharges("f", 1000, time.Now().Add(-time.Hour))
	big, small := e.org(), e.org()
	var jobs []int64
	for _, o := range []int64{big, big, big, small} {
		in := e.integration(o, "stripe_charge_v1")
		e.credentials(in, fake)
		j, err := e.svc.Start(ctx, in, false)
		if err != nil {
			t.Fatal(err)
		}
		jobs = append(jobs, j.ID)
	}
	// Slices in order: big's first job, small's, big's second, then small's again before big's third.
	var order []int64
	for range 5 {
		if _, err := e.svc.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		var id int64
		if err := e.pool.QueryRow(ctx, `SELECT id FROM backfill_jobs ORDER BY last_ran_at DESC NULLS LAST LIMIT 1`).Scan(&id); err != nil {
			t.Fatal(err)
		}
		order = append(order, id)
	}
	want := []int64{jobs[0], jobs[3], jobs[1], jobs[3], jobs[2]}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("slices went to jobs %v, want %v (big org's %v, small org's %d)", order, want, jobs[:3], jobs[3])
		}
	}
}

// A schedule queues an incremental job when due (one at a time), and cancel stops a job before its next page.
func TestScheduleAndCancel(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, backfill.Config{Slice: time.Nanosecond})
	fake := backfilltest.NewStripe(backfilltest.StripeConfig{})
	defer fake.Close()
	fake.AddCharges("s", 250, time.Now().Add(-time.Hour))
	orgID := e.org()
	in := e.integration(orgID, "stripe_charge_v1")
	e.setCredentials(in, backfill.CredentialParams{Key: ptr(fake.Key()), BaseURL: ptr(fake.URL), Every: ptr(time.Hour)})
	set, err := backfill.GetSettings(ctx, e.pool, in.ID)
	if err != nil || set.Every != "1h0m0s" || set.NextRunAt == nil || time.Until(*set.NextRunAt) < 59*time.Minute {
		t.Fatalf("schedule: %+v, %v", set, err)
	}
	if err := e.svc.ScheduleOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if jobs, err := backfill.ListJobs(ctx, e.pool, orgID, in.ID, 10); err != nil || len(jobs) != 0 {
		t.Fatalf("a job before the schedule is due: %v, %v", jobs, err)
	}
	if _, err := e.pool.Exec(ctx, `UPDATE backfill_credentials SET next_run_at = now() - interval '1 second'`); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second pass finds the job still queued: no second job
		if err := e.svc.ScheduleOnce(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := e.pool.Exec(ctx, `UPDATE backfill_credentials SET next_run_at = now() - interval '1 second'`); err != nil {
			t.Fatal(err)
		}
	}
	jobs, err := backfill.ListJobs(ctx, e.pool, orgID, in.ID, 10)
	if err != nil || len(jobs) != 1 || jobs[0].RequestedBy != "schedule" || jobs[0].Kind != backfill.KindFull {
		t.Fatalf("scheduled jobs: %+v, %v; want one full (no mark yet)", jobs, err)
	}
	if _, err := e.svc.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	j, err := backfill.Cancel(ctx, e.pool, orgID, jobs[0].ID)
	if err != nil || j.State != backfill.StateCanceled {
		t.Fatalf("cancel: %+v, %v", j, err)
	}
	if ran, err := e.svc.RunOnce(ctx); ran || err != nil {
		t.Fatalf("a canceled job ran: %v %v", ran, err)
	}
	if got, _ := e.stagedCount(j.ID); got != 100 {
		t.Fatalf("staged %d after a page and a cancel, want 100", got)
	}
	if _, err := backfill.Cancel(ctx, e.pool, orgID, j.ID); !errors.Is(err, backfill.ErrFinished) {
		t.Fatalf("canceling a finished job: %v, want ErrFinished", err)
	}
	if _, err := backfill.Cancel(ctx, e.pool, e.org(), j.ID); !errors.Is(err, backfill.ErrNotFound) {
		t.Fatalf("another org canceling the job: %v, want ErrNotFound", err)
	}
	// Credentials are never shown: only the fingerprint.
	var keyEnc string
	if err := e.pool.QueryRow(ctx, `SELECT key_enc FROM backfill_credentials WHERE integration_id = $1`, in.ID).Scan(&keyEnc); err != nil || strings.Contains(keyEnc, fake.Key()) {
		t.Fatalf("the key is stored in the clear: %q, %v", keyEnc, err)
	}
}

// A vendor that is down when credentials are set: a few quick tries, then a transient error, nothing stored.
func TestVerifyVendorDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, backfill.Config{})
	var calls atomic.Int32
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		calls.Add(1)
		w.Header().Set("Stripe-Should-Retry", "true")
		http.Error(w, `{"error":{"type":"api_error","message":"An unknown error occurred"}}`, http.StatusServiceUnavailable)
	}))
	defer down.Close()
	in := e.integration(e.org(), "stripe_charge_v1")
	_, err := e.svc.SetCredentials(ctx, in, backfill.CredentialParams{Key: ptr("sk_test_x"), BaseURL: ptr(down.URL), ServerAdmin: true})
	var te *backfill.TransientError
	if !errors.As(err, &te) || calls.Load() != 3 {
		t.Fatalf("a vendor down: %v after %d calls, want a transient error after 3", err, calls.Load())
	}
	if set, err := backfill.GetSettings(ctx, e.pool, in.ID); err != nil || set.CredentialsSet {
		t.Fatalf("credentials stored while the vendor was down: %+v, %v", set, err)
	}
}

// Subscription items come with their subscriptions (status=all: canceled ones too); a subscription's embedded
// list past Stripe's first 10 items is completed from /v1/subscription_items.
func TestStripeSubscriptionItems(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, backfill.Config{})
	fake := backfilltest.NewStripe(backfilltest.StripeConfig{})
	defer fake.Close()
	item := func(i int) map[string]any {
		return map[string]any{"id": fmt.Sprintf("si_%02d", i), "object": "subscription_item", "quantity": 1, "subscription": "sub_big",
			"price": map[string]any{"id": "price_1", "product": "prod_1"}}
	}
	var embedded []map[string]any
	for i := range 10 {
		embedded = append(embedded, item(i))
	}
	for i := 11; i >= 0; i-- { // the list's order is the embedded one's: si_00 first
		fake.Add("/v1/subscription_items", item(i))
	}
	fake.Add("/v1/subscriptions", map[string]any{"id": "sub_big", "object": "subscription", "status": "active",
		"items": map[string]any{"object": "list", "data": embedded, "has_more": true, "url": "/v1/subscription_items?subscription=sub_big"}})
	fake.Add("/v1/subscriptions", map[string]any{"id": "sub_old", "object": "subscription", "status": "canceled",
		"items": map[string]any{"object": "list", "data": []map[string]any{}, "has_more": false}})
	in := e.integration(e.org(), "stripe_subscription_item_v1")
	e.credentials(in, fake)
	e.run()
	job := e.backfillOnce(in, false, backfill.KindFull, 2)
	var items int
	if err := e.pool.QueryRow(ctx, `SELECT jsonb_array_length(convert_from(body, 'UTF8')::jsonb #> '{items,data}') FROM staging.webhooks
		WHERE backfill_job_id = $1 AND convert_from(body, 'UTF8')::jsonb ->> 'id' = 'sub_big'`, job.ID).Scan(&items); err != nil || items != 12 {
		t.Fatalf("items of the big subscription: %d, %v; want all 12", items, err)
	}
}
