package orgdb

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/pgroles"
)

// MaintainResult counts what a maintenance pass did.
type MaintainResult struct {
	Revoked int // superseded or expired credentials revoked
	Renewed int // current credentials renewed ahead of expiry
	Swept   int // stale login roles dropped from the servers
	Writers int // fanout passwords rotated (postgres mode)
	// Repaired counts ready orgs provisioned again because their recorded steps lack one (a step added by a
	// later version, such as pgroles.StepReadGrants).
	Repaired int
	// Terminated counts sessions of read-only logins ended past their org's query or idle-in-transaction limit.
	Terminated int
	// Reset counts read-only logins whose role settings (changed by the login itself) were put back.
	Reset int
}

// stillMember holds for a credential (alias c) that is the service login's or a current member's.
const stillMember = `(c.user_id IS NULL OR EXISTS (SELECT 1 FROM memberships m WHERE m.org_id = c.org_id AND m.user_id = c.user_id))`

// Maintain makes one maintenance pass: it revokes credentials that are due (superseded ones at their
// revoke_after, every one at its expiry: in postgres mode nothing else would; a member's as soon as they are
// no longer a member, should their removal not have revoked them), renews current credentials
// that are close to expiry, and drops login roles that linger on the servers past their expiry (a restarted
// Vault dev server, say, forgets its leases). Errors are collected; the pass goes on.
func (s *Service) Maintain(ctx context.Context) (MaintainResult, error) {
	var res MaintainResult
	var errs []error
	servers := map[int64]Server{}
	getServer := func(id int64) (Server, error) {
		if srv, ok := servers[id]; ok {
			return srv, nil
		}
		srv, err := s.server(ctx, s.pool, id)
		if err == nil {
			servers[id] = srv
		}
		return srv, err
	}

	due, err := s.credentials(ctx, s.pool, `
		WHERE c.revoked_at IS NULL AND (c.revoke_after <= now() OR c.expires_at <= now() OR NOT `+stillMember+`)
		ORDER BY c.expires_at LIMIT 500`)
	if err != nil {
		return res, err
	}
	for _, c := range due {
		srv, err := getServer(c.ServerID)
		if err == nil {
			err = s.withLock(ctx, lockClassOrg, c.OrgID, func(q db) error { return s.revoke(ctx, q, srv, c.NameBase, c) })
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		res.Revoked++
	}

	renew, err := s.credentials(ctx, s.pool, `
		WHERE c.revoked_at IS NULL AND c.superseded_at IS NULL AND c.mode = $1
		  AND c.expires_at > now() AND c.expires_at < $2 AND `+stillMember+`
		ORDER BY c.expires_at LIMIT 500`, s.cfg.Issuer.Mode(), time.Now().Add(s.cfg.RenewBefore))
	if err != nil {
		return res, errors.Join(append(errs, err)...)
	}
	for _, c := range renew {
		srv, err := getServer(c.ServerID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		err = s.withLock(ctx, lockClassOrg, c.OrgID, func(q db) error {
			expires, err := s.cfg.Issuer.Renew(ctx, srv, c.NameBase, c.lease())
			if errors.Is(err, ErrNotRenewable) || errors.Is(err, ErrLeaseGone) {
				return nil // Connection reissues when asked; until then it lives out its lease
			}
			if err != nil {
				return fmt.Errorf("error renewing credentials %s of org %s: %w", c.Username, c.OrgKey, err)
			}
			_, err = q.Exec(ctx, `UPDATE org_credentials SET expires_at = $2 WHERE id = $1 AND revoked_at IS NULL`, c.ID, expires)
			if err == nil {
				res.Renewed++
			}
			return err
		})
		if err != nil {
			errs = append(errs, err)
			if s.renewFailed != nil {
				s.renewFailed.RenewalFailed(ctx, c.OrgID, c.Username, err)
			}
		}
	}

	if res.Writers, err = s.rotateDueWriters(ctx); err != nil {
		errs = append(errs, err)
	}
	repaired, err := s.repairProvisioning(ctx)
	res.Repaired = repaired
	if err != nil {
		errs = append(errs, err)
	}

	ids, err := s.serverIDs(ctx)
	if err != nil {
		return res, errors.Join(append(errs, err)...)
	}
	for _, id := range ids {
		srv, err := getServer(id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		limits, err := s.serverOrgLimits(ctx, id)
		if err != nil {
			errs = append(errs, err)
		} else if len(limits) > 0 {
			enforced, err := pgroles.EnforceLimits(ctx, srv.AdminURL, limits, s.cfg.Issuer.Policy())
			res.Terminated += enforced.Terminated
			res.Reset += enforced.Reset
			if err != nil {
				errs = append(errs, fmt.Errorf("error enforcing limits on %s: %w", srv.Name, err))
			}
		}
		stale, err := pgroles.StaleLogins(ctx, srv.AdminURL)
		if err != nil {
			errs = append(errs, fmt.Errorf("error listing stale logins on %s: %w", srv.Name, err))
			continue
		}
		for _, name := range stale {
			if err := pgroles.EnsureLoginGone(ctx, srv.AdminURL, name); err != nil {
				errs = append(errs, fmt.Errorf("error dropping stale login %s on %s: %w", name, srv.Name, err))
				continue
			}
			res.Swept++
		}
	}
	return res, errors.Join(errs...)
}

// serverOrgLimits lists the limits of the ready orgs on a server.
func (s *Service) serverOrgLimits(ctx context.Context, serverID int64) ([]pgroles.OrgLimits, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT coalesce(name_base, key), query_limit, idle_in_transaction_limit FROM organizations
		WHERE database_server_id = $1 AND deleted_at IS NULL AND provision_state = 'ready' ORDER BY key`, serverID)
	if err != nil {
		return nil, fmt.Errorf("error reading org limits: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (pgroles.OrgLimits, error) {
		var l pgroles.OrgLimits
		return l, r.Scan(&l.NameBase, &l.Query, &l.IdleInTransaction)
	})
	if err != nil {
		return nil, fmt.Errorf("error reading org limits: %w", err)
	}
	return out, nil
}

// allSteps lists every provisioning step a ready org has recorded, in order.
func allSteps() []string {
	steps := []string{stepPlaced}
	for _, st := range pgroles.Steps {
		steps = append(steps, string(st))
	}
	return append(steps, stepIssuer)
}

// repairProvisioning provisions again (every step converges) the ready orgs whose last provisioning run did
// not record every current step: orgs provisioned by a version that lacked a step get it without an operator.
// A few per pass; one that fails keeps its last_error and is tried again next pass.
func (s *Service) repairProvisioning(ctx context.Context) (int, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT o.id FROM organizations o LEFT JOIN org_provisioning p ON p.org_id = o.id
		WHERE o.deleted_at IS NULL AND o.provision_state = 'ready' AND NOT coalesce(p.steps_done, '{}') @> $1::text[]
		ORDER BY o.id LIMIT 20`, allSteps())
	if err != nil {
		return 0, fmt.Errorf("error listing orgs to repair: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return 0, fmt.Errorf("error listing orgs to repair: %w", err)
	}
	n := 0
	var errs []error
	for _, id := range ids {
		if _, err := s.ProvisionOrg(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("error repairing the provisioning of org %d: %w", id, err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

func (s *Service) serverIDs(ctx context.Context) ([]int64, error) {
	rows, err := s.pool.Query(ctx, `SELECT id FROM database_servers ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("error listing database servers: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("error listing database servers: %w", err)
	}
	return ids, nil
}

// Run makes a maintenance pass every MaintainInterval until ctx ends (a server worker).
func (s *Service) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.MaintainInterval)
	defer t.Stop()
	for {
		res, err := s.Maintain(ctx)
		if err != nil && ctx.Err() == nil {
			s.cfg.Logger.ErrorContext(ctx, "credential maintenance failed", "error", err)
		}
		if res != (MaintainResult{}) {
			s.cfg.Logger.InfoContext(ctx, "credential maintenance", "revoked", res.Revoked, "renewed", res.Renewed, "swept", res.Swept, "writers", res.Writers, "repaired", res.Repaired, "terminated", res.Terminated, "reset", res.Reset)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Reconcile re-applies what the application database says the issuer should know: every server's setup and
// every ready org's (Vault: webhookdb_vault, database/config/<server>, database/roles/org-<name base>-readonly),
// then revokes directly, and forgets, every stored credential the issuer no longer knows (so the next
// Connection issues a new one). `webhookdb dev` calls it at start, since its Vault dev server keeps nothing;
// it is safe at every start of a server.
func (s *Service) Reconcile(ctx context.Context) error {
	ids, err := s.serverIDs(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		srv, err := s.server(ctx, s.pool, id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		keys, err := s.serverOrgKeys(ctx, s.pool, id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		err = s.withLock(ctx, lockClassPlacement, 0, func(db) error { return s.cfg.Issuer.SetupServer(ctx, srv, keys) })
		if err != nil {
			errs = append(errs, fmt.Errorf("error setting up server %s: %w", srv.Name, err))
			continue
		}
		rows, err := s.pool.Query(ctx, `SELECT coalesce(name_base, key) FROM organizations WHERE database_server_id = $1 AND deleted_at IS NULL AND provision_state = 'ready' ORDER BY 1`, id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ready, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, key := range ready {
			if err := s.cfg.Issuer.SetupOrg(ctx, srv, key, keys); err != nil {
				errs = append(errs, fmt.Errorf("error setting up org %s: %w", key, err))
			}
		}
		live, err := s.credentials(ctx, s.pool, `WHERE c.database_server_id = $1 AND c.revoked_at IS NULL`, id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, c := range live {
			known := false
			if c.Mode == s.cfg.Issuer.Mode() {
				if known, err = s.cfg.Issuer.Known(ctx, srv, c.lease()); err != nil {
					errs = append(errs, err)
					continue
				}
			}
			if known {
				continue
			}
			s.cfg.Logger.InfoContext(ctx, "revoking credentials the issuer no longer knows", "org", c.OrgKey, "username", c.Username, "mode", c.Mode)
			if err := s.withLock(ctx, lockClassOrg, c.OrgID, func(q db) error { return s.revoke(ctx, q, srv, c.NameBase, c) }); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
