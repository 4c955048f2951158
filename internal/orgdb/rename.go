package orgdb

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/pgroles"
)

// Steps of moving an org to opaque names (RenameOrgDatabase), as passed to Config.AfterStep.
const (
	RenameStepTarget = "rename_target" // the new name base is recorded (organizations.renaming_to)
	RenameStepIssuer = "rename_issuer" // the issuer can issue under the new names (Vault: its new role)
	RenameStepRevoke = "rename_revoke" // every login named from the old base is revoked, the old issuer role gone
	RenameStepServer = "rename_server" // database and group roles renamed on the server
)

// RenameResult reports a RenameOrgDatabases run.
type RenameResult struct {
	// Renamed lists the keys of the orgs moved to opaque names.
	Renamed []string `json:"renamed"`
	// Failed maps the keys of the orgs that could not be moved to why; running the command again resumes them.
	Failed map[string]string `json:"failed,omitempty"`
}

// RenameOrgDatabases moves every live org still named from its key (provisioned before opaque names) to an
// opaque name base, one org after another (RenameOrgDatabase); an org that fails does not stop the others.
// progress, when set, is called after each org. Safe to run again, and to run while serving: each org is
// unavailable to its read-only logins, the fanout and `db sql` only while it is being renamed.
func (s *Service) RenameOrgDatabases(ctx context.Context, progress func(orgKey string, err error)) (*RenameResult, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT id, key FROM organizations
		WHERE deleted_at IS NULL AND provision_state NOT IN ('deleting', 'deleted')
		  AND (name_base IS NULL OR renaming_to IS NOT NULL)
		ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("error listing orgs to rename: %w", err)
	}
	type orgRef struct {
		id  int64
		key string
	}
	orgs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (orgRef, error) {
		var o orgRef
		return o, r.Scan(&o.id, &o.key)
	})
	if err != nil {
		return nil, fmt.Errorf("error listing orgs to rename: %w", err)
	}
	res := &RenameResult{Renamed: []string{}}
	for _, o := range orgs {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		err := s.RenameOrgDatabase(ctx, o.id)
		if err != nil {
			if res.Failed == nil {
				res.Failed = map[string]string{}
			}
			res.Failed[o.key] = err.Error()
		} else {
			res.Renamed = append(res.Renamed, o.key)
		}
		if progress != nil {
			progress(o.key, err)
		}
	}
	return res, nil
}

// RenameOrgDatabase moves one org named from its key to an opaque name base: it records the new base, has the
// issuer set up the new names, revokes every credential issued under the old ones (their login names carry
// the key; a new one is issued on next use, under the new names), renames the database and group roles on
// the server (terminating the database's sessions: renaming needs the database free of them), and stores the
// new names. Each step converges, so a run that stopped anywhere resumes to the same names. An org that
// already has an opaque name base is left alone.
func (s *Service) RenameOrgDatabase(ctx context.Context, orgID int64) error {
	return s.withLock(ctx, lockClassOrg, orgID, func(q db) error {
		var (
			key, state           string
			nameBase, renamingTo *string
			serverID             *int64
		)
		err := q.QueryRow(ctx, `
			SELECT key, name_base, renaming_to, database_server_id, provision_state FROM organizations
			WHERE id = $1 AND deleted_at IS NULL`, orgID).Scan(&key, &nameBase, &renamingTo, &serverID, &state)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: %d", ErrOrgNotFound, orgID)
		}
		if err != nil {
			return fmt.Errorf("error reading organization %d: %w", orgID, err)
		}
		if nameBase != nil && renamingTo == nil {
			return nil
		}
		oldBase := key
		if nameBase != nil {
			oldBase = *nameBase
		}
		if serverID == nil {
			// Never placed: nothing exists under the old names.
			_, err := q.Exec(ctx, `UPDATE organizations SET name_base = $2, renaming_to = NULL WHERE id = $1`, orgID, pgroles.NewNameBase())
			return err
		}
		if state != "ready" {
			return fmt.Errorf("%w: org %s is %s: finish provisioning it first", ErrNotProvisioned, key, state)
		}
		target := pgroles.NewNameBase()
		if renamingTo != nil {
			target = *renamingTo
		} else if _, err := q.Exec(ctx, `UPDATE organizations SET renaming_to = $2 WHERE id = $1`, orgID, target); err != nil {
			return fmt.Errorf("error recording the new names of org %s: %w", key, err)
		}
		if err := s.afterRenameStep(ctx, orgID, RenameStepTarget); err != nil {
			return err
		}
		srv, err := s.server(ctx, q, *serverID)
		if err != nil {
			return err
		}
		bases, err := s.serverOrgKeys(ctx, q, srv.ID)
		if err != nil {
			return err
		}
		// The server's orgs as they will be: the old base gone, the new one there.
		bases = append(slices.DeleteFunc(bases, func(b string) bool { return b == oldBase || b == target }), target)
		if err := s.cfg.Issuer.SetupOrg(ctx, srv, target, bases); err != nil {
			return fmt.Errorf("error setting up %s credentials under the new names of org %s: %w", s.cfg.Issuer.Mode(), key, err)
		}
		if err := s.afterRenameStep(ctx, orgID, RenameStepIssuer); err != nil {
			return err
		}
		creds, err := s.credentials(ctx, q, `WHERE c.org_id = $1 AND c.revoked_at IS NULL`, orgID)
		if err != nil {
			return err
		}
		for _, c := range creds {
			if err := s.revoke(ctx, q, srv, oldBase, c); err != nil {
				return err
			}
		}
		if err := s.cfg.Issuer.RemoveOrg(ctx, srv, oldBase, bases); err != nil {
			return fmt.Errorf("error removing the old names of org %s from %s credentials: %w", key, s.cfg.Issuer.Mode(), err)
		}
		if err := s.afterRenameStep(ctx, orgID, RenameStepRevoke); err != nil {
			return err
		}
		if err := pgroles.RenameOrg(ctx, srv.AdminURL, oldBase, target); err != nil {
			return fmt.Errorf("error renaming the database of org %s: %w", key, err)
		}
		if err := s.afterRenameStep(ctx, orgID, RenameStepServer); err != nil {
			return err
		}
		if _, err := q.Exec(ctx, `UPDATE organizations SET name_base = $2, database_name = $3, renaming_to = NULL WHERE id = $1`,
			orgID, target, pgroles.DatabaseName(target)); err != nil {
			return fmt.Errorf("error storing the new names of org %s: %w", key, err)
		}
		return nil
	})
}

func (s *Service) afterRenameStep(ctx context.Context, orgID int64, step string) error {
	if s.cfg.AfterStep != nil {
		return s.cfg.AfterStep(ctx, orgID, step)
	}
	return nil
}

// dropRenameTarget removes what an org's unfinished rename (RenameOrgDatabase) created under its new names:
// the issuer's setup, and the database and roles if the server step ran. DeleteOrg calls it.
func (s *Service) dropRenameTarget(ctx context.Context, q db, srv Server, org *Org, bases []string) error {
	var target *string
	if err := q.QueryRow(ctx, `SELECT renaming_to FROM organizations WHERE id = $1`, org.ID).Scan(&target); err != nil {
		return fmt.Errorf("error reading organization %d: %w", org.ID, err)
	}
	if target == nil {
		return nil
	}
	if err := s.cfg.Issuer.RemoveOrg(ctx, srv, *target, bases); err != nil {
		return fmt.Errorf("error removing the new names of org %s from %s credentials: %w", org.Key, s.cfg.Issuer.Mode(), err)
	}
	return pgroles.DropOrg(ctx, srv.AdminURL, *target)
}
