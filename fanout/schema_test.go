package fanout_test

import (
	"context"
	"testing"
	"time"
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
