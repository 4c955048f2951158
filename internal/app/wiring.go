package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/webhookdb-go/webhookdb/internal/api"
	"github.com/webhookdb-go/webhookdb/internal/integrations"
	"github.com/webhookdb-go/webhookdb/internal/orgdb"
	"github.com/webhookdb-go/webhookdb/internal/replicator"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
	"github.com/webhookdb-go/webhookdb/pgroles"
	"github.com/webhookdb-go/webhookdb/vault"
)

// VaultClient returns a client of the configured Vault, logged in: with the token, or with the AppRole (a
// login per call: for commands; a server keeps one client and renews its token, see New).
func (c Config) VaultClient() (*vaultapi.Client, error) {
	if c.vaultClient != nil {
		return c.vaultClient, nil
	}
	client, err := c.newVaultClient()
	if err != nil {
		return nil, err
	}
	ar, err := c.appRole()
	if err != nil || ar == nil {
		return client, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := ar.Login(ctx, client); err != nil {
		return nil, err
	}
	return client, nil
}

// newVaultClient returns a client carrying the token, if any (none with an AppRole: not logged in yet).
func (c Config) newVaultClient() (*vaultapi.Client, error) {
	ar, err := c.appRole()
	if err != nil {
		return nil, err
	}
	if c.VaultAddr == "" || (c.VaultToken == "" && ar == nil) {
		return nil, errors.New("Vault address and token (or AppRole) are required (--vault-addr/VAULT_ADDR, --vault-token/VAULT_TOKEN or " + EnvVaultRoleID + " and " + EnvVaultSecretID + ")")
	}
	vc := vaultapi.DefaultConfig()
	vc.Address = c.VaultAddr
	client, err := vaultapi.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("error creating Vault client: %w", err)
	}
	client.ClearToken() // never VAULT_TOKEN from the environment behind the config's back
	if c.VaultToken != "" {
		client.SetToken(c.VaultToken)
	}
	return client, nil
}

// appRole is the configured AppRole login, or nil; the _FILE settings are read here.
func (c Config) appRole() (*vault.AppRole, error) {
	read := func(value, file, env string) (string, error) {
		if value != "" || file == "" {
			return value, nil
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("error reading %s: %w", env, err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	roleID, err := read(c.VaultRoleID, c.VaultRoleIDFile, EnvVaultRoleIDFile)
	if err != nil {
		return nil, err
	}
	secretID, err := read(c.VaultSecretID, c.VaultSecretIDFile, EnvVaultSecretIDFile)
	if err != nil {
		return nil, err
	}
	if roleID == "" && secretID == "" {
		return nil, nil
	}
	return &vault.AppRole{RoleID: roleID, SecretID: secretID}, nil
}

// Keys is the configured encryption of stored secrets.
type Keys struct {
	// Box encrypts with the current key: transit (falling back to the keyring for values written before a move
	// to transit) or the keyring.
	Box secrets.Box
	// Transit is set with transit encryption; Keyring when a local keyring is configured.
	Transit *secrets.Transit
	Keyring *secrets.Keyring
}

// OpenKeys builds the configured encryption. ensureKey creates the transit key when missing: only what owns
// the key (maintenance, `keys rotate`) should.
func OpenKeys(ctx context.Context, cfg Config, ensureKey bool) (*Keys, error) {
	cfg = cfg.WithDefaults()
	k := &Keys{}
	var err error
	switch {
	case cfg.Keyring != "" && cfg.KeyringFile != "":
		return nil, errors.New("set only one of --keyring and --keyring-file (WEBHOOKDB_KEYRING, WEBHOOKDB_KEYRING_FILE)")
	case cfg.KeyringFile != "":
		k.Keyring, err = secrets.LoadKeyringFile(cfg.KeyringFile)
	case cfg.Keyring != "":
		k.Keyring, err = secrets.ParseKeyring(cfg.Keyring)
	}
	if err != nil {
		return nil, err
	}
	switch cfg.Encryption {
	case EncryptionKeyring:
		if k.Keyring == nil {
			return nil, errors.New("no keyring: set --keyring or --keyring-file (WEBHOOKDB_KEYRING, WEBHOOKDB_KEYRING_FILE)")
		}
		k.Box = k.Keyring
		return k, nil
	case EncryptionTransit:
	default:
		return nil, fmt.Errorf("--encryption %q: want transit or keyring", cfg.Encryption)
	}
	client, err := cfg.VaultClient()
	if err != nil {
		return nil, err
	}
	if k.Transit, err = secrets.NewTransit(secrets.TransitConfig{Client: client, Mount: cfg.TransitMount, Key: cfg.TransitKey}); err != nil {
		return nil, err
	}
	if ensureKey {
		if err := k.Transit.EnsureKey(ctx); err != nil {
			return nil, fmt.Errorf("error preparing the transit key: %w", err)
		}
	}
	k.Box = k.Transit
	if k.Keyring != nil {
		// Values written under the keyring stay readable until `keys rotate` moves them to transit.
		k.Box = secrets.WithFallback(k.Transit, k.Keyring)
	}
	return k, nil
}

// buildSecrets sets up the encryption of stored secrets and the org database service (credentials and the
// fanout's writer logins) for the configured modes. It needs neither Vault nor an org database server to be
// reachable: a process with the maintenance role creates the transit key and reconciles Vault with the
// application database in reconcile, at start and in the background until it succeeds.
func buildSecrets(ctx context.Context, cfg Config, pool *pgxpool.Pool) (*Keys, *orgdb.Service, error) {
	keys, err := OpenKeys(ctx, cfg, false)
	if err != nil {
		return nil, nil, err
	}
	box := keys.Box
	var client *vaultapi.Client
	if cfg.Credentials == CredentialsVault {
		if client, err = cfg.VaultClient(); err != nil {
			return nil, nil, err
		}
	}
	var issuer orgdb.Issuer
	reservedPercent, reserved := cfg.serverReserve()
	policy := pgroles.LoginPolicy{ReservedConnections: reserved, ReservedPercent: reservedPercent}
	if cfg.Credentials == CredentialsVault {
		issuer, err = vault.NewIssuer(vault.Config{Client: client, DatabaseMount: cfg.DatabaseMount, Logger: cfg.Logger, Policy: policy})
	} else {
		issuer, err = orgdb.NewPostgresIssuer(policy)
	}
	if err != nil {
		return nil, nil, err
	}
	svc, err := orgdb.New(pool, orgdb.Config{Issuer: issuer, Box: box, Logger: cfg.Logger})
	if err != nil {
		return nil, nil, err
	}
	return keys, svc, nil
}

// reconcileOnce makes sure the transit key exists, then re-applies what the database says Vault should hold
// (roles, connections) and revokes what it forgot.
func (a *App) reconcileOnce(ctx context.Context) error {
	if a.keys.Transit != nil {
		if err := a.keys.Transit.EnsureKey(ctx); err != nil {
			return fmt.Errorf("error preparing the transit key: %w", err)
		}
	}
	if err := a.orgs.Reconcile(ctx); err != nil {
		return fmt.Errorf("error reconciling credentials: %w", err)
	}
	return nil
}

// reconcileRetryMax caps the wait between reconcile attempts.
const reconcileRetryMax = 5 * time.Minute

// reconcile tries reconcileOnce until it succeeds (a maintenance worker): Vault or an org database server may be
// unreachable when serve starts, and ingest must not wait for them.
func (a *App) reconcile(ctx context.Context) error {
	wait := a.reconcileRetry
	for !a.reconciled.Load() {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		err := a.reconcileOnce(ctx)
		if err == nil {
			a.reconciled.Store(true)
			a.logger.InfoContext(ctx, "credentials reconciled with Vault and the database servers")
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		wait = min(2*wait, reconcileRetryMax)
		a.logger.WarnContext(ctx, "reconciling credentials failed; retrying", "error", err, "retry_in", wait)
	}
	return nil
}

// orgdbAdapter presents orgdb to the API.
type orgdbAdapter struct {
	svc *orgdb.Service
	box secrets.Box
	db  *pgxpool.Pool
}

func apiCredential(c *orgdb.Credential, err error) (*api.Credential, error) {
	if err != nil {
		return nil, translate(err)
	}
	return &api.Credential{URL: c.URL, Username: c.Username, ExpiresAt: c.ExpiresAt, Kind: c.Kind, CACert: c.CACert}, nil
}

func (a orgdbAdapter) Connection(ctx context.Context, orgID, userID int64) (*api.Credential, error) {
	return apiCredential(a.svc.MemberConnection(ctx, orgID, userID))
}

func (a orgdbAdapter) ServiceConnection(ctx context.Context, orgID int64) (*api.Credential, error) {
	return apiCredential(a.svc.ServiceConnection(ctx, orgID))
}

func (a orgdbAdapter) RollCredentials(ctx context.Context, orgID, userID int64, all bool) (*api.Credential, error) {
	if all {
		return apiCredential(a.svc.RollAllCredentials(ctx, orgID, userID))
	}
	return apiCredential(a.svc.RollMemberCredentials(ctx, orgID, userID))
}

func (a orgdbAdapter) RevokeMember(ctx context.Context, orgID, userID int64) error {
	return translate(a.svc.RevokeMember(ctx, orgID, userID))
}

func (a orgdbAdapter) ProvisionOrg(ctx context.Context, orgID int64) error {
	_, err := a.svc.ProvisionOrg(ctx, orgID)
	return translate(err)
}

func (a orgdbAdapter) DeleteOrg(ctx context.Context, orgID int64) error {
	return translate(a.svc.DeleteOrg(ctx, orgID))
}

// kindError is err, also matching kind under errors.Is.
type kindError struct{ err, kind error }

func (e kindError) Error() string        { return e.err.Error() }
func (e kindError) Unwrap() error        { return e.err }
func (e kindError) Is(target error) bool { return target == e.kind }

func (a orgdbAdapter) RegisterServer(ctx context.Context, reg api.ServerRegistration) (string, error) {
	info, err := a.svc.RegisterServer(ctx, orgdb.ServerSpec{Name: reg.Name, AdminURL: reg.AdminURL, PublicHost: reg.PublicHost, PublicPort: reg.PublicPort, SSLMode: reg.SSLMode, CACert: reg.CACert})
	if errors.Is(err, orgdb.ErrInvalidSSLMode) {
		return "", kindError{err: err, kind: api.ErrInvalidSSLMode}
	}
	if err != nil {
		return "", err
	}
	return info.SSLMode, nil
}

func (a orgdbAdapter) RotateKeys(ctx context.Context, _ func(done, total int)) (*api.KeyRotation, error) {
	rot, ok := a.box.(secrets.Rotator)
	if !ok {
		return nil, errors.New("this encryption cannot be rotated")
	}
	_, isKeyRotator := a.box.(secrets.KeyRotator)
	rep, err := secrets.Rotate(ctx, a.db, rot, secrets.RotateOptions{RotateKey: isKeyRotator})
	if err != nil {
		return nil, err
	}
	return &api.KeyRotation{Version: rep.Version, Columns: rep.Columns, MinDecryptionVersion: rep.MinDecryptionVersion}, nil
}

// translate maps orgdb's errors onto the API's.
func translate(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, orgdb.ErrOrgNotFound):
		return &api.Error{Status: 404, Code: "not_found", Message: err.Error()}
	case errors.Is(err, orgdb.ErrNotProvisioned):
		return &api.Error{Status: 409, Code: "not_provisioned", Message: "the organization's database is not ready yet: " + err.Error()}
	case errors.Is(err, orgdb.ErrNoServer):
		return &api.Error{Status: 503, Code: "no_database_server", Message: "no database server is registered: a server admin must run `webhookdb servers add`"}
	case errors.Is(err, orgdb.ErrNotMember):
		return &api.Error{Status: 404, Code: "not_found", Message: "organization not found"}
	case errors.Is(err, orgdb.ErrInvalidOrg), errors.Is(err, orgdb.ErrInvalidServer):
		return &api.Error{Status: 422, Code: "invalid", Message: err.Error()}
	}
	return err
}

// EnsureTable creates an integration's table in the org database as the org's owner role, so it exists (and
// the read-only group can select it) before the first webhook arrives.
func (a orgdbAdapter) EnsureTable(ctx context.Context, orgID int64, opaqueID string) error {
	in, err := integrations.ByOpaqueID(ctx, a.db, opaqueID)
	if err != nil {
		return err
	}
	svc, err := replicator.Resolve(in.Service, in.Config)
	if err != nil {
		return err
	}
	connString, owner, err := a.svc.WriterConnString(ctx, orgID)
	if err != nil {
		return translate(err)
	}
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		return fmt.Errorf("error connecting to the org database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "SET ROLE "+pgx.Identifier{owner}.Sanitize()); err != nil {
		return fmt.Errorf("error assuming the owner role: %w", err)
	}
	for _, stmt := range svc.EnsureTableSQL("public", in.TableName) {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("error creating table %s: %w", in.TableName, err)
		}
	}
	return nil
}

func (a orgdbAdapter) OrgLimits(ctx context.Context, orgID int64) (time.Duration, time.Duration, error) {
	l, err := a.svc.OrgLimits(ctx, orgID)
	return l.Query, l.IdleInTransaction, translate(err)
}

func (a orgdbAdapter) SetOrgLimits(ctx context.Context, orgID int64, query, idle time.Duration) error {
	return translate(a.svc.SetOrgLimits(ctx, orgID, orgdb.Limits{Query: query, IdleInTransaction: idle}))
}
