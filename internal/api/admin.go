package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"
	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/fanout"
	"github.com/webhookdb-go/webhookdb/internal/accounts"
	"github.com/webhookdb-go/webhookdb/internal/backfill"
)

// FanoutErrors lists, retries and skips the changes the fanout parked (org database unreachable) or failed to
// apply (a payload or value the org database can never take, or parked past its bound). RetryError and
// SkipError take a failed change's id and return fanout.ErrNoSuchError when the org has none with it.
type FanoutErrors interface {
	ListErrors(ctx context.Context, orgID, integrationID int64, limit int) ([]fanout.ChangeError, error)
	RetryErrors(ctx context.Context, orgID, integrationID int64) (int64, error)
	RetryError(ctx context.Context, orgID, id int64) (int64, error)
	SkipError(ctx context.Context, orgID, id int64) error
}

func (a *API) integrationIDParam(r *http.Request) (int64, error) {
	opaque := r.URL.Query().Get("integration")
	if opaque == "" {
		return 0, nil
	}
	var id int64
	err := a.pool.QueryRow(r.Context(), `SELECT id FROM service_integrations WHERE opaque_id = $1 AND org_id = $2`, opaque, orgFrom(r).ID).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, errNotFound("integration")
	}
	return id, err
}

func (a *API) listErrors(w http.ResponseWriter, r *http.Request) error {
	if a.cfg.Errors == nil {
		return errUnavailable("the fanout is not running in this server")
	}
	intID, err := a.integrationIDParam(r)
	if err != nil {
		return err
	}
	list, err := a.cfg.Errors.ListErrors(r.Context(), orgFrom(r).ID, intID, 100)
	if err != nil {
		return err
	}
	if list == nil {
		list = []fanout.ChangeError{}
	}
	failed, err := backfill.FailedJobs(r.Context(), a.pool, orgFrom(r).ID, intID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ErrorList{Errors: list, BackfillJobs: failed})
	return nil
}

func (a *API) retryErrors(w http.ResponseWriter, r *http.Request) error {
	if a.cfg.Errors == nil {
		return errUnavailable("the fanout is not running in this server")
	}
	intID, err := a.integrationIDParam(r)
	if err != nil {
		return err
	}
	n, err := a.cfg.Errors.RetryErrors(r.Context(), orgFrom(r).ID, intID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, RetryResult{Retrying: n})
	return nil
}

// failedChangeID is the {id} of a failed change; an id that is not a number names no change.
func failedChangeID(r *http.Request) (int64, error) {
	id, err := strconv.ParseInt(mux.Vars(r)["id"], 10, 64)
	if err != nil {
		return 0, errNotFound("failed change")
	}
	return id, nil
}

func (a *API) retryError(w http.ResponseWriter, r *http.Request) error {
	if a.cfg.Errors == nil {
		return errUnavailable("the fanout is not running in this server")
	}
	id, err := failedChangeID(r)
	if err != nil {
		return err
	}
	n, err := a.cfg.Errors.RetryError(r.Context(), orgFrom(r).ID, id)
	if errors.Is(err, fanout.ErrNoSuchError) {
		return errNotFound("failed change")
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, RetryResult{Retrying: n})
	return nil
}

func (a *API) skipError(w http.ResponseWriter, r *http.Request) error {
	if a.cfg.Errors == nil {
		return errUnavailable("the fanout is not running in this server")
	}
	id, err := failedChangeID(r)
	if err != nil {
		return err
	}
	err = a.cfg.Errors.SkipError(r.Context(), orgFrom(r).ID, id)
	if errors.Is(err, fanout.ErrNoSuchError) {
		return errNotFound("failed change")
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, Skipped{Skipped: id})
	return nil
}

func (a *API) listServers(w http.ResponseWriter, r *http.Request) error {
	rows, err := a.pool.Query(r.Context(), `
		SELECT s.name, s.public_host, s.public_port, s.sslmode, s.ca_cert IS NOT NULL, count(o.id), s.created_at
		FROM database_servers s LEFT JOIN organizations o ON o.database_server_id = s.id AND o.deleted_at IS NULL
		GROUP BY s.id ORDER BY s.name`)
	if err != nil {
		return wrapf(err, "error listing servers")
	}
	servers, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (ServerView, error) {
		var s ServerView
		return s, row.Scan(&s.Name, &s.PublicHost, &s.PublicPort, &s.SSLMode, &s.CACert, &s.Orgs, &s.CreatedAt)
	})
	if err != nil {
		return wrapf(err, "error listing servers")
	}
	if servers == nil {
		servers = []ServerView{}
	}
	writeJSON(w, http.StatusOK, ServerList{Servers: servers})
	return nil
}

func (a *API) addServer(w http.ResponseWriter, r *http.Request) error {
	if a.cfg.Servers == nil {
		return errUnavailable("server registration is not configured")
	}
	var in ServerRegistration
	if err := decode(r, &in); err != nil {
		return err
	}
	switch {
	case in.Name == "":
		return errInvalid("name", "required")
	case in.AdminURL == "":
		return errInvalid("admin_url", "required")
	case in.PublicHost == "":
		return errInvalid("public_host", "required")
	case in.PublicPort < 1 || in.PublicPort > 65535:
		return errInvalid("public_port", "a port from 1 to 65535")
	}
	sslmode, err := a.cfg.Servers.RegisterServer(r.Context(), in)
	if errors.Is(err, ErrInvalidSSLMode) {
		return errInvalid("sslmode", err.Error())
	}
	if err != nil {
		return errInvalid("admin_url", err.Error())
	}
	writeJSON(w, http.StatusCreated, ServerEnvelope{Server: ServerView{Name: in.Name, PublicHost: in.PublicHost, PublicPort: in.PublicPort, SSLMode: sslmode, CACert: in.CACert != ""}})
	return nil
}

func (a *API) createUser(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Email       string `json:"email"`
		ServerAdmin bool   `json:"server_admin"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	u, err := accounts.CreateUser(r.Context(), a.pool, in.Email, in.ServerAdmin)
	if errors.Is(err, accounts.ErrUserExists) {
		return errConflict(err.Error())
	}
	if err != nil {
		return errInvalid("email", err.Error())
	}
	secret, _, err := accounts.CreateToken(r.Context(), a.pool, u.ID, "created by a server admin")
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, UserCreated{User: u, Token: secret})
	return nil
}

func (a *API) rotateKeys(w http.ResponseWriter, r *http.Request) error {
	if a.cfg.Keys == nil {
		return errUnavailable("key rotation is not configured")
	}
	res, err := a.cfg.Keys.RotateKeys(r.Context(), nil)
	if err != nil {
		return wrapf(err, "error rotating keys")
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

func (a *API) fanoutStatus(w http.ResponseWriter, r *http.Request) error {
	if a.cfg.Fanout == nil {
		return errUnavailable("the fanout is not running in this server")
	}
	st, err := a.cfg.Fanout.FanoutStatus(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

// OrgLimiter reads and sets the limits a server holds an org's read-only logins to.
type OrgLimiter interface {
	OrgLimits(ctx context.Context, orgID int64) (query, idleInTransaction time.Duration, err error)
	SetOrgLimits(ctx context.Context, orgID int64, query, idleInTransaction time.Duration) error
}

// adminOrgID resolves the {org} of an admin route (a server admin need not be a member).
func (a *API) adminOrgID(r *http.Request) (int64, error) {
	var id int64
	err := a.pool.QueryRow(r.Context(), `SELECT id FROM organizations WHERE key = $1 AND deleted_at IS NULL`, mux.Vars(r)["org"]).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, errNotFound("organization")
	}
	return id, err
}

func (a *API) getOrgLimits(w http.ResponseWriter, r *http.Request) error {
	if a.cfg.Limits == nil {
		return errUnavailable("org limits are not configured on this server")
	}
	id, err := a.adminOrgID(r)
	if err != nil {
		return err
	}
	q, idle, err := a.cfg.Limits.OrgLimits(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, OrgLimits{QueryLimit: q.String(), IdleInTransactionLimit: idle.String()})
	return nil
}

func (a *API) setOrgLimits(w http.ResponseWriter, r *http.Request) error {
	if a.cfg.Limits == nil {
		return errUnavailable("org limits are not configured on this server")
	}
	id, err := a.adminOrgID(r)
	if err != nil {
		return err
	}
	var in OrgLimits
	if err := decode(r, &in); err != nil {
		return err
	}
	q, idle, err := a.cfg.Limits.OrgLimits(r.Context(), id)
	if err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		in   string
		dst  *time.Duration
	}{{"query_limit", in.QueryLimit, &q}, {"idle_in_transaction_limit", in.IdleInTransactionLimit, &idle}} {
		if f.in == "" {
			continue
		}
		d, err := time.ParseDuration(f.in)
		if err != nil || d < time.Second {
			return errInvalid(f.name, "a duration of at least 1s, like 30m")
		}
		*f.dst = d
	}
	if err := a.cfg.Limits.SetOrgLimits(r.Context(), id, q, idle); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, OrgLimits{QueryLimit: q.String(), IdleInTransactionLimit: idle.String()})
	return nil
}
