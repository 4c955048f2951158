package subscriptions

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/fanout"
)

var _ fanout.Notifier = (*Service)(nil)

// Subscribed reports whether the org has a subscription (fanout.Notifier), from a list refreshed every
// CacheTTL. While the list cannot be read every org counts as subscribed: recording too much costs a little,
// recording too little loses notifications.
func (s *Service) Subscribed(ctx context.Context, orgID int64) bool {
	s.asked.Store(true)
	return s.subscribed(ctx, orgID)
}

func (s *Service) subscribed(ctx context.Context, orgID int64) bool {
	s.orgsMu.Lock()
	defer s.orgsMu.Unlock()
	if time.Since(s.orgsAt) >= s.cfg.CacheTTL {
		s.loadOrgs(ctx)
	}
	return s.orgsFailed || s.orgs[orgID]
}

// Refresh reloads the list Subscribed answers from when it is older than CacheTTL (fanout.Notifier: the relay
// calls it every second, so a new subscription is noticed while no org transaction asks).
func (s *Service) Refresh(ctx context.Context) {
	s.Subscribed(ctx, 0)
}

// refreshIfAsked refreshes the list when a fanout of this process asks this Service: only a list a fanout
// answers from may mark orgs noticed.
func (s *Service) refreshIfAsked(ctx context.Context) {
	if s.asked.Load() {
		s.subscribed(ctx, 0)
	}
}

// loadOrgs reads the subscribed orgs and marks the new ones noticed: from now on this process records
// their changes, and Create, waiting for that mark, can return. s.orgsMu held.
func (s *Service) loadOrgs(ctx context.Context) {
	s.orgsAt = time.Now()
	orgs, err := s.subscribedOrgs(ctx)
	if err != nil {
		s.orgsFailed = true
		s.cfg.Logger.WarnContext(ctx, "cannot read subscribed orgs; recording every org's changes meanwhile", "error", err.Error())
		return
	}
	s.orgsFailed = false
	s.orgs = make(map[int64]bool, len(orgs))
	for _, id := range orgs {
		s.orgs[id] = true
	}
	if _, err := s.pool.Exec(ctx, `UPDATE subscription_orgs SET noticed_at = $2 WHERE org_id = ANY($1) AND noticed_at IS NULL`,
		orgs, time.Now()); err != nil {
		s.cfg.Logger.WarnContext(ctx, "cannot mark subscribed orgs noticed", "error", err.Error())
	}
}

func (s *Service) forgetOrgs() {
	s.orgsMu.Lock()
	s.orgsAt = time.Time{}
	s.orgsMu.Unlock()
}

func (s *Service) subscribedOrgs(ctx context.Context) ([]int64, error) {
	return s.orgIDs(ctx, `SELECT DISTINCT s.org_id FROM subscriptions s JOIN organizations o ON o.id = s.org_id
		WHERE o.deleted_at IS NULL`)
}

// SubscribedOrgs lists the orgs whose outboxes the relay sweeps (fanout.Notifier): those with a subscription,
// and those whose last one was deleted until the relay finds their outbox empty (Drained).
func (s *Service) SubscribedOrgs(ctx context.Context) ([]int64, error) {
	return s.orgIDs(ctx, `SELECT s.org_id FROM subscriptions s JOIN organizations o ON o.id = s.org_id WHERE o.deleted_at IS NULL
		UNION SELECT org_id FROM subscription_orgs WHERE unsubscribed_at IS NOT NULL`)
}

// drainAfter is how long after an org's last subscription is deleted its outbox may still get rows: a
// fanout's list of subscribed orgs is up to CacheTTL old, and an org transaction built before a refresh
// commits after it.
const drainAfter = time.Minute

// Drained tells that the org's outbox was found empty (fanout.Notifier): an org without subscriptions is no
// longer swept once its last one was deleted more than drainAfter ago.
func (s *Service) Drained(ctx context.Context, orgID int64) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM subscription_orgs o WHERE o.org_id = $1 AND o.unsubscribed_at < $2
		AND NOT EXISTS (SELECT FROM subscriptions s WHERE s.org_id = o.org_id)`, orgID, s.cfg.Now().Add(-drainAfter)); err != nil {
		return fmt.Errorf("error forgetting a drained outbox: %w", err)
	}
	return nil
}

func (s *Service) orgIDs(ctx context.Context, query string) ([]int64, error) {
	rows, err := s.pool.Query(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("error reading subscribed orgs: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("error reading subscribed orgs: %w", err)
	}
	return out, nil
}

// Payload is the body of a row-change message.
type Payload struct {
	// Type is row.insert or row.update.
	Type      string      `json:"type"`
	Timestamp time.Time   `json:"timestamp"`
	Data      PayloadData `json:"data"`
}

// PayloadData describes the row write.
type PayloadData struct {
	Service     string          `json:"service"`
	Table       string          `json:"table"`
	Integration string          `json:"integration_id"`
	Operation   string          `json:"operation"`
	RemoteKey   string          `json:"remote_key"`
	Source      string          `json:"source"`
	Row         json.RawMessage `json:"row"`
}

// Record stores a delivery per notification and matching subscription (fanout.Notifier): pending, or failed
// when the endpoint is disabled or past its pending cap. A notification stored before (same message id) is
// left as it is.
func (s *Service) Record(ctx context.Context, orgID int64, notes []fanout.Notification) error {
	type sub struct {
		id          int64
		integration *int64
		sources     []string
		disabled    bool
		room        int
	}
	// Pending deliveries are counted (up to the cap) at most once a second per endpoint, and counted up by
	// what Record adds in between: the cap is soft, and counting a backlog for every batch would cost more
	// than the batch.
	fresh := s.freshPending()
	rows, err := s.pool.Query(ctx, `
		SELECT s.id, s.integration_id, s.sources, s.disabled_at IS NOT NULL,
			CASE WHEN s.id = ANY($3) THEN NULL ELSE (SELECT count(*) FROM (SELECT FROM subscription_deliveries d
				WHERE d.subscription_id = s.id AND d.status = 'pending' LIMIT $2) p) END
		FROM subscriptions s WHERE s.org_id = $1 ORDER BY s.id`, orgID, s.cfg.PendingCap, fresh)
	if err != nil {
		return fmt.Errorf("error reading subscriptions: %w", err)
	}
	var subs []*sub
	for rows.Next() {
		x := &sub{}
		var counted *int
		if err := rows.Scan(&x.id, &x.integration, &x.sources, &x.disabled, &counted); err != nil {
			rows.Close()
			return err
		}
		x.room = s.cfg.PendingCap - s.pendingOf(x.id, counted)
		subs = append(subs, x)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("error reading subscriptions: %w", err)
	}
	if len(subs) == 0 {
		return nil
	}
	opaque, err := s.integrationIDs(ctx, notes)
	if err != nil {
		return err
	}
	now := s.cfg.Now()
	subIDs := make([]int64, len(subs))
	for i, x := range subs {
		subIDs[i] = x.id
	}
	room := s.handoverRoom(subIDs)
	leaseEnd := now.Add(s.cfg.Lease)
	var (
		msgIDs, keys, types, statuses, lastErrors []string
		payloads                                  [][]byte
		next, leases                              []*time.Time
		rowSubs                                   []int64
	)
	for _, n := range notes {
		var body []byte
		for _, x := range subs {
			if (x.integration != nil && *x.integration != n.IntegrationID) || !slices.Contains(x.sources, n.Source) {
				continue
			}
			if body == nil {
				if body, err = json.Marshal(Payload{Type: "row." + n.Operation, Timestamp: n.At.UTC(), Data: PayloadData{
					Service: n.Service, Table: n.Table, Integration: opaque[n.IntegrationID], Operation: n.Operation,
					RemoteKey: n.RemoteKey, Source: n.Source, Row: n.Row,
				}}); err != nil {
					return fmt.Errorf("error encoding a notification: %w", err)
				}
			}
			status, lastErr, at, lease := "pending", "", &now, (*time.Time)(nil)
			switch {
			case x.disabled:
				status, lastErr, at = "failed", "endpoint disabled; recover resends", nil
			case x.room <= 0:
				status, lastErr, at = "failed", fmt.Sprintf("over the endpoint's %d pending deliveries; recover resends", s.cfg.PendingCap), nil
			default:
				x.room--
				if room[x.id] > 0 {
					room[x.id]--
					lease = &leaseEnd
				}
			}
			rowSubs, msgIDs, keys = append(rowSubs, x.id), append(msgIDs, n.MessageID), append(keys, n.RemoteKey)
			types, payloads, statuses = append(types, "row."+n.Operation), append(payloads, body), append(statuses, status)
			lastErrors, next, leases = append(lastErrors, lastErr), append(next, at), append(leases, lease)
		}
	}
	if len(rowSubs) == 0 {
		return nil
	}
	// Deliveries the dispatcher of this process can take are inserted leased to it and handed over below, so
	// they cost no claim. Each comes back with the pending deliveries of its key that were there before (the
	// statement's snapshot does not see its own rows): it may go only behind ones this process holds.
	// The probe names the key only in a form the key index serves (subscription_id + 0 hides the endpoint's
	// pending index, which a plan made without statistics would otherwise walk for every row).
	type insertedRow struct {
		id, subID int64
		messageID string
		leased    bool
		blockers  []int64
	}
	var inserted []insertedRow
	rows, err = s.pool.Query(ctx, `
		INSERT INTO subscription_deliveries AS n (subscription_id, message_id, remote_key, event_type, payload, status, last_error, next_attempt_at, locked_until, created_at)
		SELECT sid, mid, k, t, p, st, nullif(le, ''), na, lu, $1
		FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::jsonb[], $7::text[], $8::text[], $9::timestamptz[], $10::timestamptz[])
			WITH ORDINALITY AS u(sid, mid, k, t, p, st, le, na, lu, ord)
		ORDER BY ord
		ON CONFLICT (subscription_id, message_id) DO NOTHING
		RETURNING n.id, n.subscription_id, n.message_id, n.locked_until IS NOT NULL,
			CASE WHEN n.locked_until IS NOT NULL THEN ARRAY(SELECT o.id FROM subscription_deliveries o
				WHERE o.remote_key = n.remote_key AND o.subscription_id + 0 = n.subscription_id AND o.status = 'pending') END`,
		now, rowSubs, msgIDs, keys, types, payloads, statuses, lastErrors, next, leases)
	if err != nil {
		return fmt.Errorf("error recording deliveries: %w", err)
	}
	for rows.Next() {
		var r insertedRow
		if err := rows.Scan(&r.id, &r.subID, &r.messageID, &r.leased, &r.blockers); err != nil {
			rows.Close()
			return fmt.Errorf("error recording deliveries: %w", err)
		}
		if r.leased {
			inserted = append(inserted, r)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("error recording deliveries: %w", err)
	}
	added := map[int64]int{}
	for i, st := range statuses {
		s.metrics.recorded.WithLabelValues(st).Inc() // a notification relayed twice counts twice
		if st == "pending" {
			added[rowSubs[i]]++
		}
	}
	s.addPending(added)
	if len(inserted) == 0 {
		return nil
	}
	type rowKey struct {
		sub int64
		msg string
	}
	at := make(map[rowKey]int, len(rowSubs))
	for i := range rowSubs {
		at[rowKey{rowSubs[i], msgIDs[i]}] = i
	}
	slices.SortFunc(inserted, func(a, b insertedRow) int { return cmp.Compare(a.id, b.id) })
	ds := make([]*claimed, len(inserted))
	blockers := make([][]int64, len(inserted))
	for j, r := range inserted {
		i := at[rowKey{r.subID, r.messageID}]
		ds[j] = &claimed{id: r.id, subID: r.subID, messageID: r.messageID, remoteKey: keys[i], payload: payloads[i]}
		blockers[j] = r.blockers
	}
	s.unlease(ctx, s.handover(ds, blockers))
	return nil
}

// pendingCount is an endpoint's pending deliveries as last counted, plus what Record added since.
type pendingCount struct {
	n  int
	at time.Time
}

// freshPending lists the endpoints counted within the last second.
func (s *Service) freshPending() []int64 {
	s.pendingMu.Lock()
	defer s.pendingMu.Unlock()
	var out []int64
	for id, c := range s.pending {
		if time.Since(c.at) < time.Second {
			out = append(out, id)
		} else {
			delete(s.pending, id)
		}
	}
	return out
}

// pendingOf returns an endpoint's pending count: counted now, or as cached.
func (s *Service) pendingOf(id int64, counted *int) int {
	s.pendingMu.Lock()
	defer s.pendingMu.Unlock()
	if counted != nil {
		s.pending[id] = pendingCount{n: *counted, at: time.Now()}
		return *counted
	}
	return s.pending[id].n
}

func (s *Service) addPending(added map[int64]int) {
	s.pendingMu.Lock()
	defer s.pendingMu.Unlock()
	for id, n := range added {
		if c, ok := s.pending[id]; ok {
			c.n += n
			s.pending[id] = c
		}
	}
}

func (s *Service) integrationIDs(ctx context.Context, notes []fanout.Notification) (map[int64]string, error) {
	var ids []int64
	for _, n := range notes {
		if !slices.Contains(ids, n.IntegrationID) {
			ids = append(ids, n.IntegrationID)
		}
	}
	rows, err := s.pool.Query(ctx, `SELECT id, opaque_id FROM service_integrations WHERE id = ANY($1)`, ids)
	if err != nil {
		return nil, fmt.Errorf("error reading integrations: %w", err)
	}
	defer rows.Close()
	out := map[int64]string{}
	for rows.Next() {
		var id int64
		var o string
		if err := rows.Scan(&id, &o); err != nil {
			return nil, err
		}
		out[id] = o
	}
	return out, rows.Err()
}
