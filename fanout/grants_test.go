package fanout_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/pgroles"
)

// The fanout's own login writes rows with the grants provisioning gave it in the org database, not through
// the owner role (assuming a role costs a new backend a lookup of every role its login belongs to). It still
// creates tables as the owner. A database provisioned before those grants existed gets its rows through the
// privileges its login inherits from the owner role, at that lookup's cost, until the grants are repaired.
func TestFanoutWritesWithItsOwnGrants(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	o, in, orgServer, waitRows := e.writerOrg()
	db := e.orgDB(o)
	admin, err := pgx.Connect(ctx, orgServer.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	// Its open connections would keep their session: end them, so the next transaction logs in again.
	reconnect := func() {
		t.Helper()
		if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1`, pgroles.FanoutRole); err != nil {
			t.Fatal(err)
		}
	}
	owner := pgx.Identifier{pgroles.OwnerRole(o.key)}.Sanitize()
	fanoutRole := pgx.Identifier{pgroles.FanoutRole}.Sanitize()

	e.stage(staged{in: in, body: []byte(`{"id":"first"}`)})
	waitRows("the first row", 1)
	var tableOwner string
	if err := db.QueryRow(ctx, `SELECT tableowner FROM pg_tables WHERE schemaname = 'public' AND tablename = 'json_v1'`).Scan(&tableOwner); err != nil {
		t.Fatal(err)
	}
	if tableOwner != pgroles.OwnerRole(o.key) {
		t.Fatalf("the fanout created json_v1 as %s, want the owner role", tableOwner)
	}

	// Without the owner role, rows still arrive: the login's own grants carry them.
	if _, err := admin.Exec(ctx, "REVOKE "+owner+" FROM "+fanoutRole); err != nil {
		t.Fatal(err)
	}
	reconnect()
	e.stage(staged{in: in, body: []byte(`{"id":"second"}`)})
	waitRows("a row written without the owner role", 2)

	// A database whose grants predate the fanout's own: the owner role's privileges carry them.
	if _, err := admin.Exec(ctx, "GRANT "+owner+" TO "+fanoutRole); err != nil {
		t.Fatal(err)
	}
	for _, schema := range []string{"public", pgroles.MetaSchema} {
		if _, err := db.Exec(ctx, fmt.Sprintf("REVOKE ALL ON ALL TABLES IN SCHEMA %s FROM %s", pgx.Identifier{schema}.Sanitize(), fanoutRole)); err != nil {
			t.Fatal(err)
		}
	}
	reconnect()
	e.stage(staged{in: in, body: []byte(`{"id":"third"}`)})
	waitRows("a row written where the login has no grants", 3)
}
