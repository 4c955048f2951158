package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/internal/accounts"
	"github.com/webhookdb-go/webhookdb/internal/orgdb"
	"github.com/webhookdb-go/webhookdb/internal/replicator"
)

const (
	roleMember = "member"
	roleAdmin  = "admin"
)

// Org is an organization as the API shows it.
type Org struct {
	ID             int64     `json:"-"`
	Key            string    `json:"key"`
	Name           string    `json:"name"`
	Role           string    `json:"role,omitempty"`
	Database       *string   `json:"database"`
	ProvisionState string    `json:"provision_state"`
	CreatedAt      time.Time `json:"created_at"`
}

type orgCtxKey struct{}

func orgFrom(r *http.Request) *Org { return r.Context().Value(orgCtxKey{}).(*Org) }

// orgScoped loads {org} and checks the caller's membership: non-members get 404, members without the
// needed role 403.
func (a *API) orgScoped(need string, h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		u := userFrom(r)
		o := &Org{}
		err := a.pool.QueryRow(r.Context(), `
			SELECT o.id, o.key, o.name, m.role, o.database_name, o.provision_state, o.created_at
			FROM organizations o JOIN memberships m ON m.org_id = o.id AND m.user_id = $2
			WHERE o.key = $1 AND o.deleted_at IS NULL`, mux.Vars(r)["org"], u.ID).
			Scan(&o.ID, &o.Key, &o.Name, &o.Role, &o.Database, &o.ProvisionState, &o.CreatedAt)
		if errors.Is(err, pgx.ErrNoRows) {
			return errNotFound("organization")
		}
		if err != nil {
			return wrapf(err, "error loading organization")
		}
		if need == roleAdmin && o.Role != roleAdmin {
			return errForbidden("this needs the admin role in " + o.Key)
		}
		return h(w, r.WithContext(context.WithValue(r.Context(), orgCtxKey{}, o)))
	}
}

func (a *API) orgsOf(ctx context.Context, userID int64) ([]*Org, error) {
	rows, err := a.pool.Query(ctx, `
		SELECT o.id, o.key, o.name, m.role, o.database_name, o.provision_state, o.created_at
		FROM organizations o JOIN memberships m ON m.org_id = o.id AND m.user_id = $1
		WHERE o.deleted_at IS NULL ORDER BY o.key`, userID)
	if err != nil {
		return nil, wrapf(err, "error listing organizations")
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (*Org, error) {
		o := &Org{}
		return o, row.Scan(&o.ID, &o.Key, &o.Name, &o.Role, &o.Database, &o.ProvisionState, &o.CreatedAt)
	})
}

func (a *API) listOrgs(w http.ResponseWriter, r *http.Request) error {
	orgs, err := a.orgsOf(r.Context(), userFrom(r).ID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, OrgList{Orgs: orgs})
	return nil
}

func validName(field, name string) error {
	name = strings.TrimSpace(name)
	if name == "" || len(name) > 200 {
		return errInvalid(field, "must be 1 to 200 characters")
	}
	if strings.ContainsAny(name, "\x00\r\n") {
		return errInvalid(field, "must not contain NUL or line breaks")
	}
	return nil
}

func (a *API) createOrg(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Key  string `json:"key"`
		Name string `json:"name"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	if in.Key == "" {
		return errInvalid("key", "required")
	}
	if in.Name == "" {
		in.Name = in.Key
	}
	if err := validName("name", in.Name); err != nil {
		return err
	}
	ctx := r.Context()
	tx, err := a.pool.Begin(ctx)
	if err != nil {
		return wrapf(err, "error starting transaction")
	}
	defer rollback(ctx, tx)
	if err := a.checkOrgLimit(ctx, tx, userFrom(r)); err != nil {
		return err
	}
	created, err := orgdb.InsertOrg(ctx, tx, in.Key, strings.TrimSpace(in.Name))
	switch {
	case errors.Is(err, orgdb.ErrOrgExists):
		return errConflict("an organization with key " + in.Key + " exists already")
	case errors.Is(err, orgdb.ErrInvalidOrgKey):
		// The key names the org's database and roles: one rule for it, pgroles'.
		return errInvalid("key", "use 1 to 41 characters: a lower-case letter, then lower-case letters, digits or underscores")
	case errors.Is(err, orgdb.ErrInvalidOrgName):
		return errInvalid("name", "must be 1 to 200 characters of valid text")
	case err != nil:
		return wrapf(err, "error creating organization")
	}
	o := &Org{ID: created.ID, Key: created.Key, Name: created.Name, ProvisionState: created.ProvisionState, CreatedAt: created.CreatedAt, Role: roleAdmin}
	if _, err := tx.Exec(ctx, `INSERT INTO memberships (org_id, user_id, role) VALUES ($1, $2, 'admin')`, o.ID, userFrom(r).ID); err != nil {
		return wrapf(err, "error adding membership")
	}
	if err := tx.Commit(ctx); err != nil {
		return wrapf(err, "error committing")
	}
	if a.cfg.Provisioner != nil {
		if err := a.cfg.Provisioner.ProvisionOrg(ctx, o.ID); err != nil {
			// The org exists; provisioning resumes on the next call (it is idempotent).
			return wrapf(err, "organization %s created but its database could not be provisioned yet", o.Key)
		}
		_ = a.pool.QueryRow(ctx, `SELECT database_name, provision_state FROM organizations WHERE id = $1`, o.ID).Scan(&o.Database, &o.ProvisionState)
	}
	writeJSON(w, http.StatusCreated, OrgEnvelope{Org: o})
	return nil
}

func rollback(ctx context.Context, tx pgx.Tx) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = tx.Rollback(ctx)
}

func (a *API) getOrg(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, OrgEnvelope{Org: orgFrom(r)})
	return nil
}

func (a *API) updateOrg(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Name string `json:"name"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	if err := validName("name", in.Name); err != nil {
		return err
	}
	o := orgFrom(r)
	o.Name = strings.TrimSpace(in.Name)
	if _, err := a.pool.Exec(r.Context(), `UPDATE organizations SET name = $2 WHERE id = $1`, o.ID, o.Name); err != nil {
		return wrapf(err, "error renaming organization")
	}
	writeJSON(w, http.StatusOK, OrgEnvelope{Org: o})
	return nil
}

func (a *API) deleteOrg(w http.ResponseWriter, r *http.Request) error {
	o := orgFrom(r)
	ctx := r.Context()
	if a.cfg.Provisioner != nil {
		if err := a.cfg.Provisioner.DeleteOrg(ctx, o.ID); err != nil {
			return wrapf(err, "error deleting the organization's database")
		}
	}
	if _, err := a.pool.Exec(ctx, `UPDATE organizations SET deleted_at = now() WHERE id = $1`, o.ID); err != nil {
		return wrapf(err, "error deleting organization")
	}
	if _, err := a.pool.Exec(ctx, `UPDATE service_integrations SET deleted_at = now() WHERE org_id = $1 AND deleted_at IS NULL`, o.ID); err != nil {
		return wrapf(err, "error deleting integrations")
	}
	writeJSON(w, http.StatusOK, Deleted{Deleted: o.Key})
	return nil
}

func (a *API) listMembers(w http.ResponseWriter, r *http.Request) error {
	rows, err := a.pool.Query(r.Context(), `SELECT u.email, m.role, m.created_at FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.org_id = $1 ORDER BY u.email`, orgFrom(r).ID)
	if err != nil {
		return wrapf(err, "error listing members")
	}
	members, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Member, error) {
		var m Member
		return m, row.Scan(&m.Email, &m.Role, &m.AddedAt)
	})
	if err != nil {
		return wrapf(err, "error listing members")
	}
	writeJSON(w, http.StatusOK, MemberList{Members: members})
	return nil
}

func validRole(role string) error {
	if role != roleAdmin && role != roleMember {
		return errInvalid("role", "must be admin or member")
	}
	return nil
}

func (a *API) addMember(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Email string `json:"email"`
		Role  string `json:"role"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	if in.Role == "" {
		in.Role = roleMember
	}
	if err := validRole(in.Role); err != nil {
		return err
	}
	ctx := r.Context()
	u, err := accounts.UserByEmail(ctx, a.pool, in.Email)
	if errors.Is(err, accounts.ErrNotFound) {
		u, err = accounts.CreateUser(ctx, a.pool, in.Email, false)
		if err != nil && !errors.Is(err, accounts.ErrUserExists) {
			return errInvalid("email", err.Error())
		}
	}
	if err != nil {
		return err
	}
	tag, err := a.pool.Exec(ctx, `INSERT INTO memberships (org_id, user_id, role) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, orgFrom(r).ID, u.ID, in.Role)
	if err != nil {
		return wrapf(err, "error adding member")
	}
	if tag.RowsAffected() == 0 {
		return errConflict(u.Email + " is a member already (change their role instead)")
	}
	writeJSON(w, http.StatusCreated, MemberEnvelope{Member: Member{Email: u.Email, Role: in.Role, AddedAt: time.Now()}})
	return nil
}

// memberUser resolves {email} to a member of the org.
func (a *API) memberUser(r *http.Request) (*accounts.User, string, error) {
	var u accounts.User
	var role string
	err := a.pool.QueryRow(r.Context(), `SELECT u.id, u.email, m.role FROM users u JOIN memberships m ON m.user_id = u.id AND m.org_id = $1 WHERE lower(u.email) = lower($2)`,
		orgFrom(r).ID, mux.Vars(r)["email"]).Scan(&u.ID, &u.Email, &role)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, "", errNotFound("member")
	}
	return &u, role, err
}

// lastAdminGuard refuses a change that would leave the org without an admin.
func (a *API) lastAdminGuard(ctx context.Context, tx pgx.Tx, orgID int64) error {
	var admins int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM memberships WHERE org_id = $1 AND role = 'admin'`, orgID).Scan(&admins); err != nil {
		return wrapf(err, "error counting admins")
	}
	if admins == 0 {
		return errConflict("an organization needs at least one admin: make someone else admin first")
	}
	return nil
}

func (a *API) changeRole(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Role string `json:"role"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	if err := validRole(in.Role); err != nil {
		return err
	}
	u, _, err := a.memberUser(r)
	if err != nil {
		return err
	}
	err = a.inTx(r.Context(), func(tx pgx.Tx) error {
		// Lock the org's memberships so two demotions cannot both pass the last-admin check.
		if _, err := tx.Exec(r.Context(), `SELECT 1 FROM memberships WHERE org_id = $1 FOR UPDATE`, orgFrom(r).ID); err != nil {
			return err
		}
		if _, err := tx.Exec(r.Context(), `UPDATE memberships SET role = $3 WHERE org_id = $1 AND user_id = $2`, orgFrom(r).ID, u.ID, in.Role); err != nil {
			return wrapf(err, "error changing role")
		}
		return a.lastAdminGuard(r.Context(), tx, orgFrom(r).ID)
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, MemberEnvelope{Member: Member{Email: u.Email, Role: in.Role}})
	return nil
}

func (a *API) removeMember(w http.ResponseWriter, r *http.Request) error {
	u, _, err := a.memberUser(r)
	if err != nil {
		return err
	}
	o := orgFrom(r)
	// Anyone may leave; removing others needs admin.
	if u.ID != userFrom(r).ID && o.Role != roleAdmin {
		return errForbidden("removing other members needs the admin role in " + o.Key)
	}
	err = a.inTx(r.Context(), func(tx pgx.Tx) error {
		if _, err := tx.Exec(r.Context(), `SELECT 1 FROM memberships WHERE org_id = $1 FOR UPDATE`, o.ID); err != nil {
			return err
		}
		if _, err := tx.Exec(r.Context(), `DELETE FROM memberships WHERE org_id = $1 AND user_id = $2`, o.ID, u.ID); err != nil {
			return wrapf(err, "error removing member")
		}
		return a.lastAdminGuard(r.Context(), tx, o.ID)
	})
	if err != nil {
		return err
	}
	// The membership is gone: now their database logins (the maintenance pass retries should this fail).
	if a.cfg.Credentials != nil {
		if err := a.cfg.Credentials.RevokeMember(r.Context(), o.ID, u.ID); err != nil {
			return wrapf(err, "%s was removed, but revoking their database logins failed (retried in the background)", u.Email)
		}
	}
	writeJSON(w, http.StatusOK, Removed{Removed: u.Email})
	return nil
}

// inTx runs f in a transaction and commits when it returns nil.
func (a *API) inTx(ctx context.Context, f func(pgx.Tx) error) error {
	tx, err := a.pool.Begin(ctx)
	if err != nil {
		return wrapf(err, "error starting transaction")
	}
	defer rollback(ctx, tx)
	if err := f(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

func (a *API) listTokens(w http.ResponseWriter, r *http.Request) error {
	rows, err := a.pool.Query(r.Context(), `SELECT id, name, token_hint, created_at, last_used_at, revoked_at FROM api_tokens WHERE user_id = $1 ORDER BY id`, userFrom(r).ID)
	if err != nil {
		return wrapf(err, "error listing tokens")
	}
	tokens, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (accounts.Token, error) {
		var t accounts.Token
		return t, row.Scan(&t.ID, &t.Name, &t.Hint, &t.CreatedAt, &t.LastUsedAt, &t.RevokedAt)
	})
	if err != nil {
		return wrapf(err, "error listing tokens")
	}
	writeJSON(w, http.StatusOK, TokenList{Tokens: tokens})
	return nil
}

func (a *API) createToken(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Name string `json:"name"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	secret, t, err := accounts.CreateToken(r.Context(), a.pool, userFrom(r).ID, in.Name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, TokenCreated{Token: t, Secret: secret})
	return nil
}

func (a *API) revokeToken(w http.ResponseWriter, r *http.Request) error {
	id, err := strconv.ParseInt(mux.Vars(r)["id"], 10, 64)
	if err != nil {
		return errNotFound("token")
	}
	tag, err := a.pool.Exec(r.Context(), `UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL`, id, userFrom(r).ID)
	if err != nil {
		return wrapf(err, "error revoking token")
	}
	if tag.RowsAffected() == 0 {
		return errNotFound("token")
	}
	writeJSON(w, http.StatusOK, Revoked{Revoked: id})
	return nil
}

func describe(s *replicator.Service, full bool) Service {
	info := Service{Name: s.Name, Description: s.Description, Verifier: s.Verifier, Policy: s.Policy.String(), RemoteKey: s.RemoteKey.Name}
	if full {
		for _, c := range s.Columns {
			info.Columns = append(info.Columns, ServiceColumn{Name: c.Name, Type: c.Type, Indexed: c.Index})
		}
		info.DDL = s.EnsureTableSQL("public", s.Name)
	}
	return info
}

func (a *API) listServices(w http.ResponseWriter, _ *http.Request) error {
	var out []Service
	for _, s := range replicator.All() {
		out = append(out, describe(s, false))
	}
	writeJSON(w, http.StatusOK, ServiceList{Services: out})
	return nil
}

func (a *API) getService(w http.ResponseWriter, r *http.Request) error {
	s, ok := replicator.Lookup(mux.Vars(r)["name"])
	if !ok {
		return errNotFound("service")
	}
	writeJSON(w, http.StatusOK, ServiceEnvelope{Service: describe(s, true)})
	return nil
}

// checkOrgLimit refuses a new org to a user who already administers MaxOrgsPerUser live orgs (server admins
// have no limit). The user's row is locked so that concurrent creations count each other.
func (a *API) checkOrgLimit(ctx context.Context, tx pgx.Tx, u *accounts.User) error {
	if u.ServerAdmin || a.cfg.MaxOrgsPerUser <= 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, `SELECT FROM users WHERE id = $1 FOR UPDATE`, u.ID); err != nil {
		return wrapf(err, "error locking the user")
	}
	var n int
	err := tx.QueryRow(ctx, `
		SELECT count(*) FROM memberships m JOIN organizations o ON o.id = m.org_id AND o.deleted_at IS NULL
		WHERE m.user_id = $1 AND m.role = 'admin'`, u.ID).Scan(&n)
	if err != nil {
		return wrapf(err, "error counting organizations")
	}
	if n >= a.cfg.MaxOrgsPerUser {
		return &Error{Status: http.StatusForbidden, Code: "org_limit",
			Message: fmt.Sprintf("you administer %d organizations, the most one user may create; delete one or ask a server admin", n)}
	}
	return nil
}
