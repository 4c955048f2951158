package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gorilla/mux"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/webhookdb-go/webhookdb/fanout"
	"github.com/webhookdb-go/webhookdb/ingest"
	"github.com/webhookdb-go/webhookdb/internal/api"
	"github.com/webhookdb-go/webhookdb/internal/backfill"
	"github.com/webhookdb-go/webhookdb/internal/migrate"
	"github.com/webhookdb-go/webhookdb/internal/orgdb"
	"github.com/webhookdb-go/webhookdb/internal/ratelimit"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
	"github.com/webhookdb-go/webhookdb/internal/staging"
	"github.com/webhookdb-go/webhookdb/vault"
)

// App is one assembled webhookdb process: the roles of its config, sharing one application database pool,
// one secrets box, one org database service and one metrics registry.
type App struct {
	cfg    Config
	logger *slog.Logger
	pool   *pgxpool.Pool
	// commitPool is ingest's group committer's own (nil without the ingest role): the API, a flood of bad tokens
	// or a slow fanout never take its connections. lookupPool serves ingest's integration cache: requests with
	// unknown ids never take the committer's connections either.
	commitPool *pgxpool.Pool
	lookupPool *pgxpool.Pool
	registry   *prometheus.Registry
	box        secrets.Box
	keys       *Keys
	orgs       *orgdb.Service
	// keeper renews the Vault token (nil without Vault); /healthz reports it.
	keeper *vault.TokenKeeper
	// reconciled: Vault and the database servers have been reconciled with the application database since
	// start; until then the maintenance role retries (reconcileRetry first, doubling).
	reconciled     atomic.Bool
	reconcileRetry time.Duration

	// router and listener serve ingest and the API (nil when the process runs neither). The listener is bound
	// before ingest and the API are built: with port 0 only it knows the port of their public URL.
	router *mux.Router
	// front, with the ingest role, serves webhook paths before the router (ingest.Service.Front).
	front    func(http.Handler) http.Handler
	listener net.Listener
	// metricsListener serves /metrics and /healthz alone (nil unless MetricsListen is set).
	metricsListener net.Listener

	workers []func(ctx context.Context) error
	slot    *slotWatch

	// backfillPool is the backfill workers' own (maintenance role only).
	backfillPool *pgxpool.Pool
	backfill     *backfill.Service
}

// New validates the config, applies migrations, connects, builds the roles and binds the listen addresses.
// With the ingest role the fanout's slot exists when New returns: nothing accepted later can be missed.
func New(ctx context.Context, cfg Config) (_ *App, err error) {
	publicURLGiven := cfg.PublicURL != ""
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration:\n%w", err)
	}
	logger := cfg.Logger
	for _, note := range cfg.deprecated {
		logger.WarnContext(ctx, note)
	}
	if _, err := migrate.Up(ctx, cfg.DatabaseURL, logger); err != nil {
		return nil, err
	}
	a := &App{cfg: cfg, logger: logger, registry: prometheus.NewRegistry()}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	a.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if a.pool, err = openPool(ctx, cfg); err != nil {
		return nil, err
	}
	if cfg.Has(RoleIngest) {
		// The committer's workers (4) and the rejected rows it stores beside them.
		if a.commitPool, err = openSmallPool(ctx, cfg, 6); err != nil {
			return nil, err
		}
		// At most 2 lookups at once (ingest.CacheConfig.LookupConcurrency) and the cache's poll.
		if a.lookupPool, err = openSmallPool(ctx, cfg, 3); err != nil {
			return nil, err
		}
	}
	if cfg.VaultAddr != "" && (cfg.Encryption == EncryptionTransit || cfg.Credentials == CredentialsVault) {
		// One client for the process, its token renewed for as long as the process runs: leases live only as
		// long as the token that made them.
		if cfg.vaultClient, err = cfg.newVaultClient(); err != nil {
			return nil, err
		}
		ar, err := cfg.appRole()
		if err != nil {
			return nil, err
		}
		a.keeper = vault.NewTokenKeeper(vault.KeeperConfig{Client: cfg.vaultClient, AppRole: ar, Registerer: a.registry, Logger: logger})
		startCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err = a.keeper.Start(startCtx)
		cancel()
		if err != nil {
			return nil, err
		}
		a.workers = append(a.workers, a.keeper.Run)
	}
	if a.keys, a.orgs, err = buildSecrets(ctx, cfg, a.pool); err != nil {
		return nil, err
	}
	a.box = a.keys.Box
	if cfg.Has(RoleMaintenance) {
		// Vault or an org database server may be unreachable: one attempt now, bounded, then retries in the
		// background while everything else serves.
		a.reconcileRetry = time.Second
		attemptCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
		if err := a.reconcileOnce(attemptCtx); err != nil {
			logger.WarnContext(ctx, "reconciling credentials at start failed; serving anyway and retrying in the background", "error", err)
		} else {
			a.reconciled.Store(true)
		}
		cancel()
		a.workers = append(a.workers, a.reconcile)
		if cfg.KeyRotationPeriod > 0 {
			rot, _ := a.box.(secrets.Rotator)
			if rot != nil && (a.keys.Transit != nil || a.keys.Keyring != nil) {
				sched := secrets.NewSchedule(secrets.ScheduleConfig{
					Pool: a.pool, Box: rot, Keyring: a.keys.Keyring, Period: cfg.KeyRotationPeriod,
					OnRotated: cfg.OnKeyRotated, Registerer: a.registry, Logger: logger,
				})
				a.workers = append(a.workers, sched.Run)
			}
		}
	}
	logger.InfoContext(ctx, "assembling webhookdb", slog.Any("roles", cfg.Roles), slog.String("credentials", a.orgs.Mode()),
		slog.String("encryption", cfg.Encryption), slog.String("slot", cfg.Slot))

	// issue 14: webhook subscriptions and alerts (outgoing_wiring.go)
	subs, alertSvc, err := a.outgoingServices()
	if err != nil {
		return nil, err
	}
	fanoutCfg := cfg.Fanout
	fanoutCfg.Slot, fanoutCfg.Logger = cfg.Slot, logger
	fanoutCfg.Notify = subs
	// The narrow writer login per org database server, whichever process runs the fanout.
	fanoutCfg.Writers = a.orgs
	consumer, err := fanout.New(cfg.DatabaseURL, a.pool, a.box, fanoutCfg, a.registry)
	if err != nil {
		return nil, err
	}
	if cfg.Has(RoleIngest) || cfg.Has(RoleFanout) {
		// The slot must exist before ingest accepts anything, even when the fanout runs as its own process:
		// rows committed earlier would never reach it.
		if err := consumer.EnsureSlot(ctx); err != nil {
			return nil, err
		}
	}

	a.slot = newSlotWatch(a.pool, cfg.Slot, logger, a.registry)
	if cfg.Has(RoleMaintenance) || cfg.Has(RoleFanout) {
		a.workers = append(a.workers, a.slot.run)
	}

	if cfg.servesHTTP() {
		if a.listener, err = net.Listen("tcp", cfg.Listen); err != nil {
			return nil, fmt.Errorf("error listening on %s: %w", cfg.Listen, err)
		}
		if !publicURLGiven {
			// With port 0 only the listener knows the port senders must use.
			cfg.PublicURL = loopbackURL(cfg.Listen, a.listener.Addr())
			a.cfg.PublicURL = cfg.PublicURL
		}
		a.router = mux.NewRouter()
		a.router.HandleFunc("/healthz", a.handleHealthz).Methods(http.MethodGet, http.MethodHead)
		a.router.Handle("/metrics", a.metricsHandler()).Methods(http.MethodGet)
	}
	proxies, _ := cfg.trustedProxies() // validated above
	backfills, err := a.buildBackfill(ctx, cfg, alertSvc)
	if err != nil {
		return nil, err
	}
	if cfg.Has(RoleIngest) {
		svc := ingest.New(a.commitPool, a.box, ingest.NewMetrics(a.registry), ingest.Config{
			PublicURL: cfg.PublicURL, DefaultBodyLimit: cfg.BodyLimit, Logger: logger,
			Memory: cfg.IngestMemory, MemoryPerOrg: cfg.IngestMemoryPerOrg, IdleTimeout: cfg.IngestIdleTimeout,
			TrustedProxies: proxies, LookupPool: a.lookupPool,
		})
		// Webhook routes first: the API's /v1 subrouter authenticates everything it matches.
		svc.Register(a.router)
		// Deliveries skip the router's matching (Front); the routes above stay for paths it hands on.
		a.front = svc.Front
		a.workers = append(a.workers, svc.Run)
	}
	if cfg.Has(RoleAPI) {
		adapter := orgdbAdapter{svc: a.orgs, box: a.box, db: a.pool}
		state := fanoutState{pool: a.pool, slot: cfg.Slot}
		api.New(api.Config{
			Pool: a.pool, Box: a.box, PublicURL: cfg.PublicURL, Logger: logger,
			Credentials: adapter, Provisioner: adapter, Servers: adapter, Keys: adapter, Limits: adapter,
			SavedQueryCacheTTL: cfg.SavedQueries.CacheTTL, PublicQueryMaxRows: cfg.SavedQueries.PublicMaxRows, PublicQueryMaxBytes: cfg.SavedQueries.PublicMaxBytes,
			Fanout: state, Errors: state, Backfill: backfills, MaxOrgsPerUser: cfg.MaxOrgsPerUser, SQLByteLimit: cfg.SQLMaxBytes,
			Subscriptions: subs, Alerts: alertSvc,
			ClientKey: func(r *http.Request) string { return ratelimit.ClientKey(r, proxies) },
		}).Register(a.router)
	}
	if cfg.Has(RoleMaintenance) {
		upkeep := staging.NewUpkeep(a.pool, staging.UpkeepConfig{
			Retention: cfg.Retention, Slot: cfg.Slot, Logger: logger, Registerer: a.registry,
			Holders: []staging.Holder{fanout.ParkedHolder{Pool: a.pool}},
		})
		a.orgs.SetRenewalAlert(credentialAlerts{alertSvc})
		a.workers = append(a.workers, upkeep.Run, a.orgs.Run)
		a.workers = append(a.workers, subs.Run, alertSvc.Run) // issue 14: deliveries and alerts
	}
	if cfg.Has(RoleFanout) {
		a.workers = append(a.workers, consumer.Run)
		a.workers = append(a.workers, consumer.RunRelay) // issue 14: outboxes to deliveries
	}

	if cfg.MetricsListen != "" {
		if a.metricsListener, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			return nil, fmt.Errorf("error listening on %s: %w", cfg.MetricsListen, err)
		}
	}
	return a, nil
}

func openPool(ctx context.Context, cfg Config) (*pgxpool.Pool, error) {
	poolCfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("error parsing the database URL: %w", err)
	}
	if !strings.Contains(cfg.DatabaseURL, "pool_max_conns") {
		// The fanout's workers park, drain and look up orgs here, beside its heartbeat and lag loops; ingest's
		// committers, the API and upkeep share the rest.
		var n int32
		if cfg.Has(RoleFanout) {
			n += int32(cfg.Fanout.WithDefaults().Workers + 4)
		}
		if cfg.servesHTTP() || cfg.Has(RoleMaintenance) {
			n += 16
		}
		poolCfg.MaxConns = n
	}
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return nil, fmt.Errorf("error connecting to the database: %w", err)
	}
	return pool, nil
}

// openSmallPool is a pool of its own for one part of ingest, so that its connections are never taken by
// another part's load.
func openSmallPool(ctx context.Context, cfg Config, conns int32) (*pgxpool.Pool, error) {
	poolCfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("error parsing the database URL: %w", err)
	}
	poolCfg.MaxConns = conns
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return nil, fmt.Errorf("error connecting to the database: %w", err)
	}
	return pool, nil
}

func loopbackURL(listen string, addr net.Addr) string {
	host, _, _ := net.SplitHostPort(listen)
	_, port, _ := net.SplitHostPort(addr.String())
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port)
}

func (a *App) metricsHandler() http.Handler {
	return promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{Registry: a.registry})
}

// Addr is the address ingest and the API listen on (useful with port 0); empty when the process serves neither.
func (a *App) Addr() string {
	if a.listener == nil {
		return ""
	}
	return a.listener.Addr().String()
}

// MetricsAddr is the address of the separate metrics listener; empty without one.
func (a *App) MetricsAddr() string {
	if a.metricsListener == nil {
		return ""
	}
	return a.metricsListener.Addr().String()
}

// URL is the base URL of ingest and the API on the loopback interface.
func (a *App) URL() string {
	_, port, _ := net.SplitHostPort(a.Addr())
	return "http://127.0.0.1:" + port
}

// PublicURL is the URL senders use.
func (a *App) PublicURL() string { return a.cfg.PublicURL }

// Gatherer is the process's metrics registry, for benchmarks that read them in-process.
func (a *App) Gatherer() prometheus.Gatherer { return a.registry }

// Pool is the application database pool.
func (a *App) Pool() *pgxpool.Pool { return a.pool }

// Orgs is the org database service (dev registers its local cluster with it).
func (a *App) Orgs() *orgdb.Service { return a.orgs }

// Box encrypts and decrypts stored secrets.
func (a *App) Box() secrets.Box { return a.box }

// Handler is the HTTP handler of ingest and the API (for tests that drive it without a socket).
func (a *App) Handler() http.Handler {
	if a.front != nil {
		return a.front(a.router)
	}
	return a.router
}

func (a *App) handleHealthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	w.Header().Set("Content-Type", "application/json")
	state, err := a.slot.check(ctx)
	if err != nil {
		a.logger.WarnContext(ctx, "health check failed", slog.String("error", err.Error()))
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"ok":false,"database":"unreachable"}`))
		return
	}
	// Vault degraded (its token's renewal failing) is reported but stays 200: ingest still verifies with the
	// secrets it holds and stores every webhook, so a load balancer must keep sending traffic; the
	// vault field and webhookdb_vault_token_ttl_seconds are what to alert on.
	vaultField := ""
	if a.keeper != nil {
		vaultState := "ok"
		if ok, _ := a.keeper.Healthy(); !ok {
			vaultState = "degraded"
		}
		vaultField = fmt.Sprintf(`,"vault":%q`, vaultState)
	}
	if a.cfg.Has(RoleMaintenance) && !a.reconciled.Load() {
		vaultField += `,"credentials":"reconciling"`
	}
	if !slotHealthy(state) {
		// Webhooks are still stored, but none reaches an org database until the slot is recovered.
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = fmt.Fprintf(w, `{"ok":false,"slot":%q,"slot_state":%q%s}`, a.cfg.Slot, state, vaultField)
		return
	}
	_, _ = fmt.Fprintf(w, `{"ok":true,"slot_state":%q%s}`, state, vaultField)
}

// Close releases what New acquired, for an App that is never Run (Run closes it itself).
func (a *App) Close() { a.close() }

func (a *App) close() {
	if a.listener != nil {
		_ = a.listener.Close()
	}
	if a.metricsListener != nil {
		_ = a.metricsListener.Close()
	}
	if a.commitPool != nil {
		a.commitPool.Close()
	}
	if a.lookupPool != nil {
		a.lookupPool.Close()
	}
	if a.backfillPool != nil {
		a.backfillPool.Close()
	}
	if a.pool != nil {
		a.pool.Close()
	}
}

// Run serves until ctx is cancelled, then shuts down gracefully: in-flight requests finish (within
// ShutdownTimeout) before the roles' background work stops and the pool closes.
func (a *App) Run(ctx context.Context) error {
	defer a.close()
	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	g, gctx := errgroup.WithContext(workCtx)
	for _, w := range a.workers {
		g.Go(func() error { return w(gctx) })
	}
	var servers []*http.Server
	serveErr := make(chan error, 2)
	serve := func(h http.Handler, ln net.Listener) {
		srv := NewHTTPServer(h, a.logger)
		servers = append(servers, srv)
		go func() { serveErr <- srv.Serve(ln) }()
	}
	if a.listener != nil {
		serve(a.Handler(), a.listener)
		a.logger.InfoContext(ctx, "webhookdb serving", slog.String("addr", a.Addr()), slog.String("public_url", a.cfg.PublicURL))
	}
	if a.metricsListener != nil {
		m := http.NewServeMux()
		m.Handle("GET /metrics", a.metricsHandler())
		m.HandleFunc("GET /healthz", a.handleHealthz)
		serve(m, a.metricsListener)
		a.logger.InfoContext(ctx, "metrics listening", slog.String("addr", a.MetricsAddr()))
	}

	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
	case <-gctx.Done():
	}
	a.logger.InfoContext(ctx, "shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.ShutdownTimeout)
	defer cancel()
	for _, srv := range servers {
		if shutErr := srv.Shutdown(shutdownCtx); shutErr != nil && !errors.Is(shutErr, http.ErrServerClosed) {
			err = errors.Join(err, fmt.Errorf("error shutting down HTTP server: %w", shutErr))
		}
	}
	stopWork()
	if werr := g.Wait(); werr != nil && !errors.Is(werr, context.Canceled) {
		err = errors.Join(err, werr)
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// NewHTTPServer is the net/http server every listener of the process runs, with its timeouts; the ingest
// benchmark serves its HTTP ceiling (a no-op handler) with it too, so both sides share one stack.
func NewHTTPServer(h http.Handler, logger *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		// Handlers that need longer (db sql) extend their own deadline.
		WriteTimeout: 60 * time.Second,
		IdleTimeout:  120 * time.Second,
		ErrorLog:     slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
}
