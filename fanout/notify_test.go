package fanout_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/webhookdb-go/webhookdb/fanout"
	"github.com/webhookdb-go/webhookdb/internal/integrations"
	"github.com/webhookdb-go/webhookdb/internal/outgoing"
	"github.com/webhookdb-go/webhookdb/internal/subscriptions"
	"github.com/webhookdb-go/webhookdb/pgroles"
)

// receiver verifies every message with the Standard Webhooks library and keeps the ones that verify.
type receiver struct {
	t   *testing.T
	wh  *standardwebhooks.Webhook
	srv *httptest.Server

	mu   sync.Mutex
	msgs []received
	bad  int
}

type received struct {
	id      string
	payload subscriptions.Payload
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{t: t}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.wh == nil || r.wh.Verify(body, req.Header) != nil {
			r.bad++
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var p subscriptions.Payload
		if err := json.Unmarshal(body, &p); err != nil {
			r.bad++
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		r.msgs = append(r.msgs, received{id: req.Header.Get("webhook-id"), payload: p})
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) secret(s string) {
	wh, err := standardwebhooks.NewWebhook(s)
	if err != nil {
		r.t.Fatal(err)
	}
	r.mu.Lock()
	r.wh = wh
	r.mu.Unlock()
}

func (r *receiver) got() ([]received, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.msgs...), r.bad
}

// startSubscriptions runs a fanout with webhook subscriptions: the consumer, its relay and the deliveries.
func (e *env) startSubscriptions(subs *subscriptions.Service) {
	e.t.Helper()
	stop := e.runSubscriptions(subs, true)
	e.t.Cleanup(stop)
}

// runSubscriptions runs the consumer, and with relay its relay and the deliveries, until stop.
func (e *env) runSubscriptions(subs *subscriptions.Service, relay bool) (stop func()) {
	e.t.Helper()
	cfg := e.config()
	cfg.Notify = subs
	c, err := fanout.New(e.appURL, e.pool, e.box, cfg, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := c.EnsureSlot(ctx); err != nil {
		e.t.Fatal(err)
	}
	var wg sync.WaitGroup
	runs := []func(context.Context) error{c.Run}
	if relay {
		runs = append(runs, c.RunRelay, subs.Run)
	}
	for _, run := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(ctx); err != nil {
				e.t.Errorf("run: %v", err)
			}
		}()
	}
	return func() { cancel(); wg.Wait() }
}

func (e *env) subscriptions(mods ...func(*subscriptions.Config)) *subscriptions.Service {
	e.t.Helper()
	cfg := subscriptions.Config{Pool: e.pool, Box: e.box, Logger: testLogger(),
		Client: outgoing.NewClient(outgoing.Config{AllowPrivate: true})}
	for _, m := range mods {
		m(&cfg)
	}
	subs, err := subscriptions.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return subs
}

// stageSource inserts accepted staging rows of one source in one transaction.
func (e *env) stageSource(in *integrations.Integration, source string, bodies ...[]byte) {
	e.t.Helper()
	n := len(bodies)
	org, integ := make([]int64, n), make([]int64, n)
	for i := range bodies {
		org[i], integ[i] = in.OrgID, in.ID
	}
	if _, err := e.pool.Exec(context.Background(), `
		INSERT INTO staging.webhooks (received_at, org_id, integration_id, method, path, content_type, headers, body, accepted, source)
		SELECT clock_timestamp(), o, i, 'POST', '/', 'application/json', '{"Content-Type":"application/json"}', b, true, $4
		FROM unnest($1::bigint[], $2::bigint[], $3::bytea[]) AS u(o, i, b)`, org, integ, bodies, source); err != nil {
		e.t.Fatal(err)
	}
}

// Each row write the fanout commits gives one notification: several deliveries of a key in one batch give
// one with the final row, a write the conflict policy refuses gives none, an update says so, and rows of a
// source the subscription did not opt in to notify nobody. An org without subscriptions has no outbox.
func TestSubscriptionNotifiesEveryRowWrite(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	o, quiet := e.org(nil), e.org(nil)
	in := e.integration(o, "stripe_charge_v1", "")
	quietIn := e.integration(quiet, "stripe_charge_v1", "")
	subs := e.subscriptions()
	rcv := newReceiver(t)
	sub, secret, err := subs.Create(context.Background(), o.id, subscriptions.CreateParams{URL: rcv.srv.URL + "/hook"})
	if err != nil {
		t.Fatal(err)
	}
	rcv.secret(secret)
	e.startSubscriptions(subs)

	// one staging transaction: ch_1 twice (folded: the newer wins), ch_2 once
	e.stageSource(in, "webhook", stripeChargeEvent("evt_1", "ch_1", 100, 1, "pending"), stripeChargeEvent("evt_2", "ch_1", 200, 2, "succeeded"),
		stripeChargeEvent("evt_3", "ch_2", 100, 7, "pending"))
	e.stageSource(quietIn, "webhook", stripeChargeEvent("evt_q", "ch_q", 100, 1, "pending"))
	eventually(t, 20*time.Second, "two notifications", func() (bool, error) { m, _ := rcv.got(); return len(m) >= 2, nil })
	// older than what is stored: no write, no notification; then a newer one: an update
	e.stageSource(in, "webhook", stripeChargeEvent("evt_4", "ch_1", 150, 3, "failed"))
	e.stageSource(in, "backfill", stripeChargeEvent("evt_5", "ch_2", 300, 8, "succeeded")) // not opted in
	e.stageSource(in, "webhook", stripeChargeEvent("evt_6", "ch_1", 400, 4, "refunded"))
	eventually(t, 20*time.Second, "three notifications", func() (bool, error) { m, _ := rcv.got(); return len(m) >= 3, nil })

	msgs, bad := rcv.got()
	if bad != 0 {
		t.Fatalf("%d messages did not verify", bad)
	}
	type seen struct {
		typ, key, status string
		amount           float64
	}
	var got []seen
	for _, m := range msgs {
		var row map[string]any
		if err := json.Unmarshal(m.payload.Data.Row, &row); err != nil {
			t.Fatal(err)
		}
		if m.payload.Data.Integration != in.OpaqueID || m.payload.Data.Service != "stripe_charge_v1" || m.payload.Data.Table != in.TableName ||
			m.payload.Data.Source != "webhook" || m.id == "" {
			t.Errorf("message %+v", m)
		}
		if _, ok := row["data"]; !ok {
			t.Errorf("the row has no data: %v", row)
		}
		if _, ok := row["pk"]; ok {
			t.Errorf("the row shows its internal pk: %v", row)
		}
		got = append(got, seen{m.payload.Type, m.payload.Data.RemoteKey, row["status"].(string), row["amount"].(float64)})
	}
	want := map[seen]bool{{"row.insert", "ch_1", "succeeded", 2}: true, {"row.insert", "ch_2", "pending", 7}: true, {"row.update", "ch_1", "refunded", 4}: true}
	if len(got) != 3 {
		t.Fatalf("got %d notifications, want 3: %+v", len(got), got)
	}
	for _, g := range got {
		if !want[g] {
			t.Errorf("unexpected notification %+v (want %v)", g, want)
		}
	}
	if got[2].typ != "row.update" {
		t.Errorf("the update came before the inserts: %+v", got)
	}

	// everything relayed, delivered and logged
	eventually(t, 10*time.Second, "an empty outbox", func() (bool, error) {
		var n int
		err := e.orgDB(o).QueryRow(context.Background(), `SELECT count(*) FROM `+pgx.Identifier{pgroles.MetaSchema, "notify_outbox"}.Sanitize()).Scan(&n)
		return n == 0, err
	})
	log, err := subs.Deliveries(context.Background(), o.id, sub.ID, subscriptions.ListParams{})
	if err != nil {
		t.Fatal(err)
	}
	if len(log) != 3 {
		t.Fatalf("delivery log has %d entries, want 3", len(log))
	}
	for _, d := range log {
		if d.Status != "delivered" || d.Attempts != 1 || d.ResponseStatus == nil || *d.ResponseStatus != http.StatusNoContent {
			t.Errorf("delivery %+v", d)
		}
	}
	var exists bool
	if err := e.orgDB(quiet).QueryRow(context.Background(), `SELECT to_regclass($1) IS NOT NULL`, pgroles.MetaSchema+".notify_outbox").Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Error("an org without subscriptions got an outbox")
	}
}

// A fanout that dies after its org transactions committed and before its relay handed their notifications
// over leaves them in the outbox: the next fanout's relay delivers them, each under the id it got when its
// row was written.
func TestOutboxSurvivesTheFanout(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	o := e.org(nil)
	in := e.integration(o, "stripe_charge_v1", "")
	subs := e.subscriptions()
	rcv := newReceiver(t)
	_, secret, err := subs.Create(context.Background(), o.id, subscriptions.CreateParams{URL: rcv.srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	rcv.secret(secret)
	stop := e.runSubscriptions(subs, false) // no relay: as if it died each time before handing over
	e.stageSource(in, "webhook", stripeChargeEvent("evt_1", "ch_1", 100, 1, "pending"), stripeChargeEvent("evt_2", "ch_2", 100, 2, "pending"))
	e.stageSource(in, "webhook", stripeChargeEvent("evt_3", "ch_3", 100, 3, "pending"))
	outbox := func() (ids []string) {
		rows, err := e.orgDB(o).Query(context.Background(), `SELECT message_id::text FROM `+pgx.Identifier{pgroles.MetaSchema, "notify_outbox"}.Sanitize()+` ORDER BY id`)
		if err != nil {
			return nil
		}
		ids, _ = pgx.CollectRows(rows, pgx.RowTo[string])
		return ids
	}
	eventually(t, 20*time.Second, "three notifications in the outbox", func() (bool, error) { return len(outbox()) == 3, nil })
	stop()
	var want []string
	for _, id := range outbox() {
		want = append(want, "msg_"+strings.ReplaceAll(id, "-", ""))
	}
	e.startSubscriptions(subs)
	eventually(t, 20*time.Second, "three deliveries", func() (bool, error) { m, _ := rcv.got(); return len(m) == 3, nil })
	msgs, bad := rcv.got()
	var got []string
	for _, m := range msgs {
		got = append(got, m.id)
	}
	slices.Sort(got)
	slices.Sort(want)
	if bad != 0 || !slices.Equal(got, want) {
		t.Fatalf("delivered %v (%d bad), want the outbox's ids %v", got, bad, want)
	}
	eventually(t, 10*time.Second, "an empty outbox", func() (bool, error) { return len(outbox()) == 0, nil })
}

// A subscription created while the fanout (another process: another Service) holds a list of subscribed
// orgs without its org gets every change that reaches the fanout after create returns: create waits until
// the fanout's list holds it.
func TestNewSubscriptionGetsEveryLaterChange(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	o := e.org(nil)
	in := e.integration(o, "stripe_charge_v1", "")
	api := e.subscriptions(func(c *subscriptions.Config) { c.NoticeWait = 20 * time.Second })
	fan := e.subscriptions()
	e.startSubscriptions(fan)
	// the fanout applies a change of the org while it has no subscription: its list is fresh and without it
	e.stageSource(in, "webhook", stripeChargeEvent("evt_0", "ch_0", 100, 1, "pending"))
	eventually(t, 20*time.Second, "the first change applied", func() (bool, error) {
		var n int
		err := e.orgDB(o).QueryRow(context.Background(), `SELECT count(*) FROM `+pgx.Identifier{"public", in.TableName}.Sanitize()).Scan(&n)
		return n == 1, err
	})
	rcv := newReceiver(t)
	sub, secret, err := api.Create(context.Background(), o.id, subscriptions.CreateParams{URL: rcv.srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	rcv.secret(secret)
	if sub.ActiveSince == nil {
		t.Fatalf("create returned before the fanout noticed the subscription: %+v", sub)
	}
	e.stageSource(in, "webhook", stripeChargeEvent("evt_1", "ch_1", 100, 2, "pending"))
	eventually(t, 20*time.Second, "the change made after create returned", func() (bool, error) {
		m, _ := rcv.got()
		return len(m) == 1, nil
	})
	if m, bad := rcv.got(); bad != 0 || m[0].payload.Data.RemoteKey != "ch_1" {
		t.Fatalf("got %+v (%d bad)", m, bad)
	}
}

// Rows left in an org's outbox when its last subscription is deleted are drained and discarded by the relay,
// which then stops sweeping the org.
func TestLeftoverOutboxIsDrainedAfterTheLastSubscription(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	o := e.org(nil)
	in := e.integration(o, "stripe_charge_v1", "")
	api := e.subscriptions()
	// the relay's clock runs ahead: the deletion is past the time a fanout may still record the org's rows
	fan := e.subscriptions(func(c *subscriptions.Config) { c.Now = func() time.Time { return time.Now().Add(time.Hour) } })
	rcv := newReceiver(t)
	sub, secret, err := api.Create(context.Background(), o.id, subscriptions.CreateParams{URL: rcv.srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	rcv.secret(secret)
	stop := e.runSubscriptions(fan, false) // no relay: the rows stay in the outbox
	e.stageSource(in, "webhook", stripeChargeEvent("evt_1", "ch_1", 100, 1, "pending"), stripeChargeEvent("evt_2", "ch_2", 100, 2, "pending"))
	outbox := func() (int, error) {
		var n int
		err := e.orgDB(o).QueryRow(context.Background(), `SELECT count(*) FROM `+pgx.Identifier{pgroles.MetaSchema, "notify_outbox"}.Sanitize()).Scan(&n)
		return n, err
	}
	eventually(t, 20*time.Second, "two rows in the outbox", func() (bool, error) { n, err := outbox(); return n == 2, err })
	stop()
	if err := api.Delete(context.Background(), o.id, sub.ID); err != nil {
		t.Fatal(err)
	}
	swept := func() bool {
		orgs, err := fan.SubscribedOrgs(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return slices.Contains(orgs, o.id)
	}
	if !swept() {
		t.Fatal("an org with a leftover outbox is not swept")
	}
	e.startSubscriptions(fan)
	eventually(t, 20*time.Second, "an empty outbox", func() (bool, error) { n, err := outbox(); return n == 0, err })
	eventually(t, 20*time.Second, "the org no longer swept", func() (bool, error) { return !swept(), nil })
	if m, _ := rcv.got(); len(m) != 0 {
		t.Fatalf("a deleted subscription got %d messages", len(m))
	}
}

// A group larger than one upsert statement is cut into several: a key delivered twice across the cut is written
// and notified once, with the newer version, and each notification keeps its own row's source.
func TestLargeGroupNotifiesEachKeyOnceWithItsSource(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	// Long enough that the stream hands over the whole staging transaction as one batch: a batch cut inside it
	// would apply ch_1's two versions in two org transactions, two writes with a notification each.
	e.batchDelay = 2 * time.Second
	o := e.org(nil)
	in := e.integration(o, "stripe_charge_v1", "")
	subs := e.subscriptions()
	rcv := newReceiver(t)
	_, secret, err := subs.Create(ctx, o.id, subscriptions.CreateParams{URL: rcv.srv.URL + "/hook"}) // webhook rows only
	if err != nil {
		t.Fatal(err)
	}
	rcv.secret(secret)
	e.startSubscriptions(subs)

	const n = 140 // more than two statements' worth
	var bodies [][]byte
	var sources []string
	wantKeys := map[string]bool{}
	for i := range n {
		key := fmt.Sprintf("ch_%d", i)
		src := "webhook"
		if i%3 == 0 {
			src = "backfill"
		} else {
			wantKeys[key] = true
		}
		bodies = append(bodies, stripeChargeEvent("evt_"+key, key, 100, i, "pending"))
		sources = append(sources, src)
	}
	// ch_1 again, newer, at the end of the same transaction: the kept version moves every later row up one
	bodies = append(bodies, stripeChargeEvent("evt_ch_1_again", "ch_1", 200, 1000, "succeeded"))
	sources = append(sources, "webhook")
	if _, err := e.pool.Exec(ctx, `
		INSERT INTO staging.webhooks (received_at, org_id, integration_id, method, path, content_type, headers, body, accepted, source)
		SELECT clock_timestamp(), $1, $2, 'POST', '/', 'application/json', '{"Content-Type":"application/json"}', b, true, s
		FROM unnest($3::bytea[], $4::text[]) WITH ORDINALITY AS u(b, s, i) ORDER BY i`, in.OrgID, in.ID, bodies, sources); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "a notification per webhook key", func() (bool, error) {
		m, _ := rcv.got()
		return len(m) >= len(wantKeys), nil
	})
	var rows int
	var amount int64
	if err := e.orgDB(o).QueryRow(ctx, `SELECT count(*), max(amount) FILTER (WHERE stripe_id = 'ch_1') FROM stripe_charge_v1`).Scan(&rows, &amount); err != nil {
		t.Fatal(err)
	}
	if rows != n || amount != 1000 {
		t.Fatalf("%d rows, ch_1 amount %d; want %d rows and the newer ch_1 (1000)", rows, amount, n)
	}
	// Let anything extra arrive before counting.
	eventually(t, 10*time.Second, "an empty outbox", func() (bool, error) {
		var left int
		err := e.orgDB(o).QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{pgroles.MetaSchema, "notify_outbox"}.Sanitize()).Scan(&left)
		return left == 0, err
	})
	msgs, bad := rcv.got()
	if bad != 0 {
		t.Fatalf("%d messages did not verify", bad)
	}
	seen := map[string]int{}
	for _, m := range msgs {
		seen[m.payload.Data.RemoteKey]++
		if m.payload.Data.Source != "webhook" || !wantKeys[m.payload.Data.RemoteKey] {
			t.Errorf("notified %s from %s", m.payload.Data.RemoteKey, m.payload.Data.Source)
		}
		if m.payload.Data.RemoteKey == "ch_1" {
			var row map[string]any
			if err := json.Unmarshal(m.payload.Data.Row, &row); err != nil || row["amount"] != float64(1000) {
				t.Errorf("ch_1 notified as %s (%v)", m.payload.Data.Row, err)
			}
		}
	}
	for k := range wantKeys {
		if seen[k] != 1 {
			t.Errorf("%s notified %d times, want once", k, seen[k])
		}
	}
	if len(msgs) != len(wantKeys) {
		t.Errorf("%d notifications, want %d", len(msgs), len(wantKeys))
	}
}
