package orgdb_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/webhookdb-go/webhookdb/internal/pgcluster"
	"github.com/webhookdb-go/webhookdb/internal/pgtest"
	"github.com/webhookdb-go/webhookdb/pgroles"
)

// On a shared server the read-only logins' CONNECTION LIMITs add up to at most max_connections minus
// superuser_reserved_connections minus the reserve, in both modes: a login gets what is left when that is
// under the policy's limit, and issuing fails once nothing is left, so no tenant can take the server's last
// connections.
func TestReadOnlyLoginsShareTheServersConnections(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			c := pgtest.NewCluster(t) // its own server: the budget is server-wide
			admin, err := c.Connect(ctx, "postgres")
			if err != nil {
				t.Fatal(err)
			}
			defer admin.Close(ctx)
			var maxConns, superReserved int
			if err := admin.QueryRow(ctx, `SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int`).Scan(&maxConns, &superReserved); err != nil {
				t.Fatal(err)
			}
			// A budget of 5 for read-only logins, 3 per login at most.
			policy := pgroles.LoginPolicy{TTL: time.Hour, MaxTTL: 2 * time.Hour, ConnectionLimit: 3, ReservedConnections: maxConns - superReserved - 5}
			e := newEnv(t, mode, envOptions{policy: policy, clusters: []*pgcluster.Cluster{c}})
			p := "conn_" + mode[:2]
			a, b, d := e.newOrg(p+"_a"), e.newOrg(p+"_b"), e.newOrg(p+"_d")
			limitOf := func(username string) int {
				t.Helper()
				var n int
				if err := admin.QueryRow(ctx, `SELECT rolconnlimit FROM pg_roles WHERE rolname = $1`, username).Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n
			}
			ca, err := e.svc.Connection(ctx, a.ID)
			if err != nil {
				t.Fatal(err)
			}
			cb, err := e.svc.Connection(ctx, b.ID)
			if err != nil {
				t.Fatal(err)
			}
			if la, lb := limitOf(ca.Username), limitOf(cb.Username); la != 3 || lb != 2 {
				t.Fatalf("connection limits %d and %d, want 3 and then what is left, 2", la, lb)
			}
			if _, err := e.svc.Connection(ctx, d.ID); err == nil || !strings.Contains(err.Error(), pgroles.NoConnectionsLeftMessage) {
				t.Fatalf("a login past the budget: %v", err)
			}
			// Once b's login is gone, its connections are free again.
			if err := e.svc.DeleteOrg(ctx, b.ID); err != nil {
				t.Fatal(err)
			}
			cd, err := e.svc.Connection(ctx, d.ID)
			if err != nil {
				t.Fatal(err)
			}
			if ld := limitOf(cd.Username); ld != 2 {
				t.Fatalf("connection limit %d, want 2", ld)
			}
			var total int
			if err := admin.QueryRow(ctx, `SELECT sum(rolconnlimit) FROM pg_roles u WHERE rolcanlogin AND EXISTS (
				SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = u.oid AND g.rolname LIKE $1)
				AND rolname NOT IN ($2, $3)`, pgroles.ReadonlyGroupLike, pgroles.VaultRole, pgroles.FanoutRole).Scan(&total); err != nil || total > 5 {
				t.Fatalf("read-only logins may hold %d connections (%v), budget 5", total, err)
			}
		})
	}
}
