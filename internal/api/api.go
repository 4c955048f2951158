// Package api is webhookdb's management API: JSON under /v1, authenticated with bearer tokens. The CLI is a
// thin client of it. Every org-scoped handler checks membership first: a user who is not a member of an org
// gets 404 for anything of it (its existence does not leak), and 403 for admin-only actions in their own.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/webhookdb-go/webhookdb/fanout"
	"github.com/webhookdb-go/webhookdb/internal/accounts"
	"github.com/webhookdb-go/webhookdb/internal/alerts"
	"github.com/webhookdb-go/webhookdb/internal/backfill"
	"github.com/webhookdb-go/webhookdb/internal/ratelimit"
	"github.com/webhookdb-go/webhookdb/internal/savedquery"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
	"github.com/webhookdb-go/webhookdb/internal/subscriptions"
)

// Credential is a read-only connection to an org's database: the caller's own login.
type Credential struct {
	URL       string    `json:"url"`
	Username  string    `json:"username"`
	ExpiresAt time.Time `json:"expires_at"`
	// Kind is "member" (a member's own login) or "service" (the server's own, never shown).
	Kind string `json:"kind,omitempty"`
	// CACert is the PEM CA certificate to verify the server with (sslmode verify-ca or verify-full).
	CACert string `json:"ca_cert,omitempty"`
}

// Credentials issues and rolls org read-only credentials (Vault or direct mode): a login per member, and
// one of the server's own per org, so that nothing a member does to their login affects anyone else.
type Credentials interface {
	// Connection returns the member's own login, issued on first use.
	Connection(ctx context.Context, orgID, userID int64) (*Credential, error)
	// ServiceConnection returns the server's own login for the org (db sql, db tables).
	ServiceConnection(ctx context.Context, orgID int64) (*Credential, error)
	// RollCredentials replaces the member's own login; with all, every login of the org (members' and the
	// server's), returning the caller's new one. Old logins stop working and lose their sessions at once.
	RollCredentials(ctx context.Context, orgID, userID int64, all bool) (*Credential, error)
	// RevokeMember revokes every login of a member who was removed from the org.
	RevokeMember(ctx context.Context, orgID, userID int64) error
}

// Provisioner creates and removes org databases.
type Provisioner interface {
	ProvisionOrg(ctx context.Context, orgID int64) error
	DeleteOrg(ctx context.Context, orgID int64) error
	// EnsureTable creates an integration's table in the org database right away (the fanout would on first row).
	EnsureTable(ctx context.Context, orgID int64, opaqueID string) error
}

// ServerRegistry registers database servers.
type ServerRegistry interface {
	// RegisterServer registers (or updates) a server and returns the sslmode it chose when none was given.
	RegisterServer(ctx context.Context, reg ServerRegistration) (sslmode string, err error)
}

// ServerRegistration is POST /admin/servers. SSLMode may be empty (require, or disable for a loopback host);
// CACert is PEM, for verify-ca and verify-full.
type ServerRegistration struct {
	Name       string `json:"name"`
	AdminURL   string `json:"admin_url"`
	PublicHost string `json:"public_host"`
	PublicPort int    `json:"public_port"`
	SSLMode    string `json:"sslmode"`
	CACert     string `json:"ca_cert"`
}

// ErrInvalidSSLMode is what a ServerRegistry wraps its sslmode and CA certificate errors in; the API answers
// them as invalid sslmode (or ca_cert).
var ErrInvalidSSLMode = errors.New("invalid sslmode")

// KeyRotator rotates the key that encrypts stored secrets and rewraps every value.
type KeyRotator interface {
	RotateKeys(ctx context.Context, progress func(done, total int)) (*KeyRotation, error)
}

// FanoutStatus reports the fanout's state (slot lag, parked and failed counts).
type FanoutStatus interface {
	FanoutStatus(ctx context.Context) (*fanout.Status, error)
}

// Config wires the API to the rest of the system. Optional parts answer 501 when missing.
type Config struct {
	Pool        *pgxpool.Pool
	Box         secrets.Box
	PublicURL   string
	Credentials Credentials
	Provisioner Provisioner
	Servers     ServerRegistry
	Keys        KeyRotator
	Limits      OrgLimiter
	Fanout      FanoutStatus
	Errors      FanoutErrors
	// Subscriptions and Alerts serve webhook subscriptions and alert handlers (issue 14).
	Subscriptions *subscriptions.Service
	Alerts        *alerts.Service
	// Backfill sets backfill credentials and queues jobs; nil answers 501.
	Backfill *backfill.Service
	// ClientKey names who a request comes from, for per-client limits (the peer's address, or what trusted
	// proxies say); default the peer's address.
	ClientKey func(*http.Request) string
	// ReplayEvery and ReplayBurst bound replays per org: a burst of ReplayBurst, then one per ReplayEvery;
	// defaults 5 and 5 minutes.
	ReplayEvery time.Duration
	ReplayBurst int
	// MaxOrgsPerUser caps the live orgs a user (not a server admin) may administer; default 10, negative: none.
	MaxOrgsPerUser int
	// SQLRowLimit caps `db sql` results; default 1,000.
	SQLRowLimit int
	// SQLByteLimit caps the bytes of the rows of a `db sql` answer (as JSON); default 10 MiB.
	SQLByteLimit int
	// SQLTimeout bounds `db sql`; default 30s.
	SQLTimeout time.Duration
	// SavedQueryCacheTTL is how long a public saved query's result is served again before the query runs anew;
	// default 30s. SavedQueryCacheBytes bounds the cached results of all orgs; default 64 MiB.
	SavedQueryCacheTTL   time.Duration
	SavedQueryCacheBytes int
	// PublicQueryMaxRows and PublicQueryMaxBytes cap a public result; defaults 1,000 and 1 MiB.
	// PublicQueryTimeout bounds its query (and the org's query limit does); default 10s.
	PublicQueryMaxRows  int
	PublicQueryMaxBytes int
	PublicQueryTimeout  time.Duration
	// PublicQueryEvery and PublicQueryBurst bound public query requests per client: a burst, then one per
	// PublicQueryEvery; defaults 1s and 20.
	PublicQueryEvery time.Duration
	PublicQueryBurst int
	// PublicQueryConcurrency bounds the public runs of one org at once (per server); default 2.
	PublicQueryConcurrency int
	Logger                 *slog.Logger
}

// API serves /v1.
type API struct {
	cfg    Config
	pool   *pgxpool.Pool
	logger *slog.Logger
	// replays bounds replays per org: each stores a window of deliveries again.
	replays *ratelimit.Keyed
	// authFailures bounds bad tokens per client: past the burst, a client is refused before any lookup.
	authFailures *ratelimit.Keyed
	// publicQueries bounds public saved query requests per client; savedResults caches their results.
	publicQueries *ratelimit.Keyed
	savedResults  *savedquery.Cache
	publicRuns    *orgSlots
}

// New returns the API.
func New(cfg Config) *API {
	if cfg.ClientKey == nil {
		cfg.ClientKey = func(r *http.Request) string { return ratelimit.ClientKey(r, nil) }
	}
	if cfg.ReplayEvery == 0 {
		cfg.ReplayEvery = 5 * time.Minute
	}
	if cfg.ReplayBurst == 0 {
		cfg.ReplayBurst = 5
	}
	if cfg.MaxOrgsPerUser == 0 {
		cfg.MaxOrgsPerUser = 10
	}
	if cfg.SQLRowLimit == 0 {
		cfg.SQLRowLimit = 1000
	}
	if cfg.SQLByteLimit == 0 {
		cfg.SQLByteLimit = 10 << 20
	}
	if cfg.SQLTimeout == 0 {
		cfg.SQLTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg = cfg.savedQueryDefaults()
	cfg.PublicURL = strings.TrimRight(cfg.PublicURL, "/")
	return &API{cfg: cfg, pool: cfg.Pool, logger: cfg.Logger, replays: ratelimit.New(cfg.ReplayEvery, cfg.ReplayBurst),
		authFailures:  ratelimit.New(6*time.Second, 20),
		publicQueries: ratelimit.New(cfg.PublicQueryEvery, cfg.PublicQueryBurst),
		savedResults:  savedquery.NewCache(cfg.SavedQueryCacheTTL, cfg.SavedQueryCacheBytes),
		publicRuns:    newOrgSlots(cfg.PublicQueryConcurrency)}
}

// Error is the one error shape of the API.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
	// RetryAfter, when set, is sent as Retry-After.
	RetryAfter time.Duration `json:"-"`
}

func (e *Error) Error() string { return e.Message }

func errNotFound(what string) *Error {
	return &Error{Status: http.StatusNotFound, Code: "not_found", Message: what + " not found"}
}
func errForbidden(msg string) *Error {
	return &Error{Status: http.StatusForbidden, Code: "forbidden", Message: msg}
}
func errInvalid(field, msg string) *Error {
	return &Error{Status: http.StatusUnprocessableEntity, Code: "invalid", Field: field, Message: field + ": " + msg}
}
func errConflict(msg string) *Error {
	return &Error{Status: http.StatusConflict, Code: "conflict", Message: msg}
}
func errUnavailable(msg string) *Error {
	return &Error{Status: http.StatusNotImplemented, Code: "not_configured", Message: msg}
}

type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// wrap turns a handler's error into the API's error shape.
func (a *API) wrap(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			var apiErr *Error
			if !errors.As(err, &apiErr) {
				a.logger.ErrorContext(r.Context(), "api error", slog.String("path", r.URL.Path), slog.String("error", err.Error()))
				apiErr = &Error{Status: http.StatusInternalServerError, Code: "internal", Message: "internal error"}
			}
			if apiErr.RetryAfter > 0 {
				w.Header().Set("Retry-After", ratelimit.RetryAfter(apiErr.RetryAfter))
			}
			writeJSON(w, apiErr.Status, ErrorEnvelope{Error: apiErr})
		}
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// decode reads a JSON body into v, refusing unknown fields so typos surface.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		var field string
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			field = typeErr.Field
		} else if msg := err.Error(); strings.HasPrefix(msg, "json: unknown field ") {
			field = strings.Trim(strings.TrimPrefix(msg, "json: unknown field "), `"`)
			return errInvalid(field, "unknown field")
		}
		if field == "" {
			field = "body"
		}
		return errInvalid(field, "invalid JSON: "+err.Error())
	}
	return nil
}

type ctxKey int

const userKey ctxKey = iota

// authenticate checks the bearer token and puts the user in the request context.
func (a *API) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || token == "" {
			writeJSON(w, http.StatusUnauthorized, ErrorEnvelope{Error: &Error{Code: "unauthorized", Message: "missing bearer token (Authorization: Bearer whdb_...)"}})
			return
		}
		client := a.cfg.ClientKey(r)
		if blocked, wait := a.authFailures.Blocked(client, time.Now()); blocked {
			// Guessing tokens costs the guesser, not the database.
			apiErr := errRateLimited("too many bad API tokens from this client", wait)
			w.Header().Set("Retry-After", ratelimit.RetryAfter(wait))
			writeJSON(w, apiErr.Status, ErrorEnvelope{Error: apiErr})
			return
		}
		user, err := accounts.Authenticate(r.Context(), a.pool, strings.TrimSpace(token))
		if errors.Is(err, accounts.ErrInvalidToken) {
			a.authFailures.Take(client, time.Now())
		}
		if err != nil {
			status, code, msg := http.StatusUnauthorized, "unauthorized", "invalid or revoked API token"
			if !errors.Is(err, accounts.ErrInvalidToken) {
				status, code, msg = http.StatusServiceUnavailable, "unavailable", "cannot check the token right now"
			}
			writeJSON(w, status, ErrorEnvelope{Error: &Error{Code: code, Message: msg}})
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), userKey, user)))
	})
}

func userFrom(r *http.Request) *accounts.User { return r.Context().Value(userKey).(*accounts.User) }

// Register adds the API's routes under /v1 to r.
func (a *API) Register(r *mux.Router) {
	// Public routes first: the /v1 subrouter authenticates everything it matches.
	for _, rt := range a.publicRoutes() {
		r.Handle(rt.path, a.wrap(rt.handler)).Methods(rt.method)
	}
	v1 := r.PathPrefix("/v1").Subrouter()
	v1.Use(a.authenticate)
	for _, rt := range a.routes() {
		v1.Handle(rt.path, a.wrap(rt.handler)).Methods(rt.method)
	}
}

type route struct {
	method, path string
	handler      handlerFunc
}

// Routes lists method and path (relative to /v1) of every route, for the OpenAPI check.
func (a *API) Routes() [][2]string {
	var out [][2]string
	for _, rt := range a.routes() {
		out = append(out, [2]string{rt.method, "/v1" + rt.path})
	}
	for _, rt := range a.publicRoutes() {
		out = append(out, [2]string{rt.method, rt.path})
	}
	return out
}

func (a *API) routes() []route {
	return []route{
		{"GET", "/me", a.me},

		{"GET", "/orgs", a.listOrgs},
		{"POST", "/orgs", a.createOrg},
		{"GET", "/orgs/{org}", a.orgScoped(roleMember, a.getOrg)},
		{"PATCH", "/orgs/{org}", a.orgScoped(roleAdmin, a.updateOrg)},
		{"DELETE", "/orgs/{org}", a.orgScoped(roleAdmin, a.deleteOrg)},
		{"GET", "/orgs/{org}/members", a.orgScoped(roleMember, a.listMembers)},
		{"POST", "/orgs/{org}/members", a.orgScoped(roleAdmin, a.addMember)},
		{"PATCH", "/orgs/{org}/members/{email}", a.orgScoped(roleAdmin, a.changeRole)},
		{"DELETE", "/orgs/{org}/members/{email}", a.orgScoped(roleMember, a.removeMember)},

		{"GET", "/tokens", a.listTokens},
		{"POST", "/tokens", a.createToken},
		{"DELETE", "/tokens/{id}", a.revokeToken},

		{"GET", "/services", a.listServices},
		{"GET", "/services/{name}", a.getService},

		{"GET", "/orgs/{org}/integrations", a.orgScoped(roleMember, a.listIntegrations)},
		{"POST", "/orgs/{org}/integrations", a.orgScoped(roleAdmin, a.createIntegration)},
		{"GET", "/orgs/{org}/integrations/{opaque_id}", a.orgScoped(roleMember, a.getIntegration)},
		{"PATCH", "/orgs/{org}/integrations/{opaque_id}", a.orgScoped(roleAdmin, a.updateIntegration)},
		{"DELETE", "/orgs/{org}/integrations/{opaque_id}", a.orgScoped(roleAdmin, a.deleteIntegration)},
		{"POST", "/orgs/{org}/integrations/{opaque_id}/roll-secret", a.orgScoped(roleAdmin, a.rollSecret)},
		{"GET", "/orgs/{org}/integrations/{opaque_id}/stats", a.orgScoped(roleMember, a.integrationStats)},

		{"GET", "/orgs/{org}/integrations/{opaque_id}/backfill", a.orgScoped(roleMember, a.getBackfill)},
		{"PUT", "/orgs/{org}/integrations/{opaque_id}/backfill", a.orgScoped(roleAdmin, a.setBackfill)},
		{"POST", "/orgs/{org}/integrations/{opaque_id}/backfill/jobs", a.orgScoped(roleAdmin, a.startBackfill)},
		{"GET", "/orgs/{org}/backfill/jobs", a.orgScoped(roleMember, a.listBackfillJobs)},
		{"GET", "/orgs/{org}/backfill/jobs/{id}", a.orgScoped(roleMember, a.getBackfillJob)},
		{"POST", "/orgs/{org}/backfill/jobs/{id}/cancel", a.orgScoped(roleAdmin, a.cancelBackfillJob)},

		{"GET", "/orgs/{org}/db/connection", a.orgScoped(roleMember, a.dbConnection)},
		{"POST", "/orgs/{org}/db/roll-credentials", a.orgScoped(roleMember, a.rollCredentials)},
		{"POST", "/orgs/{org}/db/sql", a.orgScoped(roleMember, a.dbSQL)},
		{"GET", "/orgs/{org}/db/tables", a.orgScoped(roleMember, a.dbTables)},

		{"GET", "/orgs/{org}/webhooks", a.orgScoped(roleMember, a.listWebhooks)},
		{"GET", "/orgs/{org}/webhooks/{id}", a.orgScoped(roleMember, a.getWebhook)},
		{"POST", "/orgs/{org}/replay", a.orgScoped(roleAdmin, a.replay)},

		{"GET", "/orgs/{org}/errors", a.orgScoped(roleMember, a.listErrors)},
		{"POST", "/orgs/{org}/errors/retry", a.orgScoped(roleAdmin, a.retryErrors)},
		{"POST", "/orgs/{org}/errors/{id}/retry", a.orgScoped(roleAdmin, a.retryError)},
		{"POST", "/orgs/{org}/errors/{id}/skip", a.orgScoped(roleAdmin, a.skipError)},

		{"GET", "/orgs/{org}/saved-queries", a.orgScoped(roleMember, a.listSavedQueries)},
		{"POST", "/orgs/{org}/saved-queries", a.orgScoped(roleMember, a.createSavedQuery)},
		{"DELETE", "/orgs/{org}/saved-queries/{name}", a.orgScoped(roleAdmin, a.deleteSavedQuery)},
		{"POST", "/orgs/{org}/saved-queries/{name}/run", a.orgScoped(roleMember, a.runSavedQuery)},
		{"POST", "/orgs/{org}/saved-queries/{name}/publish", a.orgScoped(roleAdmin, a.publishSavedQuery(false))},
		{"POST", "/orgs/{org}/saved-queries/{name}/roll-token", a.orgScoped(roleAdmin, a.publishSavedQuery(true))},
		{"POST", "/orgs/{org}/saved-queries/{name}/unpublish", a.orgScoped(roleAdmin, a.unpublishSavedQuery)},
		// issue 14: webhook subscriptions and alert handlers (subscriptions.go)
		{"GET", "/orgs/{org}/subscriptions", a.orgScoped(roleMember, a.listSubscriptions)},
		{"POST", "/orgs/{org}/subscriptions", a.orgScoped(roleAdmin, a.createSubscription)},
		{"GET", "/orgs/{org}/subscriptions/{id}", a.orgScoped(roleMember, a.getSubscription)},
		{"DELETE", "/orgs/{org}/subscriptions/{id}", a.orgScoped(roleAdmin, a.deleteSubscription)},
		{"POST", "/orgs/{org}/subscriptions/{id}/test", a.orgScoped(roleAdmin, a.testSubscription)},
		{"POST", "/orgs/{org}/subscriptions/{id}/roll-secret", a.orgScoped(roleAdmin, a.rollSubscriptionSecret)},
		{"GET", "/orgs/{org}/subscriptions/{id}/deliveries", a.orgScoped(roleMember, a.listDeliveries)},
		{"POST", "/orgs/{org}/subscriptions/{id}/recover", a.orgScoped(roleAdmin, a.recoverSubscription)},
		{"POST", "/orgs/{org}/deliveries/{delivery}/redeliver", a.orgScoped(roleAdmin, a.redeliver)},
		{"GET", "/orgs/{org}/alerts", a.orgScoped(roleMember, a.listAlertHandlers)},
		{"POST", "/orgs/{org}/alerts", a.orgScoped(roleAdmin, a.addAlertHandler)},
		{"DELETE", "/orgs/{org}/alerts/{id}", a.orgScoped(roleAdmin, a.removeAlertHandler)},

		{"GET", "/admin/servers", a.serverAdmin(a.listServers)},
		{"POST", "/admin/servers", a.serverAdmin(a.addServer)},
		{"POST", "/admin/users", a.serverAdmin(a.createUser)},
		{"POST", "/admin/keys/rotate", a.serverAdmin(a.rotateKeys)},
		{"GET", "/admin/orgs/{org}/limits", a.serverAdmin(a.getOrgLimits)},
		{"PUT", "/admin/orgs/{org}/limits", a.serverAdmin(a.setOrgLimits)},
		{"GET", "/admin/fanout", a.serverAdmin(a.fanoutStatus)},
	}
}

func (a *API) serverAdmin(h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if !userFrom(r).ServerAdmin {
			return errForbidden("this needs a server administrator")
		}
		return h(w, r)
	}
}

func (a *API) me(w http.ResponseWriter, r *http.Request) error {
	u := userFrom(r)
	orgs, err := a.orgsOf(r.Context(), u.ID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, Me{User: u, Orgs: orgs})
	return nil
}

func wrapf(err error, format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, err)...)
}
