package subscriptions

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/internal/outgoing"
)

// claimWindow is how many of an endpoint's oldest pending deliveries a claim looks at.
const claimWindow = 256

// prefetch is how many deliveries per sending slot an endpoint may hold from claims: a claim feeds several
// rounds of its Concurrency sends (bounded so the lease outlasts them even at the client's timeout).
const prefetch = 4

// claimed is a delivery a dispatcher holds: handed over by Record as it was inserted (leased already), or
// claimed.
type claimed struct {
	id, subID int64
	messageID string
	remoteKey string
	payload   []byte
	attempts  int
	fromClaim bool
}

// endpoint is what this process holds of one subscription's deliveries. In order per remote key: only the
// oldest held delivery of a key is ready or being sent; the others wait behind it in keys.
type endpoint struct {
	sending int
	ready   []*claimed
	keys    map[string][]*claimed
	held    int // in keys
	claimed int // of held, from claims
}

// outcome is what an attempt left in the database.
type outcome int

const (
	outcomeDelivered outcome = iota // 2xx; its mark is batched
	outcomeFailed                   // failed for good: a later delivery of its key may go
	outcomeRetry                    // pending again, backing off: the later ones of its key wait for it
	outcomeNone                     // nothing recorded (shutting down, deleted, cannot sign): its lease expires
)

// dispatch is the state of the running dispatcher (Run); s.busyMu guards it.
type dispatch struct {
	running bool
	eps     map[int64]*endpoint
	// ids are the deliveries this process holds, with those delivered whose mark is not committed yet:
	// Record hands a new delivery over only when every earlier pending one of its key is among them.
	ids          map[int64]bool
	claimedTotal int
	wg           *sync.WaitGroup
	ctx          context.Context
	marks        *marks
}

// Run delivers due deliveries until ctx ends; every process with the maintenance role runs it (claims are
// row-locked and leased, so several never send the same attempt). Deliveries Record inserts in this process
// are handed over in memory, leased already, so the common case costs no claim; claims take the rest:
// retries, what other processes recorded, what a crash left (its leases expire).
func (s *Service) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	m := &marks{signal: make(chan struct{}, 1)}
	s.busyMu.Lock()
	if s.d.running {
		s.busyMu.Unlock()
		return errors.New("subscriptions: Run is running already")
	}
	s.d = dispatch{running: true, eps: map[int64]*endpoint{}, ids: map[int64]bool{}, wg: &wg, ctx: ctx, marks: m}
	s.busyMu.Unlock()
	flushed := make(chan struct{})
	go func() { defer close(flushed); s.recordSuccesses(ctx, m) }()
	defer func() {
		s.busyMu.Lock()
		s.d.running = false
		s.busyMu.Unlock()
		wg.Wait()
		m.close()
		<-flushed
		// What is held but was not sent goes back to the claims at once, rather than when its lease expires.
		s.busyMu.Lock()
		var left []int64
		for _, ep := range s.d.eps {
			for _, ds := range ep.keys {
				for _, d := range ds {
					left = append(left, d.id)
				}
			}
		}
		s.d = dispatch{}
		s.busyMu.Unlock()
		s.unlease(context.WithoutCancel(ctx), left)
	}()
	tick := time.NewTicker(s.cfg.PollInterval)
	defer tick.Stop()
	var lastPrune time.Time
	lastRenew := time.Now()
	for {
		batch, err := s.claim(ctx)
		if err != nil && ctx.Err() == nil {
			s.cfg.Logger.WarnContext(ctx, "cannot claim deliveries", slog.String("error", err.Error()))
		}
		s.unlease(ctx, s.hold(batch))
		if time.Since(lastRenew) > s.cfg.Lease/4 {
			lastRenew = time.Now()
			if err := s.renew(ctx); err != nil && ctx.Err() == nil {
				s.cfg.Logger.WarnContext(ctx, "cannot renew leases", slog.String("error", err.Error()))
			}
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
		}
	}
}

// handoverRoom says, per subscription, how many new deliveries Record may insert leased and hand over to
// this process' dispatcher: none when it does not run here (another process claims them), up to HandoverCap
// held per endpoint.
func (s *Service) handoverRoom(subIDs []int64) map[int64]int {
	s.busyMu.Lock()
	defer s.busyMu.Unlock()
	out := make(map[int64]int, len(subIDs))
	if !s.d.running {
		return out
	}
	for _, id := range subIDs {
		n := s.cfg.HandoverCap
		if ep := s.d.eps[id]; ep != nil {
			n -= ep.held
		}
		out[id] = max(n, 0)
	}
	return out
}

// handover takes deliveries Record inserted leased; blockers[i] are the pending deliveries of the same key
// that were there before. Those it cannot take (an earlier delivery of the key is not held here, or the
// dispatcher stopped) are returned, to be unleased for the claims, which keep the order.
func (s *Service) handover(ds []*claimed, blockers [][]int64) []int64 {
	s.busyMu.Lock()
	var back []int64
	var take []*claimed
	for i, d := range ds {
		ok := s.d.running
		for _, b := range blockers[i] {
			ok = ok && s.d.ids[b]
		}
		if ok {
			take = append(take, d)
		} else {
			back = append(back, d.id)
		}
	}
	back = append(back, s.holdLocked(take)...)
	s.busyMu.Unlock()
	return back
}

// hold takes deliveries (claimed or handed over) and starts what may be sent; it returns those it cannot
// hold (the dispatcher stopped).
func (s *Service) hold(ds []*claimed) []int64 {
	s.busyMu.Lock()
	defer s.busyMu.Unlock()
	return s.holdLocked(ds)
}

func (s *Service) holdLocked(ds []*claimed) []int64 {
	if !s.d.running {
		back := make([]int64, len(ds))
		for i, d := range ds {
			back[i] = d.id
		}
		return back
	}
	touched := map[int64]*endpoint{}
	for _, d := range ds {
		if s.d.ids[d.id] {
			continue // held here already (claims leave those out; this is only a safety net)
		}
		ep := s.d.eps[d.subID]
		if ep == nil {
			ep = &endpoint{keys: map[string][]*claimed{}}
			s.d.eps[d.subID] = ep
		}
		s.d.ids[d.id] = true
		if len(ep.keys[d.remoteKey]) == 0 {
			ep.ready = append(ep.ready, d)
		}
		ep.keys[d.remoteKey] = append(ep.keys[d.remoteKey], d)
		ep.held++
		if d.fromClaim {
			ep.claimed++
			s.d.claimedTotal++
		}
		touched[d.subID] = ep
	}
	for id, ep := range touched {
		s.pumpLocked(id, ep)
	}
	return nil
}

// pumpLocked starts the endpoint's ready deliveries while it has free sending slots (Concurrency).
func (s *Service) pumpLocked(subID int64, ep *endpoint) {
	for s.d.running && ep.sending < s.cfg.Concurrency && len(ep.ready) > 0 {
		d := ep.ready[0]
		ep.ready[0] = nil
		ep.ready = ep.ready[1:]
		ep.sending++
		s.d.wg.Add(1)
		ctx, m := s.d.ctx, s.d.marks
		go func() {
			defer s.d.wg.Done()
			s.done(ctx, subID, d, s.deliver(ctx, d, m))
		}()
	}
	if len(ep.ready) == 0 && ep.held == 0 {
		delete(s.d.eps, subID)
	}
}

// done frees the attempt's slot and lets the next delivery of its key go, unless the attempt left the key
// blocked (backing off): then the ones waiting behind it go back to the claims, which send them after it.
func (s *Service) done(ctx context.Context, subID int64, d *claimed, o outcome) {
	s.busyMu.Lock()
	ep := s.d.eps[subID]
	ep.sending--
	ep.held--
	if d.fromClaim {
		ep.claimed--
		s.d.claimedTotal--
	}
	if o != outcomeDelivered {
		delete(s.d.ids, d.id) // a delivered one stays until its mark commits
	}
	var back []int64
	if o == outcomeNone && ctx.Err() != nil {
		back = append(back, d.id) // stopped mid-attempt: the next dispatcher need not wait for the lease
	}
	rest := ep.keys[d.remoteKey][1:]
	delete(ep.keys, d.remoteKey)
	switch {
	case len(rest) == 0:
	case o == outcomeDelivered || o == outcomeFailed:
		ep.keys[d.remoteKey] = rest
		ep.ready = append(ep.ready, rest[0])
	default:
		for _, w := range rest {
			back = append(back, w.id)
			delete(s.d.ids, w.id)
			ep.held--
			if w.fromClaim {
				ep.claimed--
				s.d.claimedTotal--
			}
		}
	}
	s.pumpLocked(subID, ep)
	s.busyMu.Unlock()
	s.unlease(context.WithoutCancel(ctx), back)
}

// dropHeld forgets what this process holds of a disabled endpoint and has not started sending: disabling
// failed those deliveries in the database, and recover resends them.
func (s *Service) dropHeld(subID int64) {
	s.busyMu.Lock()
	defer s.busyMu.Unlock()
	ep := s.d.eps[subID]
	if ep == nil {
		return
	}
	sending := map[*claimed]bool{}
	for _, ds := range ep.keys {
		sending[ds[0]] = true
	}
	for _, d := range ep.ready {
		delete(sending, d) // ready: the head of its key, not sent yet
	}
	for k, ds := range ep.keys {
		var keep []*claimed
		for _, d := range ds {
			if sending[d] {
				keep = append(keep, d)
				continue
			}
			delete(s.d.ids, d.id)
			ep.held--
			if d.fromClaim {
				ep.claimed--
				s.d.claimedTotal--
			}
		}
		if len(keep) == 0 {
			delete(ep.keys, k)
		} else {
			ep.keys[k] = keep
		}
	}
	ep.ready = nil
	if ep.held == 0 {
		delete(s.d.eps, subID)
	}
}

// unlease gives held deliveries back to the claims at once.
func (s *Service) unlease(ctx context.Context, ids []int64) {
	if len(ids) == 0 {
		return
	}
	if _, err := s.pool.Exec(ctx, `UPDATE subscription_deliveries SET locked_until = NULL WHERE id = ANY($1) AND status = 'pending'`, ids); err != nil {
		s.cfg.Logger.WarnContext(ctx, "cannot release deliveries; they are claimed when their lease expires",
			slog.Int("deliveries", len(ids)), slog.String("error", err.Error()))
	}
}

// renew extends the leases of what this process holds: a long queue behind a slow endpoint must not outlast
// them (another process would claim the same attempt).
func (s *Service) renew(ctx context.Context) error {
	s.busyMu.Lock()
	ids := make([]int64, 0, len(s.d.ids))
	for id := range s.d.ids {
		ids = append(ids, id)
	}
	s.busyMu.Unlock()
	if len(ids) == 0 {
		return nil
	}
	// Only leases still held: an attempt that just failed released its own (locked_until NULL, backing off),
	// which a renewal must not take back.
	_, err := s.pool.Exec(ctx, `UPDATE subscription_deliveries SET locked_until = $2
		WHERE id = ANY($1) AND status = 'pending' AND locked_until IS NOT NULL`, ids, s.cfg.Now().Add(s.cfg.Lease))
	return err
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

// marks gathers successes for recordSuccesses. Adding never waits: a sending slot is not held up by the
// database, which records the previous batch meanwhile.
type marks struct {
	mu     sync.Mutex
	batch  []success
	closed bool
	signal chan struct{}
}

func (m *marks) add(x success) {
	m.mu.Lock()
	m.batch = append(m.batch, x)
	m.mu.Unlock()
	select {
	case m.signal <- struct{}{}:
	default:
	}
}

func (m *marks) close() {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	select {
	case m.signal <- struct{}{}:
	default:
	}
}

// take returns what was gathered, and whether marks is closed.
func (m *marks) take() ([]success, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b := m.batch
	m.batch = nil
	return b, m.closed
}

func (s *Service) recordSuccesses(ctx context.Context, m *marks) {
	for {
		<-m.signal
		// A success waits a little for company: one statement per batch, not one commit per delivery.
		t := time.NewTimer(successDelay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		batch, closed := m.take()
		for len(batch) > 0 {
			n := min(len(batch), 1000)
			s.flushSuccesses(ctx, batch[:n])
			batch = batch[n:]
		}
		if closed {
			if rest, _ := m.take(); len(rest) > 0 {
				s.flushSuccesses(ctx, rest)
			}
			return
		}
	}
}

func (s *Service) flushSuccesses(ctx context.Context, batch []success) {
	s.metrics.attempts.WithLabelValues("delivered").Add(float64(len(batch)))
	if err := s.markDelivered(context.WithoutCancel(ctx), batch); err != nil {
		s.cfg.Logger.WarnContext(ctx, "cannot record deliveries; they are sent again when their lease expires",
			slog.Int("deliveries", len(batch)), slog.String("error", err.Error()))
	}
	s.busyMu.Lock()
	for _, x := range batch {
		delete(s.d.ids, x.id)
	}
	s.busyMu.Unlock()
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

// claim leases the due deliveries the endpoints have room for: per endpoint up to Concurrency*prefetch held,
// and only the oldest pending delivery of each remote key (in order per key: a later one waits, even while the
// earlier one is backing off). Most of the time nothing is due but what is held already: one probe of the
// ready index (pending, due and not leased) says so, and the claim itself is skipped.
func (s *Service) claim(ctx context.Context) ([]*claimed, error) {
	s.busyMu.Lock()
	room := s.cfg.MaxInFlight - s.d.claimedTotal
	busyIDs := make([]int64, 0, len(s.d.eps))
	busyN := make([]int32, 0, len(s.d.eps))
	for id, ep := range s.d.eps {
		busyIDs, busyN = append(busyIDs, id), append(busyN, int32(ep.held))
	}
	// Never what this process holds, even when its lease ran out on the clock, or was just given up by an
	// attempt whose outcome is being recorded.
	heldIDs := make([]int64, 0, len(s.d.ids))
	for id := range s.d.ids {
		heldIDs = append(heldIDs, id)
	}
	s.busyMu.Unlock()
	if room <= 0 {
		return nil, nil
	}
	now := s.cfg.Now()
	var due []int64
	rows, err := s.pool.Query(ctx, `SELECT DISTINCT subscription_id FROM subscription_deliveries
		WHERE status = 'pending' AND greatest(next_attempt_at, locked_until) <= $1`, now)
	if err != nil {
		return nil, fmt.Errorf("error looking for due deliveries: %w", err)
	}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		due = append(due, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("error looking for due deliveries: %w", err)
	}
	if len(due) == 0 {
		return nil, nil
	}
	// Per endpoint with due deliveries: its first claimWindow pending deliveries in id order, the first of
	// each remote key among them (a later one waits while an earlier one of its key is pending, even backing
	// off; an earlier one is always in the window), those due and not leased, up to the endpoint's free
	// slots. No anti-join: the cost is bounded by the window whatever the planner knows of the table
	// (MATERIALIZED: picked once, never re-run per row of the update, which a plan made while the table was
	// empty would do). An endpoint with a backlog never makes the others wait.
	// A lease lost in a crash costs nothing (the delivery is pending and unleased again; at worst it is sent
	// twice, under one message id), so its commit does not wait for the WAL flush.
	var out []*claimed
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
				WHERE h.next_attempt_at <= $1 AND (h.locked_until IS NULL OR h.locked_until <= $1) AND NOT h.id = ANY($9)
				ORDER BY h.id LIMIT greatest($5 - coalesce(b.busy, 0), 0)
			) c
			WHERE s.id = ANY($8) AND s.disabled_at IS NULL
			  AND NOT EXISTS (SELECT FROM organizations o WHERE o.id = s.org_id AND o.deleted_at IS NOT NULL)
			LIMIT $2
		)
		UPDATE subscription_deliveries d SET locked_until = $6
		FROM pick WHERE d.id = pick.id AND d.status = 'pending' AND (d.locked_until IS NULL OR d.locked_until <= $1)
		RETURNING d.id, d.subscription_id, d.message_id, d.remote_key, d.payload::text, d.attempts`,
		now, room, busyIDs, busyN, s.cfg.Concurrency*prefetch, now.Add(s.cfg.Lease), claimWindow, due, heldIDs).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			d := &claimed{fromClaim: true}
			var payload string
			if err := rows.Scan(&d.id, &d.subID, &d.messageID, &d.remoteKey, &payload, &d.attempts); err != nil {
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
	slices.SortFunc(out, func(a, b *claimed) int { return cmp.Compare(a.id, b.id) })
	return out, nil
}

// deliver makes one attempt and records its outcome. Shutting down mid-attempt records nothing: the lease
// expires and the attempt is made again, with the same message id.
func (s *Service) deliver(ctx context.Context, d *claimed, m *marks) outcome {
	k, err := s.signing(ctx, d.subID)
	if errors.Is(err, ErrNotFound) {
		return outcomeNone // deleted meanwhile, with its deliveries
	}
	if err != nil {
		if ctx.Err() == nil {
			s.cfg.Logger.WarnContext(ctx, "cannot sign a delivery; retrying when its lease expires",
				slog.Int64("delivery_id", d.id), slog.String("error", err.Error()))
		}
		return outcomeNone
	}
	now := s.cfg.Now()
	resp, err := s.cfg.Client.Post(ctx, k.url, outgoing.SignedHeader(d.messageID, now, d.payload, k.keysAt(now)...), d.payload)
	if ctx.Err() != nil {
		return outcomeNone
	}
	if err == nil && resp.Status >= 200 && resp.Status < 300 {
		m.add(success{id: d.id, subID: d.subID, attempts: d.attempts + 1, at: now, status: resp.Status, body: s.clip(resp.Body)})
		return outcomeDelivered
	}
	o, err := s.finish(context.WithoutCancel(ctx), d, k, now, resp, err)
	if err != nil {
		s.cfg.Logger.WarnContext(ctx, "cannot record a delivery attempt; it is made again when its lease expires",
			slog.Int64("delivery_id", d.id), slog.String("error", err.Error()))
	}
	return o
}

// finish records a failed attempt: the next attempt on the schedule, or failed after the last one. The endpoint's failure streak starts at its first failure and ends at any success; a streak
// longer than DisableAfter disables the endpoint (once) and alerts the org.
func (s *Service) finish(ctx context.Context, d *claimed, k *signingKeys, now time.Time, resp *outgoing.Response, callErr error) (outcome, error) {
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
		return outcomeNone, nil // the subscription was deleted, with its deliveries
	}
	if err != nil {
		return outcomeNone, err
	}
	o := outcomeRetry
	if state == "failed" {
		o = outcomeFailed
		s.metrics.attempts.WithLabelValues("failed").Inc()
	} else {
		s.metrics.attempts.WithLabelValues("retry").Inc()
	}
	if disabled || now.Sub(failingSince) < s.cfg.DisableAfter {
		return o, nil
	}
	// Disabling fails the endpoint's pending deliveries, this one's key included.
	return outcomeFailed, s.disable(ctx, d.subID, k, now, fmt.Sprintf("every delivery failed since %s", failingSince.UTC().Format(time.RFC3339)))
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
	s.dropHeld(subID)
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
