package server

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// fanoutState answers the API's questions about the fanout from its tables and its slot.
type fanoutState struct {
	pool *pgxpool.Pool
	slot string
}

func (f fanoutState) ListErrors(ctx context.Context, orgID, integrationID int64, limit int) ([]map[string]any, error) {
	rows, err := f.pool.Query(ctx, `
		SELECT * FROM (
			SELECT 'parked' AS kind, i.opaque_id, p.webhook_id, p.received_at, p.attempts, p.last_error AS error, p.next_attempt_at, p.parked_at AS at
			FROM fanout.parked_changes p JOIN service_integrations i ON i.id = p.integration_id
			WHERE p.org_id = $1 AND ($2 = 0 OR p.integration_id = $2)
			UNION ALL
			SELECT 'failed', i.opaque_id, f.webhook_id, f.received_at, 1, f.error, NULL, f.failed_at
			FROM fanout.failed_changes f JOIN service_integrations i ON i.id = f.integration_id
			WHERE f.org_id = $1 AND ($2 = 0 OR f.integration_id = $2)
		) e ORDER BY at DESC LIMIT $3`, orgID, integrationID, limit)
	if err != nil {
		return nil, fmt.Errorf("error listing fanout errors: %w", err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (map[string]any, error) {
		var kind, integration, msg string
		var webhookID int64
		var attempts int
		var receivedAt, at time.Time
		var next *time.Time
		if err := row.Scan(&kind, &integration, &webhookID, &receivedAt, &attempts, &msg, &next, &at); err != nil {
			return nil, err
		}
		return map[string]any{"kind": kind, "integration": integration, "webhook_id": webhookID, "received_at": receivedAt,
			"attempts": attempts, "error": msg, "next_attempt_at": next, "at": at}, nil
	})
}

// RetryErrors makes parked changes due now, and sends failed ones through the fanout again (a replay of the
// stored delivery): useful once the cause is fixed, harmless otherwise (it fails again and is listed again).
func (f fanoutState) RetryErrors(ctx context.Context, orgID, integrationID int64) (int64, error) {
	var total int64
	err := pgx.BeginFunc(ctx, f.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE fanout.parked_changes SET next_attempt_at = now() WHERE org_id = $1 AND ($2 = 0 OR integration_id = $2)`, orgID, integrationID)
		if err != nil {
			return err
		}
		total += tag.RowsAffected()
		tag, err = tx.Exec(ctx, `
			WITH retried AS (
				DELETE FROM fanout.failed_changes WHERE org_id = $1 AND ($2 = 0 OR integration_id = $2)
				RETURNING webhook_id, received_at
			)
			INSERT INTO staging.webhooks (received_at, org_id, integration_id, delivery_id, method, path, query, content_type, headers, body, accepted, replay_of)
			SELECT w.received_at, w.org_id, w.integration_id, w.delivery_id, w.method, w.path, w.query, w.content_type, w.headers, w.body, true, COALESCE(w.replay_of, w.id)
			FROM retried r JOIN staging.webhooks w ON w.id = r.webhook_id AND w.received_at = r.received_at`, orgID, integrationID)
		if err != nil {
			return err
		}
		total += tag.RowsAffected()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("error retrying fanout errors: %w", err)
	}
	return total, nil
}

func (f fanoutState) FanoutStatus(ctx context.Context) (map[string]any, error) {
	st := map[string]any{"slot": f.slot}
	var active *bool
	var lagBytes *int64
	var confirmed, walStatus *string
	err := f.pool.QueryRow(ctx, `
		SELECT active, confirmed_flush_lsn::text, (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint, wal_status
		FROM pg_replication_slots WHERE slot_name = $1`, f.slot).Scan(&active, &confirmed, &lagBytes, &walStatus)
	if err == pgx.ErrNoRows {
		st["exists"] = false
	} else if err != nil {
		return nil, fmt.Errorf("error reading the slot: %w", err)
	} else {
		st["exists"], st["active"], st["confirmed_flush_lsn"], st["lag_bytes"], st["wal_status"] = true, active, confirmed, lagBytes, walStatus
	}
	var parked, parkedOrgs, failed int64
	if err := f.pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT org_id) FROM fanout.parked_changes`).Scan(&parked, &parkedOrgs); err != nil {
		return nil, fmt.Errorf("error counting parked changes: %w", err)
	}
	if err := f.pool.QueryRow(ctx, `SELECT count(*) FROM fanout.failed_changes`).Scan(&failed); err != nil {
		return nil, fmt.Errorf("error counting failed changes: %w", err)
	}
	st["parked_changes"], st["orgs_with_parked_changes"], st["failed_changes"] = parked, parkedOrgs, failed
	var oldestUnapplied *time.Time
	_ = f.pool.QueryRow(ctx, `SELECT min(parked_at) FROM fanout.parked_changes`).Scan(&oldestUnapplied)
	st["oldest_parked_at"] = oldestUnapplied
	return st, nil
}
