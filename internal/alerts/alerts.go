package alerts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/webhookdb-go/webhookdb/internal/outgoing"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
)

// Alert kinds.
const (
	KindFailedChanges        = "failed_changes"
	KindSubscriptionDisabled = "subscription_disabled"
	KindCredentialRenewal    = "credential_renewal"
	// KindBackfillCredentials is for backfill: call BackfillCredentialsFailed when a backfill's credentials
	// for the vendor's API are refused.
	KindBackfillCredentials = "backfill_credentials"
)

// OpaquePrefix starts every handler's id.
const OpaquePrefix = "alh_"

var (
	// ErrNotFound means no such handler in the org.
	ErrNotFound = errors.New("alert handler not found")
	// ErrInvalid means a target that is neither an allowed URL nor an email address.
	ErrInvalid = errors.New("invalid alert handler")
)

// secretBinding binds a handler's secret to its row; internal/secrets declares the column for key rotation.
func secretBinding(opaqueID string) secrets.Binding {
	return secrets.Binding{Table: "alert_handlers", Column: "secret_enc", Row: opaqueID}
}

// SMTPConfig is the mail server alerts go through.
type SMTPConfig struct {
	// Addr is host:port; empty: email handlers cannot be added.
	Addr string
	// From is the sender address; default alerts@<host of Addr>.
	From string
	// Username and Password, when set, authenticate (PLAIN, over TLS or to localhost only).
	Username, Password string
}

// Config wires a Service. Zero values take the defaults of WithDefaults.
type Config struct {
	Pool   *pgxpool.Pool
	Box    secrets.Box
	Client *outgoing.Client
	SMTP   SMTPConfig
	// Now is the clock (tests inject one); default time.Now.
	Now func() time.Time
	// RatePerHour is how many alerts an org is sent an hour at most; default 10.
	RatePerHour int
	// PollInterval is how often pending alerts are sent and failed changes looked for; default 1s.
	PollInterval time.Duration
	// Retries are the delays before each new attempt to send an alert; default 1 min, 5 min, 30 min.
	Retries []time.Duration
	Logger  *slog.Logger
}

// WithDefaults returns a copy with defaults filled in.
func (c Config) WithDefaults() Config {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.RatePerHour == 0 {
		c.RatePerHour = 10
	}
	if c.PollInterval == 0 {
		c.PollInterval = time.Second
	}
	if c.Retries == nil {
		c.Retries = []time.Duration{time.Minute, 5 * time.Minute, 30 * time.Minute}
	}
	if c.Client == nil {
		c.Client = outgoing.NewClient(outgoing.Config{})
	}
	if c.SMTP.From == "" && c.SMTP.Addr != "" {
		host := c.SMTP.Addr
		if i := strings.LastIndex(host, ":"); i >= 0 {
			host = host[:i]
		}
		c.SMTP.From = "alerts@" + host
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Service registers handlers, raises alerts and sends them.
type Service struct {
	cfg  Config
	pool *pgxpool.Pool
}

// New returns a Service.
func New(cfg Config) (*Service, error) {
	cfg = cfg.WithDefaults()
	if cfg.Pool == nil || cfg.Box == nil {
		return nil, errors.New("alerts: Pool and Box are required")
	}
	if cfg.RatePerHour < 1 || cfg.PollInterval <= 0 {
		return nil, errors.New("alerts: rate and poll interval must be positive")
	}
	return &Service{cfg: cfg, pool: cfg.Pool}, nil
}

// Handler is an org's error handler.
type Handler struct {
	ID        string    `json:"id"`
	Kind      string    `json:"kind"`
	Target    string    `json:"target"`
	CreatedAt time.Time `json:"created_at"`
}

// AddHandler registers a URL (returning its signing secret, shown once) or an email address.
func (s *Service) AddHandler(ctx context.Context, orgID int64, target string) (*Handler, string, error) {
	target = strings.TrimSpace(target)
	h := &Handler{ID: outgoing.NewOpaqueID(OpaquePrefix), Target: target}
	var secret string
	var enc *string
	if strings.Contains(target, "://") {
		if err := s.cfg.Client.CheckURL(target); err != nil {
			return nil, "", fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		h.Kind = "url"
		secret = outgoing.NewSecret()
		e, err := s.cfg.Box.Encrypt(ctx, secretBinding(h.ID), []byte(secret))
		if err != nil {
			return nil, "", fmt.Errorf("error encrypting the signing secret: %w", err)
		}
		enc = &e
	} else {
		addr, err := mail.ParseAddress(target)
		if err != nil || addr.Address != target || strings.ContainsAny(target, "\r\n") {
			return nil, "", fmt.Errorf("%w: %q is neither an https URL nor an email address", ErrInvalid, target)
		}
		if s.cfg.SMTP.Addr == "" {
			return nil, "", fmt.Errorf("%w: this server has no SMTP server configured (--smtp-addr); use a URL", ErrInvalid)
		}
		h.Kind = "email"
	}
	err := s.pool.QueryRow(ctx, `INSERT INTO alert_handlers (opaque_id, org_id, kind, target, secret_enc) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (org_id, target) DO NOTHING RETURNING created_at`, h.ID, orgID, h.Kind, h.Target, enc).Scan(&h.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, "", fmt.Errorf("%w: %s is registered already", ErrInvalid, target)
	}
	if err != nil {
		return nil, "", fmt.Errorf("error adding the alert handler: %w", err)
	}
	return h, secret, nil
}

// ListHandlers returns the org's handlers.
func (s *Service) ListHandlers(ctx context.Context, orgID int64) ([]Handler, error) {
	rows, err := s.pool.Query(ctx, `SELECT opaque_id, kind, target, created_at FROM alert_handlers WHERE org_id = $1 ORDER BY id`, orgID)
	if err != nil {
		return nil, fmt.Errorf("error listing alert handlers: %w", err)
	}
	defer rows.Close()
	out := []Handler{}
	for rows.Next() {
		var h Handler
		if err := rows.Scan(&h.ID, &h.Kind, &h.Target, &h.CreatedAt); err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, rows.Err()
}

// RemoveHandler removes a handler by id or target.
func (s *Service) RemoveHandler(ctx context.Context, orgID int64, idOrTarget string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM alert_handlers WHERE org_id = $1 AND (opaque_id = $2 OR target = $2)`, orgID, idOrTarget)
	if err != nil {
		return fmt.Errorf("error removing the alert handler: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// Alert is something to tell an org.
type Alert struct {
	OrgID int64
	Kind  string
	// DedupeKey: an alert with a key raised before is not raised again.
	DedupeKey string
	Subject   string
	Detail    map[string]any
}

// Raise records an alert for sending, once per dedupe key; past the org's rate it is kept as suppressed.
func (s *Service) Raise(ctx context.Context, a Alert) error {
	return s.raise(ctx, s.pool, a)
}

// execer is a pool or a transaction.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

func (s *Service) raise(ctx context.Context, db execer, a Alert) error {
	detail, err := json.Marshal(a.Detail)
	if err != nil {
		return fmt.Errorf("error encoding the alert: %w", err)
	}
	now := s.cfg.Now()
	_, err = db.Exec(ctx, `
		INSERT INTO alerts (org_id, kind, dedupe_key, subject, detail, state, next_attempt_at, created_at)
		SELECT $1, $2, $3, $4, $5,
			CASE WHEN (SELECT count(*) FROM alerts WHERE org_id = $1 AND created_at > $6::timestamptz - interval '1 hour'
				AND state <> 'suppressed') >= $7 THEN 'suppressed' ELSE 'pending' END, $6, $6
		ON CONFLICT (org_id, dedupe_key) DO NOTHING`,
		a.OrgID, a.Kind, a.DedupeKey, a.Subject, detail, now, s.cfg.RatePerHour)
	if err != nil {
		return fmt.Errorf("error raising an alert: %w", err)
	}
	return nil
}

// SubscriptionDisabled alerts the org that an endpoint was disabled (subscriptions.Alerter).
func (s *Service) SubscriptionDisabled(ctx context.Context, orgID int64, subscription, url, reason string) error {
	return s.Raise(ctx, Alert{OrgID: orgID, Kind: KindSubscriptionDisabled,
		DedupeKey: fmt.Sprintf("%s:%s:%d", KindSubscriptionDisabled, subscription, s.cfg.Now().Unix()),
		Subject:   "Webhook subscription " + subscription + " disabled",
		Detail: map[string]any{"subscription_id": subscription, "url": url, "reason": reason,
			"hint": "fix the endpoint, then `webhookdb subscriptions recover " + subscription + " --since T` resends what failed"}})
}

// CredentialRenewalFailed alerts the org that read-only credentials could not be renewed (once an hour per
// login at most).
func (s *Service) CredentialRenewalFailed(ctx context.Context, orgID int64, username string, cause error) error {
	return s.Raise(ctx, Alert{OrgID: orgID, Kind: KindCredentialRenewal,
		DedupeKey: fmt.Sprintf("%s:%s:%s", KindCredentialRenewal, username, s.cfg.Now().UTC().Format("2006-01-02T15")),
		Subject:   "Read-only database credentials could not be renewed",
		Detail:    map[string]any{"username": username, "error": cause.Error()}})
}

// BackfillCredentialsFailed is the hook for backfill: the vendor refused an integration's backfill
// credentials (once an hour per integration at most).
func (s *Service) BackfillCredentialsFailed(ctx context.Context, orgID int64, integration string, cause error) error {
	return s.Raise(ctx, Alert{OrgID: orgID, Kind: KindBackfillCredentials,
		DedupeKey: fmt.Sprintf("%s:%s:%s", KindBackfillCredentials, integration, s.cfg.Now().UTC().Format("2006-01-02T15")),
		Subject:   "Backfill credentials of " + integration + " failed",
		Detail:    map[string]any{"integration_id": integration, "error": cause.Error()}})
}
