package app

import (
	"context"
	"log/slog"
	"strconv"

	"github.com/webhookdb-go/webhookdb/internal/alerts"

	"github.com/webhookdb-go/webhookdb/internal/backfill"
)

// buildBackfill makes the backfill service when the process has the API (credentials, jobs) or maintenance (the
// workers, on a pool of their own so a large backfill never takes the API's or the fanout's connections).
func (a *App) buildBackfill(ctx context.Context, cfg Config, alertSvc *alerts.Service) (*backfill.Service, error) {
	if !cfg.Has(RoleAPI) && !cfg.Has(RoleMaintenance) {
		return nil, nil
	}
	bc := cfg.Backfill.WithDefaults()
	bc.Box, bc.Logger, bc.Pool, bc.Registerer = a.box, a.logger, a.pool, a.registry
	if alertSvc != nil {
		// A vendor refusing the stored key is the org's to fix: tell it (alerts), not only errors list.
		bc.OnCredentialsFailed = func(ctx context.Context, orgID, integrationID int64, err error) {
			if aerr := alertSvc.BackfillCredentialsFailed(ctx, orgID, strconv.FormatInt(integrationID, 10), err); aerr != nil {
				a.logger.WarnContext(ctx, "error alerting a backfill credential failure", slog.Int64("org_id", orgID), slog.String("error", aerr.Error()))
			}
		}
	}
	if cfg.Has(RoleMaintenance) {
		var err error
		if a.backfillPool, err = openSmallPool(ctx, cfg, int32(bc.Workers+2)); err != nil {
			return nil, err
		}
		bc.Pool = a.backfillPool
	}
	svc, err := backfill.New(bc)
	if err != nil {
		return nil, err
	}
	if cfg.Has(RoleMaintenance) {
		a.workers = append(a.workers, svc.Run)
	}
	a.backfill = svc
	return svc, nil
}

// Backfill is the backfill service (nil without the API and maintenance roles).
func (a *App) Backfill() *backfill.Service { return a.backfill }
