package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"
	"github.com/prometheus/client_golang/prometheus"
)

// ErrTokenNotPeriodic means the token webhookdb would run with is not periodic: Vault revokes a token at its
// max TTL, and with it every lease it issued (every org's read-only login), so a server needs a token it can
// renew for as long as it runs.
var ErrTokenNotPeriodic = errors.New(`the Vault token is not periodic: when it reaches its max TTL Vault revokes it and every credential it issued. ` +
	`Create a periodic one (vault token create -period=768h -policy=webhookdb) or log in with an AppRole whose tokens are periodic ` +
	`(vault write auth/approle/role/webhookdb token_period=768h token_policies=webhookdb; then set WEBHOOKDB_VAULT_ROLE_ID and WEBHOOKDB_VAULT_SECRET_ID)`)

// AppRole is an AppRole login: the role id and the secret id.
type AppRole struct {
	RoleID   string
	SecretID string
	// Mount is the approle auth mount; default "approle".
	Mount string
}

// Login logs client in with the AppRole and sets the token it gets on the client.
func (r AppRole) Login(ctx context.Context, client *vaultapi.Client) (*vaultapi.Secret, error) {
	opts := []approle.LoginOption{}
	if r.Mount != "" {
		opts = append(opts, approle.WithMountPath(r.Mount))
	}
	auth, err := approle.NewAppRoleAuth(r.RoleID, &approle.SecretID{FromString: r.SecretID}, opts...)
	if err != nil {
		return nil, fmt.Errorf("error preparing the AppRole login: %w", err)
	}
	s, err := client.Auth().Login(ctx, auth)
	if err != nil {
		return nil, fmt.Errorf("error logging in to Vault with the AppRole: %w", err)
	}
	if s == nil || s.Auth == nil {
		return nil, errors.New("the AppRole login returned no token")
	}
	return s, nil
}

// TokenInfo is what Vault says of a token (auth/token/lookup-self).
type TokenInfo struct {
	Period time.Duration
	TTL    time.Duration
}

// LookupSelf reads the client's token.
func LookupSelf(ctx context.Context, client *vaultapi.Client) (TokenInfo, error) {
	s, err := client.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return TokenInfo{}, fmt.Errorf("error looking up the Vault token: %w", err)
	}
	if s == nil || s.Data == nil {
		return TokenInfo{}, errors.New("Vault returned nothing for the token lookup")
	}
	var info TokenInfo
	info.Period = seconds(s.Data["period"])
	info.TTL = seconds(s.Data["ttl"])
	return info, nil
}

func seconds(v any) time.Duration {
	switch n := v.(type) {
	case json.Number:
		i, _ := n.Int64()
		return time.Duration(i) * time.Second
	case float64:
		return time.Duration(n) * time.Second
	case int:
		return time.Duration(n) * time.Second
	case int64:
		return time.Duration(n) * time.Second
	}
	return 0
}

// CheckPeriodic refuses a token that is not periodic (ErrTokenNotPeriodic), a root token too: it never
// expires, but a server must not run with one.
func CheckPeriodic(info TokenInfo) error {
	if info.Period > 0 {
		return nil
	}
	return ErrTokenNotPeriodic
}

// CreatePeriodicChild creates a periodic token, child of the client's (which needs the right to: a dev
// server's root token), with the given policies. `webhookdb dev` runs its server with one, as production does.
func CreatePeriodicChild(ctx context.Context, client *vaultapi.Client, period time.Duration, policies ...string) (string, error) {
	s, err := client.Auth().Token().CreateWithContext(ctx, &vaultapi.TokenCreateRequest{
		Policies: policies, Period: period.String(), DisplayName: "webhookdb",
	})
	if err != nil {
		return "", fmt.Errorf("error creating a periodic token: %w", err)
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return "", errors.New("Vault returned no token")
	}
	return s.Auth.ClientToken, nil
}

// KeeperConfig configures a TokenKeeper.
type KeeperConfig struct {
	// Client's token is kept alive (required). With AppRole set, the keeper logs in (at Start, and again when
	// the token is lost); otherwise the client already carries its token.
	Client  *vaultapi.Client
	AppRole *AppRole
	// RetryInterval is how long after a failure the keeper tries again; default 5s.
	RetryInterval time.Duration
	// Registerer gets webhookdb_vault_token_ttl_seconds and webhookdb_vault_token_renewals_total{result}.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// TokenKeeper renews a periodic token for as long as it runs (at a third of its TTL), logs in again with the
// AppRole when the token is lost, exports the token's remaining TTL, and says whether renewal is healthy.
type TokenKeeper struct {
	cfg       KeeperConfig
	ttl       prometheus.GaugeFunc
	renewals  *prometheus.CounterVec
	mu        sync.Mutex
	lastErr   error
	expiresAt time.Time
	checked   bool
	// verified: a lookup has found the token periodic.
	verified bool
}

// NewTokenKeeper returns a keeper; Start checks the token, Run keeps it.
func NewTokenKeeper(cfg KeeperConfig) *TokenKeeper {
	if cfg.RetryInterval == 0 {
		cfg.RetryInterval = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	k := &TokenKeeper{
		cfg: cfg,
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "webhookdb_vault_token_renewals_total",
			Help: "Renewals (and logins) of webhookdb's Vault token, by result."}, []string{"result"}),
	}
	k.ttl = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "webhookdb_vault_token_ttl_seconds",
		Help: "Remaining TTL of webhookdb's Vault token, as of its last renewal or lookup (a periodic token is renewed at a third of its TTL); 0 when unknown."},
		func() float64 { return max(k.TTL(), 0).Seconds() })
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(k.ttl, k.renewals)
	}
	return k
}

// Start logs in (AppRole) and checks the token is periodic. An unreachable Vault is no error (the keeper
// tries again in Run, and reports degraded until then); a token Vault says is not periodic is
// ErrTokenNotPeriodic.
func (k *TokenKeeper) Start(ctx context.Context) error {
	err := k.check(ctx)
	if errors.Is(err, ErrTokenNotPeriodic) {
		return err
	}
	if err != nil && k.cfg.AppRole == nil && isStatus(err, 403) {
		return fmt.Errorf("Vault refuses the token (expired, revoked or mistyped?): %w", err)
	}
	if err != nil {
		k.cfg.Logger.WarnContext(ctx, "Vault is not reachable yet: starting without it, retrying", slog.String("error", err.Error()))
	}
	return nil
}

// check logs in when needed and looks the token up; it records the result.
func (k *TokenKeeper) check(ctx context.Context) error {
	err := k.lookupOrLogin(ctx)
	k.record(err)
	return err
}

func (k *TokenKeeper) lookupOrLogin(ctx context.Context) error {
	if k.cfg.AppRole != nil && k.cfg.Client.Token() == "" {
		if err := k.login(ctx); err != nil {
			return err
		}
	}
	info, err := LookupSelf(ctx, k.cfg.Client)
	if err != nil && k.cfg.AppRole != nil && isStatus(err, 403) {
		// The token is gone (expired, revoked): log in again.
		if err = k.login(ctx); err == nil {
			info, err = LookupSelf(ctx, k.cfg.Client)
		}
	}
	if err != nil {
		return err
	}
	if err := CheckPeriodic(info); err != nil {
		return err
	}
	k.setTTL(info.TTL)
	k.mu.Lock()
	k.verified = true
	k.mu.Unlock()
	return nil
}

func (k *TokenKeeper) login(ctx context.Context) error {
	s, err := k.cfg.AppRole.Login(ctx, k.cfg.Client)
	if err != nil {
		return err
	}
	k.renewals.WithLabelValues("login").Inc()
	k.setTTL(time.Duration(s.Auth.LeaseDuration) * time.Second)
	return nil
}

func (k *TokenKeeper) setTTL(ttl time.Duration) {
	k.mu.Lock()
	k.expiresAt = time.Now().Add(ttl)
	k.mu.Unlock()
}

func (k *TokenKeeper) record(err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.checked = true
	k.lastErr = err
}

// Renew renews the token once (auth/token/renew-self) and records the result.
func (k *TokenKeeper) Renew(ctx context.Context) error {
	err := k.renew(ctx)
	if err != nil {
		k.renewals.WithLabelValues("error").Inc()
	} else {
		k.renewals.WithLabelValues("ok").Inc()
	}
	k.record(err)
	return err
}

func (k *TokenKeeper) renew(ctx context.Context) error {
	k.mu.Lock()
	verified := k.verified
	k.mu.Unlock()
	if !verified || k.cfg.Client.Token() == "" {
		return k.lookupOrLogin(ctx)
	}
	s, err := k.cfg.Client.Auth().Token().RenewSelfWithContext(ctx, 0)
	if err != nil && k.cfg.AppRole != nil && isStatus(err, 403) {
		return k.lookupOrLogin(ctx)
	}
	if err != nil {
		return fmt.Errorf("error renewing the Vault token: %w", err)
	}
	if s == nil || s.Auth == nil {
		return errors.New("Vault returned nothing for the token renewal")
	}
	k.setTTL(time.Duration(s.Auth.LeaseDuration) * time.Second)
	return nil
}

// Healthy reports whether the last renewal (or lookup) succeeded, and the error when not.
func (k *TokenKeeper) Healthy() (bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.checked && k.lastErr == nil, k.lastErr
}

// TTL is the token's remaining TTL as of its last renewal.
func (k *TokenKeeper) TTL() time.Duration {
	k.mu.Lock()
	defer k.mu.Unlock()
	return time.Until(k.expiresAt)
}

// Run renews the token when a third of its TTL has passed (retrying every RetryInterval after a failure)
// until ctx ends. A token found not periodic ends Run with ErrTokenNotPeriodic.
func (k *TokenKeeper) Run(ctx context.Context) error {
	for {
		wait := k.cfg.RetryInterval
		if ok, _ := k.Healthy(); ok {
			wait = max(k.TTL()/3, time.Second)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		err := k.Renew(ctx)
		if errors.Is(err, ErrTokenNotPeriodic) {
			return err
		}
		if err != nil && ctx.Err() == nil {
			k.cfg.Logger.ErrorContext(ctx, "renewing the Vault token failed: leases it issued end with it", slog.String("error", err.Error()),
				slog.Duration("ttl_left", k.TTL()))
		}
	}
}
