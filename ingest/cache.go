package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/semaphore"
	"golang.org/x/time/rate"

	"github.com/webhookdb-go/webhookdb/ingest/verify"
	"github.com/webhookdb-go/webhookdb/internal/integrations"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
)

// target is what the handler needs of an integration, secrets decrypted.
type target struct {
	id              int64
	orgID           int64
	opaqueID        string
	service         string
	scheme          string
	verifier        verify.Verifier
	sensitive       map[string]bool
	secret          string
	previous        string
	previousExpires time.Time
	bodyLimit       int64
	deleted         bool
	// rejectedLimit caps how many rejected requests a second are stored for this integration.
	rejectedLimit *rate.Limiter
	// broken says why the integration cannot verify anything (bad stored config), or "".
	broken string
	// secretEnc and previousEnc are the ciphertexts secret and previous came from: a rebuild while the key
	// service is unreachable keeps a secret already decrypted when its ciphertext did not change.
	secretEnc, previousEnc string
	// retry: the secret could not be decrypted for a reason that may pass (Vault unreachable); src is what to
	// build it from again at the next poll.
	retry bool
	src   *integrations.Integration
}

// secrets returns the secrets that verify at now: current first, then the previous one during its grace period.
func (t *target) activeSecrets(now time.Time) []string {
	var out []string
	if t.secret != "" {
		out = append(out, t.secret)
	}
	if t.previous != "" && now.Before(t.previousExpires) {
		out = append(out, t.previous)
	}
	return out
}

// Cache keeps integrations in memory. A poll every PollInterval picks up new, changed and deleted ones; a miss
// is looked up at once (and remembered as missing for a moment, so random ids cannot hammer the database).
type Cache struct {
	pool         *pgxpool.Pool
	box          secrets.Box
	logger       *slog.Logger
	pollInterval time.Duration
	bodyLimit    int64
	// lookups bounds the queries for ids not in the cache, so a flood of unknown ids cannot take every
	// connection of the pool (the poll always finds one).
	lookups *semaphore.Weighted

	mu       sync.RWMutex
	byOpaque map[string]*target
	missing  map[string]time.Time
	since    time.Time
}

// CacheConfig tunes the cache.
type CacheConfig struct {
	PollInterval     time.Duration // default 500ms
	DefaultBodyLimit int64         // default 1 MiB
	// LookupConcurrency bounds concurrent lookups of ids not in the cache; default 2. Above that, lookups wait
	// (up to lookupWait, then 503).
	LookupConcurrency int
	Logger            *slog.Logger
}

// NewCache returns an empty cache; Run fills and refreshes it.
func NewCache(pool *pgxpool.Pool, box secrets.Box, cfg CacheConfig) *Cache {
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 500 * time.Millisecond
	}
	if cfg.DefaultBodyLimit == 0 {
		cfg.DefaultBodyLimit = 1 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.LookupConcurrency == 0 {
		cfg.LookupConcurrency = 2
	}
	return &Cache{pool: pool, box: box, logger: cfg.Logger, pollInterval: cfg.PollInterval, bodyLimit: cfg.DefaultBodyLimit,
		lookups:  semaphore.NewWeighted(int64(cfg.LookupConcurrency)),
		byOpaque: map[string]*target{}, missing: map[string]time.Time{}}
}

// missTTL is how long an unknown id is remembered as unknown. Below the poll interval's promise of a second.
const missTTL = 500 * time.Millisecond

// Run refreshes the cache until ctx ends.
func (c *Cache) Run(ctx context.Context) error {
	t := time.NewTicker(c.pollInterval)
	defer t.Stop()
	for {
		if err := c.refresh(ctx); err != nil && ctx.Err() == nil {
			c.logger.WarnContext(ctx, "error refreshing integration cache", slog.String("error", err.Error()))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (c *Cache) refresh(ctx context.Context) error {
	c.mu.RLock()
	since := c.since
	c.mu.RUnlock()
	// Overlap the window: updated_at is stamped before commit, so a row can become visible after a later poll began.
	changed, err := integrations.ChangedSince(ctx, c.pool, since.Add(-5*time.Second))
	if err != nil {
		return err
	}
	seen := make(map[string]bool, len(changed))
	for _, in := range changed {
		seen[in.OpaqueID] = true
		old := c.cached(in.OpaqueID)
		t := c.build(ctx, in, old)
		c.mu.Lock()
		if old != nil {
			t.rejectedLimit = old.rejectedLimit
		}
		c.byOpaque[in.OpaqueID] = t
		delete(c.missing, in.OpaqueID)
		if in.UpdatedAt.After(c.since) {
			c.since = in.UpdatedAt
		}
		c.mu.Unlock()
	}
	// Secrets that could not be decrypted yet (Vault unreachable) are tried again at every poll, however long
	// ago their row changed.
	c.mu.RLock()
	var again []*target
	for id, t := range c.byOpaque {
		if t.retry && !seen[id] && len(again) < 100 {
			again = append(again, t)
		}
	}
	c.mu.RUnlock()
	for _, old := range again {
		t := c.build(ctx, old.src, old)
		t.rejectedLimit = old.rejectedLimit
		c.mu.Lock()
		if c.byOpaque[old.opaqueID] == old {
			c.byOpaque[old.opaqueID] = t
		}
		c.mu.Unlock()
		if t.retry {
			break // the key service is still away: the next poll tries again, the poll is not held up
		}
	}
	return nil
}

// decryptTimeout bounds one decryption of a secret.
const decryptTimeout = 3 * time.Second

// lookupWait bounds how long a lookup waits for its turn.
const lookupWait = 2 * time.Second

// cached returns the integration when the cache holds it, without a query.
func (c *Cache) cached(opaqueID string) *target {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.byOpaque[opaqueID]
}

// lookup returns the integration, or nil when there is none.
func (c *Cache) lookup(ctx context.Context, opaqueID string) (*target, error) {
	c.mu.RLock()
	t, ok := c.byOpaque[opaqueID]
	missAt, missed := c.missing[opaqueID]
	c.mu.RUnlock()
	if ok {
		return t, nil
	}
	if missed && time.Since(missAt) < missTTL {
		return nil, nil
	}
	waitCtx, cancel := context.WithTimeout(ctx, lookupWait)
	err := c.lookups.Acquire(waitCtx, 1)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("error looking up integration: too many lookups waiting: %w", err)
	}
	if t := c.cached(opaqueID); t != nil {
		// Another request looked it up while this one waited.
		c.lookups.Release(1)
		return t, nil
	}
	in, err := integrations.ByOpaqueID(ctx, c.pool, opaqueID)
	c.lookups.Release(1)
	if err == integrations.ErrNotFound {
		c.mu.Lock()
		if len(c.missing) > 100_000 {
			clear(c.missing)
		}
		c.missing[opaqueID] = time.Now()
		c.mu.Unlock()
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("error looking up integration: %w", err)
	}
	t = c.build(ctx, in, nil)
	c.mu.Lock()
	if existing, ok := c.byOpaque[opaqueID]; ok {
		t = existing
	} else {
		c.byOpaque[opaqueID] = t
	}
	c.mu.Unlock()
	return t, nil
}

// build makes the cache's entry of an integration; old is the entry it replaces, if any.
func (c *Cache) build(ctx context.Context, in *integrations.Integration, old *target) *target {
	t := &target{
		id: in.ID, orgID: in.OrgID, opaqueID: in.OpaqueID, service: in.Service,
		bodyLimit:     c.bodyLimit,
		deleted:       in.DeletedAt != nil,
		rejectedLimit: rate.NewLimiter(rate.Limit(1), 60),
	}
	if in.BodyLimitBytes != nil {
		t.bodyLimit = *in.BodyLimitBytes
	}
	cfg, err := in.VerifierConfig()
	if err == nil {
		t.scheme = cfg.Scheme
		t.verifier, err = verify.New(cfg)
	}
	if err != nil {
		t.broken = "integration's verifier is misconfigured: " + err.Error()
		c.logger.ErrorContext(ctx, "integration cannot verify webhooks", slog.String("opaque_id", in.OpaqueID), slog.String("error", err.Error()))
		return t
	}
	t.sensitive = map[string]bool{}
	for _, h := range verify.SensitiveHeaders(cfg) {
		t.sensitive[h] = true
	}
	if in.SecretEnc != nil {
		t.secretEnc = *in.SecretEnc
		if old != nil && old.secretEnc == t.secretEnc && old.secret != "" {
			t.secret = old.secret // decrypted before: no need for Vault
		} else {
			// Bounded: an unreachable key service must not hold up the poll (or a lookup) for long.
			dctx, cancel := context.WithTimeout(ctx, decryptTimeout)
			s, err := c.box.Decrypt(dctx, integrations.SecretBinding(in.OpaqueID, "secret_enc"), *in.SecretEnc)
			cancel()
			if err != nil {
				if errors.Is(err, secrets.ErrDecrypt) {
					t.broken = "integration's secret cannot be decrypted"
				} else {
					// Vault unreachable, say: the sender gets 503 with Retry-After (never 401) and the next poll
					// tries again.
					t.broken = "integration's secret cannot be decrypted yet: the key service is unavailable"
					t.retry, t.src = true, in
				}
				c.logger.ErrorContext(ctx, "cannot decrypt integration secret", slog.String("opaque_id", in.OpaqueID), slog.String("error", err.Error()))
				return t
			}
			t.secret = string(s)
		}
	}
	if in.PreviousSecretEnc != nil && in.PreviousSecretExpiresAt != nil {
		t.previousEnc = *in.PreviousSecretEnc
		if old != nil && old.previousEnc == t.previousEnc && old.previous != "" {
			t.previous, t.previousExpires = old.previous, *in.PreviousSecretExpiresAt
		} else {
			s, err := c.box.Decrypt(ctx, integrations.SecretBinding(in.OpaqueID, "previous_secret_enc"), *in.PreviousSecretEnc)
			if err == nil {
				t.previous, t.previousExpires = string(s), *in.PreviousSecretExpiresAt
			} else if !errors.Is(err, secrets.ErrDecrypt) {
				t.retry, t.src = true, in // the current secret verifies meanwhile
			}
		}
	}
	return t
}
