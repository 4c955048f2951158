package pgcluster_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/webhookdb-go/webhookdb/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestClusterLogicalReplication(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := pgtest.Cluster(t)
	conn, err := pgx.Connect(ctx, pgtest.NewEmptyDBURL(t, c))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	var walLevel string
	if err := conn.QueryRow(ctx, "SHOW wal_level").Scan(&walLevel); err != nil {
		t.Fatal(err)
	}
	if walLevel != "logical" {
		t.Fatalf("wal_level = %q, want logical", walLevel)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot('pgtest_slot', 'pgoutput')"); err != nil {
		t.Fatalf("creating a logical slot: %v", err)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pgtest_slot' AND slot_type = 'logical'").Scan(&n); err != nil || n != 1 {
		t.Fatalf("slot not listed: n=%d err=%v", n, err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot('pgtest_slot')"); err != nil {
		t.Fatalf("dropping the slot: %v", err)
	}
}

func TestClusterPasswordAuth(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := pgtest.Cluster(t)

	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		t.Fatalf("superuser over TCP with its password: %v", err)
	}
	var method string
	err = conn.QueryRow(ctx, "SELECT auth_method FROM pg_hba_file_rules WHERE type = 'host' AND 'all' = ANY(database) LIMIT 1").Scan(&method)
	conn.Close(ctx)
	if err != nil || method != "scram-sha-256" {
		t.Fatalf("TCP auth method = %q (err %v), want scram-sha-256", method, err)
	}

	_, err = pgx.Connect(ctx, c.URLFor("postgres", "wrong-password", "postgres"))
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
		t.Fatalf("wrong password: got %v, want invalid_password (28P01)", err)
	}
}

func TestTwoClustersSideBySide(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a := pgtest.Cluster(t)
	b := pgtest.NewCluster(t)
	if a.Port == b.Port || a.Dir == b.Dir {
		t.Fatalf("clusters share port or dir: %d/%d %s/%s", a.Port, b.Port, a.Dir, b.Dir)
	}
	var sysA, sysB string
	for _, x := range []struct {
		url string
		out *string
	}{{a.URL("postgres"), &sysA}, {b.URL("postgres"), &sysB}} {
		conn, err := pgx.Connect(ctx, x.url)
		if err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRow(ctx, "SELECT system_identifier::text FROM pg_control_system()").Scan(x.out); err != nil {
			t.Fatal(err)
		}
		conn.Close(ctx)
	}
	if sysA == sysB {
		t.Fatalf("both URLs reach the same cluster (system id %s)", sysA)
	}

	// A stopped cluster restarts on its port with its data.
	conn, err := pgx.Connect(ctx, b.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if err := b.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err = pgx.Connect(ctx, b.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var x int
	if err := conn.QueryRow(ctx, "SELECT x FROM kept").Scan(&x); err != nil || x != 42 {
		t.Fatalf("data after restart: x=%d err=%v", x, err)
	}
}

// WarmWAL leaves segments ahead of the insert position for commits to write into, instead of creating them.
func TestWarmWALRecyclesSegmentsAhead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := pgtest.NewDurableCluster(t) // its own: the checkpoint and the switches are cluster-wide
	ahead := func() int {
		t.Helper()
		conn, err := c.Connect(ctx, "postgres")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_ls_waldir()
			WHERE name ~ '^[0-9A-F]{24}$' AND name > pg_walfile_name(pg_current_wal_lsn())`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := ahead()
	// min_wal_size is 80 MB by default: five segments may be kept.
	if err := c.WarmWAL(ctx, 4); err != nil {
		t.Fatal(err)
	}
	if after := ahead(); after < 3 || after <= before {
		t.Fatalf("%d WAL segments ahead of the insert position after WarmWAL(4), %d before; want at least 3", after, before)
	}
}
