package staging_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/webhookdb-go/webhookdb/internal/pgerr"
	"github.com/webhookdb-go/webhookdb/internal/pgtest"
	"github.com/webhookdb-go/webhookdb/internal/staging"
)

// The COPY into a day partition is encoded with fixed types; a column whose type changed would fail every
// webhook as a data exception.
func TestCopyTypesMatchTable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewDB(t)
	if len(staging.CopyColumns) != len(staging.CopyTypes) {
		t.Fatalf("%d columns, %d types", len(staging.CopyColumns), len(staging.CopyTypes))
	}
	for i, col := range staging.CopyColumns {
		var oid uint32
		if err := pool.QueryRow(ctx, `SELECT atttypid FROM pg_attribute WHERE attrelid = 'staging.webhooks'::regclass AND attname = $1 AND NOT attisdropped`, col).Scan(&oid); err != nil {
			t.Fatalf("column %s: %v", col, err)
		}
		if oid != staging.CopyTypes[i] {
			t.Errorf("column %s is type %d in the table, COPY sends %d", col, oid, staging.CopyTypes[i])
		}
	}
}

// Every field survives the COPY, NULLs included.
func TestCopyStoresEveryField(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewDB(t)
	now := time.Now().UTC().Truncate(time.Microsecond)
	full := staging.Row{ReceivedAt: now, OrgID: 7, IntegrationID: 8, DeliveryID: "evt_1", Method: "POST", Path: "/v1/x",
		Query: "a=1", ContentType: "application/json", Headers: []byte(`{"X-A": "1"}`), Body: []byte{0, 1, 2, 0xff},
		BodyTruncated: true, Accepted: false, RejectedReason: "bad signature", ReplayOf: 3,
		OriginalReceivedAt: time.Date(1999, 12, 31, 23, 59, 59, 123456000, time.UTC), Source: staging.SourceBackfill, BackfillJobID: 9}
	bare := staging.Row{ReceivedAt: now, OrgID: 7, IntegrationID: 8, Method: "POST", Path: "/", Headers: []byte(`{}`),
		Body: []byte(`{}`), Accepted: true}
	if err := staging.Insert(ctx, pool, []staging.Row{full, bare}); err != nil {
		t.Fatal(err)
	}
	rows, err := pool.Query(ctx, `SELECT received_at, org_id, integration_id, coalesce(delivery_id, '<null>'), method, path, query,
		content_type, headers::text, body, body_truncated, accepted, coalesce(rejected_reason, '<null>'), coalesce(replay_of, -1),
		coalesce(original_received_at, 'epoch'), source, coalesce(backfill_job_id, -1)
		FROM `+"staging.webhooks_"+now.Format("20060102")+` ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []staging.Row
	for rows.Next() {
		var r staging.Row
		var deliveryID, reason, headers string
		var source string
		if err := rows.Scan(&r.ReceivedAt, &r.OrgID, &r.IntegrationID, &deliveryID, &r.Method, &r.Path, &r.Query, &r.ContentType,
			&headers, &r.Body, &r.BodyTruncated, &r.Accepted, &reason, &r.ReplayOf, &r.OriginalReceivedAt, &source, &r.BackfillJobID); err != nil {
			t.Fatal(err)
		}
		r.DeliveryID, r.RejectedReason, r.Headers, r.Source = deliveryID, reason, []byte(headers), staging.Source(source)
		got = append(got, r)
	}
	if rows.Err() != nil || len(got) != 2 {
		t.Fatalf("%d rows in the day's partition, %v", len(got), rows.Err())
	}
	check := func(name string, got, want staging.Row, delivery, reason, source string, replayOf, jobID int64, original time.Time) {
		t.Helper()
		if !got.ReceivedAt.Equal(want.ReceivedAt) || got.OrgID != want.OrgID || got.IntegrationID != want.IntegrationID ||
			got.DeliveryID != delivery || got.Method != want.Method || got.Path != want.Path || got.Query != want.Query ||
			got.ContentType != want.ContentType || string(got.Headers) != string(want.Headers) || !bytes.Equal(got.Body, want.Body) ||
			got.BodyTruncated != want.BodyTruncated || got.Accepted != want.Accepted || got.RejectedReason != reason ||
			got.ReplayOf != replayOf || !got.OriginalReceivedAt.Equal(original) || string(got.Source) != source || got.BackfillJobID != jobID {
			t.Errorf("%s row stored as %+v; want %+v", name, got, want)
		}
	}
	check("full", got[0], full, "evt_1", "bad signature", "backfill", 3, 9, full.OriginalReceivedAt)
	check("bare", got[1], bare, "<null>", "<null>", "webhook", -1, -1, time.Unix(0, 0))
}

// A batch larger than one CopyData message is sent as several, rows spanning them, and stored whole.
func TestCopyOfManyMegabytes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewDB(t)
	now := time.Now().UTC().Truncate(time.Microsecond)
	rows := make([]staging.Row, 40)
	for i := range rows {
		body := bytes.Repeat([]byte{byte(i)}, 100_000+i*997) // about 4 MB in all, none a multiple of the limit
		rows[i] = staging.Row{ReceivedAt: now, OrgID: 7, IntegrationID: 8, Method: "POST", Path: "/", Headers: []byte(`{}`),
			Body: body, Accepted: true}
	}
	if err := staging.Insert(ctx, pool, rows); err != nil {
		t.Fatal(err)
	}
	var n, total int64
	var sum int64
	if err := pool.QueryRow(ctx, `SELECT count(*), sum(length(body)), sum(get_byte(body, length(body) - 1)) FROM staging.webhooks`).
		Scan(&n, &total, &sum); err != nil {
		t.Fatal(err)
	}
	var wantTotal, wantSum int64
	for i, r := range rows {
		wantTotal += int64(len(r.Body))
		wantSum += int64(i)
	}
	if n != int64(len(rows)) || total != wantTotal || sum != wantSum {
		t.Fatalf("stored %d rows, %d body bytes, last-byte sum %d; want %d, %d, %d", n, total, sum, len(rows), wantTotal, wantSum)
	}
}

// A COPY the server refuses in the middle of its data (a NUL in a text column) fails with its SQLSTATE, and the
// connection, which was sent the rest of the data, serves the next COPY.
func TestCopyRefusedLeavesConnectionUsable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewDB(t)
	pool.Config().MaxConns = 1
	one, err := pgxpool.NewWithConfig(ctx, pool.Config())
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	now := time.Now().UTC().Truncate(time.Microsecond)
	row := func(path string) staging.Row {
		return staging.Row{ReceivedAt: now, OrgID: 7, IntegrationID: 8, Method: "POST", Path: path, Headers: []byte(`{}`),
			Body: bytes.Repeat([]byte("x"), 300_000), Accepted: true}
	}
	bad := []staging.Row{row("/a"), row("/b\x00"), row("/c"), row("/d")}
	for range 3 {
		err := staging.Insert(ctx, one, bad)
		if code := pgerr.Code(err); code != pgerrcode.CharacterNotInRepertoire && code != pgerrcode.UntranslatableCharacter {
			t.Fatalf("Insert with a NUL: %v (SQLSTATE %q), want a data exception", err, code)
		}
		if err := staging.Insert(ctx, one, []staging.Row{row("/ok")}); err != nil {
			t.Fatalf("Insert after a refused COPY: %v", err)
		}
	}
	var n int
	if err := one.QueryRow(ctx, `SELECT count(*) FROM staging.webhooks`).Scan(&n); err != nil || n != 3 {
		t.Fatalf("%d rows stored (%v), want the 3 good ones", n, err)
	}
}
