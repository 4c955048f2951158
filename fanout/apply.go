package fanout

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/webhookdb-go/webhookdb/internal/pgerr"
	"github.com/webhookdb-go/webhookdb/internal/replicator"
	"github.com/webhookdb-go/webhookdb/internal/staging"
	"github.com/webhookdb-go/webhookdb/pgroles"
)

// orgSchema is the schema of replicated tables in an org database.
const orgSchema = "public"

// appliedTable keeps the position of the last staging row applied to the org database, per source: the
// application database's system identifier and name, which together name the LSN space of positions (a
// slot dropped and created again keeps skipping what was applied; a database restored from a dump does not).
// Provisioning creates it (pgroles owns its DDL).
var appliedTable = pgx.Identifier{pgroles.MetaSchema, pgroles.AppliedTable}.Sanitize()

// transientError means the org cannot take its changes now: they are parked and retried.
type transientError struct{ err error }

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

func transient(err error) error { return &transientError{err: err} }

// failure is a change that can never be applied.
type failure struct {
	c   *change
	err string
}

// tableGroup is the rows one apply writes into one integration's table.
type tableGroup struct {
	in   *integrationInfo
	rows []replicator.Row
	pos  []position // of the change each row came from
	// issue 14: the source of each row's change (webhook subscriptions)
	srcs []staging.Source
}

// item is one change turned into rows: the unit that commits or fails as a whole.
type item struct {
	ch   *change
	in   *integrationInfo
	rows []replicator.Row
}

// prepared is a batch of changes turned into rows, before the org transaction.
type prepared struct {
	items    []item // in stream order
	failures []failure
	skipped  map[string]int
}

// groupsOf gathers items' rows per integration, in stream order within each.
func groupsOf(items []item) []*tableGroup {
	var out []*tableGroup
	byID := map[int64]*tableGroup{}
	for _, it := range items {
		g := byID[it.in.id]
		if g == nil {
			g = &tableGroup{in: it.in}
			byID[it.in.id] = g
			out = append(out, g)
		}
		g.rows = append(g.rows, it.rows...)
		for range it.rows {
			g.pos = append(g.pos, it.ch.pos)
			g.srcs = append(g.srcs, it.ch.source) // issue 14
		}
	}
	return out
}

// applyChanges applies changes of one org, in order. It returns a *transientError when the org cannot take
// them now (the caller parks or keeps them parked); any other error is the application database's. Changes
// the org database refuses for good (see isPermanent) are found by bisection and recorded as failed, and the
// others commit.
func (c *Consumer) applyChanges(ctx context.Context, orgID int64, changes []*change) (applied int, err error) {
	org, err := c.resolver.org(ctx, orgID)
	if err != nil {
		return 0, err
	}
	if org.gone {
		c.metrics.rowsSkipped.WithLabelValues("org_deleted").Add(float64(len(changes)))
		c.cfg.Logger.DebugContext(ctx, "skipped changes of a deleted org", slog.Int64("org_id", orgID), slog.Int("changes", len(changes)))
		return 0, nil
	}
	if org.err != nil {
		return 0, transient(org.err)
	}
	p, err := c.prepare(ctx, changes)
	if err != nil {
		return 0, err
	}
	// Failed changes are recorded before the org transaction moves the applied position past them: a crash in
	// between replays them and records them again (a no-op), never skips them unrecorded.
	var through position
	if len(p.failures) > 0 {
		if err := c.recordFailed(ctx, orgID, p.failures); err != nil {
			return 0, err
		}
		for _, f := range p.failures {
			if f.c.pos.after(through) {
				through = f.c.pos
			}
		}
	}
	for reason, n := range p.skipped {
		c.metrics.rowsSkipped.WithLabelValues(reason).Add(float64(n))
		c.cfg.Logger.DebugContext(ctx, "skipped changes", slog.Int64("org_id", orgID), slog.String("reason", reason), slog.Int("changes", n))
	}
	if len(p.items) == 0 && through == (position{}) {
		return 0, nil
	}
	return c.writeIsolating(ctx, org, p.items, through)
}

// writeIsolating writes items (in stream order) and moves the applied position to at least through. When the
// org database refuses them permanently, it bisects: each half commits on its own, in order, and a single
// change it still refuses is recorded as failed, its position passed by the next commit. A transient error
// returns a *transientError: the org transactions committed before it are skipped on the next attempt by the
// applied position. through goes to the last write only, so no commit passes a change not yet written.
func (c *Consumer) writeIsolating(ctx context.Context, org *orgInfo, items []item, through position) (int, error) {
	applied, err := c.writeOrg(ctx, org, groupsOf(items), through)
	if err == nil {
		return applied, nil
	}
	if !isPermanent(err) || len(items) == 0 {
		c.resolver.forgetOrg(org.id)
		return 0, transient(err)
	}
	if len(items) == 1 {
		it := items[0]
		if err := c.recordFailed(ctx, org.id, []failure{{it.ch, refusal(err)}}); err != nil {
			return 0, err
		}
		if it.ch.pos.after(through) {
			through = it.ch.pos
		}
		return c.writeIsolating(ctx, org, nil, through)
	}
	c.cfg.Logger.DebugContext(ctx, "org database refused a batch; bisecting", slog.Int64("org_id", org.id),
		slog.Int("changes", len(items)), slog.String("error", err.Error()))
	mid := len(items) / 2
	a, err := c.writeIsolating(ctx, org, items[:mid], position{})
	if err != nil {
		return 0, err
	}
	b, err := c.writeIsolating(ctx, org, items[mid:], through)
	return a + b, err
}

// prepare resolves integrations and extracts rows. Extraction happens outside the org transaction, so a slow
// replicator holds no locks downstream.
func (c *Consumer) prepare(ctx context.Context, changes []*change) (*prepared, error) {
	ids := make([]int64, 0, 4)
	for _, ch := range changes {
		if !slices.Contains(ids, ch.integrationID) {
			ids = append(ids, ch.integrationID)
		}
	}
	ins, err := c.resolver.integrationsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	missing, err := c.readBack(ctx, changes)
	if err != nil {
		return nil, err
	}
	p := &prepared{skipped: map[string]int{}}
	for _, ch := range changes {
		in := ins[ch.integrationID]
		switch {
		case missing[ch]:
			// Upkeep keeps partitions the slot has not confirmed past; this is an operator's manual delete.
			p.failures = append(p.failures, failure{ch, "the staging row no longer exists"})
			continue
		case in.missing:
			p.failures = append(p.failures, failure{ch, "integration not found"})
			continue
		case in.orgID != ch.orgID:
			p.failures = append(p.failures, failure{ch, fmt.Sprintf("integration belongs to org %d", in.orgID)})
			continue
		case in.deleted:
			p.skipped["integration_deleted"]++
			continue
		case in.err != nil:
			return nil, transient(fmt.Errorf("integration %d: %w", in.id, in.err))
		}
		rows, err := c.extract(in.svc, ch)
		if errors.Is(err, replicator.ErrMalformed) {
			p.failures = append(p.failures, failure{ch, err.Error()})
			continue
		}
		if err != nil {
			return nil, transient(fmt.Errorf("integration %d: %w", in.id, err))
		}
		if len(rows) == 0 {
			p.skipped["not_replicated"]++ // an event that does not carry the service's resource
			continue
		}
		p.items = append(p.items, item{ch: ch, in: in, rows: rows})
	}
	return p, nil
}

// readBack restores the payloads of shed changes from staging, in one query, and returns the changes whose
// staging row is gone.
func (c *Consumer) readBack(ctx context.Context, changes []*change) (map[*change]bool, error) {
	var (
		shed []*change
		refs []staging.Ref
	)
	for _, ch := range changes {
		if ch.shed {
			shed = append(shed, ch)
			refs = append(refs, staging.Ref{ReceivedAt: ch.receivedAt, ID: ch.webhookID})
		}
	}
	if len(shed) == 0 {
		return nil, nil
	}
	stored, err := staging.Lookup(ctx, c.pool, refs)
	if err != nil {
		return nil, err
	}
	var missing map[*change]bool
	for i, ch := range shed {
		w := stored.Get(refs[i])
		if w == nil {
			if missing == nil {
				missing = map[*change]bool{}
			}
			missing[ch] = true
			continue
		}
		ch.headers, ch.body, ch.shed = w.Headers, w.Body, false
	}
	return missing, nil
}

// extract runs the replicator; a panic in it is a bug to fix, not a property of the payload, so it parks.
func (c *Consumer) extract(svc *replicator.Service, ch *change) (rows []replicator.Row, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("replicator %s panicked: %v", svc.Name, r)
		}
	}()
	w := replicator.Webhook{ContentType: ch.contentType, Body: ch.body, ReceivedAt: ch.deliveredAt(), DeliveryID: ch.deliveryID,
		Bare: ch.source == staging.SourceBackfill || ch.backfillJobID != 0} // a replayed backfill row is still an API object
	if needsHeaders(svc) {
		var h map[string]string
		if err := json.Unmarshal(ch.headers, &h); err != nil {
			return nil, fmt.Errorf("%w: stored headers: %w", replicator.ErrMalformed, err)
		}
		w.Header = make(http.Header, len(h))
		for k, v := range h {
			w.Header[k] = []string{v}
		}
	}
	return svc.Extract(w)
}

// needsHeaders reports whether a service reads request headers; most do not, and decoding the stored header
// object of every row would be wasted work.
func needsHeaders(svc *replicator.Service) bool {
	if svc.Events.Header != "" || svc.RemoteKey.From == replicator.FromHeader {
		return true
	}
	for _, col := range svc.Columns {
		if col.From == replicator.FromHeader {
			return true
		}
	}
	return false
}

// writeOrg runs the org transaction within ApplyTimeout. A connection reused from the pool may have died
// while idle (its server restarted): that case is retried once on a fresh connection before giving up.
func (c *Consumer) writeOrg(ctx context.Context, org *orgInfo, groups []*tableGroup, through position) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ApplyTimeout)
	defer cancel()
	for attempt := 0; ; attempt++ {
		conn, reused, err := c.conns.acquire(ctx, org.id, org.server, func(ctx context.Context) (*pgx.Conn, error) { return c.dialOrg(ctx, org) })
		if err != nil {
			if pgerr.Is(err, pgerrcode.InvalidPassword) && c.cfg.Writers != nil {
				if rerr := c.resolver.repairWriter(ctx, org); rerr != nil {
					c.cfg.Logger.WarnContext(ctx, "error repairing the fanout's login", slog.Int64("org_id", org.id), slog.String("error", rerr.Error()))
				}
			}
			return 0, fmt.Errorf("error connecting to the org database: %w", err)
		}
		applied, err := c.writeOrgConn(ctx, conn, org, groups, through)
		healthy := err == nil
		if err != nil && isPermanent(err) && !conn.IsClosed() {
			// Rows were refused, nothing is wrong with the connection or the schema: keep both for the
			// bisection's next transaction.
			if _, rerr := conn.Exec(ctx, "ROLLBACK"); rerr == nil {
				healthy = true
			}
		}
		c.conns.release(org.id, org.server, conn, healthy)
		if err == nil {
			return applied, nil
		}
		if !healthy {
			c.forgetSchema(org.id)
		}
		if reused && attempt == 0 && ctx.Err() == nil && isConnectionError(err) {
			continue
		}
		return 0, err
	}
}

// plainOnly returns, for a config of sslmode=prefer's shape (TLS first, then the same host without it), the
// config without the TLS attempt. pgx makes that attempt a connection of its own: against a server without
// TLS every dial opens two connections, and the server forks a backend for each, which at the rate a drain
// over many orgs opens connections is a backend start too many per org visit. A server found without TLS is
// dialled plainly for plainRecheck (a man in the middle could always make prefer fall back; this remembers
// it for a while).
func plainOnly(cfg *pgx.ConnConfig) (*pgx.ConnConfig, bool) {
	if cfg.TLSConfig == nil || len(cfg.Fallbacks) != 1 {
		return nil, false
	}
	fb := cfg.Fallbacks[0]
	if fb.TLSConfig != nil || fb.Host != cfg.Host || fb.Port != cfg.Port {
		return nil, false
	}
	plain := cfg.Copy()
	plain.TLSConfig, plain.Fallbacks = nil, nil
	return plain, true
}

func isConnectionError(err error) bool {
	if pgerr.Is(err, pgerrcode.AdminShutdown, pgerrcode.CrashShutdown, pgerrcode.CannotConnectNow) {
		return true
	}
	return pgconn.SafeToRetry(err) || errors.Is(err, net.ErrClosed)
}

func (c *Consumer) dialOrg(ctx context.Context, org *orgInfo) (*pgx.Conn, error) {
	cfg := org.connCfg
	plain, prefersTLS := plainOnly(cfg)
	if prefersTLS && c.conns.servesPlain(org.server) {
		cfg = plain
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if _, tlsConn := conn.PgConn().Conn().(*tls.Conn); prefersTLS && cfg != plain && !tlsConn {
		c.conns.notePlain(org.server)
	}
	replicator.RegisterEncodedArrays(conn.TypeMap())
	if !c.conns.needsCap(org.server) {
		return conn, nil
	}
	// The first connection to a server in this process learns its cap.
	var available int
	if err := conn.QueryRow(ctx, `SELECT pg_catalog.current_setting('max_connections')::int
		- pg_catalog.current_setting('superuser_reserved_connections')::int`).Scan(&available); err != nil {
		closeConn(conn)
		return nil, fmt.Errorf("error reading the server's max_connections: %w", err)
	}
	capacity := ServerConnCap(available, c.cfg.ServerConnPercent)
	c.conns.setCap(org.server, capacity)
	c.cfg.Logger.InfoContext(ctx, "org database server connection cap", slog.String("server", org.server),
		slog.Int("available", available), slog.Int("cap", max(capacity, c.cfg.Workers)))
	return conn, nil
}

// writeOrgConn applies the groups in one transaction, skipping rows at or before the org database's applied
// position, and moves that position in the same transaction: past the last row, or to through (failed
// changes, recorded already) when that is later.
//
// The org's tables are assumed to exist: creating them is DDL (a plpgsql block, catalog locks, the guard's
// event trigger) that would cost every first transaction of an org in a process most of its time, and a
// backend's first DDL in a database is dearer still. A missing meta row is inserted within the transaction
// (plain DML). A missing meta table (a database provisioned before provisioning made it), data table or
// column fails the transaction with undefined_table or undefined_column; that part's DDL runs, and the
// transaction runs again. Indexes, which no statement needs, are checked from the catalog in the first
// transaction and created afterwards when missing.
func (c *Consumer) writeOrgConn(ctx context.Context, conn *pgx.Conn, org *orgInfo, groups []*tableGroup, through position) (int, error) {
	// at most: the meta table made, then the tables, and once more for a table changed meanwhile
	for repairs := 0; ; repairs++ {
		n, err := c.writeOrgTxn(ctx, conn, org, groups, through)
		if err == nil || conn.IsClosed() || repairs == 3 {
			return n, err
		}
		part := missingPart(err)
		if part == partNone {
			return n, err
		}
		if _, rerr := conn.Exec(ctx, "ROLLBACK"); rerr != nil {
			return 0, errors.Join(err, rerr)
		}
		c.cfg.Logger.DebugContext(ctx, "org database lacks part of its schema; ensuring it", slog.Int64("org_id", org.id),
			slog.String("part", part.String()), slog.String("error", err.Error()))
		if part == partTables {
			c.forgetSchema(org.id)
			err = c.ensureSchema(ctx, conn, org, groups)
		} else {
			err = c.ensureMetaTable(ctx, conn, org)
		}
		if err != nil {
			return 0, err
		}
	}
}

// schemaPart is what an org transaction found missing.
type schemaPart int

const (
	partNone schemaPart = iota
	partMetaTable
	partTables
)

func (p schemaPart) String() string {
	return [...]string{"none", "meta_table", "tables"}[p]
}

// missingPart tells from an org transaction's error what of the schema it lacked. The meta row is read in the
// transaction's first round trip; the upserts, the only statements naming data tables, run in the second and
// fail as a rowsError.
func missingPart(err error) schemaPart {
	var re *rowsError
	inRows := errors.As(err, &re)
	switch {
	case inRows && pgerr.Is(err, pgerrcode.UndefinedTable, pgerrcode.UndefinedColumn):
		return partTables
	case !inRows && pgerr.Is(err, pgerrcode.UndefinedTable):
		return partMetaTable
	}
	return partNone
}

// ensureMetaTable creates the applied table, as the owner, in an org database provisioned before provisioning
// made it.
func (c *Consumer) ensureMetaTable(ctx context.Context, conn *pgx.Conn, org *orgInfo) error {
	err := asOwner(ctx, conn, org, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, pgroles.AppliedTableSQL())
		return err
	})
	if err != nil {
		return fmt.Errorf("error preparing the org database's applied position: %w", err)
	}
	return nil
}

// unchecked returns the groups whose tables this process has not checked yet in the org's database.
func (c *Consumer) unchecked(orgID int64, groups []*tableGroup) []*tableGroup {
	c.schemaMu.Lock()
	defer c.schemaMu.Unlock()
	var out []*tableGroup
	for _, g := range groups {
		if !c.schema[schemaKey{orgID: orgID, what: g.in.table + "/" + g.in.svc.Name}] {
			out = append(out, g)
		}
	}
	return out
}

func (c *Consumer) writeOrgTxn(ctx context.Context, conn *pgx.Conn, org *orgInfo, groups []*tableGroup, through position) (int, error) {
	// issue 14: an org with webhook subscriptions records each row written in its outbox (fanout/notify.go)
	notify := c.notifying(ctx, org.id)
	if notify {
		if err := c.ensureOutbox(ctx, conn, org); err != nil {
			return 0, err
		}
	}
	meta := appliedTable
	var (
		lsnText string
		seq     int32
		found   bool
	)
	// The row lock also waits out a transaction of an earlier process still committing on this database.
	readApplied := `SELECT commit_lsn::text, seq FROM ` + meta + ` WHERE source = $1 FOR UPDATE`
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(readApplied, c.source).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			found = true
			if err := rows.Scan(&lsnText, &seq); err != nil {
				return err
			}
		}
		return rows.Err()
	})
	check := c.unchecked(org.id, groups)
	indexes := make([]int, len(check))
	for i, g := range check {
		// to_regclass is a syscache lookup: on a backend new to the database, planning a join of pg_indexes'
		// catalogs costs several times more. Only the owner creates relations in the schema, so a name that
		// resolves there is the index.
		names := g.in.svc.IndexNames(g.in.table)
		qualified := make([]string, len(names))
		for i, n := range names {
			qualified[i] = pgx.Identifier{orgSchema, n}.Sanitize()
		}
		b.Queue(`SELECT count(*) FROM unnest($1::text[]) AS n WHERE pg_catalog.to_regclass(n) IS NOT NULL`,
			qualified).QueryRow(func(row pgx.Row) error {
			return row.Scan(&indexes[i])
		})
	}
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return 0, fmt.Errorf("error reading the applied position: %w", err)
	}
	if !found {
		// This source's first transaction in the database: its row goes in with this transaction, by the
		// fanout's own grants. (Failing the transaction to insert it as the owner made each new org's first
		// visit assume the owner role, a lookup of every role the login belongs to: one per org on the
		// server.) A process racing for the same row waits on its key and then finds it.
		if _, err := conn.Exec(ctx, `INSERT INTO `+meta+` (source, commit_lsn, seq) VALUES ($1, '0/0', -1) ON CONFLICT DO NOTHING`, c.source); err != nil {
			return 0, fmt.Errorf("error recording the applied position: %w", err)
		}
		if err := conn.QueryRow(ctx, readApplied, c.source).Scan(&lsnText, &seq); err != nil {
			return 0, fmt.Errorf("error reading the applied position: %w", err)
		}
	}
	var lacking []*tableGroup
	for i, g := range check {
		if indexes[i] < len(g.in.svc.IndexNames(g.in.table)) {
			lacking = append(lacking, g)
		}
	}
	lsn, err := pglogrepl.ParseLSN(lsnText)
	if err != nil {
		return 0, fmt.Errorf("error parsing the applied position %q: %w", lsnText, err)
	}
	applied := position{lsn: lsn, seq: seq}
	last := applied
	n := 0
	b = &pgx.Batch{}
	for _, g := range groups {
		rows := g.rows
		if !g.pos[0].after(applied) {
			// a replay: keep what comes after the applied position
			rows = rows[:0:0]
			for i, r := range g.rows {
				if g.pos[i].after(applied) {
					rows = append(rows, r)
				}
			}
			c.metrics.rowsSkipped.WithLabelValues("replayed").Add(float64(len(g.rows) - len(rows)))
			c.cfg.Logger.DebugContext(ctx, "skipped replayed rows", slog.Int64("org_id", org.id),
				slog.Int("rows", len(g.rows)-len(rows)), slog.String("applied_lsn", applied.lsn.String()))
		}
		if len(rows) == 0 {
			continue
		}
		if p := g.pos[len(g.pos)-1]; p.after(last) {
			last = p
		}
		var srcs []staging.Source
		if notify { // issue 14
			srcs = outboxSources(g, applied)
		}
		// Deduplicated across the whole group before it is cut into statements, so no two statements write
		// one key and the outbox records each key once, as one statement would.
		if kept := g.in.svc.KeptIndexes(rows); len(kept) != len(rows) {
			rows, srcs = keptOnly(rows, srcs, kept)
		}
		for from := 0; from < len(rows); from += maxUpsertRows {
			to := min(from+maxUpsertRows, len(rows))
			sql, args, err := upsert(g.in, rows[from:to])
			if err != nil {
				return 0, err
			}
			if notify { // issue 14
				sql, args = outboxUpsert(g, rows[from:to], srcs[from:to], sql, args)
			}
			b.Queue(sql, args...)
		}
		n += len(rows)
	}
	if through.after(last) {
		last = through
	}
	if last.after(applied) {
		b.Queue(`UPDATE `+meta+` SET commit_lsn = $2::text::pg_lsn, seq = $3, applied_at = now() WHERE source = $1`, c.source, last.lsn.String(), last.seq)
	}
	b.Queue("COMMIT")
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return 0, &rowsError{fmt.Errorf("error applying to the org database: %w", err)}
	}
	if notify && n > 0 { // issue 14
		c.notify.wake(org.id)
	}
	c.cfg.Logger.DebugContext(ctx, "applied", slog.Int64("org_id", org.id), slog.Int("rows", n),
		slog.String("from_lsn", applied.lsn.String()), slog.String("to_lsn", last.lsn.String()), slog.Int("to_seq", int(last.seq)))
	if len(lacking) > 0 {
		// The rows are in; an index missing (a table from an older version) only costs queries. Failing to
		// create it now is retried by the next process, and does not undo the commit.
		if err := c.ensureSchema(ctx, conn, org, lacking); err != nil {
			c.cfg.Logger.WarnContext(ctx, "error creating missing indexes", slog.Int64("org_id", org.id), slog.String("error", err.Error()))
			return n, nil
		}
	}
	c.markChecked(org.id, check)
	return n, nil
}

// markChecked records that groups' tables were found (or made) complete in the org's database.
func (c *Consumer) markChecked(orgID int64, groups []*tableGroup) {
	c.schemaMu.Lock()
	defer c.schemaMu.Unlock()
	for _, g := range groups {
		c.schema[schemaKey{orgID: orgID, what: g.in.table + "/" + g.in.svc.Name}] = true
	}
}

// maxUpsertRows bounds the rows of one upsert statement. Postgres holds a statement's parameters, their
// parsed jsonb and the unnest's tuplestore in memory at once, and a backend grows its heap to the largest
// statement it has run: at 190 rows a statement the org backends spent about half their CPU in the kernel
// zeroing fresh pages for it (perf of bench fanout, 100 orgs; on a virtual machine each fresh page also costs
// the host). Statements of 64 rows ran the drain with 3.2 to 3.4 s of backend CPU against 6.5 to 9.1 s; 16
// and 8 rows cost more again in per-statement work.
const maxUpsertRows = 64

// keptOnly returns rows, and srcs when there are any, at the indexes kept.
func keptOnly(rows []replicator.Row, srcs []staging.Source, kept []int) ([]replicator.Row, []staging.Source) {
	keptRows := make([]replicator.Row, len(kept))
	var keptSrcs []staging.Source
	if srcs != nil {
		keptSrcs = make([]staging.Source, len(kept))
	}
	for j, i := range kept {
		keptRows[j] = rows[i]
		if srcs != nil {
			keptSrcs[j] = srcs[i]
		}
	}
	return keptRows, keptSrcs
}

// upsert builds the statement; the replicator panics on a value of the wrong Go type, a bug that must park
// the org's changes rather than crash the fanout.
func upsert(in *integrationInfo, rows []replicator.Row) (sql string, args []any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("replicator %s panicked building its upsert: %v", in.svc.Name, r)
		}
	}()
	sql, args = in.svc.Upsert(orgSchema, in.table, rows)
	return sql, args, nil
}

// schemaKey names what was ensured in an org database.
type schemaKey struct {
	orgID int64
	what  string // table/service, or "outbox"
}

// asOwner runs fn in a transaction as the org's owner role, so what it creates belongs to the owner (and the
// read-only group and the fanout's login can use it, through the owner's default privileges). With its own
// login the fanout holds DML grants only; assuming the owner makes the backend compute every role the login
// belongs to, which is why only DDL, rare, does it.
func asOwner(ctx context.Context, conn *pgx.Conn, org *orgInfo, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL ROLE "+pgx.Identifier{pgroles.OwnerRole(org.names)}.Sanitize()); err != nil {
			return fmt.Errorf("error assuming the org's owner role: %w", err)
		}
		return fn(tx)
	})
}

// ensureSchema creates the integrations' tables (and adds columns new to their services) once per org and
// table per process; a failed apply forgets this, so the next attempt checks again.
func (c *Consumer) ensureSchema(ctx context.Context, conn *pgx.Conn, org *orgInfo, groups []*tableGroup) error {
	var stmts []string
	var keys []schemaKey
	c.schemaMu.Lock()
	for _, g := range groups {
		k := schemaKey{orgID: org.id, what: g.in.table + "/" + g.in.svc.Name}
		if !c.schema[k] && !slices.Contains(keys, k) {
			stmts = append(stmts, g.in.svc.EnsureTableSQL(orgSchema, g.in.table)...)
			keys = append(keys, k)
		}
	}
	c.schemaMu.Unlock()
	if len(stmts) == 0 {
		return nil
	}
	err := asOwner(ctx, conn, org, func(tx pgx.Tx) error {
		for _, s := range stmts {
			if _, err := tx.Exec(ctx, s); err != nil {
				return fmt.Errorf("error preparing the org database: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.schemaMu.Lock()
	for _, k := range keys {
		c.schema[k] = true
	}
	c.schemaMu.Unlock()
	return nil
}

func (c *Consumer) forgetSchema(orgID int64) {
	c.schemaMu.Lock()
	for k := range c.schema {
		if k.orgID == orgID {
			delete(c.schema, k)
		}
	}
	c.schemaMu.Unlock()
}

// recordFailed keeps changes that can never be applied where the org can see them, each with its own copy of
// the payload (so it holds no staging partition, and a retry works after the partition is gone). A replayed
// change is recorded once.
func (c *Consumer) recordFailed(ctx context.Context, orgID int64, fs []failure) error {
	n, err := insertFailed(ctx, c.pool, orgID, fs)
	if err != nil {
		return err
	}
	if n > 0 {
		c.metrics.failedTotal.WithLabelValues(orgLabel(orgID)).Add(float64(n))
		c.cfg.Logger.WarnContext(ctx, "changes cannot be applied; recorded as failed",
			slog.Int64("org_id", orgID), slog.Int64("count", n), slog.String("error", fs[0].err))
	}
	return nil
}

// insertFailed writes failures into fanout.failed_changes. A change without a body (its staging row was not
// found) is kept without a payload.
func insertFailed(ctx context.Context, db staging.DB, orgID int64, fs []failure) (int64, error) {
	n := len(fs)
	integ, webhook, seq := make([]int64, n), make([]int64, n), make([]int32, n)
	received, lsn, msg := make([]time.Time, n), make([]string, n), make([]string, n)
	delivery, ctype, headers := make([]*string, n), make([]*string, n), make([]*string, n)
	body, original := make([][]byte, n), make([]*time.Time, n)
	source, jobID := make([]*string, n), make([]*int64, n)
	for i, f := range fs {
		ch := f.c
		integ[i], webhook[i], seq[i] = ch.integrationID, ch.webhookID, ch.pos.seq
		received[i], lsn[i], msg[i] = ch.receivedAt, ch.pos.lsn.String(), f.err
		if ch.body == nil && ch.headers == nil {
			continue // not found in staging: nothing to keep
		}
		b := ch.body
		if b == nil {
			b = []byte{}
		}
		h := string(ch.headers)
		if h == "" {
			h = "{}"
		}
		d, t, at := ch.deliveryID, ch.contentType, ch.deliveredAt()
		if d != "" {
			delivery[i] = &d
		}
		ctype[i], headers[i], body[i], original[i] = &t, &h, b, &at
		if ch.source != "" {
			src := string(ch.source)
			source[i] = &src
		}
		if ch.backfillJobID != 0 {
			jobID[i] = &ch.backfillJobID
		}
	}
	tag, err := db.Exec(ctx, `
		INSERT INTO fanout.failed_changes (org_id, integration_id, received_at, webhook_id, commit_lsn, seq, error,
			delivery_id, content_type, headers, body, original_received_at, source, backfill_job_id)
		SELECT $1, i, r, w, l::pg_lsn, s, e, d, ct, h, b, o, src, j
		FROM unnest($2::bigint[], $3::timestamptz[], $4::bigint[], $5::text[], $6::integer[], $7::text[],
			$8::text[], $9::text[], $10::jsonb[], $11::bytea[], $12::timestamptz[], $13::text[], $14::bigint[])
			AS u(i, r, w, l, s, e, d, ct, h, b, o, src, j)
		ON CONFLICT (webhook_id, received_at) DO NOTHING`, orgID, integ, received, webhook, lsn, seq, msg,
		delivery, ctype, headers, body, original, source, jobID)
	if err != nil {
		return 0, fmt.Errorf("error recording failed changes: %w", err)
	}
	return tag.RowsAffected(), nil
}
