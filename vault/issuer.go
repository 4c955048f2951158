package vault

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/internal/orgdb"
	"github.com/webhookdb-go/webhookdb/pgroles"
)

// ErrNotConfigured means Vault has no connection for the server (database/config/<server>).
var ErrNotConfigured = errors.New("vault has no connection configured for this database server")

// Config configures an Issuer.
type Config struct {
	// Client is an authenticated Vault client (required). Leases belong to its token: use a periodic or
	// long-lived token, since revoking the token revokes every credential it issued.
	Client *vaultapi.Client
	// DatabaseMount is the database secrets engine's mount path; default "database".
	DatabaseMount string
	// Policy is what every issued login gets; defaults as pgroles.LoginPolicy.
	Policy pgroles.LoginPolicy
	// FanoutRotationPeriod is how often Vault rotates webhookdb_fanout's password; default 1h (at least 5s).
	FanoutRotationPeriod time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// WithDefaults returns a copy with defaults filled in.
func (c Config) WithDefaults() Config {
	if c.DatabaseMount == "" {
		c.DatabaseMount = "database"
	}
	c.DatabaseMount = strings.Trim(c.DatabaseMount, "/")
	c.Policy = c.Policy.WithDefaults()
	if c.FanoutRotationPeriod == 0 {
		c.FanoutRotationPeriod = time.Hour
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	if c.Client == nil {
		errs = append(errs, errors.New("vault: Client is required"))
	}
	if err := c.Policy.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.FanoutRotationPeriod < 5*time.Second {
		errs = append(errs, fmt.Errorf("vault: fanout rotation period %s is under Vault's minimum of 5s", c.FanoutRotationPeriod))
	}
	return errors.Join(errs...)
}

// Issuer issues read-only credentials through Vault's database secrets engine (orgdb.Issuer).
type Issuer struct {
	cfg Config
}

// NewIssuer returns an Issuer.
func NewIssuer(cfg Config) (*Issuer, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Issuer{cfg: cfg}, nil
}

var _ orgdb.Issuer = (*Issuer)(nil)

// RoleName is the Vault role that issues an org's read-only logins, named from the org's name base (never
// its key: the role name goes into every login's name, which every login on the server can read).
func RoleName(base string) string { return "org-" + base + "-readonly" }

// FanoutRoleName is the Vault static role holding a server's fanout credentials.
func FanoutRoleName(serverName string) string { return "webhookdb-fanout-" + serverName }

// UsernameTemplate names the logins Vault creates: "v-", the role cut to 44 bytes (pgroles.LoginRoleStem, so
// an operator can tell the org from its name base), 16
// random lower-case letters and digits; at most 63 bytes, PostgreSQL's limit. Only lower-case letters,
// digits, '_' and '-' appear, as the statement templates require (and nobody has to quote the name in SQL).
const UsernameTemplate = `{{ printf "v-%s-%s" (.RoleName | truncate 44) (random 16 | lowercase) | truncate 63 }}`

// Mode implements orgdb.Issuer.
func (*Issuer) Mode() string { return orgdb.ModeVault }

// Policy implements orgdb.Issuer.
func (i *Issuer) Policy() pgroles.LoginPolicy { return i.cfg.Policy }

// configLocks serialise read-modify-write of one connection's allowed_roles within this process (across
// processes the callers hold an advisory lock in the application database).
var configLocks sync.Map

func (i *Issuer) lockConfig(name string) func() {
	m, _ := configLocks.LoadOrStore(i.cfg.Client.Address()+"|"+i.cfg.DatabaseMount+"|"+name, &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

func (i *Issuer) path(parts ...string) string {
	return i.cfg.DatabaseMount + "/" + strings.Join(parts, "/")
}

// SetupServer implements orgdb.Issuer. When Vault already has a working connection for the server it is
// updated in place (its password, known only to Vault, is kept). Otherwise (a new server, or a Vault dev
// server that forgot everything) webhookdb_vault gets a fresh random password through the admin URL, the
// connection is written with it, and the password is rotated at once, so that only Vault knows it. The static
// role for the fanout's writes is (re)created too.
func (i *Issuer) SetupServer(ctx context.Context, srv orgdb.Server, orgKeys []string) error {
	unlock := i.lockConfig(srv.Name)
	defer unlock()
	connURL, err := connectionURL(srv.AdminURL)
	if err != nil {
		return err
	}
	existing, err := i.cfg.Client.Logical().ReadWithContext(ctx, i.path("config", srv.Name))
	if err != nil {
		return fmt.Errorf("error reading vault connection %s: %w", srv.Name, err)
	}
	allowed := []string{FanoutRoleName(srv.Name)}
	for _, k := range orgKeys {
		allowed = append(allowed, RoleName(k))
	}
	data := map[string]any{
		"plugin_name":             "postgresql-database-plugin",
		"connection_url":          connURL,
		"username":                pgroles.VaultRole,
		"password_authentication": "scram-sha-256",
		"username_template":       UsernameTemplate,
		"verify_connection":       true,
	}
	if existing != nil {
		data["allowed_roles"] = mergeRoles(stringList(existing.Data["allowed_roles"]), allowed, nil)
		if err := pgroles.EnsureVaultRole(ctx, srv.AdminURL, ""); err != nil {
			return err
		}
		_, err := i.cfg.Client.Logical().WriteWithContext(ctx, i.path("config", srv.Name), data)
		if err == nil {
			return i.setupFanout(ctx, srv)
		}
		if !isStatus(err, http.StatusBadRequest) {
			// Vault unreachable or failing: resetting the password now could leave it known to no one.
			return fmt.Errorf("error updating vault connection %s: %w", srv.Name, err)
		}
		i.cfg.Logger.WarnContext(ctx, "vault connection does not work any more; resetting webhookdb_vault's password", "server", srv.Name, "error", err)
	} else {
		data["allowed_roles"] = mergeRoles(nil, allowed, nil)
	}
	password := rand.Text() + rand.Text()
	if err := pgroles.EnsureVaultRole(ctx, srv.AdminURL, password); err != nil {
		return err
	}
	data["password"] = password
	if _, err := i.cfg.Client.Logical().WriteWithContext(ctx, i.path("config", srv.Name), data); err != nil {
		return fmt.Errorf("error writing vault connection %s: %w", srv.Name, err)
	}
	if err := i.rotateRoot(ctx, srv.Name); err != nil {
		return err
	}
	return i.setupFanout(ctx, srv)
}

// RotateRoot rotates webhookdb_vault's password on a server: afterwards only Vault knows it.
func (i *Issuer) RotateRoot(ctx context.Context, serverName string) error {
	unlock := i.lockConfig(serverName)
	defer unlock()
	return i.rotateRoot(ctx, serverName)
}

func (i *Issuer) rotateRoot(ctx context.Context, serverName string) error {
	existing, err := i.cfg.Client.Logical().ReadWithContext(ctx, i.path("config", serverName))
	if err != nil {
		return fmt.Errorf("error reading vault connection %s: %w", serverName, err)
	}
	if existing == nil {
		return fmt.Errorf("%w: %s", ErrNotConfigured, serverName)
	}
	if _, err := i.cfg.Client.Logical().WriteWithContext(ctx, i.path("rotate-root", serverName), nil); err != nil {
		return fmt.Errorf("error rotating the root credentials of %s: %w", serverName, err)
	}
	return nil
}

// SetupOrg implements orgdb.Issuer: it writes database/roles/org-<name base>-readonly, then allows it on the
// server's connection.
func (i *Issuer) SetupOrg(ctx context.Context, srv orgdb.Server, orgKey string, _ []string) error {
	creation, err := pgroles.CreationStatements(orgKey, i.cfg.Policy)
	if err != nil {
		return err
	}
	revocation, err := pgroles.RevocationStatements(orgKey)
	if err != nil {
		return err
	}
	_, err = i.cfg.Client.Logical().WriteWithContext(ctx, i.path("roles", RoleName(orgKey)), map[string]any{
		"db_name":               srv.Name,
		"creation_statements":   creation,
		"revocation_statements": revocation,
		"renew_statements":      pgroles.RenewStatements(),
		"default_ttl":           int(i.cfg.Policy.TTL.Seconds()),
		"max_ttl":               int(i.cfg.Policy.MaxTTL.Seconds()),
	})
	if err != nil {
		return fmt.Errorf("error writing vault role %s: %w", RoleName(orgKey), err)
	}
	return i.updateAllowedRoles(ctx, srv.Name, []string{RoleName(orgKey)}, nil)
}

// RemoveOrg implements orgdb.Issuer: it revokes every lease of the org's role (synchronously; deleting a
// connection or role with live leases would break their revocation), deletes the role and disallows it.
func (i *Issuer) RemoveOrg(ctx context.Context, srv orgdb.Server, orgKey string, _ []string) error {
	role := RoleName(orgKey)
	_, err := i.cfg.Client.Logical().WriteWithContext(ctx, "sys/leases/revoke-prefix/"+i.path("creds", role), map[string]any{"sync": true})
	if err != nil {
		return fmt.Errorf("error revoking the leases of %s: %w", role, err)
	}
	if _, err := i.cfg.Client.Logical().DeleteWithContext(ctx, i.path("roles", role)); err != nil {
		return fmt.Errorf("error deleting vault role %s: %w", role, err)
	}
	return i.updateAllowedRoles(ctx, srv.Name, nil, []string{role})
}

// updateAllowedRoles adds and removes roles on a connection's allowed_roles. It merges into what Vault has
// rather than overwriting, so that concurrent writers (several webhookdb processes) cannot drop each other's
// roles; only a server's own org roles and its fanout role are ever listed.
func (i *Issuer) updateAllowedRoles(ctx context.Context, serverName string, add, remove []string) error {
	unlock := i.lockConfig(serverName)
	defer unlock()
	existing, err := i.cfg.Client.Logical().ReadWithContext(ctx, i.path("config", serverName))
	if err != nil {
		return fmt.Errorf("error reading vault connection %s: %w", serverName, err)
	}
	if existing == nil {
		if len(add) == 0 {
			return nil // nothing to disallow on a connection that does not exist
		}
		return fmt.Errorf("%w: %s", ErrNotConfigured, serverName)
	}
	current := stringList(existing.Data["allowed_roles"])
	next := mergeRoles(current, add, remove)
	if slices.Equal(slices.Sorted(slices.Values(current)), next) {
		return nil
	}
	if _, err := i.cfg.Client.Logical().WriteWithContext(ctx, i.path("config", serverName), map[string]any{"allowed_roles": next}); err != nil {
		return fmt.Errorf("error updating allowed roles of vault connection %s: %w", serverName, err)
	}
	return nil
}

// Issue implements orgdb.Issuer.
func (i *Issuer) Issue(ctx context.Context, _ orgdb.Server, orgKey string) (*orgdb.Lease, error) {
	now := time.Now()
	s, err := i.cfg.Client.Logical().ReadWithContext(ctx, i.path("creds", RoleName(orgKey)))
	if err != nil {
		return nil, fmt.Errorf("error reading vault credentials for %s: %w", RoleName(orgKey), err)
	}
	if s == nil || s.LeaseID == "" {
		return nil, fmt.Errorf("vault returned no lease for %s", RoleName(orgKey))
	}
	username, _ := s.Data["username"].(string)
	password, _ := s.Data["password"].(string)
	if err := pgroles.ValidateUsername(username); err != nil || password == "" {
		// Revoke what cannot be used rather than leave it live until its TTL.
		_ = i.cfg.Client.Sys().RevokeWithContext(context.WithoutCancel(ctx), s.LeaseID)
		return nil, fmt.Errorf("vault issued unusable credentials for %s (username %q)", RoleName(orgKey), username)
	}
	return &orgdb.Lease{
		ID: s.LeaseID, Username: username, Password: password,
		IssuedAt: now, ExpiresAt: now.Add(time.Duration(s.LeaseDuration) * time.Second),
	}, nil
}

// Renew implements orgdb.Issuer.
func (i *Issuer) Renew(ctx context.Context, _ orgdb.Server, _ string, lease orgdb.Lease) (time.Time, error) {
	now := time.Now()
	s, err := i.cfg.Client.Sys().RenewWithContext(ctx, lease.ID, int(i.cfg.Policy.TTL.Seconds()))
	if err != nil {
		if isStatus(err, http.StatusBadRequest) || isStatus(err, http.StatusNotFound) {
			return time.Time{}, fmt.Errorf("%w: %w", orgdb.ErrLeaseGone, err)
		}
		return time.Time{}, fmt.Errorf("error renewing vault lease: %w", err)
	}
	expires := now.Add(time.Duration(s.LeaseDuration) * time.Second)
	// Capped by max_ttl, Vault answers with what is left; the lease did not get longer.
	if !expires.After(lease.ExpiresAt.Add(time.Second)) {
		return time.Time{}, orgdb.ErrNotRenewable
	}
	return expires, nil
}

// Revoke implements orgdb.Issuer: sync, so Vault has run the revocation statements when it returns.
func (i *Issuer) Revoke(ctx context.Context, _ orgdb.Server, _ string, lease orgdb.Lease) error {
	_, err := i.cfg.Client.Logical().WriteWithContext(ctx, "sys/leases/revoke", map[string]any{"lease_id": lease.ID, "sync": true})
	if err != nil {
		return fmt.Errorf("error revoking vault lease: %w", err)
	}
	return nil
}

// Known implements orgdb.Issuer.
func (i *Issuer) Known(ctx context.Context, _ orgdb.Server, lease orgdb.Lease) (bool, error) {
	s, err := i.cfg.Client.Sys().LookupWithContext(ctx, lease.ID)
	if err != nil {
		if isStatus(err, http.StatusBadRequest) || isStatus(err, http.StatusNotFound) {
			return false, nil
		}
		return false, fmt.Errorf("error looking up vault lease: %w", err)
	}
	return s != nil, nil
}

// connectionURL turns the admin URL into Vault's templated connection URL: the same host and port (Vault
// reaches the server as webhookdb does), the postgres database, the admin URL's sslmode (default prefer).
func connectionURL(adminURL string) (string, error) {
	cfg, err := pgx.ParseConfig(adminURL)
	if err != nil {
		return "", fmt.Errorf("error parsing the admin URL") // never echo it: it holds a password
	}
	if strings.HasPrefix(cfg.Host, "/") {
		return "", errors.New("the admin URL must use TCP (host and port) for Vault to reach the server, not a Unix socket")
	}
	sslmode := "prefer"
	if m := sslmodePattern.FindStringSubmatch(adminURL); m != nil {
		sslmode = m[1]
	}
	u := "postgresql://{{username}}:{{password}}@" + net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))) +
		"/postgres?sslmode=" + url.QueryEscape(sslmode)
	return u, nil
}

var sslmodePattern = regexp.MustCompile(`sslmode=(disable|allow|prefer|require|verify-ca|verify-full)\b`)

func mergeRoles(current, add, remove []string) []string {
	set := map[string]bool{}
	for _, r := range current {
		if r != "" {
			set[r] = true
		}
	}
	for _, r := range add {
		set[r] = true
	}
	for _, r := range remove {
		delete(set, r)
	}
	out := make([]string, 0, len(set))
	for r := range set {
		out = append(out, r)
	}
	slices.Sort(out)
	return out
}

func stringList(v any) []string {
	switch v := v.(type) {
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	case []string:
		return v
	case string:
		if v == "" {
			return nil
		}
		return strings.Split(v, ",")
	}
	return nil
}

func isStatus(err error, code int) bool {
	var re *vaultapi.ResponseError
	return errors.As(err, &re) && re.StatusCode == code
}
