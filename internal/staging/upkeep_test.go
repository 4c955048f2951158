package staging_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/webhookdb-go/webhookdb/internal/pgtest"
	"github.com/webhookdb-go/webhookdb/internal/staging"
)

func TestUpkeepCreatesAheadAndDropsOnlyWhatFanoutPassed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewDB(t)
	slot := slotName(t, pool, "upkeep")

	// An old day with a row in it, as if it had been received 10 days ago.
	old := time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -10)
	if _, err := pool.Exec(ctx, `SELECT staging.ensure_partitions($1::date, 1)`, old); err != nil {
		t.Fatal(err)
	}
	oldPart := "webhooks_" + old.Format("20060102")
	if _, err := pool.Exec(ctx, `INSERT INTO staging.webhooks (received_at, org_id, integration_id, method, path, headers, body, accepted) VALUES ($1, 1, 1, 'POST', '/', '{}', '', true)`, old.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}

	up := staging.NewUpkeep(pool, staging.UpkeepConfig{DaysAhead: 10, Slot: slot})
	res, err := up.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ahead := time.Now().UTC().AddDate(0, 0, 10).Format("20060102")
	var exists bool
	if err := pool.QueryRow(ctx, `SELECT to_regclass('staging.webhooks_' || $1) IS NOT NULL`, ahead).Scan(&exists); err != nil || !exists {
		t.Fatalf("partition 10 days ahead missing (created %d): %v", res.Created, err)
	}
	if len(res.Dropped) != 0 || !slices.Contains(res.Kept, oldPart) {
		t.Fatalf("without a fanout slot the old partition must be kept: %+v", res)
	}

	// Once the fanout's slot has confirmed a position past the partition's closing, it goes.
	if _, err := pool.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot); err != nil {
		t.Fatal(err)
	}
	res, err = up.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(res.Dropped, oldPart) {
		t.Fatalf("old partition not dropped after the slot passed it: %+v", res)
	}
	if err := pool.QueryRow(ctx, `SELECT to_regclass('staging.' || $1) IS NOT NULL`, oldPart).Scan(&exists); err != nil || exists {
		t.Fatalf("%s still exists", oldPart)
	}
	// Today's partition is never dropped.
	today := "webhooks_" + time.Now().UTC().Format("20060102")
	if err := pool.QueryRow(ctx, `SELECT to_regclass('staging.' || $1) IS NOT NULL`, today).Scan(&exists); err != nil || !exists {
		t.Fatalf("today's partition is gone")
	}
}

func TestUpkeepKeepsPartitionClosedAfterSlotPosition(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewDB(t)
	slot := slotName(t, pool, "upkeep2")
	// The slot exists first and never advances: a partition closed later holds rows it has not read.
	if _, err := pool.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot); err != nil {
		t.Fatal(err)
	}
	old := time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -9)
	if _, err := pool.Exec(ctx, `SELECT staging.ensure_partitions($1::date, 1)`, old); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO staging.webhooks (received_at, org_id, integration_id, method, path, headers, body, accepted) VALUES ($1, 1, 1, 'POST', '/', '{}', '', true)`, old.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	res, err := staging.NewUpkeep(pool, staging.UpkeepConfig{Slot: slot}).RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Dropped) != 0 {
		t.Fatalf("dropped %v although the fanout has not read past it", res.Dropped)
	}
}
