package fanout_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/internal/staging"
)

// A backfilled Stripe object (a bare API object, versioned by its fetch time) and the webhooks about it: a
// webhook newer than the fetch wins in both orders, an older one loses in both orders.
func TestBackfilledObjectAgainstWebhooks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	o := e.org(nil)
	in := e.integration(o, "stripe_charge_v1", "")
	_, _ = e.start(e.config())
	db := e.orgDB(o)

	fetched := time.Now().Truncate(time.Second)
	backfilled := func(chargeID string) {
		t.Helper()
		body := fmt.Sprintf(`{"id":%q,"object":"charge","amount":100,"currency":"usd","status":"succeeded","created":1700000000,"paid":true}`, chargeID)
		err := staging.Insert(ctx, e.pool, []staging.Row{{ReceivedAt: fetched, OrgID: in.OrgID, IntegrationID: in.ID, Method: "GET",
			Path: "/v1/charges", ContentType: "application/json", Headers: []byte("{}"), Body: []byte(body), Accepted: true,
			Source: staging.SourceBackfill, BackfillJobID: 1}})
		if err != nil {
			t.Fatal(err)
		}
	}
	webhook := func(chargeID string, offset time.Duration, amount int) {
		e.stage(staged{in: in, body: stripeChargeEvent("evt_"+chargeID+fmt.Sprint(amount), chargeID, fetched.Add(offset).Unix(), amount, "succeeded")})
	}
	// barrier waits until everything staged so far is applied: the org's changes apply in order.
	barrier := func(name string) {
		t.Helper()
		webhook(name, 0, 1)
		amountIs(t, db, name, 1)
	}

	backfilled("ch_bf_then_newer")
	webhook("ch_newer_then_bf", time.Minute, 300)
	backfilled("ch_bf_then_older")
	webhook("ch_older_then_bf", -time.Minute, 400)
	barrier("ch_barrier_1")
	webhook("ch_bf_then_newer", time.Minute, 200)
	backfilled("ch_newer_then_bf")
	webhook("ch_bf_then_older", -time.Minute, 500)
	backfilled("ch_older_then_bf")
	// A replay of a backfilled row is still an API object (its job id says so), not a webhook.
	replayed := fmt.Sprintf(`{"id":%q,"object":"charge","amount":700,"currency":"usd"}`, "ch_replayed")
	if err := staging.Insert(ctx, e.pool, []staging.Row{{ReceivedAt: fetched, OrgID: in.OrgID, IntegrationID: in.ID, Method: "GET",
		Path: "/v1/charges", ContentType: "application/json", Headers: []byte("{}"), Body: []byte(replayed), Accepted: true,
		Source: staging.SourceReplay, BackfillJobID: 1, ReplayOf: 1, OriginalReceivedAt: fetched}}); err != nil {
		t.Fatal(err)
	}
	// An object the replicator cannot read (no id) is a failed change, as a webhook would be, keeping its source.
	if err := staging.Insert(ctx, e.pool, []staging.Row{{ReceivedAt: fetched, OrgID: in.OrgID, IntegrationID: in.ID, Method: "GET",
		Path: "/v1/charges", ContentType: "application/json", Headers: []byte("{}"), Body: []byte(`{"object":"charge","amount":1}`),
		Accepted: true, Source: staging.SourceBackfill, BackfillJobID: 1}}); err != nil {
		t.Fatal(err)
	}
	barrier("ch_barrier_2")
	amountIs(t, db, "ch_replayed", 700)
	eventually(t, 30*time.Second, "the unreadable object among failed changes", func() (bool, error) {
		var n int
		err := e.pool.QueryRow(ctx, `SELECT count(*) FROM fanout.failed_changes WHERE org_id = $1 AND source = 'backfill' AND backfill_job_id = 1`, in.OrgID).Scan(&n)
		return n == 1, err
	})

	for id, want := range map[string]int64{"ch_bf_then_newer": 200, "ch_newer_then_bf": 300, "ch_bf_then_older": 100, "ch_older_then_bf": 100} {
		amountIs(t, db, id, want)
	}
	var updated time.Time
	if err := db.QueryRow(ctx, `SELECT updated FROM stripe_charge_v1 WHERE stripe_id = 'ch_older_then_bf'`).Scan(&updated); err != nil || !updated.Equal(fetched) {
		t.Fatalf("a backfilled row's version: %v, %v; want the fetch time %v", updated, err, fetched)
	}
}

// amountIs waits for a charge's row to hold amount.
func amountIs(t *testing.T, db *pgx.Conn, id string, want int64) {
	t.Helper()
	eventually(t, 30*time.Second, "charge "+id+" at "+fmt.Sprint(want), func() (bool, error) {
		var amount int64
		err := db.QueryRow(context.Background(), `SELECT amount FROM stripe_charge_v1 WHERE stripe_id = $1`, id).Scan(&amount)
		if errors.Is(err, pgx.ErrNoRows) {
			return false, nil
		}
		return amount == want, err
	})
}
