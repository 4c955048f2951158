package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"
	"github.com/jackc/pgx/v5"
)

// delivery is one stored webhook request.
type delivery struct {
	ID            int64             `json:"id"`
	ReceivedAt    time.Time         `json:"received_at"`
	Integration   string            `json:"integration"`
	Service       string            `json:"service"`
	DeliveryID    *string           `json:"delivery_id"`
	Method        string            `json:"method"`
	Path          string            `json:"path"`
	Outcome       string            `json:"outcome"`
	Reason        *string           `json:"reason,omitempty"`
	ReplayOf      *int64            `json:"replay_of,omitempty"`
	Bytes         int               `json:"bytes"`
	Headers       map[string]string `json:"headers,omitempty"`
	Body          *string           `json:"body,omitempty"`
	BodyBase64    []byte            `json:"body_base64,omitempty"`
	BodyTruncated bool              `json:"body_truncated,omitempty"`
	ContentType   string            `json:"content_type,omitempty"`
	Query         string            `json:"query,omitempty"`
}

type deliveryFilter struct {
	integrationID int64
	outcome       string
	limit         int
	id            int64
	full          bool
}

func (a *API) deliveries(r *http.Request, f deliveryFilter) ([]delivery, error) {
	q := `
		SELECT w.id, w.received_at, i.opaque_id, i.service, w.delivery_id, w.method, w.path, w.accepted, w.rejected_reason,
		       w.replay_of, length(w.body), w.headers, w.body, w.body_truncated, w.content_type, w.query
		FROM staging.webhooks w JOIN service_integrations i ON i.id = w.integration_id
		WHERE w.org_id = $1
		  AND ($2 = 0 OR w.integration_id = $2)
		  AND ($3 = '' OR ($3 = 'accepted') = w.accepted)
		  AND ($4 = 0 OR w.id = $4)
		ORDER BY w.received_at DESC, w.id DESC
		LIMIT $5`
	rows, err := a.pool.Query(r.Context(), q, orgFrom(r).ID, f.integrationID, f.outcome, f.id, f.limit)
	if err != nil {
		return nil, wrapf(err, "error listing deliveries")
	}
	defer rows.Close()
	out := []delivery{}
	for rows.Next() {
		var d delivery
		var accepted bool
		var headers map[string]string
		var body []byte
		if err := rows.Scan(&d.ID, &d.ReceivedAt, &d.Integration, &d.Service, &d.DeliveryID, &d.Method, &d.Path, &accepted, &d.Reason,
			&d.ReplayOf, &d.Bytes, &headers, &body, &d.BodyTruncated, &d.ContentType, &d.Query); err != nil {
			return nil, wrapf(err, "error reading delivery")
		}
		d.Outcome = "accepted"
		if !accepted {
			d.Outcome = "rejected"
		}
		if f.full {
			d.Headers = headers
			if json.Valid(body) || isText(body) {
				s := string(body)
				d.Body = &s
			} else {
				d.BodyBase64 = body
			}
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

func isText(b []byte) bool {
	for _, c := range b {
		if c < 0x09 || (c > 0x0d && c < 0x20) {
			return false
		}
	}
	return true
}

func (a *API) listWebhooks(w http.ResponseWriter, r *http.Request) error {
	f := deliveryFilter{limit: 50, outcome: r.URL.Query().Get("outcome")}
	if f.outcome != "" && f.outcome != "accepted" && f.outcome != "rejected" {
		return errInvalid("outcome", "accepted or rejected")
	}
	if l := r.URL.Query().Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			return errInvalid("limit", "a number from 1 to 1000")
		}
		f.limit = n
	}
	if id := r.URL.Query().Get("integration"); id != "" {
		var intID int64
		err := a.pool.QueryRow(r.Context(), `SELECT id FROM service_integrations WHERE opaque_id = $1 AND org_id = $2`, id, orgFrom(r).ID).Scan(&intID)
		if errors.Is(err, pgx.ErrNoRows) {
			return errNotFound("integration")
		}
		if err != nil {
			return err
		}
		f.integrationID = intID
	}
	list, err := a.deliveries(r, f)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"webhooks": list})
	return nil
}

func (a *API) getWebhook(w http.ResponseWriter, r *http.Request) error {
	id, err := strconv.ParseInt(mux.Vars(r)["id"], 10, 64)
	if err != nil || id <= 0 {
		return errNotFound("webhook")
	}
	list, err := a.deliveries(r, deliveryFilter{id: id, limit: 1, full: true})
	if err != nil {
		return err
	}
	if len(list) == 0 {
		return errNotFound("webhook")
	}
	writeJSON(w, http.StatusOK, map[string]any{"webhook": list[0]})
	return nil
}

// maxReplayWindow bounds one replay, so a typo cannot re-send a week of traffic at once.
const maxReplayWindow = 24 * time.Hour

// replay re-sends the accepted deliveries of a window through the normal fanout path: each is inserted again
// into staging (pointing at its original), and the fanout applies it like any other. Upserts are idempotent
// and monotonic, so replaying twice changes nothing in the org's tables.
func (a *API) replay(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Since       time.Time `json:"since"`
		Until       time.Time `json:"until"`
		Integration string    `json:"integration"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	if in.Since.IsZero() {
		return errInvalid("since", "required (RFC 3339 time)")
	}
	if in.Until.IsZero() {
		in.Until = time.Now()
	}
	if !in.Until.After(in.Since) {
		return errInvalid("until", "must be after since")
	}
	if in.Until.Sub(in.Since) > maxReplayWindow {
		return errInvalid("until", "a replay covers at most 24h; split longer windows")
	}
	var integrationID int64
	if in.Integration != "" {
		err := a.pool.QueryRow(r.Context(), `SELECT id FROM service_integrations WHERE opaque_id = $1 AND org_id = $2 AND deleted_at IS NULL`, in.Integration, orgFrom(r).ID).Scan(&integrationID)
		if errors.Is(err, pgx.ErrNoRows) {
			return errNotFound("integration")
		}
		if err != nil {
			return err
		}
	}
	tag, err := a.pool.Exec(r.Context(), `
		INSERT INTO staging.webhooks (received_at, org_id, integration_id, delivery_id, method, path, query, content_type, headers, body, accepted, replay_of)
		SELECT w.received_at, w.org_id, w.integration_id, w.delivery_id, w.method, w.path, w.query, w.content_type, w.headers, w.body, true, COALESCE(w.replay_of, w.id)
		FROM staging.webhooks w JOIN service_integrations i ON i.id = w.integration_id AND i.deleted_at IS NULL
		WHERE w.org_id = $1 AND w.accepted AND w.replay_of IS NULL
		  AND w.received_at >= $2 AND w.received_at < $3
		  AND ($4 = 0 OR w.integration_id = $4)
		ORDER BY w.received_at, w.id`, orgFrom(r).ID, in.Since, in.Until, integrationID)
	if err != nil {
		return wrapf(err, "error replaying")
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"replayed": tag.RowsAffected(), "since": in.Since, "until": in.Until})
	return nil
}
