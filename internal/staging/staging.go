package staging

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/webhookdb-go/webhookdb/internal/pgerr"
)

const (
	// Publication publishes inserts of accepted rows, via the partition root (sql/migrations/00002_staging.sql).
	Publication = "webhookdb_staging"
	// DefaultSlot is the replication slot the fanout consumes unless configured otherwise; upkeep reads its
	// progress before it drops a partition.
	DefaultSlot = "webhookdb_fanout"
)

// DB is what the statements here need: a pool, a connection or a transaction.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Row is one request as stored in staging.webhooks.
type Row struct {
	ReceivedAt     time.Time
	OrgID          int64
	IntegrationID  int64
	DeliveryID     string
	Method         string
	Path           string
	Query          string
	ContentType    string
	Headers        []byte // JSON object
	Body           []byte
	BodyTruncated  bool
	Accepted       bool
	RejectedReason string
	// ReplayOf points a replayed, retried or resynced row at the original delivery; 0 for a new one.
	ReplayOf int64
	// OriginalReceivedAt is when the original delivery arrived, for a copy (zero for an original): a copy's
	// ReceivedAt is when it was stored again, so upkeep cannot drop it before the fanout reads it, while
	// replicators go on reading the original time. See [Row.Time].
	OriginalReceivedAt time.Time
	// Source is where the row came from: one of the Source constants; "" stores SourceWebhook.
	Source Source
	// BackfillJobID is the backfill job whose page stored the row; 0 for any other source.
	BackfillJobID int64
}

// Source is where a staged row came from.
type Source string

const (
	SourceWebhook  Source = "webhook"  // a delivery to an integration's URL
	SourceBackfill Source = "backfill" // an object fetched from the vendor's API
	SourceReplay   Source = "replay"   // a copy stored by a replay
	SourceResync   Source = "resync"   // a copy stored by a resync after a lost slot
)

// Time is when the delivery first arrived: what replicators read as its receive time.
func (r *Row) Time() time.Time {
	if !r.OriginalReceivedAt.IsZero() {
		return r.OriginalReceivedAt
	}
	return r.ReceivedAt
}

// Ref identifies a stored row (the table's primary key).
type Ref struct {
	ReceivedAt time.Time
	ID         int64
}

const insertColumns = ` (received_at, org_id, integration_id, delivery_id, method, path, query, content_type,
	headers, body, body_truncated, accepted, rejected_reason, replay_of, original_received_at, source, backfill_job_id)
SELECT * FROM unnest($1::timestamptz[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[],
	$8::text[], $9::jsonb[], $10::bytea[], $11::boolean[], $12::boolean[], $13::text[], $14::bigint[], $15::timestamptz[],
	$16::text[], $17::bigint[])`

var insertSQL = `INSERT INTO staging.webhooks` + insertColumns

// Insert writes rows in one statement. A row whose day has no partition yet (a clock jump, upkeep not run)
// makes Insert create the partition and try once more rather than fail the batch.
//
// Rows of one UTC day (a group commit's, but for one spanning midnight) are copied straight into that day's
// partition with binary COPY: through the partitioned table, Postgres sets up tuple routing for every statement
// (opening the partition and its indexes), and COPY writes pages several rows at a time where the INSERT
// from unnest materialises and plans first (BenchmarkInsert: about a third less Postgres CPU a row at 24 and
// 48 rows). The partition's bound is checked all the same, and the fanout sees the rows as the root's
// (publish_via_partition_root). Upkeep only ever drops partitions, never detaches them, so a partition that is
// not there is undefined_table, never a detached table taking rows: then the rows go through the root.
func Insert(ctx context.Context, pool *pgxpool.Pool, rows []Row) error {
	if part := dayPartition(rows); part != nil {
		err := copyInto(ctx, pool, part, rows)
		if pgerr.Code(err) != pgerrcode.UndefinedTable {
			return err
		}
	}
	err := insert(ctx, pool, rows)
	if IsMissingPartition(err) {
		if perr := ensurePartitionsFor(ctx, pool, rows); perr != nil {
			return errors.Join(err, perr)
		}
		err = insert(ctx, pool, rows)
	}
	return err
}

// dayPartition names the partition (as ensure_partitions names it) holding every row, or nil when the rows
// span days.
func dayPartition(rows []Row) pgx.Identifier {
	if len(rows) == 0 {
		return nil
	}
	y, m, d := rows[0].ReceivedAt.UTC().Date()
	for i := range rows[1:] {
		if y2, m2, d2 := rows[i+1].ReceivedAt.UTC().Date(); y2 != y || m2 != m || d2 != d {
			return nil
		}
	}
	return pgx.Identifier{"staging", fmt.Sprintf("webhooks_%04d%02d%02d", y, m, d)}
}

// optionalColumns are a row's values that are NULL when unset, and its source with the default applied.
type optionalColumns struct {
	deliveryID, reason *string
	replayOf, jobID    *int64
	original           *time.Time
	source             string
}

func (r *Row) optional() optionalColumns {
	o := optionalColumns{source: string(r.Source)}
	if r.DeliveryID != "" {
		o.deliveryID = &r.DeliveryID
	}
	if !r.Accepted {
		o.reason = &r.RejectedReason
	}
	if r.ReplayOf != 0 {
		o.replayOf = &r.ReplayOf
	}
	if !r.OriginalReceivedAt.IsZero() {
		o.original = &r.OriginalReceivedAt
	}
	if r.BackfillJobID != 0 {
		o.jobID = &r.BackfillJobID
	}
	if o.source == "" {
		o.source = string(SourceWebhook)
	}
	return o
}

func insert(ctx context.Context, db DB, rows []Row) error {
	return insertInto(ctx, db, "", rows)
}

// insertInto inserts into table (sanitized), or into staging.webhooks when table is "".
func insertInto(ctx context.Context, db DB, table string, rows []Row) error {
	n := len(rows)
	if n == 0 {
		return nil
	}
	var (
		receivedAt    = make([]time.Time, n)
		orgID         = make([]int64, n)
		integrationID = make([]int64, n)
		deliveryID    = make([]*string, n)
		method        = make([]string, n)
		path          = make([]string, n)
		query         = make([]string, n)
		contentType   = make([]string, n)
		headers       = make([]string, n)
		body          = make([][]byte, n)
		truncated     = make([]bool, n)
		accepted      = make([]bool, n)
		reason        = make([]*string, n)
		replayOf      = make([]*int64, n)
		original      = make([]*time.Time, n)
		source        = make([]string, n)
		jobID         = make([]*int64, n)
	)
	for i := range rows {
		r := &rows[i]
		receivedAt[i], orgID[i], integrationID[i] = r.ReceivedAt, r.OrgID, r.IntegrationID
		method[i], path[i], query[i], contentType[i] = r.Method, r.Path, r.Query, r.ContentType
		headers[i], body[i], truncated[i], accepted[i] = string(r.Headers), r.Body, r.BodyTruncated, r.Accepted
		o := r.optional()
		deliveryID[i], reason[i], replayOf[i], original[i], source[i], jobID[i] = o.deliveryID, o.reason, o.replayOf, o.original, o.source, o.jobID
	}
	sql := insertSQL
	if table != "" {
		sql = `INSERT INTO ` + table + insertColumns
	}
	if _, err := db.Exec(ctx, sql, receivedAt, orgID, integrationID, deliveryID, method, path, query, contentType,
		headers, body, truncated, accepted, reason, replayOf, original, source, jobID); err != nil {
		return fmt.Errorf("error inserting %d webhooks into staging: %w", n, err)
	}
	return nil
}

// IsMissingPartition reports whether err is Postgres refusing a row of staging.webhooks for lack of a
// partition. That is a check_violation like a CHECK constraint's, but raised on the partitioned table with no
// constraint name.
func IsMissingPartition(err error) bool {
	pgErr := pgerr.As(err)
	return pgErr != nil && pgErr.Code == pgerrcode.CheckViolation && pgErr.ConstraintName == "" &&
		pgErr.SchemaName == "staging" && pgErr.TableName == "webhooks"
}

func ensurePartitionsFor(ctx context.Context, db DB, rows []Row) error {
	days := map[string]bool{}
	for i := range rows {
		days[rows[i].ReceivedAt.UTC().Format(time.DateOnly)] = true
	}
	for day := range days {
		if _, err := db.Exec(ctx, `SELECT staging.ensure_partitions($1::date, 1)`, day); err != nil {
			return fmt.Errorf("error creating the staging partition for %s: %w", day, err)
		}
	}
	return nil
}
