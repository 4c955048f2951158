package orgdb_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/internal/orgdb"
	"github.com/webhookdb-go/webhookdb/pgroles"
)

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A read-only login that turns its own timeouts off (for its session and, with ALTER ROLE CURRENT_USER, for
// its next ones) still loses a query past the org's limit and a transaction left idle past its limit, and
// gets its role settings back, at the next maintenance pass.
func TestMaintainHoldsReadOnlyLoginsToTheirLimits(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			policy := pgroles.LoginPolicy{TTL: time.Hour, MaxTTL: 2 * time.Hour, ConnectionLimit: 5, StatementTimeout: 3 * time.Second, IdleInTransactionTimeout: 4 * time.Second}
			e := newEnv(t, mode, envOptions{policy: policy})
			o := e.newOrg("limits_" + mode[:2])
			if l, err := e.svc.OrgLimits(ctx, o.ID); err != nil || l.Query != 30*time.Minute {
				t.Fatalf("default limits %+v (%v)", l, err)
			}
			if err := e.svc.SetOrgLimits(ctx, o.ID, orgdb.Limits{Query: time.Second, IdleInTransaction: time.Second}); err != nil {
				t.Fatal(err)
			}
			cred, err := e.svc.Connection(ctx, o.ID)
			if err != nil {
				t.Fatal(err)
			}
			// A fresh login is left alone.
			if res, err := e.svc.Maintain(ctx); err != nil || res.Reset != 0 || res.Terminated != 0 {
				t.Fatalf("first pass: %+v %v", res, err)
			}

			sleeper := connectURL(t, cred.URL)
			if _, err := sleeper.Exec(ctx, `SET default_transaction_read_only = off`); err != nil {
				t.Fatal(err)
			}
			if _, err := sleeper.Exec(ctx, `ALTER ROLE CURRENT_USER SET statement_timeout = 0`); err != nil {
				t.Fatal(err)
			}
			if _, err := sleeper.Exec(ctx, `ALTER ROLE CURRENT_USER IN DATABASE `+pgx.Identifier{*o.DatabaseName}.Sanitize()+` SET idle_in_transaction_session_timeout = 0`); err != nil {
				t.Logf("per-database setting refused (%v)", err)
			}
			if _, err := sleeper.Exec(ctx, `SET statement_timeout = 0`); err != nil {
				t.Fatal(err)
			}
			idler := connectURL(t, cred.URL)
			if _, err := idler.Exec(ctx, `SET idle_in_transaction_session_timeout = 0; BEGIN; SELECT 1`); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				_, err := sleeper.Exec(ctx, `SELECT pg_sleep(120)`)
				done <- err
			}()
			admin, err := e.clusterOf(o).Connect(ctx, "postgres")
			if err != nil {
				t.Fatal(err)
			}
			defer admin.Close(ctx)
			// Both sessions are past their limit (one second) before the pass runs.
			waitFor(t, "the query and the open transaction to pass their limits", 10*time.Second, func() bool {
				var n int
				if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE usename = $1
					AND ((state = 'active' AND query_start < now() - interval '1.2 s') OR (state = 'idle in transaction' AND state_change < now() - interval '1.2 s'))`,
					cred.Username).Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n == 2
			})
			res, err := e.svc.Maintain(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if res.Terminated != 2 || res.Reset != 1 {
				t.Fatalf("pass: %+v, want 2 sessions terminated and 1 login reset", res)
			}
			select {
			case err := <-done:
				if err == nil {
					t.Fatal("pg_sleep(120) completed")
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the query past the limit still runs")
			}
			if _, err := idler.Exec(ctx, `SELECT 1`); err == nil {
				t.Fatal("the transaction left idle past the limit is still open")
			}
			// The next session has webhookdb's settings again.
			fresh := connectURL(t, cred.URL)
			var st, idle string
			if err := fresh.QueryRow(ctx, `SELECT current_setting('statement_timeout'), current_setting('idle_in_transaction_session_timeout')`).Scan(&st, &idle); err != nil || st != "3s" || idle != "4s" {
				t.Fatalf("settings of a new session: %q %q (%v)", st, idle, err)
			}
			// A short query of a well-behaved session is left alone.
			if _, err := fresh.Exec(ctx, `SELECT pg_sleep(0.1)`); err != nil {
				t.Fatal(err)
			}
			if res, err := e.svc.Maintain(ctx); err != nil || res.Reset != 0 || res.Terminated != 0 {
				t.Fatalf("last pass: %+v %v", res, err)
			}
			var n int
			if err := fresh.QueryRow(ctx, `SELECT 1`).Scan(&n); err != nil {
				t.Fatal(err)
			}
		})
	}
}
