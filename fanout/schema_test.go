package fanout_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/internal/replicator"
	"github.com/webhookdb-go/webhookdb/pgroles"
)

// Each process takes the org's tables as they are and repairs what is missing only when it finds it missing:
// a dropped table or column fails the transaction, which ensures the schema and runs again, and a dropped
// index is found in the catalog by the first transaction and created after it.
func TestFanoutRepairsAMissingTableColumnOrIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	o := e.org(nil)
	charges := e.integration(o, "stripe_charge_v1", "")
	_, stop := e.start(e.config())
	db := e.orgDB(o)
	e.stage(staged{in: charges, body: stripeChargeEvent("evt_s1", "ch_s1", 1710504001, 100, "pending")})
	eventually(t, 10*time.Second, "the first row", func() (bool, error) {
		var n int
		err := db.QueryRow(ctx, `SELECT count(*) FROM stripe_charge_v1`).Scan(&n)
		return n == 1, err
	})
	stop()

	var indexes []string
	if err := db.QueryRow(ctx, `SELECT array_agg(indexname::text ORDER BY indexname) FROM pg_indexes WHERE tablename = 'stripe_charge_v1' AND indexname LIKE '%\_idx'`).Scan(&indexes); err != nil || len(indexes) == 0 {
		t.Fatalf("indexes of stripe_charge_v1: %v, %v", indexes, err)
	}
	if _, err := db.Exec(ctx, `DROP INDEX `+indexes[0]+`; ALTER TABLE stripe_charge_v1 DROP COLUMN status`); err != nil {
		t.Fatal(err)
	}
	_, stop = e.start(e.config())
	e.stage(staged{in: charges, body: stripeChargeEvent("evt_s2", "ch_s2", 1710504002, 200, "succeeded")})
	eventually(t, 10*time.Second, "the second row, with the dropped column back and filled", func() (bool, error) {
		var n int
		err := db.QueryRow(ctx, `SELECT count(*) FROM stripe_charge_v1 WHERE status IS NOT NULL`).Scan(&n)
		return n == 2, err
	})
	eventually(t, 10*time.Second, "the dropped index created again", func() (bool, error) {
		var n int
		err := db.QueryRow(ctx, `SELECT count(*) FROM pg_indexes WHERE indexname = $1`, indexes[0]).Scan(&n)
		return n == 1, err
	})
	stop()

	// A table dropped outright (by an operator) comes back with the next row.
	if _, err := db.Exec(ctx, `DROP TABLE stripe_charge_v1`); err != nil {
		t.Fatal(err)
	}
	_, stop = e.start(e.config())
	defer stop()
	e.stage(staged{in: charges, body: stripeChargeEvent("evt_s3", "ch_s3", 1710504003, 300, "succeeded")})
	eventually(t, 10*time.Second, "the table created again with the new row", func() (bool, error) {
		var n int
		err := db.QueryRow(ctx, `SELECT count(*) FROM stripe_charge_v1 WHERE stripe_id = 'ch_s3'`).Scan(&n)
		return n == 1, err
	})
}

// An org as provisioning leaves it, with its integration's table made, takes its first transaction without
// any DDL (a backend's first DDL in a database costs most of a cold org's time); an org provisioned before
// provisioning made the applied table gets it from the fanout.
func TestFirstTransactionOfAProvisionedOrgRunsNoDDL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	o := e.org(nil)
	charges := e.integration(o, "stripe_charge_v1", "")
	db := e.orgDB(o)
	svc, _ := replicator.Lookup("stripe_charge_v1")
	// The integration's table, as creating an integration makes it (internal/app), then a log of every DDL
	// command that starts in the database from now on.
	stmts := append([]string{"SET ROLE " + pgx.Identifier{pgroles.OwnerRole(o.key)}.Sanitize()}, svc.EnsureTableSQL("public", charges.TableName)...)
	stmts = append(stmts, "RESET ROLE",
		`CREATE SCHEMA ddl_audit`,
		`CREATE TABLE ddl_audit.log (tag text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())`,
		`CREATE FUNCTION ddl_audit.record() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
		BEGIN INSERT INTO ddl_audit.log (tag) VALUES (tg_tag); END $$`,
		`GRANT USAGE ON SCHEMA ddl_audit TO PUBLIC`,
		`CREATE EVENT TRIGGER ddl_audit ON ddl_command_start EXECUTE FUNCTION ddl_audit.record()`)
	for _, s := range stmts {
		if _, err := db.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	ddl := func() []string {
		t.Helper()
		var tags []string
		if err := db.QueryRow(ctx, `SELECT coalesce(array_agg(tag ORDER BY at), '{}') FROM ddl_audit.log`).Scan(&tags); err != nil {
			t.Fatal(err)
		}
		return tags
	}
	rows := func(want int) func() (bool, error) {
		return func() (bool, error) {
			var n int
			err := db.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{charges.TableName}.Sanitize()).Scan(&n)
			return n == want, err
		}
	}

	_, stop := e.start(e.config())
	e.stage(staged{in: charges, body: stripeChargeEvent("evt_n1", "ch_n1", 1710504001, 100, "pending")})
	eventually(t, 10*time.Second, "the first row", rows(1))
	stop()
	if tags := ddl(); len(tags) != 0 {
		t.Fatalf("the first transaction of a provisioned org ran DDL: %v", tags)
	}

	// An org from before: no applied table. The next process creates it and applies the row.
	if _, err := db.Exec(ctx, `DROP TABLE `+pgx.Identifier{pgroles.MetaSchema, pgroles.AppliedTable}.Sanitize()+`; TRUNCATE ddl_audit.log`); err != nil {
		t.Fatal(err)
	}
	_, stop = e.start(e.config())
	defer stop()
	e.stage(staged{in: charges, body: stripeChargeEvent("evt_n2", "ch_n2", 1710504002, 200, "succeeded")})
	eventually(t, 10*time.Second, "the second row", rows(2))
	if tags := ddl(); !slices.Equal(tags, []string{"CREATE TABLE"}) {
		t.Fatalf("an org without the applied table: DDL %v, want only its CREATE TABLE", tags)
	}
	var lsn string
	if err := db.QueryRow(ctx, `SELECT commit_lsn::text FROM `+pgx.Identifier{pgroles.MetaSchema, pgroles.AppliedTable}.Sanitize()).Scan(&lsn); err != nil || lsn == "0/0" {
		t.Fatalf("applied position %q, %v", lsn, err)
	}
}
