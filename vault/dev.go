package vault

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	vaultapi "github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/webhookdb-go/webhookdb/internal/orgdb"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
)

// DevTransit prepares the transit key for a Vault dev server, which keeps nothing across restarts: when Vault
// lacks the key it is restored from backupFile (written by an earlier run), or created backupable when there
// is no backup yet; the backup file is then (re)written, so it also holds versions added by a rotation.
// Never use it against a real Vault: a backupable key can leave Vault.
func DevTransit(ctx context.Context, client *vaultapi.Client, backupFile string) (*secrets.Transit, error) {
	tr, err := secrets.NewTransit(secrets.TransitConfig{Client: client, Backupable: true})
	if err != nil {
		return nil, err
	}
	if _, _, err := tr.KeyVersions(ctx); errors.Is(err, secrets.ErrTransitKey) {
		if b, readErr := os.ReadFile(backupFile); readErr == nil {
			if err := tr.Restore(ctx, strings.TrimSpace(string(b))); err != nil {
				return nil, err
			}
		} else if !errors.Is(readErr, os.ErrNotExist) {
			return nil, fmt.Errorf("error reading the transit backup: %w", readErr)
		}
	} else if err != nil {
		return nil, err
	}
	if err := tr.EnsureKey(ctx); err != nil {
		return nil, err
	}
	backup, err := tr.Backup(ctx)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(backupFile, []byte(backup+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("error writing the transit backup: %w", err)
	}
	return tr, nil
}

// DevConfig is what `webhookdb dev` has at hand.
type DevConfig struct {
	// Client is a root client of the dev server (required).
	Client *vaultapi.Client
	// Pool is the application database (required).
	Pool *pgxpool.Pool
	// Keyring decrypts values stored by earlier runs under the local keyring (optional); keys rotate moves
	// them to transit.
	Keyring *secrets.Keyring
	// TransitBackupFile keeps the transit key across dev server restarts (required), e.g. .webhookdb/transit-key.
	TransitBackupFile string
	// Server is the local cluster to register (its admin URL is stored encrypted with transit).
	Server orgdb.ServerSpec
	// Issuer configures the read-only credentials (Client is filled in).
	Issuer Config
}

// Dev is the result of SetupDev.
type Dev struct {
	Service *orgdb.Service
	Box     secrets.Box
	Transit *secrets.Transit
	Issuer  *Issuer
}

// SetupDev wires Vault (transit + database engine) for `webhookdb dev` and re-applies everything a fresh
// dev server lacks: the transit key (DevTransit), the local server's registration and Vault connection,
// every ready org's Vault role, and it revokes stored credentials Vault has forgotten (the next Connection
// issues new ones).
func SetupDev(ctx context.Context, cfg DevConfig) (*Dev, error) {
	if cfg.Client == nil || cfg.Pool == nil || cfg.TransitBackupFile == "" {
		return nil, errors.New("vault: SetupDev needs Client, Pool and TransitBackupFile")
	}
	tr, err := DevTransit(ctx, cfg.Client, cfg.TransitBackupFile)
	if err != nil {
		return nil, err
	}
	var box secrets.Box = tr
	if cfg.Keyring != nil {
		box = secrets.WithFallback(tr, cfg.Keyring)
	}
	cfg.Issuer.Client = cfg.Client
	issuer, err := NewIssuer(cfg.Issuer)
	if err != nil {
		return nil, err
	}
	svc, err := orgdb.New(cfg.Pool, orgdb.Config{Issuer: issuer, Box: box, Logger: cfg.Issuer.Logger})
	if err != nil {
		return nil, err
	}
	if _, err := svc.RegisterServer(ctx, cfg.Server); err != nil {
		return nil, err
	}
	if err := svc.Reconcile(ctx); err != nil {
		return nil, fmt.Errorf("error re-applying the Vault configuration: %w", err)
	}
	return &Dev{Service: svc, Box: box, Transit: tr, Issuer: issuer}, nil
}
