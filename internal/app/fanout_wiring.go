package app

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/webhookdb-go/webhookdb/fanout"
)

// fanoutState answers the API's questions about the fanout from its tables and its slot.
type fanoutState struct {
	pool *pgxpool.Pool
	slot string
}

func (f fanoutState) ListErrors(ctx context.Context, orgID, integrationID int64, limit int) ([]fanout.ChangeError, error) {
	return fanout.ListErrors(ctx, f.pool, orgID, integrationID, limit)
}

func (f fanoutState) RetryErrors(ctx context.Context, orgID, integrationID int64) (int64, error) {
	return fanout.RetryErrors(ctx, f.pool, orgID, integrationID)
}

func (f fanoutState) RetryError(ctx context.Context, orgID, id int64) (int64, error) {
	return fanout.RetryError(ctx, f.pool, orgID, id)
}

func (f fanoutState) SkipError(ctx context.Context, orgID, id int64) error {
	return fanout.SkipError(ctx, f.pool, orgID, id)
}

func (f fanoutState) FanoutStatus(ctx context.Context) (*fanout.Status, error) {
	return fanout.ReadStatus(ctx, f.pool, f.slot)
}
