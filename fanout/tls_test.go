package fanout_test

import (
	"context"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/webhookdb-go/webhookdb/internal/integrations"
	"github.com/webhookdb-go/webhookdb/internal/pgtest"
)

// An admin URL without sslmode means pgx's prefer: a connection that asks for TLS, then, refused, another
// without it. Against a server without TLS the fanout learns that from its first connection and dials the
// next ones plainly: one connection a visit, not two.
func TestServerWithoutTLSIsDialledOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	proxy := pgtest.NewProxy(t, "127.0.0.1:0", e.cluster.Port)
	u, err := url.Parse(e.cluster.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	u.Host, u.RawQuery = proxy.Addr, "" // no sslmode: prefer
	server := e.serverAt(u.String(), e.cluster.Port)
	const orgs = 3
	var staged []staged
	dbs := make([]*org, orgs)
	for i := range dbs {
		dbs[i] = e.orgOn(e.cluster, server)
		in := e.integration(dbs[i], "stripe_charge_v1", "")
		staged = append(staged, stagedCharge(in, i))
	}
	reg, _ := e.start(e.config())
	// one org first, so its connection has found the server without TLS before the others dial
	e.stage(staged[0])
	e.waitCharges(dbs[:1], 1)
	e.stage(staged[1:]...)
	for i, o := range dbs[1:] {
		db := e.orgDB(o)
		eventually(t, 30*time.Second, "org "+strconv.Itoa(i+1)+"'s charge", func() (bool, error) {
			var n int
			err := db.QueryRow(ctx, `SELECT count(*) FROM stripe_charge_v1`).Scan(&n)
			return n == 1, err
		})
	}
	connects := int64(metric(t, reg, "webhookdb_fanout_org_connects_total", nil))
	dials := proxy.Accepted()
	t.Logf("%d org connections, %d dials", connects, dials)
	if connects < orgs {
		t.Fatalf("%d org connections for %d orgs", connects, orgs)
	}
	// the first connection's TLS request is the only extra dial
	if dials != connects+1 {
		t.Fatalf("%d dials for %d org connections, want %d", dials, connects, connects+1)
	}
}

func stagedCharge(in *integrations.Integration, i int) staged {
	return staged{in: in, body: stripeChargeEvent("evt_tls_"+strconv.Itoa(i), "ch_tls_"+strconv.Itoa(i), 1710000000, 100+i, "succeeded")}
}
