package staging

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// copyPageRows bounds the rows (and so the bodies) held in memory while copying.
const copyPageRows = 200

// Window selects the original, accepted deliveries of some integrations received in [Since, Until).
type Window struct {
	OrgID int64
	// IntegrationIDs are the integrations to replay (the caller leaves out deleted ones); required.
	IntegrationIDs []int64
	Since, Until   time.Time
}

// Replay stores again, in one transaction, every original accepted delivery of the window, each pointing at
// its original, so the fanout applies them once more. Upserts are idempotent and monotonic, so replaying
// twice changes nothing in the org's tables. It returns how many rows it stored.
func Replay(ctx context.Context, pool *pgxpool.Pool, w Window) (int64, error) {
	if len(w.IntegrationIDs) == 0 {
		return 0, nil
	}
	var total int64
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		after := Ref{ReceivedAt: w.Since, ID: 0}
		for {
			rows, err := tx.Query(ctx, `SELECT `+fullColumns+` FROM staging.webhooks
				WHERE org_id = $1 AND integration_id = ANY($2) AND accepted AND replay_of IS NULL
				  AND received_at < $3 AND (received_at, id) > ($4, $5)
				ORDER BY received_at, id LIMIT $6`, w.OrgID, w.IntegrationIDs, w.Until, after.ReceivedAt, after.ID, copyPageRows)
			if err != nil {
				return fmt.Errorf("error reading the replay window: %w", err)
			}
			page, err := collectFull(rows)
			if err != nil {
				return err
			}
			if len(page) == 0 {
				return nil
			}
			if err := storeCopies(ctx, tx, page, SourceReplay); err != nil {
				return err
			}
			total += int64(len(page))
			after = page[len(page)-1].Ref()
		}
	})
	if err != nil {
		return 0, fmt.Errorf("error replaying: %w", err)
	}
	return total, nil
}

// Resubmit stores again the rows behind refs, as accepted copies pointing at their originals, inside the
// caller's transaction (the fanout retries its failed changes this way). Refs that match nothing are skipped.
func Resubmit(ctx context.Context, tx pgx.Tx, refs []Ref) (int64, error) {
	var total int64
	for start := 0; start < len(refs); start += copyPageRows {
		found, err := Lookup(ctx, tx, refs[start:min(start+copyPageRows, len(refs))])
		if err != nil {
			return 0, err
		}
		page := make([]*Stored, 0, len(found))
		for _, s := range found {
			page = append(page, s)
		}
		if err := storeCopies(ctx, tx, page, ""); err != nil {
			return 0, err
		}
		total += int64(len(page))
	}
	return total, nil
}

func collectFull(rows pgx.Rows) ([]*Stored, error) {
	defer rows.Close()
	var out []*Stored
	for rows.Next() {
		s := &Stored{}
		if err := scan(rows, s, true); err != nil {
			return nil, fmt.Errorf("error reading staged webhooks: %w", err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("error reading staged webhooks: %w", err)
	}
	return out, nil
}

// copies turns stored rows into new accepted rows received now (in a partition upkeep keeps until the fanout
// has read them) that point at the first delivery of each and keep its receive time.
// source, when not "", is what the copies record as their source (a replay, a resync); "" keeps each original's
// (a retried failed change is still the delivery it was).
func copies(stored []*Stored, now time.Time, source Source) []Row {
	out := make([]Row, len(stored))
	for i, s := range stored {
		r := s.Row
		r.Accepted, r.RejectedReason, r.BodyTruncated = true, "", false
		if r.ReplayOf == 0 {
			r.ReplayOf = s.ID
		}
		r.OriginalReceivedAt = s.Time()
		r.ReceivedAt = now
		if source != "" {
			r.Source = source
		}
		out[i] = r
	}
	return out
}

// storeCopies inserts copies of stored rows within tx, received now.
func storeCopies(ctx context.Context, tx pgx.Tx, stored []*Stored, source Source) error {
	now := time.Now()
	// Today's partition is made days ahead by upkeep; make sure anyway, as a transaction cannot retry.
	if _, err := tx.Exec(ctx, `SELECT staging.ensure_partitions($1::date, 1)`, now.UTC().Format(time.DateOnly)); err != nil {
		return fmt.Errorf("error creating today's staging partition: %w", err)
	}
	return insert(ctx, tx, copies(stored, now, source))
}

// Payload is a delivery kept outside staging.webhooks (the fanout's failed changes keep their own copy), so it
// can be stored again after its staging partition is gone.
type Payload struct {
	// Ref is the staging row the payload was read from; the copy points at it (replay_of).
	Ref
	OrgID         int64
	IntegrationID int64
	DeliveryID    string
	ContentType   string
	Headers       []byte // JSON object
	Body          []byte
	// OriginalReceivedAt is when the delivery first arrived: what replicators read as its receive time.
	OriginalReceivedAt time.Time
	// Source and BackfillJobID are the original's; a copy keeps them.
	Source        Source
	BackfillJobID int64
}

// StorePayloads stores payloads again within tx, as accepted copies received now, like [Resubmit] but from
// copies the caller kept rather than from staging rows (which may be gone). The request's method and path
// are not part of a payload and are stored empty.
func StorePayloads(ctx context.Context, tx pgx.Tx, ps []Payload) (int64, error) {
	stored := make([]*Stored, len(ps))
	for i, p := range ps {
		if len(p.Headers) == 0 {
			p.Headers = []byte("{}")
		}
		stored[i] = &Stored{ID: p.ID, Row: Row{
			ReceivedAt: p.ReceivedAt, OrgID: p.OrgID, IntegrationID: p.IntegrationID, DeliveryID: p.DeliveryID,
			ContentType: p.ContentType, Headers: p.Headers, Body: p.Body, Accepted: true, OriginalReceivedAt: p.OriginalReceivedAt,
			Source: p.Source, BackfillJobID: p.BackfillJobID,
		}}
	}
	for start := 0; start < len(stored); start += copyPageRows {
		if err := storeCopies(ctx, tx, stored[start:min(start+copyPageRows, len(stored))], ""); err != nil {
			return 0, err
		}
	}
	return int64(len(stored)), nil
}
