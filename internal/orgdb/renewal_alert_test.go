package orgdb_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/webhookdb-go/webhookdb/internal/orgdb"
	"github.com/webhookdb-go/webhookdb/pgroles"
)

// failingRenewals is an issuer whose renewals fail (Vault refusing them, say).
type failingRenewals struct{ orgdb.Issuer }

func (failingRenewals) Renew(context.Context, orgdb.Server, string, orgdb.Lease) (time.Time, error) {
	return time.Time{}, errors.New("permission denied renewing the lease")
}

type renewalAlerts struct {
	mu    sync.Mutex
	calls map[int64][]string
}

func (r *renewalAlerts) RenewalFailed(_ context.Context, orgID int64, username string, _ error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls[orgID] = append(r.calls[orgID], username)
}

// Credentials the maintenance pass cannot renew are reported to the renewal alert (issue 14: the org is told).
func TestMaintainReportsRenewalFailures(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, orgdb.ModePostgres, envOptions{policy: pgroles.LoginPolicy{TTL: 6 * time.Second, MaxTTL: time.Minute}, renewBefore: 5,
		wrapIssuer: func(i orgdb.Issuer) orgdb.Issuer { return failingRenewals{i} }})
	alerts := &renewalAlerts{calls: map[int64][]string{}}
	e.svc.SetRenewalAlert(alerts)
	o := e.newOrg("renewal_alert")
	cred, err := e.svc.Connection(ctx, o.ID)
	if err != nil {
		t.Fatal(err)
	}
	// Passes until the credentials are within RenewBefore of their expiry (a second after issue).
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := e.svc.Maintain(ctx)
		alerts.mu.Lock()
		got := append([]string(nil), alerts.calls[o.ID]...)
		alerts.mu.Unlock()
		if len(got) > 0 {
			if got[0] != cred.Username || err == nil {
				t.Fatalf("renewal alerts %v (pass error %v), want one for %s and an error", got, err, cred.Username)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no renewal alert for org %d (%v)", o.ID, alerts.calls)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
