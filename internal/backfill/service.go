package backfill

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/webhookdb-go/webhookdb/internal/integrations"
	"github.com/webhookdb-go/webhookdb/internal/replicator"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
)

// Config configures a [Service].
type Config struct {
	Pool *pgxpool.Pool
	Box  secrets.Box
	// Workers is how many jobs this process runs at once, across all orgs; default 2.
	Workers int
	// Slice is how long a worker keeps a job before it takes up the job of the org served longest ago; default 10 s.
	Slice time.Duration
	// ObjectsPerSecond bounds what this process's workers store into staging, all jobs together, so that
	// backfills never crowd out webhooks; default 2,000.
	ObjectsPerSecond int
	// Poll is how often idle workers look for jobs and the schedule for due integrations; default 1 s.
	Poll time.Duration
	// RetryAfter is how long a job whose vendor kept failing transiently waits before it is taken up again;
	// default 1 minute, doubling per consecutive failure up to an hour.
	RetryAfter time.Duration
	// MaxTransientFailures fails a job after that many consecutive transient failures; default 10.
	MaxTransientFailures int
	HTTP                 HTTPConfig
	// OnCredentialsFailed, when set, is called when a job fails because the vendor refused its credentials (401,
	// or a 403 that is not a rate limit), so the org hears of it (alerts) rather than finding it in a list.
	OnCredentialsFailed func(ctx context.Context, orgID, integrationID int64, err error)
	// Registerer, when set, gets the workers' metrics.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// WithDefaults fills the zero fields.
func (c Config) WithDefaults() Config {
	if c.Workers <= 0 {
		c.Workers = 2
	}
	if c.Slice <= 0 {
		c.Slice = 10 * time.Second
	}
	if c.ObjectsPerSecond <= 0 {
		c.ObjectsPerSecond = 2000
	}
	if c.Poll <= 0 {
		c.Poll = time.Second
	}
	if c.RetryAfter <= 0 {
		c.RetryAfter = time.Minute
	}
	if c.MaxTransientFailures <= 0 {
		c.MaxTransientFailures = 10
	}
	c.HTTP = c.HTTP.WithDefaults()
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func (c Config) validate() error {
	if c.Pool == nil || c.Box == nil {
		return errors.New("backfill: Pool and Box are required")
	}
	return nil
}

// Service sets credentials, queues jobs and (Run) runs them.
type Service struct {
	cfg     Config
	pool    *pgxpool.Pool
	logger  *slog.Logger
	limiter *rate.Limiter
	// wake tells idle workers a job was queued in this process.
	wake    chan struct{}
	metrics *metrics
}

// New returns a Service.
func New(cfg Config) (*Service, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Service{cfg: cfg, pool: cfg.Pool, logger: cfg.Logger,
		limiter: rate.NewLimiter(rate.Limit(cfg.ObjectsPerSecond), max(cfg.ObjectsPerSecond/10, 2*stripePageSize)),
		wake:    make(chan struct{}, 1), metrics: newMetrics(cfg.Registerer)}, nil
}

// CredentialParams change an integration's backfill settings. Nil fields are left as they are.
type CredentialParams struct {
	Key, Secret *string
	// BaseURL replaces the vendor's host; "" goes back to it. Hosts outside the vendor's patterns need ServerAdmin.
	BaseURL *string
	// Options are the vendor client's (GitHub: {"repositories": ["owner/name"]}).
	Options json.RawMessage
	// Every schedules incremental backfills; 0 stops the schedule.
	Every       *time.Duration
	ServerAdmin bool
}

// SetCredentials verifies new credentials (or a new base URL) against the vendor's first page and stores them
// encrypted. A refusal is a *VendorError carrying the vendor's reason; nothing is stored then.
func (s *Service) SetCredentials(ctx context.Context, in *integrations.Integration, p CredentialParams) (*Settings, error) {
	v, err := vendorOf(in.Service)
	if err != nil {
		return nil, err
	}
	old, err := readCredentials(ctx, s.pool, in.ID)
	if err != nil && !errors.Is(err, ErrNoCredentials) {
		return nil, err
	}
	var creds Credentials
	baseURL, options := "", json.RawMessage(nil)
	if old != nil {
		if creds, err = old.decrypt(ctx, s.cfg.Box, in.ID); err != nil {
			return nil, err
		}
		baseURL, options = old.BaseURL, old.Options
	}
	if p.Options != nil {
		options = p.Options
	}
	if p.Key != nil {
		creds = Credentials{Key: *p.Key}
	}
	if p.Secret != nil {
		creds.Secret = *p.Secret
	}
	if creds.Key == "" {
		return nil, fmt.Errorf("%w: a key is required", ErrCredentials)
	}
	if v.needsSecret && creds.Secret == "" {
		return nil, fmt.Errorf("%w: %s needs a secret too (--backfill-secret)", ErrCredentials, v.name)
	}
	if p.BaseURL != nil {
		if baseURL, err = checkBaseURL(v, *p.BaseURL, p.ServerAdmin); err != nil {
			return nil, err
		}
	}
	if p.Every != nil && *p.Every != 0 && *p.Every < time.Minute {
		return nil, fmt.Errorf("%w: --backfill-every must be at least 1m", ErrCredentials)
	}
	changed := old == nil || p.Key != nil || p.Secret != nil || p.BaseURL != nil || p.Options != nil
	if changed {
		// Someone waits for the answer: a few quick tries, not a job's patience.
		h := s.cfg.HTTP
		h.Attempts, h.MaxRetryAfter = min(h.Attempts, 3), min(h.MaxRetryAfter, 5*time.Second)
		client, err := s.client(v, in, creds, baseURL, options, h)
		if err != nil {
			return nil, err
		}
		vctx, cancel := context.WithTimeout(ctx, verifyTimeout)
		err = client.Verify(vctx)
		cancel()
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
				err = &TransientError{Err: fmt.Errorf("%s did not answer within %s", v.name, verifyTimeout)}
			}
			return nil, err
		}
	}
	keyEnc, err := s.cfg.Box.Encrypt(ctx, binding(in.ID, "key_enc"), []byte(creds.Key))
	if err != nil {
		return nil, fmt.Errorf("error encrypting the backfill key: %w", err)
	}
	var secretEnc *string
	if creds.Secret != "" {
		enc, err := s.cfg.Box.Encrypt(ctx, binding(in.ID, "secret_enc"), []byte(creds.Secret))
		if err != nil {
			return nil, fmt.Errorf("error encrypting the backfill secret: %w", err)
		}
		secretEnc = &enc
	}
	var base *string
	if baseURL != "" {
		base = &baseURL
	}
	// every: NULL keeps, 0 clears, else sets (and the next run is due one period from now).
	var everyMicros *int64
	if p.Every != nil {
		m := p.Every.Microseconds()
		everyMicros = &m
	}
	_, err = s.pool.Exec(ctx, `
		INSERT INTO backfill_credentials (integration_id, key_enc, secret_enc, fingerprint, base_url, every, next_run_at, verified_at, options)
		VALUES ($1, $2, $3, $4, $5, nullif($6::bigint, 0) * interval '1 microsecond', now() + nullif($6::bigint, 0) * interval '1 microsecond', now(),
			coalesce($8::jsonb, '{}'))
		ON CONFLICT (integration_id) DO UPDATE SET key_enc = excluded.key_enc, secret_enc = excluded.secret_enc,
			fingerprint = excluded.fingerprint, base_url = excluded.base_url, options = excluded.options,
			every = CASE WHEN $6::bigint IS NULL THEN backfill_credentials.every ELSE excluded.every END,
			next_run_at = CASE WHEN $6::bigint IS NULL THEN backfill_credentials.next_run_at ELSE excluded.next_run_at END,
			verified_at = CASE WHEN $7 THEN now() ELSE backfill_credentials.verified_at END, updated_at = now()`,
		in.ID, keyEnc, secretEnc, fingerprint(creds), base, everyMicros, changed, optionsArg(options))
	if err != nil {
		return nil, fmt.Errorf("error storing backfill credentials: %w", err)
	}
	return GetSettings(ctx, s.pool, in.ID)
}

func optionsArg(o json.RawMessage) *string {
	if len(o) == 0 {
		return nil
	}
	s := string(o)
	return &s
}

// verifyTimeout bounds checking new credentials against the vendor.
const verifyTimeout = 30 * time.Second

func (s *Service) client(v vendorDef, in *integrations.Integration, creds Credentials, baseURL string, options json.RawMessage, h HTTPConfig) (Vendor, error) {
	svc, err := replicator.Resolve(in.Service, in.Config)
	if err != nil {
		return nil, err
	}
	return v.newClient(Target{Service: svc, Options: options, Credentials: creds, BaseURL: baseURL, HTTP: h})
}

// Start queues a job for an integration: incremental from its high-water mark, or full when asked, when there
// is no mark yet, or when the mark is older than the vendor keeps changes.
func (s *Service) Start(ctx context.Context, in *integrations.Integration, full bool) (*Job, error) {
	return s.start(ctx, s.pool, in.OrgID, in.ID, in.Service, full, "user")
}

func (s *Service) start(ctx context.Context, db DB, orgID, integrationID int64, service string, full bool, by string) (*Job, error) {
	v, err := vendorOf(service)
	if err != nil {
		return nil, err
	}
	c, err := readCredentials(ctx, db, integrationID)
	if err != nil {
		return nil, err
	}
	kind, since := KindFull, (*time.Time)(nil)
	if !full && c.HighWater != nil && (v.incrementalWindow == 0 || time.Since(*c.HighWater) < v.incrementalWindow-time.Hour) {
		kind, since = KindIncremental, c.HighWater
	}
	id, err := createJob(ctx, db, orgID, integrationID, kind, since, by)
	if err != nil {
		return nil, err
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return GetJob(ctx, db, orgID, id)
}
