package subscriptions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/webhookdb-go/webhookdb/internal/outgoing"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
	"github.com/webhookdb-go/webhookdb/internal/staging"
)

// OpaquePrefix starts every subscription's id.
const OpaquePrefix = "sub_"

var (
	// ErrNotFound means no such subscription (or delivery) in the org.
	ErrNotFound = errors.New("not found")
	// ErrInvalid wraps what a caller got wrong (URL, sources, integration).
	ErrInvalid = errors.New("invalid subscription")
)

// secretBinding binds a secret to its row; internal/secrets declares the columns for key rotation.
func secretBinding(opaqueID, column string) secrets.Binding {
	return secrets.Binding{Table: "subscriptions", Column: column, Row: opaqueID}
}

// DefaultSchedule is the delay before each attempt: the first at once, the last about 27 hours after it.
var DefaultSchedule = []time.Duration{0, 5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour}

// Alerter is told when an endpoint is disabled (internal/alerts implements it).
type Alerter interface {
	SubscriptionDisabled(ctx context.Context, orgID int64, subscription, url, reason string) error
}

// Config wires a Service. Zero values take the defaults of WithDefaults.
type Config struct {
	Pool   *pgxpool.Pool
	Box    secrets.Box
	Client *outgoing.Client
	// Now is the clock of the schedule (tests inject one); default time.Now.
	Now func() time.Time
	// Schedule is the delay before each attempt; default DefaultSchedule.
	Schedule []time.Duration
	// Jitter adds up to this fraction of each delay; default 0.1.
	Jitter float64
	// DisableAfter disables an endpoint whose every delivery has failed this long; default 5 days.
	DisableAfter time.Duration
	// PendingCap is how many pending deliveries an endpoint may have; past it new ones are stored as failed.
	// Default 10,000.
	PendingCap int
	// Concurrency bounds the deliveries sent at once per endpoint; default 8 (each endpoint holds up to 4
	// times that claimed, to feed them). MaxInFlight bounds the claimed deliveries in all;
	// default 256.
	Concurrency int
	MaxInFlight int
	// HandoverCap is how many deliveries per endpoint the dispatcher running in this process may hold from
	// Record (inserted leased and handed over in memory, no claim); past it new deliveries wait for the
	// claims. Default 1,024.
	HandoverCap int
	// PollInterval is how often due deliveries are looked for; default 50ms.
	PollInterval time.Duration
	// Lease is how long a claimed delivery is held by its dispatcher (a crashed one's expires); default 5 min: longer than a claimed batch takes at the client's timeout.
	Lease time.Duration
	// Retention is how long delivered and failed deliveries are kept; default 30 days.
	Retention time.Duration
	// CacheTTL is how long the list of subscribed orgs is trusted by Subscribed; default 1s.
	CacheTTL time.Duration
	// NoticeWait is how long Create waits for a fanout to notice an org's first subscription (from then on
	// every change that reaches the fanout is notified); 0: it does not wait. The app waits 5s.
	NoticeWait time.Duration
	// ResponseBytes is how much of an answer the delivery log keeps; default 1 KiB.
	ResponseBytes int
	Alerts        Alerter
	// Registerer, when set, receives the deliveries' metrics.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// WithDefaults returns a copy with defaults filled in.
func (c Config) WithDefaults() Config {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Schedule == nil {
		c.Schedule = DefaultSchedule
	}
	if c.Jitter == 0 {
		c.Jitter = 0.1
	}
	if c.DisableAfter == 0 {
		c.DisableAfter = 5 * 24 * time.Hour
	}
	if c.PendingCap == 0 {
		c.PendingCap = 10_000
	}
	if c.Concurrency == 0 {
		c.Concurrency = 8
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 256
	}
	if c.HandoverCap == 0 {
		c.HandoverCap = 1024
	}
	if c.PollInterval == 0 {
		c.PollInterval = 50 * time.Millisecond
	}
	if c.Lease == 0 {
		c.Lease = 5 * time.Minute
	}
	if c.Retention == 0 {
		c.Retention = 30 * 24 * time.Hour
	}
	if c.CacheTTL == 0 {
		c.CacheTTL = time.Second
	}
	if c.ResponseBytes == 0 {
		c.ResponseBytes = 1024
	}
	if c.Client == nil {
		c.Client = outgoing.NewClient(outgoing.Config{})
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	if c.Pool == nil || c.Box == nil {
		errs = append(errs, errors.New("subscriptions: Pool and Box are required"))
	}
	if len(c.Schedule) == 0 {
		errs = append(errs, errors.New("subscriptions: the schedule needs at least one attempt"))
	}
	if c.Jitter < 0 || c.Jitter > 1 {
		errs = append(errs, errors.New("subscriptions: jitter must be between 0 and 1"))
	}
	for _, d := range []time.Duration{c.DisableAfter, c.PollInterval, c.Lease, c.Retention, c.CacheTTL} {
		if d <= 0 {
			errs = append(errs, errors.New("subscriptions: durations must be positive"))
			break
		}
	}
	if c.PendingCap < 1 || c.Concurrency < 1 || c.MaxInFlight < 1 {
		errs = append(errs, errors.New("subscriptions: pending cap and concurrency must be positive"))
	}
	return errors.Join(errs...)
}

// Service stores subscriptions, records notifications and delivers them.
type Service struct {
	cfg     Config
	pool    *pgxpool.Pool
	metrics *metrics

	orgsMu     sync.Mutex
	orgs       map[int64]bool
	orgsAt     time.Time
	orgsFailed bool        // the last load failed: every org counts as subscribed, so nothing goes unrecorded
	asked      atomic.Bool // a fanout of this process asks Subscribed

	keysMu sync.Mutex
	keys   map[int64]*signingKeys

	pendingMu sync.Mutex
	pending   map[int64]pendingCount // per endpoint, for the pending cap (record.go)

	busyMu sync.Mutex
	d      dispatch // the running dispatcher's state (dispatch.go)
}

// New returns a Service.
func New(cfg Config) (*Service, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Service{cfg: cfg, pool: cfg.Pool, metrics: newMetrics(cfg.Registerer), keys: map[int64]*signingKeys{}, pending: map[int64]pendingCount{}}, nil
}

// Subscription is a subscription as the API shows it; the secret is never part of it.
type Subscription struct {
	ID                      string     `json:"id"`
	URL                     string     `json:"url"`
	Integration             string     `json:"integration_id,omitempty"`
	Sources                 []string   `json:"sources"`
	PreviousSecretExpiresAt *time.Time `json:"previous_secret_expires_at,omitempty"`
	FailingSince            *time.Time `json:"failing_since,omitempty"`
	DisabledAt              *time.Time `json:"disabled_at,omitempty"`
	DisabledReason          *string    `json:"disabled_reason,omitempty"`
	CreatedAt               time.Time  `json:"created_at"`
	// ActiveSince is when the fanout noticed the org's subscriptions: every change that reaches it later is
	// notified. Absent until then (no fanout running).
	ActiveSince *time.Time `json:"active_since,omitempty"`
	// Pending is how many deliveries wait (list and get only).
	Pending int64 `json:"pending"`

	id, orgID int64
}

const subColumns = `s.id, s.org_id, s.opaque_id, s.url, coalesce(i.opaque_id, ''), s.sources, s.previous_secret_expires_at,
	s.failing_since, s.disabled_at, s.disabled_reason, s.created_at,
	(SELECT so.noticed_at FROM subscription_orgs so WHERE so.org_id = s.org_id),
	(SELECT count(*) FROM subscription_deliveries d WHERE d.subscription_id = s.id AND d.status = 'pending')`

const subFrom = ` FROM subscriptions s LEFT JOIN service_integrations i ON i.id = s.integration_id`

func scanSub(row pgx.Row) (*Subscription, error) {
	s := &Subscription{}
	err := row.Scan(&s.id, &s.orgID, &s.ID, &s.URL, &s.Integration, &s.Sources, &s.PreviousSecretExpiresAt,
		&s.FailingSince, &s.DisabledAt, &s.DisabledReason, &s.CreatedAt, &s.ActiveSince, &s.Pending)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	return s, err
}

// CreateParams describe a new subscription.
type CreateParams struct {
	URL string
	// Integration limits it to one integration's table (its opaque id); "" is every table of the org.
	Integration string
	// Sources that notify; default webhook only.
	Sources []string
}

// Create adds a subscription and returns it with its signing secret, shown this once.
func (s *Service) Create(ctx context.Context, orgID int64, p CreateParams) (*Subscription, string, error) {
	if err := s.cfg.Client.CheckURL(p.URL); err != nil {
		return nil, "", fmt.Errorf("%w: url: %w", ErrInvalid, err)
	}
	sources, err := checkSources(p.Sources)
	if err != nil {
		return nil, "", err
	}
	var integrationID *int64
	if p.Integration != "" {
		var id int64
		err := s.pool.QueryRow(ctx, `SELECT id FROM service_integrations WHERE opaque_id = $1 AND org_id = $2 AND deleted_at IS NULL`,
			p.Integration, orgID).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, "", fmt.Errorf("%w: integration_id: no integration %s in this org", ErrInvalid, p.Integration)
		}
		if err != nil {
			return nil, "", fmt.Errorf("error reading the integration: %w", err)
		}
		integrationID = &id
	}
	opaque := outgoing.NewOpaqueID(OpaquePrefix)
	secret := outgoing.NewSecret()
	enc, err := s.cfg.Box.Encrypt(ctx, secretBinding(opaque, "secret_enc"), []byte(secret))
	if err != nil {
		return nil, "", fmt.Errorf("error encrypting the signing secret: %w", err)
	}
	// The org is marked subscribed with it; a fanout marks it noticed when its list of subscribed orgs holds
	// it (loadOrgs). An org whose subscriptions were all deleted may have been dropped from those lists, so
	// it waits to be noticed again.
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO subscriptions (opaque_id, org_id, integration_id, url, sources, secret_enc)
			VALUES ($1, $2, $3, $4, $5, $6)`, opaque, orgID, integrationID, p.URL, sources, enc); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO subscription_orgs AS so (org_id) VALUES ($1)
			ON CONFLICT (org_id) DO UPDATE SET unsubscribed_at = NULL,
				noticed_at = CASE WHEN so.unsubscribed_at IS NULL THEN so.noticed_at END`, orgID)
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("error creating the subscription: %w", err)
	}
	s.forgetOrgs()
	if err := s.awaitNoticed(ctx, orgID); err != nil {
		return nil, "", err
	}
	sub, err := s.Get(ctx, orgID, opaque)
	return sub, secret, err
}

// awaitNoticed waits up to NoticeWait for a fanout to notice the org's subscriptions. A process that is a
// fanout's Notifier itself notices at once.
func (s *Service) awaitNoticed(ctx context.Context, orgID int64) error {
	if s.cfg.NoticeWait <= 0 {
		return nil
	}
	s.refreshIfAsked(ctx) // a fanout of this process notices it now
	deadline := time.Now().Add(s.cfg.NoticeWait)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var noticed bool
		if err := s.pool.QueryRow(ctx, `SELECT noticed_at IS NOT NULL FROM subscription_orgs WHERE org_id = $1`, orgID).Scan(&noticed); err != nil {
			return fmt.Errorf("error reading whether the fanout noticed the subscription: %w", err)
		}
		if noticed || time.Now().After(deadline) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func checkSources(in []string) ([]string, error) {
	if len(in) == 0 {
		return []string{string(staging.SourceWebhook)}, nil
	}
	valid := []string{string(staging.SourceWebhook), string(staging.SourceBackfill), string(staging.SourceReplay), string(staging.SourceResync)}
	var out []string
	for _, src := range in {
		src = strings.TrimSpace(src)
		if !slices.Contains(valid, src) {
			return nil, fmt.Errorf("%w: sources: %q is not one of %s", ErrInvalid, src, strings.Join(valid, ", "))
		}
		if !slices.Contains(out, src) {
			out = append(out, src)
		}
	}
	return out, nil
}

// Get returns the org's subscription.
func (s *Service) Get(ctx context.Context, orgID int64, opaqueID string) (*Subscription, error) {
	return scanSub(s.pool.QueryRow(ctx, `SELECT `+subColumns+subFrom+` WHERE s.opaque_id = $1 AND s.org_id = $2`, opaqueID, orgID))
}

// List returns the org's subscriptions, oldest first.
func (s *Service) List(ctx context.Context, orgID int64) ([]*Subscription, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+subColumns+subFrom+` WHERE s.org_id = $1 ORDER BY s.id`, orgID)
	if err != nil {
		return nil, fmt.Errorf("error listing subscriptions: %w", err)
	}
	defer rows.Close()
	out := []*Subscription{}
	for rows.Next() {
		sub, err := scanSub(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, sub)
	}
	return out, rows.Err()
}

// Delete removes a subscription and its delivery log.
func (s *Service) Delete(ctx context.Context, orgID int64, opaqueID string) error {
	// The org's last subscription: its outbox is drained (SubscribedOrgs) until found empty.
	var id int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `DELETE FROM subscriptions WHERE opaque_id = $1 AND org_id = $2 RETURNING id`, opaqueID, orgID).Scan(&id); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE subscription_orgs o SET unsubscribed_at = $2, noticed_at = NULL
			WHERE o.org_id = $1 AND NOT EXISTS (SELECT FROM subscriptions s WHERE s.org_id = o.org_id)`, orgID, s.cfg.Now())
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("error deleting the subscription: %w", err)
	}
	s.keysMu.Lock()
	delete(s.keys, id)
	s.keysMu.Unlock()
	s.forgetOrgs()
	return nil
}

// RollSecret gives the subscription a new signing secret, returned this once; the previous one keeps signing
// beside it for grace (0: stops at once), so receivers can switch without missing a message.
func (s *Service) RollSecret(ctx context.Context, orgID int64, opaqueID string, grace time.Duration) (*Subscription, string, error) {
	if grace < 0 || grace > 30*24*time.Hour {
		return nil, "", fmt.Errorf("%w: grace must be between 0 and 720h", ErrInvalid)
	}
	var id int64
	var current string
	err := s.pool.QueryRow(ctx, `SELECT id, secret_enc FROM subscriptions WHERE opaque_id = $1 AND org_id = $2`, opaqueID, orgID).Scan(&id, &current)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, "", ErrNotFound
	}
	if err != nil {
		return nil, "", fmt.Errorf("error reading the subscription: %w", err)
	}
	plain, err := s.cfg.Box.Decrypt(ctx, secretBinding(opaqueID, "secret_enc"), current)
	if err != nil {
		return nil, "", fmt.Errorf("error decrypting the current secret: %w", err)
	}
	secret := outgoing.NewSecret()
	enc, err := s.cfg.Box.Encrypt(ctx, secretBinding(opaqueID, "secret_enc"), []byte(secret))
	if err != nil {
		return nil, "", fmt.Errorf("error encrypting the signing secret: %w", err)
	}
	var prevEnc *string
	var expires *time.Time
	if grace > 0 {
		pe, err := s.cfg.Box.Encrypt(ctx, secretBinding(opaqueID, "previous_secret_enc"), plain)
		if err != nil {
			return nil, "", fmt.Errorf("error encrypting the previous secret: %w", err)
		}
		at := s.cfg.Now().Add(grace)
		prevEnc, expires = &pe, &at
	}
	if _, err := s.pool.Exec(ctx, `UPDATE subscriptions SET secret_enc = $2, previous_secret_enc = $3, previous_secret_expires_at = $4 WHERE id = $1`,
		id, enc, prevEnc, expires); err != nil {
		return nil, "", fmt.Errorf("error storing the new secret: %w", err)
	}
	s.keysMu.Lock()
	delete(s.keys, id)
	s.keysMu.Unlock()
	sub, err := s.Get(ctx, orgID, opaqueID)
	return sub, secret, err
}

// signingKeys are a subscription's decrypted keys, kept with the ciphertexts they came from.
type signingKeys struct {
	url           string
	enc, prevEnc  string
	prevExpires   time.Time
	current, prev []byte
	orgID         int64
	opaqueID      string
	loadedAt      time.Time
}

// signingTTL is how long an endpoint's URL and secrets are used as read: a delivery does not cost a query,
// and a roll or a deletion in another process takes effect within it.
const signingTTL = time.Second

// signing returns the subscription's URL and keys, read at most every signingTTL, decrypting only when the
// stored secrets changed.
func (s *Service) signing(ctx context.Context, subID int64) (*signingKeys, error) {
	s.keysMu.Lock()
	cached := s.keys[subID]
	s.keysMu.Unlock()
	if cached != nil && time.Since(cached.loadedAt) < signingTTL {
		return cached, nil
	}
	k := &signingKeys{loadedAt: time.Now()}
	var prevEnc *string
	var prevExp *time.Time
	err := s.pool.QueryRow(ctx, `SELECT org_id, opaque_id, url, secret_enc, previous_secret_enc, previous_secret_expires_at
		FROM subscriptions WHERE id = $1`, subID).Scan(&k.orgID, &k.opaqueID, &k.url, &k.enc, &prevEnc, &prevExp)
	if errors.Is(err, pgx.ErrNoRows) {
		s.keysMu.Lock()
		delete(s.keys, subID)
		s.keysMu.Unlock()
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("error reading the subscription: %w", err)
	}
	if prevEnc != nil && prevExp != nil {
		k.prevEnc, k.prevExpires = *prevEnc, *prevExp
	}
	if cached != nil && cached.enc == k.enc && cached.prevEnc == k.prevEnc {
		k.current, k.prev = cached.current, cached.prev
		s.keysMu.Lock()
		s.keys[subID] = k
		s.keysMu.Unlock()
		return k, nil
	}
	cur, err := s.cfg.Box.Decrypt(ctx, secretBinding(k.opaqueID, "secret_enc"), k.enc)
	if err != nil {
		return nil, fmt.Errorf("error decrypting the signing secret: %w", err)
	}
	if k.current, err = outgoing.SecretKey(string(cur)); err != nil {
		return nil, err
	}
	if k.prevEnc != "" {
		prev, err := s.cfg.Box.Decrypt(ctx, secretBinding(k.opaqueID, "previous_secret_enc"), k.prevEnc)
		if err != nil {
			return nil, fmt.Errorf("error decrypting the previous signing secret: %w", err)
		}
		if k.prev, err = outgoing.SecretKey(string(prev)); err != nil {
			return nil, err
		}
	}
	s.keysMu.Lock()
	s.keys[subID] = k
	s.keysMu.Unlock()
	return k, nil
}

// keysAt are the keys that sign at now: the current one, and the previous one during its grace period.
func (k *signingKeys) keysAt(now time.Time) [][]byte {
	if k.prev != nil && now.Before(k.prevExpires) {
		return [][]byte{k.current, k.prev}
	}
	return [][]byte{k.current}
}

// TestResult is what a test message got.
type TestResult struct {
	MessageID string `json:"message_id"`
	Status    int    `json:"status,omitempty"`
	Response  string `json:"response,omitempty"`
	Error     string `json:"error,omitempty"`
	OK        bool   `json:"ok"`
}

// Test sends a signed webhookdb.test message to the subscription's URL now and says what came back. It is not
// stored in the delivery log.
func (s *Service) Test(ctx context.Context, orgID int64, opaqueID string) (*TestResult, error) {
	sub, err := s.Get(ctx, orgID, opaqueID)
	if err != nil {
		return nil, err
	}
	k, err := s.signing(ctx, sub.id)
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now()
	msgID := outgoing.NewOpaqueID("msg_test_")
	body, _ := json.Marshal(map[string]any{"type": "webhookdb.test", "timestamp": now.UTC(), "data": map[string]any{"subscription_id": sub.ID}})
	resp, err := s.cfg.Client.Post(ctx, k.url, outgoing.SignedHeader(msgID, now, body, k.keysAt(now)...), body)
	res := &TestResult{MessageID: msgID}
	if err != nil {
		res.Error = err.Error()
		return res, nil
	}
	res.Status, res.Response, res.OK = resp.Status, s.clip(resp.Body), resp.Status >= 200 && resp.Status < 300
	return res, nil
}

// clip keeps the first ResponseBytes of an answer, as storable text.
func (s *Service) clip(b []byte) string {
	if len(b) > s.cfg.ResponseBytes {
		b = b[:s.cfg.ResponseBytes]
	}
	return strings.ReplaceAll(strings.ToValidUTF8(string(b), "\uFFFD"), "\x00", "\uFFFD")
}
