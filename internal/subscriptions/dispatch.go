package subscriptions

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/webhookdb-go/webhookdb/internal/outgoing"
)

// claimed is a delivery a dispatcher holds.
type claimed struct {
	id, subID int64
	messageID string
	payload   []byte
	attempts  int
}

// Run delivers due deliveries until ctx ends; every process with the maintenance role runs it (claims are
// row-locked and leased, so several never send the same attempt).
func (s *Service) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	wake := make(chan struct{}, 1)
	tick := time.NewTicker(s.cfg.PollInterval)
	defer tick.Stop()
	var lastPrune time.Time
	for {
		batch, err := s.claim(ctx)
		if err != nil && ctx.Err() == nil {
			s.cfg.Logger.WarnContext(ctx, "cannot claim deliveries", slog.String("error", err.Error()))
		}
		for _, d := range batch {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.deliver(ctx, d)
				s.release(d.subID)
				select {
				case wake <- struct{}{}:
				default:
				}
			}()
		}
		if time.Since(lastPrune) > time.Hour {
			lastPrune = time.Now()
			if err := s.prune(ctx); err != nil && ctx.Err() == nil {
				s.cfg.Logger.WarnContext(ctx, "cannot prune the delivery log", slog.String("error", err.Error()))
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-wake:
		}
	}
}

// claim leases the due deliveries the endpoints have room for: per endpoint up to Concurrency in flight, and
// only the oldest pending delivery of each remote key (in order per key: a later one waits, even while the
// earlier one is backing off).
func (s *Service) claim(ctx context.Context) ([]claimed, error) {
	s.busyMu.Lock()
	room := s.cfg.MaxInFlight - s.total
	busyIDs := make([]int64, 0, len(s.busy))
	busyN := make([]int32, 0, len(s.busy))
	for id, n := range s.busy {
		busyIDs, busyN = append(busyIDs, id), append(busyN, int32(n))
	}
	s.busyMu.Unlock()
	if room <= 0 {
		return nil, nil
	}
	now := s.cfg.Now()
	rows, err := s.pool.Query(ctx, `
		WITH cand AS (
			SELECT d.id, d.subscription_id, row_number() OVER (PARTITION BY d.subscription_id ORDER BY d.id) AS rn
			FROM subscription_deliveries d JOIN subscriptions s ON s.id = d.subscription_id AND s.disabled_at IS NULL
			WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND (d.locked_until IS NULL OR d.locked_until <= $1)
			  AND NOT EXISTS (SELECT FROM subscription_deliveries e
				WHERE e.subscription_id = d.subscription_id AND e.remote_key = d.remote_key AND e.status = 'pending' AND e.id < d.id)
		), pick AS (
			SELECT c.id FROM cand c LEFT JOIN unnest($3::bigint[], $4::int[]) AS b(sid, busy) ON b.sid = c.subscription_id
			WHERE c.rn <= $5 - coalesce(b.busy, 0)
			ORDER BY c.id LIMIT $2
		)
		UPDATE subscription_deliveries d SET locked_until = $6
		FROM pick WHERE d.id = pick.id AND d.status = 'pending' AND (d.locked_until IS NULL OR d.locked_until <= $1)
		RETURNING d.id, d.subscription_id, d.message_id, d.payload::text, d.attempts`,
		now, room, busyIDs, busyN, s.cfg.Concurrency, now.Add(s.cfg.Lease))
	if err != nil {
		return nil, fmt.Errorf("error claiming deliveries: %w", err)
	}
	defer rows.Close()
	var out []claimed
	for rows.Next() {
		var d claimed
		var payload string
		if err := rows.Scan(&d.id, &d.subID, &d.messageID, &payload, &d.attempts); err != nil {
			return nil, err
		}
		d.payload = []byte(payload)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("error claiming deliveries: %w", err)
	}
	s.busyMu.Lock()
	for _, d := range out {
		s.busy[d.subID]++
		s.total++
	}
	s.busyMu.Unlock()
	return out, nil
}

func (s *Service) release(subID int64) {
	s.busyMu.Lock()
	s.busy[subID]--
	if s.busy[subID] <= 0 {
		delete(s.busy, subID)
	}
	s.total--
	s.busyMu.Unlock()
}

// deliver makes one attempt and records its outcome. Shutting down mid-attempt records nothing: the lease
// expires and the attempt is made again, with the same message id.
func (s *Service) deliver(ctx context.Context, d claimed) {
	k, err := s.signing(ctx, d.subID)
	if errors.Is(err, ErrNotFound) {
		return // deleted meanwhile, with its deliveries
	}
	if err != nil {
		if ctx.Err() == nil {
			s.cfg.Logger.WarnContext(ctx, "cannot sign a delivery; retrying when its lease expires",
				slog.Int64("delivery_id", d.id), slog.String("error", err.Error()))
		}
		return
	}
	now := s.cfg.Now()
	resp, err := s.cfg.Client.Post(ctx, k.url, outgoing.SignedHeader(d.messageID, now, d.payload, k.keysAt(now)...), d.payload)
	if ctx.Err() != nil {
		return
	}
	if err := s.finish(context.WithoutCancel(ctx), d, k, now, resp, err); err != nil {
		s.cfg.Logger.WarnContext(ctx, "cannot record a delivery attempt; it is made again when its lease expires",
			slog.Int64("delivery_id", d.id), slog.String("error", err.Error()))
	}
}

// finish records an attempt: delivered on a 2xx, else the next attempt on the schedule, or failed after the
// last one. The endpoint's failure streak starts at its first failure and ends at any success; a streak
// longer than DisableAfter disables the endpoint (once) and alerts the org.
func (s *Service) finish(ctx context.Context, d claimed, k *signingKeys, now time.Time, resp *outgoing.Response, callErr error) error {
	n := d.attempts + 1
	var status *int
	var body, lastErr *string
	if resp != nil {
		status = &resp.Status
		b := s.clip(resp.Body)
		body = &b
	}
	if callErr != nil {
		e := callErr.Error()
		lastErr = &e
	}
	if resp != nil && resp.Status >= 200 && resp.Status < 300 {
		_, err := s.pool.Exec(ctx, `
			WITH d AS (
				UPDATE subscription_deliveries SET status = 'delivered', attempts = $2, last_attempt_at = $3, delivered_at = $3,
					response_status = $4, response_body = $5, last_error = NULL, next_attempt_at = NULL, locked_until = NULL
				WHERE id = $1
			)
			UPDATE subscriptions SET failing_since = NULL WHERE id = $6 AND failing_since IS NOT NULL`,
			d.id, n, now, status, body, d.subID)
		return err
	}
	if lastErr == nil && resp != nil {
		e := fmt.Sprintf("the endpoint answered %d", resp.Status)
		lastErr = &e
	}
	state, next := "failed", (*time.Time)(nil)
	if n < len(s.cfg.Schedule) {
		at := now.Add(s.jitter(s.cfg.Schedule[n]))
		state, next = "pending", &at
	}
	var failingSince time.Time
	var disabled bool
	err := s.pool.QueryRow(ctx, `
		WITH d AS (
			UPDATE subscription_deliveries SET status = $2, attempts = $3, last_attempt_at = $4, next_attempt_at = $5,
				response_status = $6, response_body = $7, last_error = $8, locked_until = NULL
			WHERE id = $1
		)
		UPDATE subscriptions SET failing_since = coalesce(failing_since, $4) WHERE id = $9
		RETURNING failing_since, disabled_at IS NOT NULL`,
		d.id, state, n, now, next, status, body, lastErr, d.subID).Scan(&failingSince, &disabled)
	if err != nil {
		return err
	}
	if disabled {
		// disabled while this attempt was in flight: it fails with the others (recover resends it)
		_, err := s.pool.Exec(ctx, `UPDATE subscription_deliveries SET status = 'failed', next_attempt_at = NULL,
			last_error = coalesce(last_error || '; ', '') || 'endpoint disabled' WHERE id = $1 AND status = 'pending'`, d.id)
		return err
	}
	if now.Sub(failingSince) < s.cfg.DisableAfter {
		return nil
	}
	return s.disable(ctx, d.subID, k, now, fmt.Sprintf("every delivery failed since %s", failingSince.UTC().Format(time.RFC3339)))
}

// disable turns an endpoint off, fails its pending deliveries (recover resends them) and alerts the org;
// only the caller that disables it alerts.
func (s *Service) disable(ctx context.Context, subID int64, k *signingKeys, now time.Time, reason string) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	tag, err := tx.Exec(ctx, `UPDATE subscriptions SET disabled_at = $2, disabled_reason = $3 WHERE id = $1 AND disabled_at IS NULL`, subID, now, reason)
	if err != nil || tag.RowsAffected() == 0 {
		return err
	}
	if _, err := tx.Exec(ctx, `UPDATE subscription_deliveries SET status = 'failed', next_attempt_at = NULL, locked_until = NULL,
		last_error = coalesce(last_error || '; ', '') || 'endpoint disabled'
		WHERE subscription_id = $1 AND status = 'pending'`, subID); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	s.cfg.Logger.WarnContext(ctx, "subscription endpoint disabled", slog.String("subscription", k.opaqueID),
		slog.Int64("org_id", k.orgID), slog.String("reason", reason))
	if s.cfg.Alerts != nil {
		if err := s.cfg.Alerts.SubscriptionDisabled(ctx, k.orgID, k.opaqueID, k.url, reason); err != nil {
			return fmt.Errorf("error alerting the org: %w", err)
		}
	}
	return nil
}

func (s *Service) jitter(d time.Duration) time.Duration {
	if d <= 0 || s.cfg.Jitter == 0 {
		return d
	}
	return d + time.Duration(rand.Int64N(int64(float64(d)*s.cfg.Jitter)+1))
}

// prune drops delivered and failed deliveries older than the retention.
func (s *Service) prune(ctx context.Context) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM subscription_deliveries WHERE status <> 'pending' AND created_at < $1`,
		s.cfg.Now().Add(-s.cfg.Retention))
	return err
}
