package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/internal/staging"
)

type deliveryFilter struct {
	integrationID int64
	outcome       string
	limit         int
	// sources narrows the list; nil: every source but backfill (objects fetched from a vendor are not deliveries)
	sources []staging.Source
}

// deliverySources are the sources listed unless asked otherwise.
var deliverySources = []staging.Source{staging.SourceWebhook, staging.SourceReplay, staging.SourceResync}

// integrationNames maps the org's integration ids to their opaque ids and services, deleted ones included
// (their deliveries are still listed).
func (a *API) integrationNames(r *http.Request) (map[int64][2]string, error) {
	rows, err := a.pool.Query(r.Context(), `SELECT id, opaque_id, service FROM service_integrations WHERE org_id = $1`, orgFrom(r).ID)
	if err != nil {
		return nil, wrapf(err, "error listing integrations")
	}
	out := map[int64][2]string{}
	var id int64
	var opaque, service string
	_, err = pgx.ForEachRow(rows, []any{&id, &opaque, &service}, func() error {
		out[id] = [2]string{opaque, service}
		return nil
	})
	if err != nil {
		return nil, wrapf(err, "error listing integrations")
	}
	return out, nil
}

func (a *API) deliveryView(s *staging.Stored, names map[int64][2]string, full bool) Delivery {
	d := Delivery{
		ID: s.ID, ReceivedAt: s.ReceivedAt, Integration: names[s.IntegrationID][0], Service: names[s.IntegrationID][1],
		Method: s.Method, Path: s.Path, Outcome: "accepted", Bytes: s.BodyBytes,
		BodyTruncated: s.BodyTruncated, ContentType: s.ContentType, Query: s.Query,
	}
	if s.DeliveryID != "" {
		d.DeliveryID = &s.DeliveryID
	}
	if !s.Accepted {
		d.Outcome = "rejected"
		d.Reason = &s.RejectedReason
	}
	if s.ReplayOf != 0 {
		d.ReplayOf = &s.ReplayOf
	}
	d.Source = string(s.Source)
	if s.BackfillJobID != 0 {
		d.BackfillJobID = &s.BackfillJobID
	}
	if full {
		_ = json.Unmarshal(s.Headers, &d.Headers)
		if json.Valid(s.Body) || isText(s.Body) {
			b := string(s.Body)
			d.Body = &b
		} else {
			d.BodyBase64 = s.Body
		}
	}
	return d
}

func (a *API) deliveries(r *http.Request, f deliveryFilter) ([]Delivery, error) {
	sf := staging.Filter{OrgID: orgFrom(r).ID, IntegrationID: f.integrationID, Limit: f.limit, Sources: f.sources}
	if sf.Sources == nil {
		sf.Sources = deliverySources
	}
	if f.outcome != "" {
		accepted := f.outcome == "accepted"
		sf.Accepted = &accepted
	}
	list, err := staging.List(r.Context(), a.pool, sf)
	if err != nil {
		return nil, err
	}
	names, err := a.integrationNames(r)
	if err != nil {
		return nil, err
	}
	out := make([]Delivery, len(list))
	for i := range list {
		out[i] = a.deliveryView(&list[i], names, false)
	}
	return out, nil
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
	if src := r.URL.Query().Get("source"); src != "" {
		for _, s := range strings.Split(src, ",") {
			switch staging.Source(s) {
			case staging.SourceWebhook, staging.SourceBackfill, staging.SourceReplay, staging.SourceResync:
				f.sources = append(f.sources, staging.Source(s))
			default:
				return errInvalid("source", "webhook, backfill, replay or resync (comma-separated)")
			}
		}
	}
	if r.URL.Query().Get("include_backfill") == "true" {
		f.sources = append(f.sources, append(deliverySources, staging.SourceBackfill)...)
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
	writeJSON(w, http.StatusOK, DeliveryList{Webhooks: list})
	return nil
}

func (a *API) getWebhook(w http.ResponseWriter, r *http.Request) error {
	id, err := strconv.ParseInt(mux.Vars(r)["id"], 10, 64)
	if err != nil || id <= 0 {
		return errNotFound("webhook")
	}
	stored, err := staging.Get(r.Context(), a.pool, orgFrom(r).ID, id)
	if errors.Is(err, staging.ErrNotFound) {
		return errNotFound("webhook")
	}
	if err != nil {
		return err
	}
	names, err := a.integrationNames(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, DeliveryEnvelope{Webhook: a.deliveryView(stored, names, true)})
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
	if ok, wait := a.replays.Allow(fmt.Sprint(orgFrom(r).ID), time.Now()); !ok {
		return errRateLimited("this organization replayed often lately", wait)
	}
	// Deleted integrations are left out: their tables may be gone.
	rows, err := a.pool.Query(r.Context(), `SELECT id FROM service_integrations
		WHERE org_id = $1 AND deleted_at IS NULL AND ($2 = '' OR opaque_id = $2)`, orgFrom(r).ID, in.Integration)
	if err != nil {
		return wrapf(err, "error listing integrations")
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return wrapf(err, "error listing integrations")
	}
	if in.Integration != "" && len(ids) == 0 {
		return errNotFound("integration")
	}
	n, err := staging.Replay(r.Context(), a.pool, staging.Window{OrgID: orgFrom(r).ID, IntegrationIDs: ids, Since: in.Since, Until: in.Until})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, ReplayResult{Replayed: n, Since: in.Since, Until: in.Until})
	return nil
}
