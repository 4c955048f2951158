package staging

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
)

// copyColumns are insertColumns' columns, for COPY, and copyTypes their types (TestCopyTypesMatchTable holds
// them to the table).
var (
	copyColumns = []string{"received_at", "org_id", "integration_id", "delivery_id", "method", "path", "query",
		"content_type", "headers", "body", "body_truncated", "accepted", "rejected_reason", "replay_of",
		"original_received_at", "source", "backfill_job_id"}
	copyTypes = []uint32{pgtype.TimestamptzOID, pgtype.Int8OID, pgtype.Int8OID, pgtype.TextOID, pgtype.TextOID,
		pgtype.TextOID, pgtype.TextOID, pgtype.TextOID, pgtype.JSONBOID, pgtype.ByteaOID, pgtype.BoolOID,
		pgtype.BoolOID, pgtype.TextOID, pgtype.Int8OID, pgtype.TimestamptzOID, pgtype.TextOID, pgtype.Int8OID}
	copyColumnList = "(" + strings.Join(copyColumns, ", ") + ")"
)

// copyInto writes rows into a partition with one binary COPY, its own transaction. COPY fills pages with
// several rows at a time and plans nothing; the INSERT from unnest materialises its function scan first:
// see BenchmarkInsert for what each costs Postgres per row.
//
// The COPY data is encoded here, on the caller's goroutine, rather than by pgx.Conn.CopyFrom: that encodes on
// a goroutine of its own, which the scheduler puts behind every runnable goroutine once pgconn starts its own
// two. Under bench ingest's load that goroutine waited about 1.9 ms for its turn in a commit of about 3.5 ms,
// with every request of the batch waiting on it (go tool trace of the committer).
func copyInto(ctx context.Context, pool *pgxpool.Pool, table pgx.Identifier, rows []Row) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("error acquiring a connection to copy webhooks: %w", err)
	}
	defer conn.Release()
	data := encodeCopy(rows)
	sql := "COPY " + table.Sanitize() + " " + copyColumnList + " FROM STDIN BINARY"
	if _, err := conn.Conn().PgConn().CopyFrom(ctx, bytes.NewReader(data), sql); err != nil {
		return fmt.Errorf("error copying %d webhooks into staging: %w", len(rows), err)
	}
	return nil
}

// copySignature starts PostgreSQL's binary COPY format; flags and header extension length follow, both 0.
const copySignature = "PGCOPY\n\xff\r\n\x00"

// pgEpochMicros is 2000-01-01 UTC, where PostgreSQL's binary timestamps count from, in Unix microseconds.
const pgEpochMicros = 946_684_800_000_000

// encodeCopy encodes rows in the binary COPY format, in copyColumns' order and as copyTypes' binary receive
// functions read them: each tuple its field count, then each field's length (-1 for NULL) and bytes; -1 as the
// trailer. Written by hand rather than through pgtype.Map.Encode, which cost about 1.9 µs a row of ingest's
// CPU, against a fraction of that here: the types are few and fixed.
func encodeCopy(rows []Row) []byte {
	size := len(copySignature) + 8 + 2
	for i := range rows {
		r := &rows[i]
		size += 2 + 4*len(copyColumns) + 8*6 + 4 + 1 + len(r.DeliveryID) + len(r.Method) + len(r.Path) + len(r.Query) +
			len(r.ContentType) + len(r.Headers) + len(r.Body) + len(r.RejectedReason) + len(r.Source) + len(SourceWebhook)
	}
	buf := make([]byte, 0, size)
	buf = append(buf, copySignature...)
	buf = binary.BigEndian.AppendUint64(buf, 0) // flags, header extension length
	for i := range rows {
		r := &rows[i]
		o := r.optional()
		buf = binary.BigEndian.AppendUint16(buf, uint16(len(copyColumns)))
		buf = appendTime(buf, r.ReceivedAt)
		buf = appendInt8(buf, r.OrgID)
		buf = appendInt8(buf, r.IntegrationID)
		buf = appendOptional(buf, o.deliveryID, appendText)
		buf = appendText(buf, r.Method)
		buf = appendText(buf, r.Path)
		buf = appendText(buf, r.Query)
		buf = appendText(buf, r.ContentType)
		buf = binary.BigEndian.AppendUint32(buf, uint32(1+len(r.Headers)))
		buf = append(buf, 1) // jsonb's binary format version
		buf = append(buf, r.Headers...)
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(r.Body)))
		buf = append(buf, r.Body...)
		buf = appendBool(buf, r.BodyTruncated)
		buf = appendBool(buf, r.Accepted)
		buf = appendOptional(buf, o.reason, appendText)
		buf = appendOptional(buf, o.replayOf, appendInt8)
		buf = appendOptional(buf, o.original, appendTime)
		buf = appendText(buf, o.source)
		buf = appendOptional(buf, o.jobID, appendInt8)
	}
	return binary.BigEndian.AppendUint16(buf, 0xffff)
}

func appendText(buf []byte, s string) []byte {
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(s)))
	return append(buf, s...)
}

func appendInt8(buf []byte, n int64) []byte {
	buf = binary.BigEndian.AppendUint32(buf, 8)
	return binary.BigEndian.AppendUint64(buf, uint64(n))
}

func appendTime(buf []byte, t time.Time) []byte {
	return appendInt8(buf, t.UnixMicro()-pgEpochMicros)
}

func appendBool(buf []byte, b bool) []byte {
	buf = binary.BigEndian.AppendUint32(buf, 1)
	if b {
		return append(buf, 1)
	}
	return append(buf, 0)
}

// appendOptional appends NULL for a nil v.
func appendOptional[T any](buf []byte, v *T, appendValue func([]byte, T) []byte) []byte {
	if v == nil {
		return binary.BigEndian.AppendUint32(buf, 0xffffffff)
	}
	return appendValue(buf, *v)
}
