package staging_test

import (
	"context"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/webhookdb-go/webhookdb/internal/pgerr"
	"github.com/webhookdb-go/webhookdb/internal/pgtest"
	"github.com/webhookdb-go/webhookdb/internal/staging"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// slotName is a replication slot name of this test's own (slots are per cluster, databases per test).
func slotName(t *testing.T, pool *pgxpool.Pool, prefix string) string {
	t.Helper()
	var dbName string
	if err := pool.QueryRow(context.Background(), `SELECT current_database()`).Scan(&dbName); err != nil {
		t.Fatal(err)
	}
	return prefix + "_" + strings.TrimPrefix(dbName, "test_")
}

func row(orgID, integrationID int64, at time.Time, body string) staging.Row {
	return staging.Row{ReceivedAt: at, OrgID: orgID, IntegrationID: integrationID, DeliveryID: "evt_" + body, Method: "POST",
		Path: "/", ContentType: "application/json", Headers: []byte(`{"X-Test":"1"}`), Body: []byte(`{"n":"` + body + `"}`), Accepted: true}
}

func TestInsertCreatesMissingPartition(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewDB(t)
	// Far outside what upkeep prepares: no partition exists for that day.
	past := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	_, err := pool.Exec(ctx, `INSERT INTO staging.webhooks (received_at, org_id, integration_id, method, path, headers, body, accepted)
		VALUES ($1, 1, 1, 'POST', '/', '{}', '', true)`, past)
	if !staging.IsMissingPartition(err) {
		t.Fatalf("a row without a partition: want IsMissingPartition, got %v", err)
	}
	if err := staging.Insert(ctx, pool, []staging.Row{row(1, 1, past, "a")}); err != nil {
		t.Fatalf("Insert did not create the partition: %v", err)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM staging.webhooks_20010203`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("rows in the new partition: %d, %v", n, err)
	}
}

func TestCheckViolationIsNotMissingPartition(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewDB(t)
	// accepted = false without a reason breaks the table's CHECK: same SQLSTATE, not a missing partition.
	_, err := pool.Exec(ctx, `INSERT INTO staging.webhooks (received_at, org_id, integration_id, method, path, headers, body, accepted)
		VALUES (now(), 1, 1, 'POST', '/', '{}', '', false)`)
	if !pgerr.Is(err, pgerrcode.CheckViolation) {
		t.Fatalf("want a check violation, got %v", err)
	}
	if staging.IsMissingPartition(err) {
		t.Fatalf("a CHECK constraint violation taken for a missing partition: %v", err)
	}
}

func TestListGetLookup(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewDB(t)
	now := time.Now().UTC()
	rejected := row(7, 70, now.Add(-time.Minute), "r")
	rejected.Accepted, rejected.RejectedReason = false, "bad signature"
	rows := []staging.Row{row(7, 70, now.Add(-3*time.Minute), "a"), row(7, 71, now.Add(-2*time.Minute), "b"), rejected, row(8, 80, now, "other org")}
	if err := staging.Insert(ctx, pool, rows); err != nil {
		t.Fatal(err)
	}
	all, err := staging.List(ctx, pool, staging.Filter{OrgID: 7, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 3 || all[0].RejectedReason != "bad signature" || all[2].DeliveryID != "evt_a" {
		t.Fatalf("list of org 7, newest first: %+v", all)
	}
	if all[2].Body != nil || all[2].BodyBytes != len(`{"n":"a"}`) {
		t.Fatalf("lists carry the body length, not the body: %q %d", all[2].Body, all[2].BodyBytes)
	}
	yes := true
	acc, err := staging.List(ctx, pool, staging.Filter{OrgID: 7, IntegrationID: 70, Accepted: &yes, Limit: 10})
	if err != nil || len(acc) != 1 || acc[0].DeliveryID != "evt_a" {
		t.Fatalf("accepted of integration 70: %+v, %v", acc, err)
	}
	got, err := staging.Get(ctx, pool, 7, all[1].ID)
	if err != nil || string(got.Body) != `{"n":"b"}` || string(got.Headers) != `{"X-Test": "1"}` {
		t.Fatalf("get: %+v, %v", got, err)
	}
	other, _ := staging.List(ctx, pool, staging.Filter{OrgID: 8, Limit: 1})
	if _, err := staging.Get(ctx, pool, 7, other[0].ID); err != staging.ErrNotFound {
		t.Fatalf("another org's row: want ErrNotFound, got %v", err)
	}
	found, err := staging.Lookup(ctx, pool, []staging.Ref{all[0].Ref(), {ReceivedAt: now, ID: 1 << 40}})
	if err != nil || len(found) != 1 || found.Get(all[0].Ref()) == nil || found.Get(all[0].Ref()).Body == nil {
		t.Fatalf("lookup: %v, %v", found, err)
	}
	a, r, err := staging.Counts(ctx, pool, 70, now.Add(-time.Hour))
	if err != nil || a != 1 || r != 1 {
		t.Fatalf("counts of integration 70: %d accepted, %d rejected, %v", a, r, err)
	}
}

func TestReplayAndResubmitCopyOriginals(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewDB(t)
	now := time.Now().UTC()
	var rows []staging.Row
	for i := range 450 { // more than a copy page
		rows = append(rows, row(5, 50, now.Add(-time.Duration(i+1)*time.Second), "e"+string(rune('a'+i%26))))
	}
	rows = append(rows, row(5, 51, now.Add(-time.Second), "other integration"), row(6, 60, now.Add(-time.Second), "other org"))
	rejected := row(5, 50, now.Add(-time.Second), "rejected")
	rejected.Accepted, rejected.RejectedReason = false, "bad"
	rows = append(rows, rejected)
	if err := staging.Insert(ctx, pool, rows); err != nil {
		t.Fatal(err)
	}
	n, err := staging.Replay(ctx, pool, staging.Window{OrgID: 5, IntegrationIDs: []int64{50}, Since: now.Add(-time.Hour), Until: now})
	if err != nil || n != 450 {
		t.Fatalf("replayed %d, %v; want 450", n, err)
	}
	// Copies are received now (upkeep keeps today's partition) and keep the original's receive time.
	var copies, wrong int
	if err := pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE o.id IS NULL OR o.body <> c.body OR c.integration_id <> 50
			OR c.original_received_at IS DISTINCT FROM o.received_at OR c.received_at <= o.received_at)
		FROM staging.webhooks c LEFT JOIN staging.webhooks o ON o.id = c.replay_of AND o.replay_of IS NULL
		WHERE c.replay_of IS NOT NULL`).Scan(&copies, &wrong); err != nil || copies != 450 || wrong != 0 {
		t.Fatalf("copies %d (want 450), wrong %d, %v", copies, wrong, err)
	}
	// Replaying again copies the originals again, never the copies.
	if n, err := staging.Replay(ctx, pool, staging.Window{OrgID: 5, IntegrationIDs: []int64{50}, Since: now.Add(-time.Hour), Until: now}); err != nil || n != 450 {
		t.Fatalf("second replay %d, %v", n, err)
	}

	// Resubmitting a copy points the new row at the first delivery.
	list, _ := staging.List(ctx, pool, staging.Filter{OrgID: 5, IntegrationID: 51, Limit: 1})
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := staging.Resubmit(ctx, tx, []staging.Ref{list[0].Ref(), {ReceivedAt: now, ID: 1 << 40}}); err != nil || n != 1 {
		t.Fatalf("resubmitted %d, %v", n, err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	var replayOf int64
	var original time.Time
	if err := pool.QueryRow(ctx, `SELECT replay_of, original_received_at FROM staging.webhooks WHERE integration_id = 51 AND replay_of IS NOT NULL`).Scan(&replayOf, &original); err != nil || replayOf != list[0].ID {
		t.Fatalf("resubmitted row points at %d, want %d (%v)", replayOf, list[0].ID, err)
	}
	if !original.Equal(list[0].ReceivedAt) {
		t.Fatalf("resubmitted row's original receive time %s, want %s", original, list[0].ReceivedAt)
	}
	// A copy of a copy keeps the first delivery's time.
	copyRow, _ := staging.List(ctx, pool, staging.Filter{OrgID: 5, IntegrationID: 51, Limit: 1})
	if copyRow[0].ReplayOf != list[0].ID || !copyRow[0].Time().Equal(list[0].ReceivedAt) || copyRow[0].Time().Equal(copyRow[0].ReceivedAt) {
		t.Fatalf("copy read back: %+v", copyRow[0])
	}
}

type holdAll struct{ from, to time.Time }

func (h *holdAll) RowsHeld(_ context.Context, from, to time.Time) (int64, error) {
	h.from, h.to = from, to
	return 2, nil
}

func TestUpkeepKeepsWhatHoldersNeed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewDB(t)
	slot := slotName(t, pool, "holders")
	old := time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -12)
	if err := staging.Insert(ctx, pool, []staging.Row{row(1, 1, old.Add(time.Hour), "old")}); err != nil {
		t.Fatal(err)
	}
	up := staging.NewUpkeep(pool, staging.UpkeepConfig{Slot: slot})
	if _, err := up.RunOnce(ctx); err != nil { // closes the old day
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = pool.Exec(context.Background(), `SELECT pg_drop_replication_slot($1)`, slot) })
	h := &holdAll{}
	res, err := staging.NewUpkeep(pool, staging.UpkeepConfig{Slot: slot, Holders: []staging.Holder{h}}).RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Dropped) != 0 || !h.from.Equal(old) || !h.to.Equal(old.AddDate(0, 0, 1)) {
		t.Fatalf("held partition: dropped %v, holder asked [%s, %s)", res.Dropped, h.from, h.to)
	}
	res, err = up.RunOnce(ctx)
	if err != nil || len(res.Dropped) != 1 {
		t.Fatalf("without holders the old partition goes: %+v, %v", res, err)
	}
}

// A resync stores again every original accepted delivery since a time, across orgs, page by page; while it is
// pending, upkeep keeps the partitions it still has to read even when the slot has moved past them.
func TestResyncCopiesAndHoldsPartitions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewDB(t)
	slot := slotName(t, pool, "resync")
	old := time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -12)
	var rows []staging.Row
	for i := range 250 {
		rows = append(rows, row(int64(1+i%3), int64(10+i%3), old.Add(time.Duration(i)*time.Second), "x"))
	}
	rejected := row(1, 10, old.Add(time.Hour), "rejected")
	rejected.Accepted, rejected.RejectedReason = false, "bad"
	beforeSince := row(1, 10, old.Add(-time.Hour), "before")
	if err := staging.Insert(ctx, pool, append(rows, rejected, beforeSince)); err != nil {
		t.Fatal(err)
	}
	up := staging.NewUpkeep(pool, staging.UpkeepConfig{Slot: slot})
	if _, err := up.RunOnce(ctx); err != nil { // closes the old days
		t.Fatal(err)
	}
	// The slot is (re-)created now: its position is past every old partition.
	if _, err := pool.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = pool.Exec(context.Background(), `SELECT pg_drop_replication_slot($1)`, slot) })
	rs, err := staging.StartResync(ctx, pool, old)
	if err != nil {
		t.Fatal(err)
	}
	oldPart := "webhooks_" + old.Format("20060102")
	res, err := up.RunOnce(ctx)
	if err != nil || slices.Contains(res.Dropped, oldPart) || !slices.Contains(res.Kept, oldPart) {
		t.Fatalf("a pending resync must keep what it reads (%s): %+v, %v", oldPart, res, err)
	}
	// The day before its start is not its business.
	if before := "webhooks_" + old.AddDate(0, 0, -1).Format("20060102"); !slices.Contains(res.Dropped, before) {
		t.Fatalf("the day before the resync's start is kept: %+v", res)
	}
	n, done, err := staging.ResyncStep(ctx, pool, rs.ID)
	if err != nil || done || n != 200 {
		t.Fatalf("first page: %d, done %v, %v", n, done, err)
	}
	var progress []int64
	if err := staging.RunResync(ctx, pool, rs.ID, func(c int64) { progress = append(progress, c) }); err != nil {
		t.Fatal(err)
	}
	if len(progress) != 1 || progress[0] != 50 {
		t.Fatalf("progress %v", progress)
	}
	var copies, orgs int
	if err := pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT org_id) FROM staging.webhooks WHERE replay_of IS NOT NULL AND received_at > now() - interval '1 hour'`).Scan(&copies, &orgs); err != nil || copies != 250 || orgs != 3 {
		t.Fatalf("resync copies %d over %d orgs (%v), want 250 over 3", copies, orgs, err)
	}
	list, _ := staging.Resyncs(ctx, pool)
	if len(list) != 1 || list[0].FinishedAt == nil || list[0].Copied != 250 {
		t.Fatalf("resyncs: %+v", list)
	}
	// Finished: nothing holds the old partitions any more.
	res, err = up.RunOnce(ctx)
	if err != nil || !slices.Contains(res.Dropped, oldPart) {
		t.Fatalf("after the resync the old partitions go: %+v, %v", res, err)
	}
}

var seqScan = regexp.MustCompile(`Seq Scan on (webhooks_\d{8})`)

// Lists and gets of one org read an index, never every tenant's partitions.
func TestListAndGetUseIndexes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewDB(t)
	now := time.Now().UTC()
	var rows []staging.Row
	for i := range 2000 {
		rows = append(rows, row(int64(i%50), 1, now.Add(-time.Duration(i)*time.Second), "x"))
	}
	if err := staging.Insert(ctx, pool, rows); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `ANALYZE staging.webhooks`); err != nil {
		t.Fatal(err)
	}
	for name, q := range map[string]string{
		"list": `EXPLAIN SELECT id FROM staging.webhooks WHERE org_id = 7 AND (0 = 0 OR integration_id = 0) ORDER BY received_at DESC, id DESC LIMIT 50`,
		"get":  `EXPLAIN SELECT id FROM staging.webhooks WHERE org_id = 7 AND id = 12`,
	} {
		r, err := pool.Query(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		lines, err := pgx.CollectRows(r, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		plan := strings.Join(lines, "\n")
		if !strings.Contains(plan, "_org_id_") { // partitions name their copies of the org indexes webhooks_YYYYMMDD_org_id_...
			t.Fatalf("%s plan does not use the org index:\n%s", name, plan)
		}
		// The planner may scan an empty partition; never one that holds rows.
		for _, m := range seqScan.FindAllStringSubmatch(plan, -1) {
			var n int
			if err := pool.QueryRow(ctx, `SELECT count(*) FROM staging.`+m[1]).Scan(&n); err != nil || n > 0 {
				t.Fatalf("%s plan scans %s, which holds %d rows:\n%s", name, m[1], n, plan)
			}
		}
	}
}

// A payload kept elsewhere is stored again as an accepted copy received now, pointing at the row it was read
// from and keeping the original receive time, though that row (and its partition) is gone.
func TestStorePayloadsWithoutTheOriginal(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewDB(t)
	original := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	p := staging.Payload{Ref: staging.Ref{ReceivedAt: original, ID: 42}, OrgID: 1, IntegrationID: 2, DeliveryID: "evt_1",
		ContentType: "application/json", Headers: []byte(`{"X-Test":"1"}`), Body: []byte(`{"n":1}`), OriginalReceivedAt: original}
	before := time.Now()
	var n int64
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var err error
		n, err = staging.StorePayloads(ctx, tx, []staging.Payload{p, {Ref: p.Ref, OrgID: 1, IntegrationID: 2, Body: []byte("x")}})
		return err
	})
	if err != nil || n != 2 {
		t.Fatalf("StorePayloads = %d, %v", n, err)
	}
	list, err := staging.List(ctx, pool, staging.Filter{OrgID: 1, Limit: 10})
	if err != nil || len(list) != 2 {
		t.Fatalf("List = %v, %v", list, err)
	}
	for _, s := range list {
		if !s.Accepted || s.ReplayOf != 42 || !s.OriginalReceivedAt.Equal(original) || s.ReceivedAt.Before(before.Add(-time.Second)) {
			t.Fatalf("copy: %+v", s)
		}
	}
	got, err := staging.Get(ctx, pool, 1, list[1].ID)
	if err != nil || string(got.Body) != `{"n":1}` || got.DeliveryID != "evt_1" || !got.Time().Equal(original) {
		t.Fatalf("Get = %+v, %v", got, err)
	}
}

func TestCopiesRecordTheirSource(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewDB(t)
	now := time.Now().UTC()
	hook := row(7, 70, now.Add(-2*time.Second), "delivery")
	page := row(7, 70, now.Add(-time.Second), "fetched")
	page.Source, page.BackfillJobID = staging.SourceBackfill, 42
	if err := staging.Insert(ctx, pool, []staging.Row{hook, page}); err != nil {
		t.Fatal(err)
	}
	if n, err := staging.Replay(ctx, pool, staging.Window{OrgID: 7, IntegrationIDs: []int64{70}, Since: now.Add(-time.Hour), Until: now}); err != nil || n != 2 {
		t.Fatalf("replayed %d, %v", n, err)
	}
	originals, err := staging.List(ctx, pool, staging.Filter{OrgID: 7, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	counts := map[staging.Source]int{}
	for _, s := range originals {
		counts[s.Source]++
		if s.Source == staging.SourceBackfill && s.BackfillJobID != 42 {
			t.Fatalf("backfill row read back with job %d", s.BackfillJobID)
		}
	}
	if counts[staging.SourceWebhook] != 1 || counts[staging.SourceBackfill] != 1 || counts[staging.SourceReplay] != 2 {
		t.Fatalf("sources after a replay: %v", counts)
	}
	// A retried change (Resubmit) is still what it was: the backfilled row stays a backfill row.
	var ref staging.Ref
	for _, s := range originals {
		if s.Source == staging.SourceBackfill {
			ref = s.Ref()
		}
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := staging.Resubmit(ctx, tx, []staging.Ref{ref}); err != nil || n != 1 {
		t.Fatalf("resubmitted %d, %v", n, err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	var backfills int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM staging.webhooks WHERE source = 'backfill' AND backfill_job_id = 42`).Scan(&backfills); err != nil || backfills != 2 {
		t.Fatalf("backfill rows after a resubmit: %d, %v", backfills, err)
	}
	// Anything else is refused by the table.
	bad := row(7, 70, now, "x")
	bad.Source = "carrier pigeon"
	if err := staging.Insert(ctx, pool, []staging.Row{bad}); err == nil {
		t.Fatal("an unknown source was stored")
	}
}

// Insert writes a day's rows straight into its partition; rows spanning midnight, and days without a
// partition, still land where the partitioned table routes them.
func TestInsertAcrossDaysAndIntoDayPartition(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewDB(t)
	now := time.Now().UTC()
	if err := staging.Insert(ctx, pool, []staging.Row{row(1, 1, now, "a"), row(1, 1, now, "b")}); err != nil {
		t.Fatal(err)
	}
	late := time.Date(2001, 2, 3, 23, 59, 59, 0, time.UTC)
	if err := staging.Insert(ctx, pool, []staging.Row{row(1, 1, late, "c"), row(1, 1, late.Add(2*time.Second), "d")}); err != nil {
		t.Fatal(err)
	}
	for table, want := range map[string]int{"webhooks_" + now.Format("20060102"): 2, "webhooks_20010203": 1, "webhooks_20010204": 1, "webhooks": 4} {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{"staging", table}.Sanitize()).Scan(&n); err != nil || n != want {
			t.Errorf("rows in staging.%s: %d, %v; want %d", table, n, err, want)
		}
	}
}
