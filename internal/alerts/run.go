package alerts

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/smtp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/fanout"
	"github.com/webhookdb-go/webhookdb/internal/outgoing"
)

const failedCursor = "failed_changes"

// Run sends pending alerts and watches for failed changes until ctx ends (the maintenance role runs it).
func (s *Service) Run(ctx context.Context) error {
	tick := time.NewTicker(s.cfg.PollInterval)
	defer tick.Stop()
	for {
		if err := s.Pass(ctx); err != nil && ctx.Err() == nil {
			s.cfg.Logger.WarnContext(ctx, "alerts pass failed", slog.String("error", err.Error()))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// Pass raises alerts for changes that failed since the last pass, then sends what is due.
func (s *Service) Pass(ctx context.Context) error {
	return errors.Join(s.watchFailed(ctx), s.sendDue(ctx))
}

// watchFailed raises one alert per org an hour at most about changes that failed (fanout.failed_changes),
// starting from what failed after the first pass of this installation. The cursor's row is locked for the
// pass: two maintenance processes never count the same change twice.
func (s *Service) watchFailed(ctx context.Context) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var cur fanout.FailedCursor
		var holes []byte
		err := tx.QueryRow(ctx, `SELECT last_id, holes FROM alert_cursors WHERE name = $1 FOR UPDATE`, failedCursor).Scan(&cur.LastID, &holes)
		if errors.Is(err, pgx.ErrNoRows) {
			last, err := fanout.LastFailedID(ctx, tx)
			if err != nil {
				return err
			}
			_, err = tx.Exec(ctx, `INSERT INTO alert_cursors (name, last_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, failedCursor, last)
			return err
		}
		if err != nil {
			return fmt.Errorf("error reading the alert cursor: %w", err)
		}
		if err := json.Unmarshal(holes, &cur.Holes); err != nil {
			return fmt.Errorf("error reading the alert cursor: %w", err)
		}
		sums, next, err := fanout.FailedSince(ctx, tx, cur, s.cfg.Now())
		if err != nil {
			return err
		}
		hour := s.cfg.Now().UTC().Format("2006-01-02T15")
		for _, f := range sums {
			if err := s.raise(ctx, tx, Alert{OrgID: f.OrgID, Kind: KindFailedChanges,
				DedupeKey: KindFailedChanges + ":" + hour,
				Subject:   "Changes could not be applied to your database",
				Detail: map[string]any{"count": f.Count, "first_error": f.FirstError,
					"hint": "`webhookdb errors list` shows them; `webhookdb errors retry ID` or `skip ID`"}}); err != nil {
				return err
			}
		}
		if holes, err = json.Marshal(next.Holes); err != nil {
			return err
		}
		if next.Holes == nil {
			holes = []byte("[]")
		}
		_, err = tx.Exec(ctx, `UPDATE alert_cursors SET last_id = $2, holes = $3 WHERE name = $1`, failedCursor, next.LastID, holes)
		return err
	})
}

type pendingAlert struct {
	id, orgID     int64
	kind, subject string
	detail        []byte
	attempts      int
	createdAt     time.Time
}

// sendDue sends each due alert to every handler of its org; an alert no handler took is retried on Retries,
// then marked failed. An org without handlers has its alerts marked sent (kept, for the record).
func (s *Service) sendDue(ctx context.Context) error {
	now := s.cfg.Now()
	// Claimed with a lease, so two maintenance processes do not both send an alert.
	rows, err := s.pool.Query(ctx, `UPDATE alerts SET next_attempt_at = $2 WHERE id IN (
			SELECT id FROM alerts WHERE state = 'pending' AND next_attempt_at <= $1 ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED)
		RETURNING id, org_id, kind, subject, detail::text, attempts, created_at`, now, now.Add(5*time.Minute))
	if err != nil {
		return fmt.Errorf("error reading due alerts: %w", err)
	}
	var due []pendingAlert
	for rows.Next() {
		var a pendingAlert
		var detail string
		if err := rows.Scan(&a.id, &a.orgID, &a.kind, &a.subject, &detail, &a.attempts, &a.createdAt); err != nil {
			rows.Close()
			return err
		}
		a.detail = []byte(detail)
		due = append(due, a)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	var errs []error
	for _, a := range due {
		sendErr := s.send(ctx, a)
		var err error
		switch {
		case sendErr == nil:
			_, err = s.pool.Exec(ctx, `UPDATE alerts SET state = 'sent', sent_at = $2, attempts = attempts + 1, last_error = NULL WHERE id = $1`, a.id, now)
		case a.attempts < len(s.cfg.Retries):
			_, err = s.pool.Exec(ctx, `UPDATE alerts SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3 WHERE id = $1`,
				a.id, now.Add(s.cfg.Retries[a.attempts]), sendErr.Error())
		default:
			_, err = s.pool.Exec(ctx, `UPDATE alerts SET state = 'failed', attempts = attempts + 1, last_error = $2 WHERE id = $1`, a.id, sendErr.Error())
		}
		if sendErr != nil {
			s.cfg.Logger.WarnContext(ctx, "an alert could not be sent", slog.Int64("alert_id", a.id), slog.Int64("org_id", a.orgID),
				slog.String("error", sendErr.Error()))
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// send gives the alert to every handler of its org it has not reached yet; each handler that takes it is
// recorded at once, so a retry goes only to the ones that failed. The error joins the handlers that failed.
func (s *Service) send(ctx context.Context, a pendingAlert) error {
	rows, err := s.pool.Query(ctx, `SELECT h.id, h.opaque_id, h.kind, h.target, h.secret_enc FROM alert_handlers h
		WHERE h.org_id = $1 AND NOT EXISTS (SELECT FROM alert_sends x WHERE x.alert_id = $2 AND x.handler_id = h.id)
		ORDER BY h.id`, a.orgID, a.id)
	if err != nil {
		return err
	}
	type handler struct {
		rowID            int64
		id, kind, target string
		enc              *string
	}
	var hs []handler
	for rows.Next() {
		var h handler
		if err := rows.Scan(&h.rowID, &h.id, &h.kind, &h.target, &h.enc); err != nil {
			rows.Close()
			return err
		}
		hs = append(hs, h)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	body := fmt.Appendf(nil, `{"type":"alert.%s","timestamp":%q,"data":{"alert_id":%d,"subject":%s,"detail":%s}}`,
		a.kind, a.createdAt.UTC().Format(time.RFC3339Nano), a.id, strconv.Quote(a.subject), a.detail)
	var errs []error
	for _, h := range hs {
		var err error
		switch h.kind {
		case "url":
			err = s.post(ctx, h.id, h.target, *h.enc, a, body)
		case "email":
			err = s.mail(h.target, a)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if _, err := s.pool.Exec(ctx, `INSERT INTO alert_sends (alert_id, handler_id, sent_at) VALUES ($1, $2, $3)
			ON CONFLICT DO NOTHING`, a.id, h.rowID, s.cfg.Now()); err != nil {
			errs = append(errs, fmt.Errorf("error recording that %s got the alert: %w", h.target, err))
		}
	}
	return errors.Join(errs...)
}

func (s *Service) post(ctx context.Context, handlerID, url, enc string, a pendingAlert, body []byte) error {
	secret, err := s.cfg.Box.Decrypt(ctx, secretBinding(handlerID), enc)
	if err != nil {
		return fmt.Errorf("%s: error decrypting the signing secret: %w", url, err)
	}
	key, err := outgoing.SecretKey(string(secret))
	if err != nil {
		return err
	}
	msgID := "msg_alert_" + strconv.FormatInt(a.id, 10)
	resp, err := s.cfg.Client.Post(ctx, url, outgoing.SignedHeader(msgID, s.cfg.Now(), body, key), body)
	if err != nil {
		return fmt.Errorf("%s: %w", url, err)
	}
	if resp.Status < 200 || resp.Status > 299 {
		return fmt.Errorf("%s answered %d", url, resp.Status)
	}
	return nil
}

func (s *Service) mail(to string, a pendingAlert) error {
	if s.cfg.SMTP.Addr == "" {
		return fmt.Errorf("%s: no SMTP server configured", to)
	}
	var msg bytes.Buffer
	fmt.Fprintf(&msg, "From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <alert-%d@webhookdb>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
		s.cfg.SMTP.From, to, mime.QEncoding.Encode("utf-8", "[webhookdb] "+a.subject), a.id)
	fmt.Fprintf(&msg, "%s\r\n\r\n%s\r\n", a.subject, strings.ReplaceAll(string(a.detail), "\n", "\r\n"))
	var auth smtp.Auth
	if s.cfg.SMTP.Username != "" {
		host := s.cfg.SMTP.Addr
		if i := strings.LastIndex(host, ":"); i >= 0 {
			host = host[:i]
		}
		auth = smtp.PlainAuth("", s.cfg.SMTP.Username, s.cfg.SMTP.Password, host)
	}
	if err := smtp.SendMail(s.cfg.SMTP.Addr, auth, s.cfg.SMTP.From, []string{to}, msg.Bytes()); err != nil {
		return fmt.Errorf("%s: %w", to, err)
	}
	return nil
}

// List lists an org's alerts, newest first (the API shows them; tests count them).
func (s *Service) List(ctx context.Context, orgID int64, limit int) ([]Record, error) {
	if limit <= 0 || limit > 500 {
		limit = 100
	}
	rows, err := s.pool.Query(ctx, `SELECT id, kind, subject, detail, state, attempts, last_error, created_at, sent_at
		FROM alerts WHERE org_id = $1 ORDER BY id DESC LIMIT $2`, orgID, limit)
	if err != nil {
		return nil, fmt.Errorf("error listing alerts: %w", err)
	}
	defer rows.Close()
	out := []Record{}
	for rows.Next() {
		var r Record
		if err := rows.Scan(&r.ID, &r.Kind, &r.Subject, &r.Detail, &r.State, &r.Attempts, &r.LastError, &r.CreatedAt, &r.SentAt); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Record is a raised alert.
type Record struct {
	ID        int64          `json:"id"`
	Kind      string         `json:"kind"`
	Subject   string         `json:"subject"`
	Detail    map[string]any `json:"detail"`
	State     string         `json:"state"`
	Attempts  int            `json:"attempts"`
	LastError *string        `json:"last_error,omitempty"`
	CreatedAt time.Time      `json:"created_at"`
	SentAt    *time.Time     `json:"sent_at,omitempty"`
}
