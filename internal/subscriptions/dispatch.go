package subscriptions

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/internal/outgoing"
)

// claimGap is the least time between claims woken by finished deliveries.
const claimGap = 5 * time.Millisecond

// claimWindow is how many of an endpoint's oldest pending deliveries a claim looks at.
const claimWindow = 256

// prefetch is how many deliveries per sending slot an endpoint may hold claimed: a claim feeds several
// rounds of its Concurrency sends (bounded so the lease outlasts them even at the client's timeout).
const prefetch = 4

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
	successes := make(chan success, 1024)
	flushed := make(chan struct{})
	go func() { defer close(flushed); s.recordSuccesses(ctx, successes) }()
	defer func() {
		wg.Wait()
		close(successes)
		<-flushed
	}()
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
			sem := s.slots(d.subID)
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				s.deliver(ctx, d, successes)
				<-sem
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
			// A finished delivery frees a slot; gather a few before claiming again, so a busy endpoint costs a
			// claim per batch of deliveries rather than one each.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(claimGap):
			}
		}
	}
}

// slots returns the endpoint's semaphore: at most Concurrency of its claimed deliveries are sent at once.
func (s *Service) slots(subID int64) chan struct{} {
	s.busyMu.Lock()
	defer s.busyMu.Unlock()
	sem := s.sems[subID]
	if sem == nil {
		sem = make(chan struct{}, s.cfg.Concurrency)
		s.sems[subID] = sem
	}
	return sem
}

// success is a 2xx answer, recorded in batches: the common case costs one statement per batch, not one
// commit per delivery. Until its batch commits the delivery stays leased; a crash before that sends it again,
// under the same message id.
type success struct {
	id, subID int64
	attempts  int
	at        time.Time
	status    int
	body      string
}

func (s *Service) recordSuccesses(ctx context.Context, in <-chan success) {
	var batch []success
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	flush := func() {
		if len(batch) == 0 {
			return
		}
		s.metrics.attempts.WithLabelValues("delivered").Add(float64(len(batch)))
		if err := s.markDelivered(context.WithoutCancel(ctx), batch); err != nil {
			s.cfg.Logger.WarnContext(ctx, "cannot record deliveries; they are sent again when their lease expires",
				slog.Int("deliveries", len(batch)), slog.String("error", err.Error()))
		}
		batch = batch[:0]
	}
	for {
		select {
		case x, ok := <-in:
			if !ok {
				flush()
				return
			}
			batch = append(batch, x)
			if len(batch) >= 500 {
				flush()
			} else if len(batch) == 1 {
				timer.Reset(successDelay)
			}
		case <-timer.C:
			flush()
		}
	}
}

// successDelay is how long a success waits for company before its batch is recorded.
const successDelay = 5 * time.Millisecond

func (s *Service) markDelivered(ctx context.Context, batch []success) error {
	n := len(batch)
	ids, subs := make([]int64, n), make([]int64, n)
	attempts, statuses := make([]int32, n), make([]int32, n)
	ats, bodies := make([]time.Time, n), make([]string, n)
	for i, x := range batch {
		ids[i], subs[i], attempts[i], statuses[i], ats[i], bodies[i] = x.id, x.subID, int32(x.attempts), int32(x.status), x.at, x.body
	}
	// One transaction, the endpoints' rows first, as finish and disable lock them. A mark lost in a crash
	// sends the delivery again under its message id, so the commit does not wait for the WAL flush.
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue("SET LOCAL synchronous_commit = off")
	b.Queue(`UPDATE subscriptions SET failing_since = NULL WHERE id = ANY($1) AND failing_since IS NOT NULL`, subs)
	b.Queue(`
		UPDATE subscription_deliveries d SET status = 'delivered', attempts = u.n, last_attempt_at = u.at, delivered_at = u.at,
			response_status = u.st, response_body = u.body, last_error = NULL, next_attempt_at = NULL, locked_until = NULL
		FROM unnest($1::bigint[], $2::int[], $3::timestamptz[], $4::int[], $5::text[]) AS u(id, n, at, st, body)
		WHERE d.id = u.id`, ids, attempts, ats, statuses, bodies)
	b.Queue("COMMIT")
	return s.pool.SendBatch(ctx, b).Close()
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
	// Per endpoint: its first claimWindow pending deliveries in id order, the first of each remote key among
	// them (a later one waits while an earlier one of its key is pending, even backing off; an earlier one is
	// always in the window), those due and not leased, up to the endpoint's free slots. No anti-join: the cost
	// is bounded by the window whatever the planner knows of the table (MATERIALIZED: picked once, never
	// re-run per row of the update, which a plan made while the table was empty would do). An endpoint with a
	// backlog never makes the others wait.
	// A lease lost in a crash costs nothing (the delivery is pending and unleased again; at worst it is sent
	// twice, under one message id), so its commit does not wait for the WAL flush: claims are the dispatcher's
	// critical path.
	var out []claimed
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue("SET LOCAL synchronous_commit = off")
	b.Queue(`
		WITH pick AS MATERIALIZED (
			SELECT c.id FROM subscriptions s
			LEFT JOIN unnest($3::bigint[], $4::int[]) AS b(sid, busy) ON b.sid = s.id
			CROSS JOIN LATERAL (
				SELECT h.id FROM (
					SELECT DISTINCT ON (w.remote_key) w.id, w.next_attempt_at, w.locked_until
					FROM (
						SELECT d.id, d.remote_key, d.next_attempt_at, d.locked_until FROM subscription_deliveries d
						WHERE d.subscription_id = s.id AND d.status = 'pending' ORDER BY d.id LIMIT $7
					) w
					ORDER BY w.remote_key, w.id
				) h
				WHERE h.next_attempt_at <= $1 AND (h.locked_until IS NULL OR h.locked_until <= $1)
				ORDER BY h.id LIMIT greatest($5 - coalesce(b.busy, 0), 0)
			) c
			WHERE s.disabled_at IS NULL
			  AND NOT EXISTS (SELECT FROM organizations o WHERE o.id = s.org_id AND o.deleted_at IS NOT NULL)
			LIMIT $2
		)
		UPDATE subscription_deliveries d SET locked_until = $6
		FROM pick WHERE d.id = pick.id AND d.status = 'pending' AND (d.locked_until IS NULL OR d.locked_until <= $1)
		RETURNING d.id, d.subscription_id, d.message_id, d.payload::text, d.attempts`,
		now, room, busyIDs, busyN, s.cfg.Concurrency*prefetch, now.Add(s.cfg.Lease), claimWindow).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var d claimed
			var payload string
			if err := rows.Scan(&d.id, &d.subID, &d.messageID, &payload, &d.attempts); err != nil {
				return err
			}
			d.payload = []byte(payload)
			out = append(out, d)
		}
		return rows.Err()
	})
	b.Queue("COMMIT")
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
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
		delete(s.sems, subID) // empty: nothing of the endpoint is claimed
	}
	s.total--
	s.busyMu.Unlock()
}

// deliver makes one attempt and records its outcome. Shutting down mid-attempt records nothing: the lease
// expires and the attempt is made again, with the same message id.
func (s *Service) deliver(ctx context.Context, d claimed, successes chan<- success) {
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
	if err == nil && resp.Status >= 200 && resp.Status < 300 {
		successes <- success{id: d.id, subID: d.subID, attempts: d.attempts + 1, at: now, status: resp.Status, body: s.clip(resp.Body)}
		return
	}
	if err := s.finish(context.WithoutCancel(ctx), d, k, now, resp, err); err != nil {
		s.cfg.Logger.WarnContext(ctx, "cannot record a delivery attempt; it is made again when its lease expires",
			slog.Int64("delivery_id", d.id), slog.String("error", err.Error()))
	}
}

// finish records a failed attempt: the next attempt on the schedule, or failed after the last one. The endpoint's failure streak starts at its first failure and ends at any success; a streak
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
	if lastErr == nil && resp != nil {
		e := fmt.Sprintf("the endpoint answered %d", resp.Status)
		lastErr = &e
	}
	state, next := "failed", (*time.Time)(nil)
	if n < len(s.cfg.Schedule) {
		at := now.Add(s.jitter(s.cfg.Schedule[n]))
		state, next = "pending", &at
	}
	// The endpoint's row first, then the delivery's, as disable and markDelivered lock them: no deadlock, and
	// an endpoint disabled meanwhile fails this delivery with its others.
	var failingSince time.Time
	var disabled bool
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `UPDATE subscriptions SET failing_since = coalesce(failing_since, $2) WHERE id = $1
			RETURNING failing_since, disabled_at IS NOT NULL`, d.subID, now).Scan(&failingSince, &disabled); err != nil {
			return err
		}
		if disabled {
			state, next = "failed", nil
			e := "endpoint disabled"
			if lastErr != nil {
				e = *lastErr + "; " + e
			}
			lastErr = &e
		}
		_, err := tx.Exec(ctx, `UPDATE subscription_deliveries SET status = $2, attempts = $3, last_attempt_at = $4, next_attempt_at = $5,
				response_status = $6, response_body = $7, last_error = $8, locked_until = NULL
			WHERE id = $1`, d.id, state, n, now, next, status, body, lastErr)
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil // the subscription was deleted, with its deliveries
	}
	if err != nil {
		return err
	}
	if state == "failed" {
		s.metrics.attempts.WithLabelValues("failed").Inc()
	} else {
		s.metrics.attempts.WithLabelValues("retry").Inc()
	}
	if disabled {
		return nil
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
	s.metrics.disabled.Inc()
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
