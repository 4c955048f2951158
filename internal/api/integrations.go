package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/gorilla/mux"

	"github.com/webhookdb-go/webhookdb/ingest/verify"
	"github.com/webhookdb-go/webhookdb/internal/backfill"
	"github.com/webhookdb-go/webhookdb/internal/integrations"
	"github.com/webhookdb-go/webhookdb/internal/replicator"
	"github.com/webhookdb-go/webhookdb/internal/staging"
)

func (a *API) view(in *integrations.Integration) Integration {
	v := Integration{
		OpaqueID: in.OpaqueID, Service: in.Service, TableName: in.TableName,
		WebhookURL: a.cfg.PublicURL + "/v1/webhooks/" + in.OpaqueID,
		Config:     in.Config, BodyLimitBytes: in.BodyLimitBytes, CreatedAt: in.CreatedAt, UpdatedAt: in.UpdatedAt,
	}
	v.Verifier, _ = in.VerifierConfig()
	return v
}

// integration loads {opaque_id} within the request's org; another org's integration is "not found".
func (a *API) integration(r *http.Request) (*integrations.Integration, error) {
	in, err := integrations.ByOpaqueID(r.Context(), a.pool, mux.Vars(r)["opaque_id"])
	if errors.Is(err, integrations.ErrNotFound) || (err == nil && (in.OrgID != orgFrom(r).ID || in.DeletedAt != nil)) {
		return nil, errNotFound("integration")
	}
	return in, err
}

func (a *API) listIntegrations(w http.ResponseWriter, r *http.Request) error {
	rows, err := a.pool.Query(r.Context(), `SELECT opaque_id FROM service_integrations WHERE org_id = $1 AND deleted_at IS NULL ORDER BY created_at`, orgFrom(r).ID)
	if err != nil {
		return wrapf(err, "error listing integrations")
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		ids = append(ids, id)
	}
	rows.Close()
	out := []Integration{}
	for _, id := range ids {
		in, err := integrations.ByOpaqueID(r.Context(), a.pool, id)
		if err != nil {
			return err
		}
		out = append(out, a.view(in))
	}
	writeJSON(w, http.StatusOK, IntegrationList{Integrations: out})
	return nil
}

func (a *API) createIntegration(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Service        string          `json:"service"`
		Secret         string          `json:"secret"`
		Verifier       *verify.Config  `json:"verifier"`
		Config         json.RawMessage `json:"config"`
		BodyLimitBytes *int64          `json:"body_limit_bytes"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	if _, ok := replicator.Lookup(in.Service); !ok {
		return errInvalid("service", "unknown service "+in.Service+" (see `webhookdb services list`)")
	}
	if in.BodyLimitBytes != nil && (*in.BodyLimitBytes < 1 || *in.BodyLimitBytes > 64<<20) {
		return errInvalid("body_limit_bytes", "must be between 1 and 67108864")
	}
	created, secret, err := integrations.Create(r.Context(), a.pool, a.cfg.Box, integrations.CreateParams{
		OrgID: orgFrom(r).ID, Service: in.Service, Secret: in.Secret, VerifierOverride: in.Verifier, Config: in.Config, BodyLimitBytes: in.BodyLimitBytes,
	})
	switch {
	case errors.Is(err, verify.ErrInvalidConfig):
		return errInvalid("verifier", err.Error())
	case errors.Is(err, verify.ErrInvalidSecret):
		return errInvalid("secret", err.Error())
	case errors.Is(err, replicator.ErrInvalidConfig):
		return errInvalid("config", err.Error())
	case err != nil:
		return err
	}
	if a.cfg.Provisioner != nil {
		if err := a.cfg.Provisioner.EnsureTable(r.Context(), orgFrom(r).ID, created.OpaqueID); err != nil {
			a.logger.WarnContext(r.Context(), "table not created yet; the fanout creates it on the first webhook", "opaque_id", created.OpaqueID, "error", err.Error())
		}
	}
	writeJSON(w, http.StatusCreated, IntegrationCreated{Integration: a.view(created), Secret: secret})
	return nil
}

func (a *API) getIntegration(w http.ResponseWriter, r *http.Request) error {
	in, err := a.integration(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, IntegrationEnvelope{Integration: a.view(in)})
	return nil
}

func (a *API) updateIntegration(w http.ResponseWriter, r *http.Request) error {
	in, err := a.integration(r)
	if err != nil {
		return err
	}
	var patch struct {
		Verifier       *verify.Config  `json:"verifier"`
		Config         json.RawMessage `json:"config"`
		BodyLimitBytes *int64          `json:"body_limit_bytes"`
	}
	if err := decode(r, &patch); err != nil {
		return err
	}
	if patch.Verifier != nil {
		if err := patch.Verifier.Validate(); err != nil {
			return errInvalid("verifier", err.Error())
		}
		b, _ := json.Marshal(patch.Verifier)
		in.VerifierOverride = b
	}
	if patch.Config != nil {
		if _, err := replicator.Resolve(in.Service, patch.Config); err != nil {
			return errInvalid("config", err.Error())
		}
		in.Config = patch.Config
	}
	if patch.BodyLimitBytes != nil {
		if *patch.BodyLimitBytes < 1 || *patch.BodyLimitBytes > 64<<20 {
			return errInvalid("body_limit_bytes", "must be between 1 and 67108864")
		}
		in.BodyLimitBytes = patch.BodyLimitBytes
	}
	_, err = a.pool.Exec(r.Context(), `UPDATE service_integrations SET verifier = $2, config = $3, body_limit_bytes = $4 WHERE id = $1`,
		in.ID, in.VerifierOverride, in.Config, in.BodyLimitBytes)
	if err != nil {
		return wrapf(err, "error updating integration")
	}
	in, err = integrations.ByOpaqueID(r.Context(), a.pool, in.OpaqueID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, IntegrationEnvelope{Integration: a.view(in)})
	return nil
}

func (a *API) deleteIntegration(w http.ResponseWriter, r *http.Request) error {
	in, err := a.integration(r)
	if err != nil {
		return err
	}
	if err := integrations.Delete(r.Context(), a.pool, in.OpaqueID); err != nil {
		return err
	}
	if err := backfill.CancelIntegration(r.Context(), a.pool, in.ID, "the integration was deleted"); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, Deleted{Deleted: in.OpaqueID, Note: "its URL now answers 410 Gone; the table stays in your database"})
	return nil
}

func (a *API) rollSecret(w http.ResponseWriter, r *http.Request) error {
	in, err := a.integration(r)
	if err != nil {
		return err
	}
	var body struct {
		Secret      string `json:"secret"`
		GracePeriod string `json:"grace_period"`
	}
	if err := decode(r, &body); err != nil {
		return err
	}
	grace, err := gracePeriod(body.GracePeriod)
	if err != nil {
		return err
	}
	secret, err := integrations.RollSecret(r.Context(), a.pool, a.cfg.Box, in.OpaqueID, body.Secret, grace)
	if errors.Is(err, verify.ErrInvalidSecret) {
		return errInvalid("secret", err.Error())
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, SecretRolled{Integration: a.view(in), Secret: secret, PreviousValidUntil: time.Now().Add(grace).UTC()})
	return nil
}

func (a *API) integrationStats(w http.ResponseWriter, r *http.Request) error {
	in, err := a.integration(r)
	if err != nil {
		return err
	}
	accepted, rejected, err := staging.Counts(r.Context(), a.pool, in.ID, time.Now().Add(-7*24*time.Hour))
	if err != nil {
		return err
	}
	recent, err := a.deliveries(r, deliveryFilter{integrationID: in.ID, limit: 10})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, IntegrationStats{
		Integration:       a.view(in),
		AcceptedLast7d:    accepted,
		RejectedLast7d:    rejected,
		RecentDeliveries:  recent,
		CountsWindowStart: time.Now().Add(-7 * 24 * time.Hour).UTC(),
	})
	return nil
}
