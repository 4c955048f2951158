package subscriptions

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Delivery is one entry of the delivery log.
type Delivery struct {
	ID             int64      `json:"id"`
	Subscription   string     `json:"subscription_id"`
	MessageID      string     `json:"message_id"`
	EventType      string     `json:"event_type"`
	RemoteKey      string     `json:"remote_key"`
	Status         string     `json:"status"`
	Attempts       int        `json:"attempts"`
	NextAttemptAt  *time.Time `json:"next_attempt_at,omitempty"`
	LastAttemptAt  *time.Time `json:"last_attempt_at,omitempty"`
	ResponseStatus *int       `json:"response_status,omitempty"`
	ResponseBody   *string    `json:"response_body,omitempty"`
	LastError      *string    `json:"last_error,omitempty"`
	CreatedAt      time.Time  `json:"created_at"`
	DeliveredAt    *time.Time `json:"delivered_at,omitempty"`
}

// ListParams filter the delivery log.
type ListParams struct {
	// Status: pending, delivered or failed; "" for all.
	Status string
	// Before pages: deliveries with a smaller id.
	Before int64
	// Limit; default 100, at most 1,000.
	Limit int
}

// Deliveries returns a subscription's delivery log, newest first.
func (s *Service) Deliveries(ctx context.Context, orgID int64, opaqueID string, p ListParams) ([]Delivery, error) {
	sub, err := s.Get(ctx, orgID, opaqueID)
	if err != nil {
		return nil, err
	}
	if p.Limit <= 0 || p.Limit > 1000 {
		p.Limit = 100
	}
	if p.Status != "" && p.Status != "pending" && p.Status != "delivered" && p.Status != "failed" {
		return nil, fmt.Errorf("%w: status must be pending, delivered or failed", ErrInvalid)
	}
	rows, err := s.pool.Query(ctx, `
		SELECT id, message_id, event_type, remote_key, status, attempts, next_attempt_at, last_attempt_at, response_status,
			response_body, last_error, created_at, delivered_at
		FROM subscription_deliveries
		WHERE subscription_id = $1 AND ($2 = '' OR status = $2) AND ($3 = 0 OR id < $3)
		ORDER BY id DESC LIMIT $4`, sub.id, p.Status, p.Before, p.Limit)
	if err != nil {
		return nil, fmt.Errorf("error listing deliveries: %w", err)
	}
	defer rows.Close()
	out := []Delivery{}
	for rows.Next() {
		d := Delivery{Subscription: sub.ID}
		if err := rows.Scan(&d.ID, &d.MessageID, &d.EventType, &d.RemoteKey, &d.Status, &d.Attempts, &d.NextAttemptAt, &d.LastAttemptAt,
			&d.ResponseStatus, &d.ResponseBody, &d.LastError, &d.CreatedAt, &d.DeliveredAt); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// Redeliver sends a delivery again (same message id), at once and with a fresh schedule.
func (s *Service) Redeliver(ctx context.Context, orgID, deliveryID int64) (*Delivery, error) {
	// The row as this update left it: the dispatcher may send it again before a later read.
	d := Delivery{}
	err := s.pool.QueryRow(ctx, `
		UPDATE subscription_deliveries d SET status = 'pending', attempts = 0, next_attempt_at = $3, last_error = NULL
		FROM subscriptions s
		WHERE d.id = $1 AND s.id = d.subscription_id AND s.org_id = $2
		RETURNING s.opaque_id, d.id, d.message_id, d.event_type, d.remote_key, d.status, d.attempts, d.next_attempt_at,
			d.last_attempt_at, d.response_status, d.response_body, d.last_error, d.created_at, d.delivered_at`,
		deliveryID, orgID, s.cfg.Now()).Scan(&d.Subscription, &d.ID, &d.MessageID, &d.EventType, &d.RemoteKey, &d.Status, &d.Attempts,
		&d.NextAttemptAt, &d.LastAttemptAt, &d.ResponseStatus, &d.ResponseBody, &d.LastError, &d.CreatedAt, &d.DeliveredAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("error redelivering: %w", err)
	}
	return &d, nil
}

// Recover enables the subscription again and resends its failed deliveries created since since (all: every
// delivery since since, delivered ones too; since zero: from the start of the log). It returns how many.
func (s *Service) Recover(ctx context.Context, orgID int64, opaqueID string, since time.Time, all bool) (int64, error) {
	sub, err := s.Get(ctx, orgID, opaqueID)
	if err != nil {
		return 0, err
	}
	now := s.cfg.Now()
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `UPDATE subscriptions SET disabled_at = NULL, disabled_reason = NULL, failing_since = NULL WHERE id = $1`, sub.id); err != nil {
		return 0, fmt.Errorf("error enabling the subscription: %w", err)
	}
	tag, err := tx.Exec(ctx, `
		UPDATE subscription_deliveries SET status = 'pending', attempts = 0, next_attempt_at = $2, last_error = NULL, locked_until = NULL
		WHERE subscription_id = $1 AND created_at >= $3 AND (status = 'failed' OR ($4 AND status = 'delivered'))`,
		sub.id, now, since, all)
	if err != nil {
		return 0, fmt.Errorf("error resending deliveries: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}
