package migrate_test

import (
	"context"
	"testing"

	"github.com/webhookdb-go/webhookdb/internal/migrate"
	"github.com/webhookdb-go/webhookdb/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestUpAppliesAndReapplies(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.NewEmptyDBURL(t, pgtest.Cluster(t))

	first, err := migrate.Up(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Applied) == 0 || first.Current != first.Applied[len(first.Applied)-1] {
		t.Fatalf("first run: %+v", first)
	}
	second, err := migrate.Up(ctx, url, nil)
	if err != nil {
		t.Fatalf("second run: %v", err)
	}
	if len(second.Applied) != 0 || second.Current != first.Current {
		t.Fatalf("second run should be a no-op: %+v", second)
	}
}

func TestSchemaShape(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	var parts int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM pg_inherits WHERE inhparent = 'staging.webhooks'::regclass`).Scan(&parts); err != nil {
		t.Fatal(err)
	}
	if parts < 7 {
		t.Fatalf("staging.webhooks has %d partitions, want a week ahead", parts)
	}
	var viaRoot bool
	var filter *string
	err := db.QueryRow(ctx, `SELECT p.pubviaroot, pg_get_expr(r.prqual, r.prrelid) FROM pg_publication p JOIN pg_publication_rel r ON r.prpubid = p.oid WHERE p.pubname = 'webhookdb_staging'`).Scan(&viaRoot, &filter)
	if err != nil {
		t.Fatal(err)
	}
	if !viaRoot || filter == nil || *filter != "accepted" {
		t.Fatalf("publication: via root %v, filter %v", viaRoot, filter)
	}
	// the partition for "today" takes a row.
	if _, err := db.Exec(ctx, `INSERT INTO staging.webhooks (received_at, org_id, integration_id, method, path, headers, body, accepted) VALUES (now(), 1, 1, 'POST', '/', '{}', '\x00', true)`); err != nil {
		t.Fatal(err)
	}
}
