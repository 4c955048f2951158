package fanout

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/webhookdb-go/webhookdb/internal/pgerr"
	"github.com/webhookdb-go/webhookdb/internal/staging"
)

// The functions here answer questions about the fanout from its tables and its slot; they need no running
// Consumer, so any process with the application database can serve them.

// ChangeError is a change the fanout could not apply yet (parked) or ever (failed).
type ChangeError struct {
	// ID names a failed change for RetryError and SkipError; null for a parked one (parked changes drain in
	// order by themselves, and RetryErrors makes them due now).
	ID            *int64     `json:"id"`
	Kind          string     `json:"kind"` // parked or failed
	Integration   string     `json:"integration"`
	WebhookID     int64      `json:"webhook_id"`
	ReceivedAt    time.Time  `json:"received_at"`
	Attempts      int        `json:"attempts"`
	Error         string     `json:"error"`
	NextAttemptAt *time.Time `json:"next_attempt_at"`
	At            time.Time  `json:"at"`
}

// ListErrors returns an org's parked and failed changes, newest first; integrationID 0 means all.
func ListErrors(ctx context.Context, pool *pgxpool.Pool, orgID, integrationID int64, limit int) ([]ChangeError, error) {
	rows, err := pool.Query(ctx, `
		SELECT * FROM (
			SELECT NULL::bigint AS id, 'parked' AS kind, i.opaque_id, p.webhook_id, p.received_at, p.attempts, p.last_error AS error, p.next_attempt_at, p.parked_at AS at
			FROM fanout.parked_changes p JOIN service_integrations i ON i.id = p.integration_id
			WHERE p.org_id = $1 AND ($2 = 0 OR p.integration_id = $2)
			UNION ALL
			SELECT f.id, 'failed', i.opaque_id, f.webhook_id, f.received_at, 1, f.error, NULL, f.failed_at
			FROM fanout.failed_changes f JOIN service_integrations i ON i.id = f.integration_id
			WHERE f.org_id = $1 AND ($2 = 0 OR f.integration_id = $2)
		) e ORDER BY at DESC LIMIT $3`, orgID, integrationID, limit)
	if err != nil {
		return nil, fmt.Errorf("error listing fanout errors: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (ChangeError, error) {
		var e ChangeError
		err := row.Scan(&e.ID, &e.Kind, &e.Integration, &e.WebhookID, &e.ReceivedAt, &e.Attempts, &e.Error, &e.NextAttemptAt, &e.At)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("error listing fanout errors: %w", err)
	}
	return out, nil
}

// ErrNoSuchError means the org has no failed change with that id.
var ErrNoSuchError = errors.New("no such failed change")

// RetryErrors makes an org's parked changes due now, and sends its failed ones through the fanout again (stored
// again in staging from their own payload copies, pointing at their originals): useful once the cause is
// fixed, harmless otherwise (a change that fails again is listed again). It returns how many changes it retried.
func RetryErrors(ctx context.Context, pool *pgxpool.Pool, orgID, integrationID int64) (int64, error) {
	var total int64
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE fanout.parked_changes SET next_attempt_at = now() WHERE org_id = $1 AND ($2 = 0 OR integration_id = $2)`, orgID, integrationID)
		if err != nil {
			return err
		}
		total += tag.RowsAffected()
		n, err := resubmitFailed(ctx, tx, `DELETE FROM fanout.failed_changes WHERE org_id = $1 AND ($2 = 0 OR integration_id = $2)`, orgID, integrationID)
		total += n
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("error retrying fanout errors: %w", err)
	}
	return total, nil
}

// RetryError sends one of an org's failed changes (its ID in ListErrors) through the fanout again, from its
// payload copy, so it works after the staging partition it came from is gone. It returns 1, or
// ErrNoSuchError.
func RetryError(ctx context.Context, pool *pgxpool.Pool, orgID, id int64) (int64, error) {
	var n int64
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var err error
		n, err = resubmitFailed(ctx, tx, `DELETE FROM fanout.failed_changes WHERE org_id = $1 AND id = $2`, orgID, id)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("error retrying failed change %d: %w", id, err)
	}
	if n == 0 {
		return 0, ErrNoSuchError
	}
	return n, nil
}

// resubmitFailed deletes failed changes (deleteSQL, without RETURNING) and stores them again into staging: from
// their payload copies, or, for changes recorded before payloads were kept, from their staging rows.
func resubmitFailed(ctx context.Context, tx pgx.Tx, deleteSQL string, args ...any) (int64, error) {
	rows, err := tx.Query(ctx, deleteSQL+` RETURNING org_id, integration_id, received_at, webhook_id, body IS NOT NULL,
		coalesce(delivery_id, ''), coalesce(content_type, ''), headers, body, original_received_at,
		coalesce(source, 'webhook'), coalesce(backfill_job_id, 0)`, args...)
	if err != nil {
		return 0, err
	}
	var (
		payloads []staging.Payload
		refs     []staging.Ref
	)
	for rows.Next() {
		var (
			p        staging.Payload
			has      bool
			original *time.Time
		)
		if err := rows.Scan(&p.OrgID, &p.IntegrationID, &p.ReceivedAt, &p.ID, &has, &p.DeliveryID, &p.ContentType, &p.Headers, &p.Body, &original,
			&p.Source, &p.BackfillJobID); err != nil {
			rows.Close()
			return 0, err
		}
		if !has {
			refs = append(refs, p.Ref)
			continue
		}
		if original != nil {
			p.OriginalReceivedAt = *original
		}
		payloads = append(payloads, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	n, err := staging.StorePayloads(ctx, tx, payloads)
	if err != nil {
		return 0, err
	}
	m, err := staging.Resubmit(ctx, tx, refs)
	if err != nil {
		return 0, err
	}
	if m < int64(len(refs)) {
		// Retrying would delete them for nothing: keep them, listed, for the org to skip.
		return 0, fmt.Errorf("%d failed change(s) recorded without a payload copy have no staging row any more: skip them by id", int64(len(refs))-m)
	}
	return n + m, nil
}

// SkipError drops one of an org's failed changes for good: the org's explicit decision that it is not to be
// applied. It returns ErrNoSuchError when the org has no failed change with that id.
func SkipError(ctx context.Context, pool *pgxpool.Pool, orgID, id int64) error {
	tag, err := pool.Exec(ctx, `DELETE FROM fanout.failed_changes WHERE org_id = $1 AND id = $2`, orgID, id)
	if err != nil {
		return fmt.Errorf("error skipping failed change %d: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNoSuchError
	}
	return nil
}

// Status is the fanout's state as its slot and tables show it.
type Status struct {
	Slot              string     `json:"slot"`
	Exists            bool       `json:"exists"`
	Active            *bool      `json:"active,omitempty"`
	ConfirmedFlushLSN *string    `json:"confirmed_flush_lsn,omitempty"`
	LagBytes          *int64     `json:"lag_bytes,omitempty"`
	WALStatus         *string    `json:"wal_status,omitempty"`
	ParkedChanges     int64      `json:"parked_changes"`
	OrgsWithParked    int64      `json:"orgs_with_parked_changes"`
	FailedChanges     int64      `json:"failed_changes"`
	OldestParkedAt    *time.Time `json:"oldest_parked_at"`
}

// ReadStatus reads the state of the fanout consuming slot.
func ReadStatus(ctx context.Context, pool *pgxpool.Pool, slot string) (*Status, error) {
	st := &Status{Slot: slot, Exists: true}
	err := pool.QueryRow(ctx, `
		SELECT active, confirmed_flush_lsn::text, (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint, wal_status
		FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&st.Active, &st.ConfirmedFlushLSN, &st.LagBytes, &st.WALStatus)
	if errors.Is(err, pgx.ErrNoRows) {
		st.Exists = false
	} else if err != nil {
		return nil, fmt.Errorf("error reading the slot: %w", err)
	}
	if err := pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT org_id), min(parked_at) FROM fanout.parked_changes`).
		Scan(&st.ParkedChanges, &st.OrgsWithParked, &st.OldestParkedAt); err != nil {
		return nil, fmt.Errorf("error counting parked changes: %w", err)
	}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM fanout.failed_changes`).Scan(&st.FailedChanges); err != nil {
		return nil, fmt.Errorf("error counting failed changes: %w", err)
	}
	return st, nil
}

// ParkedHolder tells staging upkeep which days parked changes still point into, so their partitions stay.
type ParkedHolder struct{ Pool *pgxpool.Pool }

// RowsHeld counts the parked changes whose staging rows were received in [from, to).
func (h ParkedHolder) RowsHeld(ctx context.Context, from, to time.Time) (int64, error) {
	var n int64
	if err := h.Pool.QueryRow(ctx, `SELECT count(*) FROM fanout.parked_changes WHERE received_at >= $1 AND received_at < $2`, from, to).Scan(&n); err != nil {
		return 0, fmt.Errorf("error counting parked changes: %w", err)
	}
	return n, nil
}

// ErrSlotActive means the slot to re-create is held by a consumer that would not let go.
var ErrSlotActive = errors.New("replication slot is in use")

// RecreateSlot drops the slot when Postgres has invalidated it (wal_status lost: the WAL it needed is gone)
// or it is missing, and creates it anew at the current position. Changes committed before that are not in
// the new slot: a resync (staging.StartResync) re-applies them. A healthy slot is left alone (recreated false).
func RecreateSlot(ctx context.Context, pool *pgxpool.Pool, slot string) (recreated bool, err error) {
	var walStatus *string
	var activePID *int32
	err = pool.QueryRow(ctx, `SELECT wal_status, active_pid FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&walStatus, &activePID)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return false, fmt.Errorf("error reading replication slot %s: %w", slot, err)
	case walStatus == nil || *walStatus != "lost":
		return false, nil
	default:
		if activePID != nil {
			// A fanout retrying its session on the dead slot; it reconnects to the new one.
			if _, err := pool.Exec(ctx, `SELECT pg_terminate_backend($1)`, *activePID); err != nil {
				return false, fmt.Errorf("error ending the session on slot %s: %w", slot, err)
			}
			if err := waitSlotInactive(ctx, pool, slot); err != nil {
				return false, err
			}
		}
		if _, err := pool.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, slot); err != nil {
			if pgerr.Is(err, pgerrcode.ObjectInUse) {
				return false, fmt.Errorf("%w: %s: %w", ErrSlotActive, slot, err)
			}
			return false, fmt.Errorf("error dropping replication slot %s: %w", slot, err)
		}
	}
	if _, err := pool.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot); err != nil && !pgerr.Is(err, pgerrcode.DuplicateObject) {
		return false, fmt.Errorf("error creating replication slot %s: %w", slot, err)
	}
	return true, nil
}

// waitSlotInactive waits (up to 10 s) for the session on a slot to end after it was terminated.
func waitSlotInactive(ctx context.Context, pool *pgxpool.Pool, slot string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		var active bool
		if err := pool.QueryRow(ctx, `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&active); err != nil || !active {
			if errors.Is(err, pgx.ErrNoRows) {
				return nil
			}
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %s", ErrSlotActive, slot)
		case <-t.C:
		}
	}
}
