package orgdb

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/webhookdb-go/webhookdb/pgroles"
)

// Credential modes.
const (
	ModeVault    = "vault"
	ModePostgres = "postgres"
)

var (
	// ErrLeaseGone means the issuer no longer knows a lease (revoked, expired, or forgotten): it cannot be
	// renewed, and a new credential must be issued.
	ErrLeaseGone = errors.New("credential lease no longer exists")
	// ErrNotRenewable means a lease has reached its maximum TTL.
	ErrNotRenewable = errors.New("credential lease cannot be renewed further")
)

// Server is a registered database server, admin URL decrypted.
type Server struct {
	ID         int64
	Name       string
	AdminURL   string
	PublicHost string
	PublicPort int
	SSLMode    string
	CACert     string // PEM, for the verify modes
}

// Lease is one issued read-only login.
type Lease struct {
	ID        string
	Username  string
	Password  string // only set by Issue
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// Issuer issues read-only login roles for orgs. Vault's database engine (vault.Issuer) and PostgreSQL
// directly (PostgresIssuer) implement it with the same statements (pgroles.CreationStatements and friends).
// The org is named by its name base (Org.NameBase, what pgroles names its database and roles from), never by
// its key: the arguments named orgKey and orgKeys carry name bases. orgKeys arguments list every org living on
// the server, for issuers that must allow-list them.
type Issuer interface {
	// Mode is ModeVault or ModePostgres.
	Mode() string
	// Policy is what every issued login gets (TTL, max TTL, connection limit, timeouts).
	Policy() pgroles.LoginPolicy
	// SetupServer prepares the issuer for a server (Vault: webhookdb_vault, database/config/<server>).
	SetupServer(ctx context.Context, srv Server, orgKeys []string) error
	// SetupOrg prepares issuing for an org once its database exists (Vault: database/roles/org-<name base>-readonly).
	SetupOrg(ctx context.Context, srv Server, orgKey string, orgKeys []string) error
	// RemoveOrg revokes every lease of the org and forgets it; orgKeys no longer includes it.
	RemoveOrg(ctx context.Context, srv Server, orgKey string, orgKeys []string) error
	// Issue creates a login role.
	Issue(ctx context.Context, srv Server, orgKey string) (*Lease, error)
	// Renew extends a lease by the TTL (up to the max TTL) and returns its new expiry; ErrLeaseGone or
	// ErrNotRenewable when it cannot.
	Renew(ctx context.Context, srv Server, orgKey string, lease Lease) (time.Time, error)
	// Revoke revokes a lease synchronously: when it returns, the login fails and its sessions are closed.
	// Revoking a lease that is gone succeeds.
	Revoke(ctx context.Context, srv Server, orgKey string, lease Lease) error
	// Known reports whether the issuer still knows a live lease (a restarted Vault dev server knows none).
	Known(ctx context.Context, srv Server, lease Lease) (bool, error)
}

// PostgresIssuer issues login roles directly with the server's admin URL (--credentials=postgres), running
// the statements Vault would run; webhookdb's maintenance pass revokes them at expiry, as Vault would.
type PostgresIssuer struct {
	policy pgroles.LoginPolicy
}

// NewPostgresIssuer returns a direct issuer with the given policy (defaults filled in).
func NewPostgresIssuer(policy pgroles.LoginPolicy) (*PostgresIssuer, error) {
	policy = policy.WithDefaults()
	if err := policy.Validate(); err != nil {
		return nil, err
	}
	return &PostgresIssuer{policy: policy}, nil
}

const postgresLeasePrefix = "postgres:"

// Mode implements Issuer.
func (*PostgresIssuer) Mode() string { return ModePostgres }

// Policy implements Issuer.
func (p *PostgresIssuer) Policy() pgroles.LoginPolicy { return p.policy }

// SetupServer implements Issuer: nothing beyond what registration does for every mode.
func (*PostgresIssuer) SetupServer(context.Context, Server, []string) error { return nil }

// SetupOrg implements Issuer: nothing beyond provisioning.
func (*PostgresIssuer) SetupOrg(context.Context, Server, string, []string) error { return nil }

// RemoveOrg implements Issuer: pgroles.DropOrg drops the org's login roles.
func (*PostgresIssuer) RemoveOrg(context.Context, Server, string, []string) error { return nil }

// Issue implements Issuer.
func (p *PostgresIssuer) Issue(ctx context.Context, srv Server, orgKey string) (*Lease, error) {
	now := time.Now()
	login, err := pgroles.IssueLogin(ctx, srv.AdminURL, orgKey, p.policy)
	if err != nil {
		return nil, err
	}
	return &Lease{ID: postgresLeasePrefix + login.Username, Username: login.Username, Password: login.Password, IssuedAt: now, ExpiresAt: login.ExpiresAt}, nil
}

// Renew implements Issuer: the same arithmetic as Vault's (TTL from now, capped at issue time + max TTL).
func (p *PostgresIssuer) Renew(ctx context.Context, srv Server, orgKey string, lease Lease) (time.Time, error) {
	if known, err := p.Known(ctx, srv, lease); err != nil {
		return time.Time{}, err
	} else if !known {
		return time.Time{}, ErrLeaseGone
	}
	expires := time.Now().Add(p.policy.TTL)
	if maxExpires := lease.IssuedAt.Add(p.policy.MaxTTL); expires.After(maxExpires) {
		expires = maxExpires
	}
	expires = expires.Truncate(time.Second)
	if !expires.After(lease.ExpiresAt) {
		return time.Time{}, ErrNotRenewable
	}
	if err := pgroles.RenewLogin(ctx, srv.AdminURL, lease.Username, expires); err != nil {
		return time.Time{}, err
	}
	return expires, nil
}

// Revoke implements Issuer.
func (*PostgresIssuer) Revoke(ctx context.Context, srv Server, orgKey string, lease Lease) error {
	return pgroles.RevokeLogin(ctx, srv.AdminURL, orgKey, lease.Username)
}

// Known implements Issuer: the role exists and has not expired.
func (*PostgresIssuer) Known(ctx context.Context, srv Server, lease Lease) (bool, error) {
	if !strings.HasPrefix(lease.ID, postgresLeasePrefix) {
		return false, nil
	}
	stale, err := pgroles.LoginValid(ctx, srv.AdminURL, lease.Username)
	if err != nil {
		return false, fmt.Errorf("error checking login role %s: %w", lease.Username, err)
	}
	return stale, nil
}
