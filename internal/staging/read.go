package staging

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNotFound means no stored row matches.
var ErrNotFound = errors.New("webhook not found")

// Stored is a row read back, with its id and (for lists) its body length in place of the body.
type Stored struct {
	ID int64
	Row
	// BodyBytes is the length of the stored body; lists fill it without reading the body itself.
	BodyBytes int
}

// Ref is the row's primary key.
func (s *Stored) Ref() Ref { return Ref{ReceivedAt: s.ReceivedAt, ID: s.ID} }

// Filter selects rows of one org for [List].
type Filter struct {
	OrgID int64
	// IntegrationID narrows to one integration; 0 means all of the org's.
	IntegrationID int64
	// Accepted narrows to accepted (true) or rejected (false) rows; nil means both.
	Accepted *bool
	// Sources narrows to rows from these sources; nil means all.
	Sources []Source
	// Limit caps the rows, newest first; required.
	Limit int
}

// summaryColumns leave the body out: lists show its length, never its bytes.
const summaryColumns = `id, received_at, org_id, integration_id, coalesce(delivery_id, ''), method, path, query, content_type,
	headers, body_truncated, accepted, coalesce(rejected_reason, ''), coalesce(replay_of, 0), length(body),
	original_received_at, source, coalesce(backfill_job_id, 0)`

// fullColumns add the body.
const fullColumns = summaryColumns + `, body`

// scan reads summaryColumns, and the body when withBody (fullColumns).
func scan(row pgx.Row, s *Stored, withBody bool) error {
	var original *time.Time
	dst := []any{&s.ID, &s.ReceivedAt, &s.OrgID, &s.IntegrationID, &s.DeliveryID, &s.Method, &s.Path, &s.Query,
		&s.ContentType, &s.Headers, &s.BodyTruncated, &s.Accepted, &s.RejectedReason, &s.ReplayOf, &s.BodyBytes, &original,
		&s.Source, &s.BackfillJobID}
	if withBody {
		dst = append(dst, &s.Body)
	}
	if err := row.Scan(dst...); err != nil {
		return err
	}
	if original != nil {
		s.OriginalReceivedAt = *original
	}
	return nil
}

// List returns an org's newest stored rows, without their bodies.
func List(ctx context.Context, db DB, f Filter) ([]Stored, error) {
	if f.Limit <= 0 {
		return nil, errors.New("staging: List needs a positive limit")
	}
	rows, err := db.Query(ctx, `SELECT `+summaryColumns+` FROM staging.webhooks
		WHERE org_id = $1 AND ($2 = 0 OR integration_id = $2) AND ($3::boolean IS NULL OR accepted = $3)
			AND ($5::text[] IS NULL OR source = ANY($5))
		ORDER BY received_at DESC, id DESC LIMIT $4`, f.OrgID, f.IntegrationID, f.Accepted, f.Limit, sourceTexts(f.Sources))
	if err != nil {
		return nil, fmt.Errorf("error listing webhooks: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Stored, error) {
		var s Stored
		err := scan(row, &s, false)
		return s, err
	})
	if err != nil {
		return nil, fmt.Errorf("error listing webhooks: %w", err)
	}
	return out, nil
}

func sourceTexts(ss []Source) []string {
	if ss == nil {
		return nil
	}
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = string(s)
	}
	return out
}

// Get returns one of an org's stored rows with its body, or ErrNotFound.
func Get(ctx context.Context, db DB, orgID, id int64) (*Stored, error) {
	var s Stored
	err := scan(db.QueryRow(ctx, `SELECT `+fullColumns+` FROM staging.webhooks WHERE org_id = $1 AND id = $2`, orgID, id), &s, true)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("error reading webhook %d: %w", id, err)
	}
	return &s, nil
}

// Counts returns how many deliveries an integration stored since a time, accepted and rejected; objects
// stored by backfills are not deliveries.
func Counts(ctx context.Context, db DB, integrationID int64, since time.Time) (accepted, rejected int64, err error) {
	err = db.QueryRow(ctx, `SELECT count(*) FILTER (WHERE accepted), count(*) FILTER (WHERE NOT accepted)
		FROM staging.webhooks WHERE integration_id = $1 AND received_at > $2 AND source <> 'backfill'`, integrationID, since).Scan(&accepted, &rejected)
	if err != nil {
		return 0, 0, fmt.Errorf("error counting webhooks: %w", err)
	}
	return accepted, rejected, nil
}

// Found is the answer of [Lookup].
type Found map[refKey]*Stored

// refKey compares as the database does: time.Time values of one instant differ in location and monotonic
// reading, so they make poor map keys.
type refKey struct {
	micros int64
	id     int64
}

// Get returns the row behind r, or nil.
func (f Found) Get(r Ref) *Stored { return f[refKey{r.ReceivedAt.UnixMicro(), r.ID}] }

// Lookup reads the rows behind refs, bodies included; refs that match nothing are absent from the answer.
func Lookup(ctx context.Context, db DB, refs []Ref) (Found, error) {
	out := make(Found, len(refs))
	if len(refs) == 0 {
		return out, nil
	}
	received, ids := make([]time.Time, len(refs)), make([]int64, len(refs))
	for i, r := range refs {
		received[i], ids[i] = r.ReceivedAt, r.ID
	}
	rows, err := db.Query(ctx, `SELECT `+fullColumns+` FROM staging.webhooks
		WHERE (received_at, id) IN (SELECT * FROM unnest($1::timestamptz[], $2::bigint[]))`, received, ids)
	if err != nil {
		return nil, fmt.Errorf("error reading staged webhooks: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		s := &Stored{}
		if err := scan(rows, s, true); err != nil {
			return nil, fmt.Errorf("error reading staged webhooks: %w", err)
		}
		out[refKey{s.ReceivedAt.UnixMicro(), s.ID}] = s
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("error reading staged webhooks: %w", err)
	}
	return out, nil
}
