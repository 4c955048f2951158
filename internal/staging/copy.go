package staging

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"strings"

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
	data, err := encodeCopy(conn.Conn().TypeMap(), rows)
	if err != nil {
		return err
	}
	sql := "COPY " + table.Sanitize() + " " + copyColumnList + " FROM STDIN BINARY"
	if _, err := conn.Conn().PgConn().CopyFrom(ctx, bytes.NewReader(data), sql); err != nil {
		return fmt.Errorf("error copying %d webhooks into staging: %w", len(rows), err)
	}
	return nil
}

// copySignature starts PostgreSQL's binary COPY format; flags and header extension length follow, both 0.
const copySignature = "PGCOPY\n\xff\r\n\x00"

// encodeCopy encodes rows in the binary COPY format: each tuple its field count, then each field's length
// (-1 for NULL) and bytes as the type's binary send function writes them; -1 as the trailer.
func encodeCopy(m *pgtype.Map, rows []Row) ([]byte, error) {
	size := len(copySignature) + 8 + 2
	for i := range rows {
		size += 2 + 4*len(copyColumns) + 128 + len(rows[i].Headers) + len(rows[i].Body) + len(rows[i].Path) +
			len(rows[i].Query) + len(rows[i].DeliveryID) + len(rows[i].RejectedReason)
	}
	buf := make([]byte, 0, size)
	buf = append(buf, copySignature...)
	buf = binary.BigEndian.AppendUint64(buf, 0)
	var err error
	for i := range rows {
		r := &rows[i]
		o := r.optional()
		values := [...]any{r.ReceivedAt, r.OrgID, r.IntegrationID, o.deliveryID, r.Method, r.Path, r.Query,
			r.ContentType, string(r.Headers), r.Body, r.BodyTruncated, r.Accepted, o.reason, o.replayOf, o.original,
			o.source, o.jobID}
		buf = binary.BigEndian.AppendUint16(buf, uint16(len(values)))
		for j, v := range values {
			if buf, err = appendCopyField(m, buf, copyTypes[j], v); err != nil {
				return nil, fmt.Errorf("error encoding %s of a webhook for staging: %w", copyColumns[j], err)
			}
		}
	}
	return binary.BigEndian.AppendUint16(buf, 0xffff), nil
}

// appendCopyField appends one field: its length, then its bytes; a nil value is NULL (length -1).
func appendCopyField(m *pgtype.Map, buf []byte, oid uint32, v any) ([]byte, error) {
	at := len(buf)
	buf = binary.BigEndian.AppendUint32(buf, 0xffffffff)
	out, err := m.Encode(oid, pgtype.BinaryFormatCode, v, buf)
	if err != nil {
		return nil, err
	}
	if out == nil { // NULL
		return buf, nil
	}
	binary.BigEndian.PutUint32(out[at:], uint32(len(out)-at-4))
	return out, nil
}
