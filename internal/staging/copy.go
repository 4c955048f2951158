package staging

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
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
// The COPY goes out as one write: the Query, the data and CopyDone, encoded here on the caller's goroutine.
// pgx.Conn.CopyFrom encodes on a goroutine of its own, which the scheduler put behind every runnable goroutine
// (about 1.9 ms of a 3.5 ms commit under bench ingest, go tool trace); pgconn.CopyFrom writes the query, then
// each 64 KiB of data, then CopyDone, from a second goroutine while a third reads. Sending the data before
// the server's CopyInResponse is what pgconn does too; when the COPY fails before or during the data, the
// server answers ErrorResponse and ReadyForQuery and ignores the CopyData and CopyDone that follow (the
// protocol's rule for a failed COPY), so the connection stays usable.
func copyInto(ctx context.Context, pool *pgxpool.Pool, table pgx.Identifier, rows []Row) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("error acquiring a connection to copy webhooks: %w", err)
	}
	defer conn.Release()
	pc := conn.Conn().PgConn()
	wire := copyMessages("COPY "+table.Sanitize()+" "+copyColumnList+" FROM STDIN BINARY", rows)
	if err := send(ctx, pc, wire); err != nil {
		return fmt.Errorf("error copying %d webhooks into staging: %w", len(rows), err)
	}
	var pgErr error
	for {
		msg, err := pc.ReceiveMessage(ctx)
		if err != nil {
			closeBroken(ctx, pc)
			return fmt.Errorf("error copying %d webhooks into staging: %w", len(rows), err)
		}
		switch msg := msg.(type) {
		case *pgproto3.ErrorResponse:
			pgErr = pgconn.ErrorResponseToPgError(msg)
		case *pgproto3.ReadyForQuery:
			if pgErr != nil {
				return fmt.Errorf("error copying %d webhooks into staging: %w", len(rows), pgErr)
			}
			return nil
		}
	}
}

// send writes wire to the server within ctx's deadline; a connection left with part of a message written is
// closed, so the pool drops it.
func send(ctx context.Context, pc *pgconn.PgConn, wire []byte) error {
	if pc.IsBusy() || pc.IsClosed() {
		return errors.New("connection is not idle")
	}
	nc := pc.Conn()
	if deadline, ok := ctx.Deadline(); ok {
		_ = nc.SetWriteDeadline(deadline)
		defer func() { _ = nc.SetWriteDeadline(time.Time{}) }()
	}
	if _, err := nc.Write(wire); err != nil {
		closeBroken(ctx, pc)
		return err
	}
	return nil
}

func closeBroken(ctx context.Context, pc *pgconn.PgConn) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	_ = pc.Close(ctx)
}

// copyMessageLimit is where a CopyData message is closed and the next begun (rows may span messages): the
// server reads each message whole into memory, up to a limit of 1 GB.
const copyMessageLimit = 1 << 20

// copyMessages encodes the COPY's messages: the Query, the rows in the binary COPY format in CopyData messages
// of about copyMessageLimit bytes, and CopyDone.
func copyMessages(sql string, rows []Row) []byte {
	size := 5 + len(sql) + 1 + copySize(rows) + 5
	buf := make([]byte, 0, size+(size/copyMessageLimit+1)*5)
	buf = append(buf, 'Q')
	buf = binary.BigEndian.AppendUint32(buf, uint32(4+len(sql)+1))
	buf = append(buf, sql...)
	buf = append(buf, 0)
	start := len(buf)
	buf = append(buf, 'd', 0, 0, 0, 0)
	buf = append(buf, copySignature...)
	buf = binary.BigEndian.AppendUint64(buf, 0) // flags, header extension length
	for i := range rows {
		if len(buf)-start > copyMessageLimit {
			binary.BigEndian.PutUint32(buf[start+1:], uint32(len(buf)-start-1))
			start = len(buf)
			buf = append(buf, 'd', 0, 0, 0, 0)
		}
		buf = appendCopyRow(buf, &rows[i])
	}
	buf = binary.BigEndian.AppendUint16(buf, 0xffff) // the trailer
	binary.BigEndian.PutUint32(buf[start+1:], uint32(len(buf)-start-1))
	buf = append(buf, 'c')
	return binary.BigEndian.AppendUint32(buf, 4)
}

// copySignature starts PostgreSQL's binary COPY format; flags and header extension length follow, both 0.
const copySignature = "PGCOPY\n\xff\r\n\x00"

// pgEpochMicros is 2000-01-01 UTC, where PostgreSQL's binary timestamps count from, in Unix microseconds.
const pgEpochMicros = 946_684_800_000_000

// appendCopyRow appends r as a tuple of the binary COPY format, in copyColumns' order and as copyTypes' binary
// receive functions read them: its field count, then each field's length (-1 for NULL) and bytes. Written by
// hand rather than through pgtype.Map.Encode, which cost about 1.9 µs a row of ingest's CPU, against a
// fraction of that here: the types are few and fixed.
func appendCopyRow(buf []byte, r *Row) []byte {
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
	return appendOptional(buf, o.jobID, appendInt8)
}

// copySize is an upper bound of the binary COPY data of rows (appendCopyRow's, with the header and trailer).
func copySize(rows []Row) int {
	size := len(copySignature) + 8 + 2
	for i := range rows {
		r := &rows[i]
		size += 2 + 4*len(copyColumns) + 8*6 + 4 + 1 + len(r.DeliveryID) + len(r.Method) + len(r.Path) + len(r.Query) +
			len(r.ContentType) + len(r.Headers) + len(r.Body) + len(r.RejectedReason) + len(r.Source) + len(SourceWebhook)
	}
	return size
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
