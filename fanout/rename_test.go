package fanout_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/pgroles"
)

// An org moved from key-based names to opaque ones while the fanout runs (rename-org-databases) keeps getting
// its rows: the fanout's sessions in the old database are terminated, and it finds the org under its new
// database and owner role.
func TestFanoutFollowsAnOrgRenamedToOpaqueNames(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	o := e.org(nil)
	in := e.integration(o, "json_v1", `{"remote_key_path":"id"}`)
	_, stop := e.start(e.config())
	defer stop()
	e.stage(staged{in: in, body: []byte(`{"id":"before"}`)})
	old := e.orgDB(o)
	eventually(t, 10*time.Second, "the row before the rename", func() (bool, error) {
		var n int
		err := old.QueryRow(ctx, `SELECT count(*) FROM json_v1 WHERE remote_key = 'before'`).Scan(&n)
		return n == 1, err
	})
	_ = old.Close(ctx) // the rename would terminate it anyway

	base := pgroles.NewNameBase()
	admin := o.cluster.URL("postgres")
	t.Cleanup(func() { _ = pgroles.DropOrg(context.Background(), admin, base) })
	if err := pgroles.RenameOrg(ctx, admin, o.key, base); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(ctx, `UPDATE organizations SET name_base = $2, database_name = $3 WHERE id = $1`, o.id, base, pgroles.DatabaseName(base)); err != nil {
		t.Fatal(err)
	}
	e.stage(staged{in: in, body: []byte(`{"id":"after"}`)})
	renamed, err := pgx.Connect(ctx, o.cluster.URL(pgroles.DatabaseName(base)))
	if err != nil {
		t.Fatal(err)
	}
	defer renamed.Close(ctx)
	eventually(t, 30*time.Second, "the row after the rename, in the renamed database", func() (bool, error) {
		var n int
		err := renamed.QueryRow(ctx, `SELECT count(*) FROM json_v1`).Scan(&n)
		return n == 2, err
	})
}
