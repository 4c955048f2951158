package fanout_test

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/webhookdb-go/webhookdb/internal/staging"
)

// A replayed copy is stored with a fresh received_at (so upkeep keeps it until it is read), but replicators
// read when the delivery first arrived: Twilio's date_updated is the receive time, so an old callback replayed
// today must not overwrite a newer status.
func TestReplayedTwilioCallbackKeepsItsOriginalTime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	o := e.org(nil)
	in := e.integration(o, "twilio_sms_v1", "")
	_, _ = e.start(e.config())
	db := e.orgDB(o)

	callback := func(status string) []byte {
		return []byte(url.Values{"MessageSid": {"SM_replay"}, "SmsSid": {"SM_replay"}, "MessageStatus": {status}, "SmsStatus": {status},
			"AccountSid": {"AC1"}, "From": {"+15035550199"}, "To": {"+15035550142"}}.Encode())
	}
	t0 := time.Now().UTC().Add(-time.Hour)
	form := []byte(`{"Content-Type":"application/x-www-form-urlencoded"}`)
	rows := []staging.Row{
		{ReceivedAt: t0, OrgID: o.id, IntegrationID: in.ID, Method: "POST", Path: "/", ContentType: "application/x-www-form-urlencoded", Headers: form, Body: callback("sent"), Accepted: true},
		{ReceivedAt: t0.Add(time.Minute), OrgID: o.id, IntegrationID: in.ID, Method: "POST", Path: "/", ContentType: "application/x-www-form-urlencoded", Headers: form, Body: callback("delivered"), Accepted: true},
	}
	for _, r := range rows { // two transactions, in order
		if err := staging.Insert(ctx, e.pool, []staging.Row{r}); err != nil {
			t.Fatal(err)
		}
	}
	status := func() (string, error) {
		var s string
		err := db.QueryRow(ctx, `SELECT status FROM twilio_sms_v1 WHERE twilio_id = 'SM_replay'`).Scan(&s)
		return s, err
	}
	eventually(t, 10*time.Second, "the delivered status", func() (bool, error) {
		s, err := status()
		return s == "delivered", err
	})
	// Replay only the older callback (the window holds it alone): its copy is received now.
	n, err := staging.Replay(ctx, e.pool, staging.Window{OrgID: o.id, IntegrationIDs: []int64{in.ID}, Since: t0, Until: t0.Add(time.Second)})
	if err != nil || n != 1 {
		t.Fatalf("replayed %d, %v", n, err)
	}
	var copyApplied bool
	eventually(t, 10*time.Second, "the replayed copy to be read", func() (bool, error) {
		err := e.pool.QueryRow(ctx, `SELECT s.confirmed_flush_lsn >= pg_current_wal_lsn() - 0 OR EXISTS (SELECT 1)
			FROM pg_replication_slots s WHERE s.slot_name = $1`, e.slot).Scan(&copyApplied)
		return copyApplied, err
	})
	// A marker after the copy: once it is applied, so is the copy.
	marker := rows[0]
	marker.ReceivedAt, marker.Body = time.Now(), []byte(url.Values{"MessageSid": {"SM_marker"}, "MessageStatus": {"sent"}, "AccountSid": {"AC1"}}.Encode())
	if err := staging.Insert(ctx, e.pool, []staging.Row{marker}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the marker", func() (bool, error) {
		var n int
		err := db.QueryRow(ctx, `SELECT count(*) FROM twilio_sms_v1 WHERE twilio_id = 'SM_marker'`).Scan(&n)
		return n == 1, err
	})
	if s, err := status(); err != nil || s != "delivered" {
		t.Fatalf("a replayed older callback overwrote the newer status: %q, %v", s, err)
	}
	var updated time.Time
	if err := db.QueryRow(ctx, `SELECT date_updated FROM twilio_sms_v1 WHERE twilio_id = 'SM_replay'`).Scan(&updated); err != nil || !updated.Equal(t0.Add(time.Minute).Truncate(time.Microsecond)) {
		t.Fatalf("date_updated %s (%v), want the newer callback's receive time %s", updated, err, t0.Add(time.Minute))
	}
}
