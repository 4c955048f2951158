package app

import (
	"context"
	"errors"

	"github.com/webhookdb-go/webhookdb/internal/migrate"
	"github.com/webhookdb-go/webhookdb/internal/orgdb"
)

// RenameOrgDatabases is `webhookdb admin rename-org-databases`: it applies the migrations (the opaque names
// need 00043), then moves every org still named from its key to opaque names (orgdb.RenameOrgDatabases), with
// the credential mode and encryption the servers run with. progress is called after each org.
func RenameOrgDatabases(ctx context.Context, cfg Config, progress func(orgKey string, err error)) (*orgdb.RenameResult, error) {
	if cfg.DatabaseURL == "" {
		return nil, errors.New("database URL is required (--database-url or " + EnvDatabaseURL + ")")
	}
	cfg = cfg.WithDefaults()
	cfg.Roles = nil // no maintenance role: no reconcile, no key creation
	if _, err := migrate.Up(ctx, cfg.DatabaseURL, cfg.Logger); err != nil {
		return nil, err
	}
	pool, err := openSmallPool(ctx, cfg, 4)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	_, svc, err := buildSecrets(ctx, cfg, pool)
	if err != nil {
		return nil, err
	}
	return svc.RenameOrgDatabases(ctx, progress)
}
