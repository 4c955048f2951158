package fanout

// Webhook subscriptions (issue 14). An org with a subscription gets, in the same org transaction as each
// upsert, one row per row written in its outbox (webhookdb_meta.notify_outbox): the upsert becomes a
// data-modifying CTE whose RETURNING (insert or update, the final row) feeds the outbox insert. So a
// notification commits exactly when its row does, and the exactly-once apply makes it exactly one. The relay
// (RunRelay) hands outbox rows to the Notifier, which stores them durably in the application database keyed
// by their message id (a uuid the org transaction generated), and deletes them from the outbox only after
// that: a crash in between hands them over again, the same message ids, a no-op. Orgs without a subscription
// pay nothing but a map lookup.
//
// The outbox lives in webhookdb_meta, readable by the org's read-only logins like fanout_applied: it holds
// the org's own rows, and a table they could not read would break pg_dump with a read-only URL (pg_dump locks
// every table of every schema it dumps).

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/webhookdb-go/webhookdb/internal/pgerr"
	"github.com/webhookdb-go/webhookdb/internal/replicator"
	"github.com/webhookdb-go/webhookdb/internal/staging"
	"github.com/webhookdb-go/webhookdb/pgroles"
)

// Notifier is what the fanout needs of webhook subscriptions (internal/subscriptions implements it).
type Notifier interface {
	// Subscribed reports whether the org has a subscription; only then are its row writes recorded. It may
	// answer from a list refreshed now and then; creating a subscription waits until a list that holds it
	// answers here (internal/subscriptions).
	Subscribed(ctx context.Context, orgID int64) bool
	// Refresh lets the list Subscribed answers from be refreshed; the relay calls it every second, so a new
	// subscription is noticed while no org transaction asks.
	Refresh(ctx context.Context)
	// SubscribedOrgs lists the orgs whose outboxes the relay sweeps: those with a subscription, and those
	// whose outbox may still hold rows of deleted ones.
	SubscribedOrgs(ctx context.Context) ([]int64, error)
	// Drained tells that the outbox of an org without subscriptions was found empty.
	Drained(ctx context.Context, orgID int64) error
	// Record stores notifications durably; storing one twice (same message id) must be a no-op. The relay
	// deletes them from the outbox only after Record returns nil.
	Record(ctx context.Context, orgID int64, notes []Notification) error
}

// Notification is one row write the fanout committed.
type Notification struct {
	// MessageID is stable across every copy of the notification.
	MessageID     string
	IntegrationID int64
	Table         string
	Service       string
	// Operation is "insert" or "update".
	Operation string
	RemoteKey string
	// Source is the staging row's: webhook, backfill, replay or resync.
	Source string
	// Row is the row as written (typed columns and data), without its internal pk.
	Row json.RawMessage
	// At is when the org transaction wrote it.
	At time.Time
}

const outboxTable = "notify_outbox"

func outboxIdent() string { return pgx.Identifier{pgroles.MetaSchema, outboxTable}.Sanitize() }

// notifyState is the relay's wake-up list: orgs whose outbox got rows.
type notifyState struct {
	mu     sync.Mutex
	dirty  map[int64]bool
	signal chan struct{}
}

func (n *notifyState) wake(orgID int64) {
	n.mu.Lock()
	if n.dirty == nil {
		n.dirty = map[int64]bool{}
	}
	n.dirty[orgID] = true
	ch := n.ch()
	n.mu.Unlock()
	select {
	case ch <- struct{}{}:
	default:
	}
}

// ch returns the signal channel; n.mu held.
func (n *notifyState) ch() chan struct{} {
	if n.signal == nil {
		n.signal = make(chan struct{}, 1)
	}
	return n.signal
}

func (n *notifyState) take() map[int64]bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	d := n.dirty
	n.dirty = nil
	return d
}

// notifying reports whether the org's writes are recorded for its subscriptions.
func (c *Consumer) notifying(ctx context.Context, orgID int64) bool {
	return c.cfg.Notify != nil && c.cfg.Notify.Subscribed(ctx, orgID)
}

// ensureOutbox creates the org's outbox once per org and process (forgotten with the schema after a failed
// apply, like the tables).
func (c *Consumer) ensureOutbox(ctx context.Context, conn *pgx.Conn, org *orgInfo) error {
	k := schemaKey{orgID: org.id, what: "outbox"}
	c.schemaMu.Lock()
	done := c.schema[k]
	c.schemaMu.Unlock()
	if done {
		return nil
	}
	// Looked up first: DDL, even a CREATE that finds the table, runs as the owner (asOwner), which costs a
	// backend new to the org its login's memberships.
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT pg_catalog.to_regclass($1) IS NOT NULL`, outboxIdent()).Scan(&exists); err != nil {
		return fmt.Errorf("error looking for the notification outbox: %w", err)
	}
	if !exists {
		if err := c.createOutbox(ctx, conn, org); err != nil {
			return err
		}
	}
	c.schemaMu.Lock()
	c.schema[k] = true
	c.schemaMu.Unlock()
	return nil
}

func (c *Consumer) createOutbox(ctx context.Context, conn *pgx.Conn, org *orgInfo) error {
	err := asOwner(ctx, conn, org, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+outboxIdent()+` (
		id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		message_id     uuid NOT NULL DEFAULT gen_random_uuid(),
		integration_id bigint NOT NULL,
		table_name     text NOT NULL,
		service        text NOT NULL,
		operation      text NOT NULL,
		remote_key     text NOT NULL,
		source         text NOT NULL,
		row_data       jsonb NOT NULL,
		created_at     timestamptz NOT NULL DEFAULT now()
	)`)
		return err
	})
	if err != nil {
		return fmt.Errorf("error creating the notification outbox: %w", err)
	}
	return nil
}

// outboxSources are the sources of g's rows past applied (what its upserts write), in g's order.
func outboxSources(g *tableGroup, applied position) []staging.Source {
	srcs := make([]staging.Source, 0, len(g.rows))
	for i := range g.rows {
		if g.pos[i].after(applied) {
			srcs = append(srcs, g.srcs[i])
		}
	}
	return srcs
}

// outboxUpsert wraps an upsert of rows so that every row it writes is also recorded in the outbox, in the same
// statement; srcs are the rows' sources.
func outboxUpsert(g *tableGroup, rows []replicator.Row, srcs []staging.Source, sql string, args []any) (string, []any) {
	kept := g.in.svc.KeptIndexes(rows)
	keys, keySrcs := make([]string, len(kept)), make([]string, len(kept))
	for j, i := range kept {
		keys[j], keySrcs[j] = rows[i].Key, string(srcs[i])
	}
	n := len(args)
	key := pgx.Identifier{g.in.svc.RemoteKey.Name}.Sanitize()
	sql = "WITH w AS (\n" + sql + "\nRETURNING (cur.xmax = 0) AS ins, cur." + key + " AS k, to_jsonb(cur.*) - 'pk' AS r\n)\n" +
		"INSERT INTO " + outboxIdent() + " (integration_id, table_name, service, operation, remote_key, source, row_data)\n" +
		fmt.Sprintf("SELECT $%d::bigint, $%d::text, $%d::text, CASE WHEN w.ins THEN 'insert' ELSE 'update' END, w.k, coalesce(s.src, 'webhook'), w.r\n", n+1, n+2, n+3) +
		fmt.Sprintf("FROM w LEFT JOIN unnest($%d::text[], $%d::text[]) AS s(k, src) ON s.k = w.k", n+4, n+5)
	return sql, append(args, g.in.id, g.in.table, g.in.svc.Name, keys, keySrcs)
}

// relayBatch is how many outbox rows one relay step hands over.
const relayBatch = 500

// RunRelay moves notifications from the outboxes of subscribed orgs to the Notifier until ctx ends: at once
// for orgs whose transactions just recorded some, and every sweep interval for every subscribed org (what a
// crash left behind). Without a Notifier it only waits.
func (c *Consumer) RunRelay(ctx context.Context) error {
	if c.cfg.Notify == nil {
		<-ctx.Done()
		return nil
	}
	r := &relay{c: c, conns: map[int64]*relayConn{}}
	defer r.closeAll()
	c.notify.mu.Lock()
	signal := c.notify.ch()
	c.notify.mu.Unlock()
	sweep := time.NewTicker(2 * time.Second)
	defer sweep.Stop()
	refresh := time.NewTicker(time.Second)
	defer refresh.Stop()
	pending := map[int64]bool{}
	for {
		for id := range c.notify.take() {
			pending[id] = true
		}
		if len(pending) == 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-signal:
				continue
			case <-refresh.C:
				c.cfg.Notify.Refresh(ctx)
				continue
			case <-sweep.C:
				orgs, err := c.cfg.Notify.SubscribedOrgs(ctx)
				if err != nil {
					c.cfg.Logger.WarnContext(ctx, "relay: cannot list subscribed orgs", slog.String("error", err.Error()))
				}
				for _, id := range orgs {
					pending[id] = true
				}
				r.closeIdle(time.Minute)
				continue
			}
		}
		more := r.pass(ctx, pending)
		pending = more
		if ctx.Err() != nil {
			return nil
		}
	}
}

type relay struct {
	c     *Consumer
	mu    sync.Mutex
	conns map[int64]*relayConn
}

type relayConn struct {
	conn *pgx.Conn
	used time.Time
}

// maxRelayConns bounds the relay's connections to org databases, beside the fanout's own cap: they come out
// of the spare connections of each server's reserve (the fanout's share + 12).
const maxRelayConns = 4

// pass relays each org once, a few at a time, and returns the orgs that have more.
func (r *relay) pass(ctx context.Context, orgs map[int64]bool) map[int64]bool {
	var mu sync.Mutex
	more := map[int64]bool{}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for id := range orgs {
		g.Go(func() error {
			again, err := r.org(gctx, id)
			if err != nil && gctx.Err() == nil {
				r.c.cfg.Logger.WarnContext(gctx, "relay: notifications not handed over yet; retrying",
					slog.Int64("org_id", id), slog.String("error", err.Error()))
				// left in the outbox: the next sweep tries again
			}
			if again {
				mu.Lock()
				more[id] = true
				mu.Unlock()
			}
			return nil
		})
	}
	_ = g.Wait()
	return more
}

// org hands over one batch of the org's outbox; more reports a full batch.
func (r *relay) org(ctx context.Context, orgID int64) (more bool, err error) {
	org, err := r.c.resolver.org(ctx, orgID)
	if err != nil {
		return false, err
	}
	if org.gone {
		return false, nil
	}
	if org.err != nil {
		return false, org.err
	}
	conn, err := r.acquire(ctx, org)
	if err != nil {
		return false, err
	}
	healthy := false
	defer func() { r.release(orgID, conn, healthy) }()
	rows, err := conn.Query(ctx, `SELECT id, message_id::text, integration_id, table_name, service, operation, remote_key, source, row_data, created_at
		FROM `+outboxIdent()+` ORDER BY id LIMIT $1`, relayBatch)
	if pgerr.Is(err, pgerrcode.UndefinedTable) {
		healthy = true
		return false, r.drained(ctx, orgID) // nothing recorded here yet
	}
	if err != nil {
		return false, fmt.Errorf("error reading the outbox: %w", err)
	}
	var ids []int64
	var notes []Notification
	for rows.Next() {
		var (
			id  int64
			n   Notification
			uid string
		)
		if err := rows.Scan(&id, &uid, &n.IntegrationID, &n.Table, &n.Service, &n.Operation, &n.RemoteKey, &n.Source, &n.Row, &n.At); err != nil {
			rows.Close()
			return false, err
		}
		n.MessageID = messageID(uid)
		ids = append(ids, id)
		notes = append(notes, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		if pgerr.Is(err, pgerrcode.UndefinedTable) {
			healthy = true
			return false, r.drained(ctx, orgID) // nothing recorded here yet
		}
		return false, fmt.Errorf("error reading the outbox: %w", err)
	}
	healthy = true
	if len(notes) == 0 {
		return false, r.drained(ctx, orgID)
	}
	if err := r.c.cfg.Notify.Record(ctx, orgID, notes); err != nil {
		return false, err
	}
	// Only what was handed over: a transaction committing meanwhile may have added rows below the highest id.
	if _, err := conn.Exec(ctx, `DELETE FROM `+outboxIdent()+` WHERE id = ANY($1)`, ids); err != nil {
		healthy = false
		return false, fmt.Errorf("error clearing the outbox: %w", err)
	}
	return len(notes) == relayBatch, nil
}

// drained reports an empty outbox of an org without subscriptions, which the relay then stops sweeping.
// Rows left after its last subscription was deleted were handed over meanwhile: Record matches no
// subscription, so they are discarded.
func (r *relay) drained(ctx context.Context, orgID int64) error {
	if r.c.cfg.Notify.Subscribed(ctx, orgID) {
		return nil
	}
	return r.c.cfg.Notify.Drained(ctx, orgID)
}

// messageID is the Standard Webhooks message id of an outbox row.
func messageID(uuid string) string {
	b := make([]byte, 0, 36)
	for i := 0; i < len(uuid); i++ {
		if uuid[i] != '-' {
			b = append(b, uuid[i])
		}
	}
	return "msg_" + string(b)
}

func (r *relay) acquire(ctx context.Context, org *orgInfo) (*pgx.Conn, error) {
	r.mu.Lock()
	if rc := r.conns[org.id]; rc != nil {
		delete(r.conns, org.id)
		r.mu.Unlock()
		return rc.conn, nil
	}
	r.mu.Unlock()
	dctx, cancel := context.WithTimeout(ctx, r.c.cfg.ApplyTimeout)
	defer cancel()
	conn, err := r.c.dialOrg(dctx, org)
	if err != nil {
		r.c.resolver.forgetOrg(org.id)
		return nil, fmt.Errorf("error connecting to the org database: %w", err)
	}
	return conn, nil
}

func (r *relay) release(orgID int64, conn *pgx.Conn, healthy bool) {
	if !healthy || conn.IsClosed() {
		closeConn(conn)
		return
	}
	r.mu.Lock()
	var evict *pgx.Conn
	if len(r.conns) >= maxRelayConns {
		var oldest int64
		var at time.Time
		for id, rc := range r.conns {
			if at.IsZero() || rc.used.Before(at) {
				oldest, at = id, rc.used
			}
		}
		evict = r.conns[oldest].conn
		delete(r.conns, oldest)
	}
	if old := r.conns[orgID]; old != nil {
		evict = old.conn
	}
	r.conns[orgID] = &relayConn{conn: conn, used: time.Now()}
	r.mu.Unlock()
	if evict != nil {
		closeConn(evict)
	}
}

func (r *relay) closeIdle(d time.Duration) {
	r.mu.Lock()
	var out []*pgx.Conn
	for id, rc := range r.conns {
		if time.Since(rc.used) > d {
			out = append(out, rc.conn)
			delete(r.conns, id)
		}
	}
	r.mu.Unlock()
	for _, c := range out {
		closeConn(c)
	}
}

func (r *relay) closeAll() { r.closeIdle(-1) }

// FailedSummary counts one org's changes recorded as failed since a cursor (alerts read it).
type FailedSummary struct {
	OrgID      int64
	Count      int64
	FirstError string
}

// FailedCursor is how far fanout.failed_changes has been read: every id up to LastID was counted but Holes.
// Ids are taken when a row is inserted and become visible when its transaction commits, so a lower id can
// appear after a higher one was read: the ids skipped are kept as holes and counted when they appear. A hole
// is given up once every transaction that could still fill it has ended (rolled back, or its id was never
// used): its Until is the snapshot's xmax when it was found, and it is dropped when the oldest running
// transaction is past it and a minute has gone by (a transaction takes its id an instant before its xid).
type FailedCursor struct {
	LastID int64        `json:"last_id"`
	Holes  []FailedHole `json:"holes,omitempty"`
}

// FailedHole is an id below LastID not seen yet.
type FailedHole struct {
	ID    int64     `json:"id"`
	Until uint64    `json:"until"`
	Found time.Time `json:"found"`
}

// maxFailedHoles bounds the holes a cursor keeps (the oldest go first): rolled-back transactions and a
// sequence's cached ids lost in a crash leave them.
const maxFailedHoles = 10_000

// FailedSince summarizes, per org, the failed changes not counted by cur, each exactly once, and returns the
// cursor past them. now is the caller's clock (how old a hole is).
func FailedSince(ctx context.Context, db staging.DB, cur FailedCursor, now time.Time) ([]FailedSummary, FailedCursor, error) {
	holes := make([]int64, len(cur.Holes))
	for i, h := range cur.Holes {
		holes[i] = h.ID
	}
	// One statement, so the rows and the snapshot's horizons are of the same moment.
	rows, err := db.Query(ctx, `
		SELECT pg_snapshot_xmin(s.snap)::text, pg_snapshot_xmax(s.snap)::text, f.id, f.org_id, f.error
		FROM (SELECT pg_current_snapshot() AS snap) s
		LEFT JOIN fanout.failed_changes f ON f.id > $1 OR f.id = ANY($2)
		ORDER BY f.id`, cur.LastID, holes)
	if err != nil {
		return nil, cur, fmt.Errorf("error reading failed changes: %w", err)
	}
	defer rows.Close()
	var (
		xmin, xmax uint64
		seen       = map[int64]bool{}
		byOrg      = map[int64]*FailedSummary{}
		out        []FailedSummary
		order      []int64
	)
	next := FailedCursor{LastID: cur.LastID}
	for rows.Next() {
		var id, orgID *int64
		var msg *string
		var lo, hi string
		if err := rows.Scan(&lo, &hi, &id, &orgID, &msg); err != nil {
			return nil, cur, fmt.Errorf("error reading failed changes: %w", err)
		}
		if xmin, err = strconv.ParseUint(lo, 10, 64); err != nil {
			return nil, cur, fmt.Errorf("error reading the snapshot: %w", err)
		}
		if xmax, err = strconv.ParseUint(hi, 10, 64); err != nil {
			return nil, cur, fmt.Errorf("error reading the snapshot: %w", err)
		}
		if id == nil {
			continue
		}
		seen[*id] = true
		f := byOrg[*orgID]
		if f == nil {
			f = &FailedSummary{OrgID: *orgID, FirstError: *msg}
			byOrg[*orgID] = f
			order = append(order, *orgID)
		}
		f.Count++
		if *id > cur.LastID {
			// the ids skipped on the way up are holes
			for h := next.LastID + 1; h < *id && len(next.Holes) < maxFailedHoles; h++ {
				next.Holes = append(next.Holes, FailedHole{ID: h, Until: xmax, Found: now})
			}
			next.LastID = *id
		}
	}
	if err := rows.Err(); err != nil {
		return nil, cur, fmt.Errorf("error reading failed changes: %w", err)
	}
	kept := make([]FailedHole, 0, len(cur.Holes))
	for _, h := range cur.Holes {
		if !seen[h.ID] && !(xmin >= h.Until && now.Sub(h.Found) > time.Minute) {
			kept = append(kept, h)
		}
	}
	// holes found now come after the older ones: the oldest are given up first when there are too many
	for _, h := range next.Holes {
		if !seen[h.ID] {
			kept = append(kept, h)
		}
	}
	if len(kept) > maxFailedHoles {
		kept = kept[len(kept)-maxFailedHoles:]
	}
	next.Holes = kept
	for _, id := range order {
		out = append(out, *byOrg[id])
	}
	return out, next, nil
}

// LastFailedID is the highest id of fanout.failed_changes (0 when empty).
func LastFailedID(ctx context.Context, db staging.DB) (int64, error) {
	var id int64
	if err := db.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM fanout.failed_changes`).Scan(&id); err != nil {
		return 0, fmt.Errorf("error reading failed changes: %w", err)
	}
	return id, nil
}
