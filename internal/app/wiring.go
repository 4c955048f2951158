package app

import (
	"context"
	"errors"
	"fmt"

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

// VaultClient returns a client of the configured Vault.
func (c Config) VaultClient() (*vaultapi.Client, error) {
	if c.VaultAddr == "" || c.VaultToken == "" {
		return nil, errors.New("Vault address and token are required (--vault-addr/VAULT_ADDR, --vault-token/VAULT_TOKEN)")
	}
	vc := vaultapi.DefaultConfig()
	vc.Address = c.VaultAddr
	client, err := vaultapi.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("error creating Vault client: %w", err)
	}
	client.SetToken(c.VaultToken)
	return client, nil
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
// fanout's writer logins) for the configured modes. Only a process with the maintenance role creates the
// transit key and reconciles Vault with the application database; the others use what it made.
func buildSecrets(ctx context.Context, cfg Config, pool *pgxpool.Pool) (secrets.Box, *orgdb.Service, error) {
	keys, err := OpenKeys(ctx, cfg, cfg.Has(RoleMaintenance))
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
	if cfg.Credentials == CredentialsVault {
		issuer, err = vault.NewIssuer(vault.Config{Client: client, DatabaseMount: cfg.DatabaseMount, Logger: cfg.Logger})
	} else {
		issuer, err = orgdb.NewPostgresIssuer(pgroles.LoginPolicy{})
	}
	if err != nil {
		return nil, nil, err
	}
	svc, err := orgdb.New(pool, orgdb.Config{Issuer: issuer, Box: box, Logger: cfg.Logger})
	if err != nil {
		return nil, nil, err
	}
	if cfg.Has(RoleMaintenance) {
		// Re-applies what the database says Vault should hold (roles, connections), and revokes what it forgot.
		if err := svc.Reconcile(ctx); err != nil {
			return nil, nil, fmt.Errorf("error reconciling credentials: %w", err)
		}
	}
	return box, svc, nil
}

// orgdbAdapter presents orgdb to the API.
type orgdbAdapter struct {
	svc *orgdb.Service
	box secrets.Box
	db  *pgxpool.Pool
}

func (a orgdbAdapter) Connection(ctx context.Context, orgID int64) (*api.Credential, error) {
	c, err := a.svc.Connection(ctx, orgID)
	if err != nil {
		return nil, translate(err)
	}
	return &api.Credential{URL: c.URL, Username: c.Username, ExpiresAt: c.ExpiresAt, CACert: c.CACert}, nil
}

func (a orgdbAdapter) RollCredentials(ctx context.Context, orgID int64) (*api.Credential, error) {
	c, err := a.svc.RollCredentials(ctx, orgID)
	if err != nil {
		return nil, translate(err)
	}
	return &api.Credential{URL: c.URL, Username: c.Username, ExpiresAt: c.ExpiresAt, CACert: c.CACert}, nil
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
