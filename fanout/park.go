package fanout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/internal/staging"
)

// parkedOrg summarises an org's parked changes when a session starts.
type parkedOrg struct {
	attempts    int
	nextAttempt time.Time
	count       int64
}

func (c *Consumer) loadParked(ctx context.Context) (map[int64]parkedOrg, error) {
	rows, err := c.pool.Query(ctx, `
		SELECT org_id, max(attempts), min(next_attempt_at), count(*) FROM fanout.parked_changes GROUP BY org_id`)
	if err != nil {
		return nil, fmt.Errorf("error reading parked changes: %w", err)
	}
	defer rows.Close()
	out := map[int64]parkedOrg{}
	for rows.Next() {
		var id int64
		var p parkedOrg
		if err := rows.Scan(&id, &p.attempts, &p.nextAttempt, &p.count); err != nil {
			return nil, fmt.Errorf("error reading parked changes: %w", err)
		}
		out[id] = p
		c.metrics.parked.WithLabelValues(orgLabel(id)).Set(float64(p.count))
	}
	return out, rows.Err()
}

// park stores references to changes in fanout.parked_changes, behind the org's earlier parked changes.
// Parking a replayed change again is a no-op.
func (c *Consumer) park(ctx context.Context, orgID int64, changes []*change, reason string, next time.Time) error {
	n := len(changes)
	integ, webhook, seq := make([]int64, n), make([]int64, n), make([]int32, n)
	received, lsn := make([]time.Time, n), make([]string, n)
	for i, ch := range changes {
		integ[i], webhook[i], seq[i] = ch.integrationID, ch.webhookID, ch.pos.seq
		received[i], lsn[i] = ch.receivedAt, ch.pos.lsn.String()
	}
	tag, err := c.pool.Exec(ctx, `
		INSERT INTO fanout.parked_changes (org_id, integration_id, received_at, webhook_id, commit_lsn, seq, last_error, next_attempt_at)
		SELECT $1, i, r, w, l::pg_lsn, s, $7, $8 FROM unnest($2::bigint[], $3::timestamptz[], $4::bigint[], $5::text[], $6::integer[]) AS u(i, r, w, l, s)
		ON CONFLICT (webhook_id, received_at) DO NOTHING`, orgID, integ, received, webhook, lsn, seq, reason, next)
	if err != nil {
		return fmt.Errorf("error parking changes: %w", err)
	}
	label := orgLabel(orgID)
	c.metrics.parkedTotal.WithLabelValues(label).Add(float64(tag.RowsAffected()))
	c.metrics.parked.WithLabelValues(label).Add(float64(tag.RowsAffected()))
	return nil
}

// drain applies the org's oldest parked changes, in stream order, and deletes them once applied.
func (c *Consumer) drain(ctx context.Context, o *orgState) (jobResult, error) {
	rows, err := c.pool.Query(ctx, `
		SELECT id, integration_id, received_at, webhook_id, commit_lsn::text, seq
		FROM fanout.parked_changes WHERE org_id = $1
		ORDER BY commit_lsn, seq
		LIMIT $2`, o.id, c.cfg.DrainBatchRows)
	if err != nil {
		return jobResult{}, fmt.Errorf("error reading parked changes: %w", err)
	}
	var (
		ids     []int64
		parked  []*change
		refs    []staging.Ref
		lsnText string
	)
	for rows.Next() {
		var id int64
		ch := &change{orgID: o.id}
		if err := rows.Scan(&id, &ch.integrationID, &ch.receivedAt, &ch.webhookID, &lsnText, &ch.pos.seq); err != nil {
			rows.Close()
			return jobResult{}, fmt.Errorf("error reading parked changes: %w", err)
		}
		if ch.pos.lsn, err = pglogrepl.ParseLSN(lsnText); err != nil {
			rows.Close()
			return jobResult{}, fmt.Errorf("error reading parked changes: %w", err)
		}
		ids = append(ids, id)
		parked = append(parked, ch)
		refs = append(refs, staging.Ref{ReceivedAt: ch.receivedAt, ID: ch.webhookID})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return jobResult{}, fmt.Errorf("error reading parked changes: %w", err)
	}
	stored, err := staging.Lookup(ctx, c.pool, refs)
	if err != nil {
		return jobResult{}, err
	}
	var (
		changes []*change
		missing []failure
	)
	for i, ch := range parked {
		w := stored.Get(refs[i])
		if w == nil {
			// Upkeep keeps partitions that parked changes point into; this is an operator's manual delete.
			missing = append(missing, failure{ch, "the staging row no longer exists"})
			continue
		}
		ch.deliveryID, ch.contentType, ch.headers, ch.body = w.DeliveryID, w.ContentType, w.Headers, w.Body
		ch.originalReceivedAt = w.OriginalReceivedAt
		ch.source, ch.backfillJobID = w.Source, w.BackfillJobID
		changes = append(changes, ch)
	}
	if len(ids) == 0 {
		c.metrics.parked.DeleteLabelValues(orgLabel(o.id))
		c.cfg.Logger.InfoContext(ctx, "parked changes drained", slog.Int64("org_id", o.id))
		return jobResult{drained: true}, nil
	}
	if len(missing) > 0 {
		if err := c.recordFailed(ctx, o.id, missing); err != nil {
			return jobResult{}, err
		}
	}
	if len(changes) > 0 {
		start := time.Now()
		applied, err := c.applyChanges(ctx, o.id, changes)
		var te *transientError
		if errors.As(err, &te) {
			next := time.Now().Add(backoff(c.cfg.RetryMin, c.cfg.RetryMax, o.attempts+1))
			if _, uerr := c.pool.Exec(ctx, `
				UPDATE fanout.parked_changes SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3
				WHERE org_id = $1`, o.id, te.Error(), next); uerr != nil {
				return jobResult{}, fmt.Errorf("error recording a failed drain: %w", uerr)
			}
			c.cfg.Logger.WarnContext(ctx, "cannot drain parked changes yet", slog.Int64("org_id", o.id),
				slog.Int("attempts", o.attempts+1), slog.Time("next_attempt_at", next), slog.String("error", te.Error()))
			if _, err := c.expireParked(ctx, o.id); err != nil {
				return jobResult{}, err
			}
			return jobResult{failed: true, nextAttempt: next}, nil
		}
		if err != nil {
			return jobResult{}, err
		}
		c.observe(applied, nil, start)
	}
	if _, err := c.pool.Exec(ctx, `DELETE FROM fanout.parked_changes WHERE id = ANY($1)`, ids); err != nil {
		// Applied but still parked: the next drain skips them by the org database's applied position.
		return jobResult{}, fmt.Errorf("error deleting drained changes: %w", err)
	}
	c.metrics.parked.WithLabelValues(orgLabel(o.id)).Sub(float64(len(ids)))
	if len(ids) < c.cfg.DrainBatchRows {
		c.metrics.parked.DeleteLabelValues(orgLabel(o.id))
		c.cfg.Logger.InfoContext(ctx, "parked changes drained", slog.Int64("org_id", o.id))
		return jobResult{drained: true}, nil
	}
	return jobResult{more: true}, nil
}

// expireParked moves an org's parked changes that are past ParkedMaxAge or ParkedMaxAttempts into
// fanout.failed_changes, each with its payload read from staging, so they hold no staging partition any more.
// It returns how many it moved.
func (c *Consumer) expireParked(ctx context.Context, orgID int64) (int64, error) {
	var total int64
	for {
		n, err := c.expireParkedBatch(ctx, orgID)
		total += n
		if err != nil {
			return total, err
		}
		if n < int64(c.cfg.DrainBatchRows) {
			break
		}
	}
	if total > 0 {
		c.metrics.parked.WithLabelValues(orgLabel(orgID)).Sub(float64(total))
		c.metrics.failedTotal.WithLabelValues(orgLabel(orgID)).Add(float64(total))
		c.cfg.Logger.WarnContext(ctx, "parked changes past their bound; recorded as failed with their payloads",
			slog.Int64("org_id", orgID), slog.Int64("count", total),
			slog.Duration("max_age", c.cfg.ParkedMaxAge), slog.Int("max_attempts", c.cfg.ParkedMaxAttempts))
	}
	return total, nil
}

func (c *Consumer) expireParkedBatch(ctx context.Context, orgID int64) (int64, error) {
	var moved int64
	err := pgx.BeginFunc(ctx, c.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `
			SELECT id, integration_id, received_at, webhook_id, commit_lsn::text, seq, attempts, parked_at, last_error
			FROM fanout.parked_changes
			WHERE org_id = $1 AND (parked_at < $2 OR attempts >= $3)
			ORDER BY commit_lsn, seq LIMIT $4 FOR UPDATE`,
			orgID, time.Now().Add(-c.cfg.ParkedMaxAge), c.cfg.ParkedMaxAttempts, c.cfg.DrainBatchRows)
		if err != nil {
			return err
		}
		var (
			ids  []int64
			fs   []failure
			refs []staging.Ref
		)
		for rows.Next() {
			var (
				id       int64
				lsnText  string
				attempts int
				parkedAt time.Time
				lastErr  string
			)
			ch := &change{orgID: orgID}
			if err := rows.Scan(&id, &ch.integrationID, &ch.receivedAt, &ch.webhookID, &lsnText, &ch.pos.seq, &attempts, &parkedAt, &lastErr); err != nil {
				rows.Close()
				return err
			}
			if ch.pos.lsn, err = pglogrepl.ParseLSN(lsnText); err != nil {
				rows.Close()
				return err
			}
			ids = append(ids, id)
			refs = append(refs, staging.Ref{ReceivedAt: ch.receivedAt, ID: ch.webhookID})
			fs = append(fs, failure{ch, fmt.Sprintf("parked since %s, %d attempts (bounds: %s, %d attempts); last error: %s",
				parkedAt.UTC().Format(time.RFC3339), attempts, c.cfg.ParkedMaxAge, c.cfg.ParkedMaxAttempts, lastErr)})
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(ids) == 0 {
			return nil
		}
		stored, err := staging.Lookup(ctx, tx, refs)
		if err != nil {
			return err
		}
		for i, f := range fs {
			if w := stored.Get(refs[i]); w != nil {
				f.c.deliveryID, f.c.contentType, f.c.headers, f.c.body = w.DeliveryID, w.ContentType, w.Headers, w.Body
				f.c.originalReceivedAt = w.OriginalReceivedAt
				f.c.source, f.c.backfillJobID = w.Source, w.BackfillJobID
			} else {
				fs[i].err += "; the staging row no longer exists"
			}
		}
		if _, err := insertFailed(ctx, tx, orgID, fs); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM fanout.parked_changes WHERE id = ANY($1)`, ids); err != nil {
			return err
		}
		moved = int64(len(ids))
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("error failing parked changes past their bound: %w", err)
	}
	return moved, nil
}
