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


// Insert writes rows in one statement. A row whose day has no partition yet (a clock jump, upkeep not run)
// makes Insert create the partition and try once more rather than fail the batch.
func Insert(ctx context.Context, pool *pgxpool.Pool, rows []Row) error {
	err := insert(ctx, pool, rows)
	if IsMissingPartition(err) {
		if perr := ensurePartitionsFor(ctx, pool, rows); perr != nil {
			return errors.Join(err, perr)
		}
		err = insert(ctx, pool, rows)
	}
	return err
}

// copyColumns are the columns insert writes, in copyRow's order.
var copyColumns = []string{"received_at", "org_id", "integration_id", "delivery_id", "method", "path", "query", "content_type",
	"headers", "body", "body_truncated", "accepted", "rejected_reason", "replay_of", "original_received_at", "source", "backfill_job_id"}

// copier is what a pool, a connection and a transaction offer besides DB.
type copier interface {
	CopyFrom(ctx context.Context, tableName pgx.Identifier, columnNames []string, rowSrc pgx.CopyFromSource) (int64, error)
}

// insert writes rows with COPY: in binary, no array to encode here and parse and unnest there, which makes it
// the cheapest way in per row (ingest's group commit runs it for every batch). COPY routes each row to its
// partition like INSERT, and fails the same way when there is none.
func insert(ctx context.Context, db DB, rows []Row) error {
	n := len(rows)
	if n == 0 {
		return nil
	}
	cp, ok := db.(copier)
	if !ok {
		return fmt.Errorf("staging: %T cannot COPY", db)
	}
	copied, err := cp.CopyFrom(ctx, pgx.Identifier{"staging", "webhooks"}, copyColumns, pgx.CopyFromSlice(n, func(i int) ([]any, error) {
		return copyRow(&rows[i]), nil
	}))
	if err != nil {
		return fmt.Errorf("error inserting %d webhooks into staging: %w", n, err)
	}
	if copied != int64(n) {
		return fmt.Errorf("error inserting %d webhooks into staging: %d copied", n, copied)
	}
	return nil
}

func copyRow(r *Row) []any {
	var deliveryID, reason *string
	var replayOf, jobID *int64
	var original *time.Time
	if r.DeliveryID != "" {
		deliveryID = &r.DeliveryID
	}
	if !r.Accepted {
		reason = &r.RejectedReason
	}
	if r.ReplayOf != 0 {
		replayOf = &r.ReplayOf
	}
	if !r.OriginalReceivedAt.IsZero() {
		original = &r.OriginalReceivedAt
	}
	if r.BackfillJobID != 0 {
		jobID = &r.BackfillJobID
	}
	source := string(r.Source)
	if source == "" {
		source = string(SourceWebhook)
	}
	// headers is jsonb: pgx sends a string as the JSON text.
	return []any{r.ReceivedAt, r.OrgID, r.IntegrationID, deliveryID, r.Method, r.Path, r.Query, r.ContentType,
		string(r.Headers), r.Body, r.BodyTruncated, r.Accepted, reason, replayOf, original, source, jobID}
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
