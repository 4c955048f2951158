package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"

	"github.com/webhookdb-go/webhookdb/internal/backfill"
	"github.com/webhookdb-go/webhookdb/internal/integrations"
)

// BackfillSettings answers GET and PUT .../integrations/{id}/backfill: whether credentials are set (never
// them), the schedule, the high-water mark, and the integration's recent jobs.
type BackfillSettings struct {
	Integration string `json:"integration"`
	Supported   bool   `json:"supported"`
	*backfill.Settings
	Jobs []*backfill.Job `json:"jobs"`
}

// BackfillJobEnvelope wraps one job.
type BackfillJobEnvelope struct {
	Job *backfill.Job `json:"job"`
}

// BackfillJobList answers GET /orgs/{org}/backfill/jobs.
type BackfillJobList struct {
	Jobs []*backfill.Job `json:"jobs"`
}

// backfillTarget is the backfill service and the request's integration.
func (a *API) backfillTarget(r *http.Request) (*backfill.Service, *integrations.Integration, error) {
	if a.cfg.Backfill == nil {
		return nil, nil, errUnavailable("backfill is not available on this server")
	}
	in, err := a.integration(r)
	return a.cfg.Backfill, in, err
}

// backfillError maps the backfill package's errors to the API's; the vendor's own reason is passed on.
func backfillError(err error) error {
	var ve *backfill.VendorError
	var be *backfill.BadAnswerError
	var te *backfill.TransientError
	switch {
	case errors.As(err, &ve):
		return &Error{Status: http.StatusUnprocessableEntity, Code: "vendor_refused", Field: "backfill_key", Message: ve.Error()}
	case errors.As(err, &be):
		return &Error{Status: http.StatusBadGateway, Code: "vendor_bad_answer", Message: be.Error()}
	case errors.As(err, &te):
		return &Error{Status: http.StatusServiceUnavailable, Code: "vendor_unavailable", Message: te.Error(), RetryAfter: time.Minute}
	case errors.Is(err, backfill.ErrBaseURL):
		return errInvalid("backfill_base_url", err.Error())
	case errors.Is(err, backfill.ErrCredentials):
		return errInvalid("backfill_key", err.Error())
	case errors.Is(err, backfill.ErrUnsupported):
		return errInvalid("service", err.Error())
	case errors.Is(err, backfill.ErrNoCredentials), errors.Is(err, backfill.ErrJobActive), errors.Is(err, backfill.ErrFinished):
		return errConflict(err.Error())
	case errors.Is(err, backfill.ErrNotFound):
		return errNotFound("backfill job")
	}
	return err
}

func (a *API) backfillSettings(w http.ResponseWriter, r *http.Request, status int) error {
	in, err := a.integration(r)
	if err != nil {
		return err
	}
	set, err := backfill.GetSettings(r.Context(), a.pool, in.ID)
	if err != nil {
		return err
	}
	jobs, err := backfill.ListJobs(r.Context(), a.pool, orgFrom(r).ID, in.ID, 5)
	if err != nil {
		return err
	}
	if jobs == nil {
		jobs = []*backfill.Job{}
	}
	writeJSON(w, status, BackfillSettings{Integration: in.OpaqueID, Supported: backfill.Supported(in.Service), Settings: set, Jobs: jobs})
	return nil
}

func (a *API) getBackfill(w http.ResponseWriter, r *http.Request) error {
	return a.backfillSettings(w, r, http.StatusOK)
}

// setBackfill sets an integration's backfill credentials (verified at once against the vendor), base URL
// (server admins only, outside the vendor's own hosts) and schedule.
func (a *API) setBackfill(w http.ResponseWriter, r *http.Request) error {
	svc, in, err := a.backfillTarget(r)
	if err != nil {
		return err
	}
	var body struct {
		Key     *string         `json:"key"`
		Secret  *string         `json:"secret"`
		BaseURL *string         `json:"base_url"`
		Every   *string         `json:"every"`
		Options json.RawMessage `json:"options"`
	}
	if err := decode(r, &body); err != nil {
		return err
	}
	p := backfill.CredentialParams{Key: body.Key, Secret: body.Secret, BaseURL: body.BaseURL, Options: body.Options, ServerAdmin: userFrom(r).ServerAdmin}
	if body.Every != nil {
		d := time.Duration(0)
		if *body.Every != "" && *body.Every != "0" {
			if d, err = time.ParseDuration(*body.Every); err != nil || d < time.Minute {
				return errInvalid("every", "a duration of at least 1m (such as 1h), or 0 for no schedule")
			}
		}
		p.Every = &d
	}
	if _, err := svc.SetCredentials(r.Context(), in, p); err != nil {
		return backfillError(err)
	}
	return a.backfillSettings(w, r, http.StatusOK)
}

func (a *API) startBackfill(w http.ResponseWriter, r *http.Request) error {
	svc, in, err := a.backfillTarget(r)
	if err != nil {
		return err
	}
	var body struct {
		Full bool `json:"full"`
	}
	if err := decode(r, &body); err != nil {
		return err
	}
	job, err := svc.Start(r.Context(), in, body.Full)
	if err != nil {
		return backfillError(err)
	}
	writeJSON(w, http.StatusAccepted, BackfillJobEnvelope{Job: job})
	return nil
}

func (a *API) listBackfillJobs(w http.ResponseWriter, r *http.Request) error {
	var integrationID int64
	if id := r.URL.Query().Get("integration"); id != "" {
		r = mux.SetURLVars(r, map[string]string{"opaque_id": id, "org": mux.Vars(r)["org"]})
		in, err := a.integration(r)
		if err != nil {
			return err
		}
		integrationID = in.ID
	}
	jobs, err := backfill.ListJobs(r.Context(), a.pool, orgFrom(r).ID, integrationID, 50)
	if err != nil {
		return err
	}
	if jobs == nil {
		jobs = []*backfill.Job{}
	}
	writeJSON(w, http.StatusOK, BackfillJobList{Jobs: jobs})
	return nil
}

func jobID(r *http.Request) (int64, error) {
	id, err := strconv.ParseInt(mux.Vars(r)["id"], 10, 64)
	if err != nil || id <= 0 {
		return 0, errNotFound("backfill job")
	}
	return id, nil
}

func (a *API) getBackfillJob(w http.ResponseWriter, r *http.Request) error {
	id, err := jobID(r)
	if err != nil {
		return err
	}
	job, err := backfill.GetJob(r.Context(), a.pool, orgFrom(r).ID, id)
	if err != nil {
		return backfillError(err)
	}
	writeJSON(w, http.StatusOK, BackfillJobEnvelope{Job: job})
	return nil
}

func (a *API) cancelBackfillJob(w http.ResponseWriter, r *http.Request) error {
	id, err := jobID(r)
	if err != nil {
		return err
	}
	job, err := backfill.Cancel(r.Context(), a.pool, orgFrom(r).ID, id)
	if err != nil {
		return backfillError(err)
	}
	writeJSON(w, http.StatusOK, BackfillJobEnvelope{Job: job})
	return nil
}
