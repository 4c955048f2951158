package fanout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/webhookdb-go/webhookdb/internal/replicator"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
	"github.com/webhookdb-go/webhookdb/pgroles"
)

var (
	// errOrgNotProvisioned means the org has no database server yet: its changes wait, parked.
	errOrgNotProvisioned = errors.New("org database is not provisioned")
)

// orgInfo is where an org's database is.
type orgInfo struct {
	id      int64
	key     string
	names   string // name base: the org's database and owner role are named from it (pgroles)
	gone    bool   // deleted, or no such org: its changes are dropped
	connCfg *pgx.ConnConfig
	server  string // host:port of connCfg: connections are capped per server
	err     error  // not usable yet (errOrgNotProvisioned, a secret that does not decrypt...): park
	at      time.Time
}

// integrationInfo is how an integration's webhooks become rows.
type integrationInfo struct {
	id      int64
	orgID   int64
	table   string
	svc     *replicator.Service
	err     error // the service does not resolve: park, the configuration may be fixed
	deleted bool
	missing bool
	at      time.Time
}

// resolver caches org and integration lookups in the application database for CacheTTL.
type resolver struct {
	pool    *pgxpool.Pool
	box     secrets.Box
	ttl     time.Duration
	writers WriterSource

	mu           sync.Mutex
	orgs         map[int64]*orgInfo
	integrations map[int64]*integrationInfo
	repaired     map[string]time.Time // server -> last writer repair
}

func newResolver(pool *pgxpool.Pool, box secrets.Box, ttl time.Duration, writers WriterSource) *resolver {
	return &resolver{pool: pool, box: box, ttl: ttl, writers: writers, orgs: map[int64]*orgInfo{}, integrations: map[int64]*integrationInfo{}}
}

// WriterSource supplies the fanout's own login to an org database (a Vault static role, or a password
// webhookdb rotates itself) instead of the server's admin URL. A rotated password makes new connections fail;
// the org's rows park, the org is resolved again with the current password, and the parked rows drain. A
// WriterSource that also has RepairWriter (writerRepairer) is asked, on SQLSTATE 28P01, to set the stored
// password on the server again: a rotation cut short between its two steps would otherwise lock the fanout
// out until the next one.
type WriterSource interface {
	WriterConnString(ctx context.Context, orgID int64) (connString, ownerRole string, err error)
}

// writerRepairer is a WriterSource that can set the stored password on the server again, for a login
// refused after a rotation that was cut short (orgdb.Service.RepairWriter).
type writerRepairer interface {
	RepairWriter(ctx context.Context, orgID int64) error
}

// writerRepairInterval is how often a server's fanout login is repaired at most: a refusal the repair does
// not cure (pg_hba, a revoked role) is not worth a superuser connection per attempt.
const writerRepairInterval = 10 * time.Second

// repairWriter asks the WriterSource to make the server accept the stored password again, at most once per
// writerRepairInterval per server, and drops the cached org so the next attempt reads the credential again.
func (r *resolver) repairWriter(ctx context.Context, org *orgInfo) error {
	r.forgetOrg(org.id)
	rep, ok := r.writers.(writerRepairer)
	if !ok {
		return nil
	}
	r.mu.Lock()
	if r.repaired == nil {
		r.repaired = map[string]time.Time{}
	}
	if last, ok := r.repaired[org.server]; ok && time.Since(last) < writerRepairInterval {
		r.mu.Unlock()
		return nil
	}
	r.repaired[org.server] = time.Now()
	r.mu.Unlock()
	return rep.RepairWriter(ctx, org.id)
}

// org returns the org's database location. An error is the application database's: the caller cannot decide
// anything about the org without it.
func (r *resolver) org(ctx context.Context, id int64) (*orgInfo, error) {
	r.mu.Lock()
	o := r.orgs[id]
	r.mu.Unlock()
	if o != nil && time.Since(o.at) < r.ttl {
		return o, nil
	}
	o, err := r.loadOrg(ctx, id)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.orgs[id] = o
	r.mu.Unlock()
	return o, nil
}

func (r *resolver) loadOrg(ctx context.Context, id int64) (*orgInfo, error) {
	o := &orgInfo{id: id, at: time.Now()}
	var (
		deleted         bool
		server, urlEnc  *string
		provisionStatus string
	)
	err := r.pool.QueryRow(ctx, `
		SELECT o.key, coalesce(o.name_base, o.key), o.deleted_at IS NOT NULL, o.provision_state, s.name, s.admin_url_enc
		FROM organizations o LEFT JOIN database_servers s ON s.id = o.database_server_id
		WHERE o.id = $1`, id).Scan(&o.key, &o.names, &deleted, &provisionStatus, &server, &urlEnc)
	if errors.Is(err, pgx.ErrNoRows) {
		o.gone = true
		return o, nil
	}
	if err != nil {
		return nil, fmt.Errorf("error reading org %d: %w", id, err)
	}
	if deleted || provisionStatus == "deleting" || provisionStatus == "deleted" {
		o.gone = true
		return o, nil
	}
	if server == nil || urlEnc == nil {
		o.err = errOrgNotProvisioned
		return o, nil
	}
	var connString string
	if r.writers != nil {
		if connString, _, err = r.writers.WriterConnString(ctx, id); err != nil {
			o.err = fmt.Errorf("error getting the fanout's credentials on database server %s: %w", *server, err)
			return o, nil
		}
	} else {
		adminURL, err := r.box.Decrypt(ctx, secrets.Binding{Table: "database_servers", Column: "admin_url_enc", Row: *server}, *urlEnc)
		if err != nil {
			o.err = fmt.Errorf("error decrypting the admin URL of database server %s: %w", *server, err)
			return o, nil
		}
		connString = pgroles.OrgURL(string(adminURL), o.names)
	}
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		o.err = fmt.Errorf("error parsing the admin URL of database server %s: %w", *server, err)
		return o, nil
	}
	cfg.RuntimeParams["application_name"] = "webhookdb-fanout"
	if r.writers == nil {
		// The admin login, a superuser, writes as the org's owner role, so what it creates belongs to the
		// owner. Set in the startup packet, the role costs no round trip. The fanout's own login instead
		// holds grants of its own in each org database (pgroles.StepWriterGrants) and assumes the owner only
		// for DDL (asOwner): assuming a role makes a new backend look up every role the login belongs to,
		// the owner roles of all the server's orgs.
		cfg.RuntimeParams["role"] = pgroles.OwnerRole(o.names)
	}
	// A backend plans a statement's first five executions with its parameters as constants (custom plans):
	// for an upsert that is the whole batch's arrays folded into, and copied through, the plan, which most org
	// connections, opened for a few transactions, would pay every time. The fanout's statements (keyed
	// lookups, upserts from unnest) have no plan choice a parameter could change. BenchmarkUpsert: an org's
	// first five transactions on a new connection cost 69 to 82 µs of Postgres CPU a row with it, 114 to 134
	// without.
	cfg.RuntimeParams["plan_cache_mode"] = "force_generic_plan"
	// pgx sizes each connection's caches for 512 statements up front, 54 KB of the 73 a connection holds. An
	// org connection prepares a few statements (the applied position, an upsert per table, with and without
	// the outbox), and a connection is held per busy org: sized for what it runs, 1,000 of them hold about 25
	// MB instead of 73. The description cache serves only QueryExecModeCacheDescribe, which the fanout does
	// not use.
	cfg.StatementCacheCapacity = orgStatementCacheCapacity
	cfg.DescriptionCacheCapacity = 0
	o.connCfg = cfg
	o.server = net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
	return o, nil
}

// orgStatementCacheCapacity is how many prepared statements an org connection keeps; an org with more
// integrations than fit re-prepares the least recently used, which costs a Parse, not a failure.
const orgStatementCacheCapacity = 64

// forgetOrg drops a cached org, so the next attempt reads it again (after a failure, the server may have moved).
func (r *resolver) forgetOrg(id int64) {
	r.mu.Lock()
	delete(r.orgs, id)
	r.mu.Unlock()
}

// integrations returns the integrations with the given ids, loading the ones not cached in one query.
func (r *resolver) integrationsByID(ctx context.Context, ids []int64) (map[int64]*integrationInfo, error) {
	out := make(map[int64]*integrationInfo, len(ids))
	var load []int64
	r.mu.Lock()
	for _, id := range ids {
		if _, done := out[id]; done {
			continue
		}
		if in := r.integrations[id]; in != nil && time.Since(in.at) < r.ttl {
			out[id] = in
			continue
		}
		out[id] = nil
		load = append(load, id)
	}
	r.mu.Unlock()
	if len(load) == 0 {
		return out, nil
	}
	rows, err := r.pool.Query(ctx, `
		SELECT id, org_id, service, table_name, config, deleted_at IS NOT NULL
		FROM service_integrations WHERE id = ANY($1)`, load)
	if err != nil {
		return nil, fmt.Errorf("error reading integrations: %w", err)
	}
	now := time.Now()
	for rows.Next() {
		in := &integrationInfo{at: now}
		var service string
		var config json.RawMessage
		if err := rows.Scan(&in.id, &in.orgID, &service, &in.table, &config, &in.deleted); err != nil {
			rows.Close()
			return nil, fmt.Errorf("error reading integration: %w", err)
		}
		in.svc, in.err = replicator.Resolve(service, config)
		out[in.id] = in
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("error reading integrations: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range load {
		if out[id] == nil {
			out[id] = &integrationInfo{id: id, missing: true, at: now}
		}
		r.integrations[id] = out[id]
	}
	return out, nil
}
