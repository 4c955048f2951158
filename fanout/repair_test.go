package fanout_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// A rotation of the fanout's password cut short (ALTER ROLE done, the store not) leaves the server with a
// password no process holds. The fanout's next login fails with 28P01, it has the stored password set on
// the server again, and the org's changes arrive without waiting for the next rotation.
func TestFanoutRepairsItsLoginAfterACutRotation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	_, in, orgServer, waitRows := e.writerOrg()
	rotatedAt := func() time.Time {
		t.Helper()
		var at time.Time
		if err := e.pool.QueryRow(ctx, `SELECT rotated_at FROM server_writer_credentials`).Scan(&at); err != nil {
			t.Fatal(err)
		}
		return at
	}
	e.stage(staged{in: in, body: []byte(`{"id":"before"}`)})
	waitRows("the first row", 1)
	before := rotatedAt()

	admin, err := pgx.Connect(ctx, orgServer.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, `ALTER ROLE webhookdb_fanout PASSWORD 'set-by-a-rotation-that-never-stored-it'`); err != nil {
		t.Fatal(err)
	}
	// Its open connection would keep working across the change: end it, so the next transaction logs in.
	if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'webhookdb_fanout'`); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		e.stage(staged{in: in, body: fmt.Appendf(nil, `{"id":"after%d"}`, i)})
	}
	waitRows("the rows staged after the cut rotation", 6)
	if after := rotatedAt(); !after.Equal(before) {
		t.Fatalf("the fanout rotated its password (%s -> %s) instead of setting the stored one again", before, after)
	}
}
