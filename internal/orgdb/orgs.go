package orgdb

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/internal/pgerr"
	"github.com/webhookdb-go/webhookdb/pgroles"
)

// Org is an organization as far as its database goes.
type Org struct {
	ID           int64   `json:"id"`
	Key          string  `json:"key"`
	Name         string  `json:"name"`
	ServerID     *int64  `json:"database_server_id,omitempty"`
	DatabaseName *string `json:"database_name,omitempty"`
	// NameBase is what the org's database, roles and logins are named from on its server (pgroles): opaque
	// and random for every org since migration 00043; an older org's key until rename-org-databases.
	NameBase       string     `json:"name_base"`
	ProvisionState string     `json:"provision_state"`
	CreatedAt      time.Time  `json:"created_at"`
	DeletedAt      *time.Time `json:"deleted_at,omitempty"`
}

// Provisioning steps recorded beyond pgroles.Steps.
const (
	stepPlaced = "placed" // a server was chosen
	stepIssuer = "issuer" // the issuer was set up for the org (Vault: its role)
)

// CreateOrg stores a new org (not provisioned yet); see InsertOrg.
func (s *Service) CreateOrg(ctx context.Context, key, name string) (*Org, error) {
	return InsertOrg(ctx, s.pool, key, name)
}

// RowQuerier is a pool, a connection or a transaction.
type RowQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// InsertOrg stores a new org (not provisioned yet) through q, so a caller can add more in the same
// transaction (the API adds its creator's membership). The key names database objects and is validated
// (pgroles.ValidateOrgKey); the name is free text (1 to 200 characters), only ever passed as a
// bind parameter. Errors: ErrInvalidOrgKey, ErrInvalidOrgName (both ErrInvalidOrg), ErrOrgExists.
func InsertOrg(ctx context.Context, q RowQuerier, key, name string) (*Org, error) {
	if err := pgroles.ValidateOrgKey(key); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOrgKey, err)
	}
	if n := utf8.RuneCountInString(name); n < 1 || n > 200 || !utf8.ValidString(name) || strings.ContainsRune(name, 0) {
		return nil, fmt.Errorf("%w: must be 1 to 200 characters of valid text", ErrInvalidOrgName)
	}
	o := &Org{}
	err := q.QueryRow(ctx, `
		INSERT INTO organizations (key, name, name_base) VALUES ($1, $2, $3)
		RETURNING `+orgColumns, key, name, pgroles.NewNameBase()).
		Scan(&o.ID, &o.Key, &o.Name, &o.ServerID, &o.DatabaseName, &o.NameBase, &o.ProvisionState, &o.CreatedAt, &o.DeletedAt)
	if pgerr.Is(err, pgerrcode.UniqueViolation) {
		return nil, fmt.Errorf("%w: %s", ErrOrgExists, key)
	}
	if err != nil {
		return nil, fmt.Errorf("error creating organization: %w", err)
	}
	return o, nil
}

// orgColumns are the columns an Org is scanned from; an org without a name base of its own (provisioned
// before opaque names) is named from its key.
const orgColumns = `id, key, name, database_server_id, database_name, coalesce(name_base, key), provision_state, created_at, deleted_at`

// Org returns a live org.
func (s *Service) Org(ctx context.Context, orgID int64) (*Org, error) {
	return s.org(ctx, s.pool, orgID)
}

func (s *Service) org(ctx context.Context, q db, orgID int64) (*Org, error) {
	o := &Org{}
	err := q.QueryRow(ctx, `
		SELECT `+orgColumns+`
		FROM organizations WHERE id = $1 AND deleted_at IS NULL`, orgID).
		Scan(&o.ID, &o.Key, &o.Name, &o.ServerID, &o.DatabaseName, &o.NameBase, &o.ProvisionState, &o.CreatedAt, &o.DeletedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: %d", ErrOrgNotFound, orgID)
	}
	if err != nil {
		return nil, fmt.Errorf("error reading organization %d: %w", orgID, err)
	}
	return o, nil
}

// ProvisionOrg places an org on the server with the fewest orgs (once) and provisions its database and roles
// there, then has the issuer set it up. Each step is recorded in org_provisioning; every step converges, so
// running it again after a crash anywhere (or on a ready org, to repair it) ends in the same state.
func (s *Service) ProvisionOrg(ctx context.Context, orgID int64) (*Org, error) {
	var out *Org
	err := s.withLock(ctx, lockClassOrg, orgID, func(q db) error {
		org, err := s.org(ctx, q, orgID)
		if err != nil {
			return err
		}
		if org.ProvisionState == "deleting" {
			return fmt.Errorf("%w: org %s is being deleted", ErrOrgNotFound, org.Key)
		}
		if _, err := q.Exec(ctx, `
			INSERT INTO org_provisioning (org_id) VALUES ($1)
			ON CONFLICT (org_id) DO UPDATE SET steps_done = '{}', last_error = NULL, started_at = now(), updated_at = now()`, orgID); err != nil {
			return fmt.Errorf("error recording provisioning: %w", err)
		}
		err = s.provision(ctx, q, org)
		if err != nil {
			if _, recErr := q.Exec(context.WithoutCancel(ctx), `UPDATE org_provisioning SET last_error = $2, updated_at = now() WHERE org_id = $1`, orgID, err.Error()); recErr != nil {
				s.cfg.Logger.ErrorContext(ctx, "cannot record provisioning error", "org", org.Key, "error", recErr)
			}
			return err
		}
		out, err = s.org(ctx, q, orgID)
		return err
	})
	return out, err
}

func (s *Service) provision(ctx context.Context, q db, org *Org) error {
	if org.ServerID == nil {
		if err := s.place(ctx, q, org); err != nil {
			return err
		}
	}
	if err := s.recordStep(ctx, q, org.ID, stepPlaced); err != nil {
		return err
	}
	srv, err := s.server(ctx, q, *org.ServerID)
	if err != nil {
		return err
	}
	err = pgroles.ProvisionOrgWith(ctx, srv.AdminURL, org.NameBase, pgroles.ProvisionOptions{
		AfterStep: func(ctx context.Context, step pgroles.Step) error { return s.recordStep(ctx, q, org.ID, string(step)) },
	})
	if err != nil {
		return err
	}
	keys, err := s.serverOrgKeys(ctx, q, srv.ID)
	if err != nil {
		return err
	}
	if err := s.cfg.Issuer.SetupOrg(ctx, srv, org.NameBase, keys); err != nil {
		return fmt.Errorf("error setting up %s credentials for org %s: %w", s.cfg.Issuer.Mode(), org.Key, err)
	}
	if err := s.recordStep(ctx, q, org.ID, stepIssuer); err != nil {
		return err
	}
	if _, err := q.Exec(ctx, `UPDATE organizations SET provision_state = 'ready' WHERE id = $1`, org.ID); err != nil {
		return fmt.Errorf("error marking org %s ready: %w", org.Key, err)
	}
	return nil
}

// place chooses the server with the fewest live orgs (ties: the oldest server) under a lock, so that orgs
// created together spread out.
func (s *Service) place(ctx context.Context, q db, org *Org) error {
	return pgx.BeginFunc(ctx, q, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, 0)`, lockClassPlacement); err != nil {
			return fmt.Errorf("error taking the placement lock: %w", err)
		}
		var serverID int64
		err := tx.QueryRow(ctx, `
			SELECT s.id FROM database_servers s
			LEFT JOIN organizations o ON o.database_server_id = s.id AND o.deleted_at IS NULL
			GROUP BY s.id ORDER BY count(o.id), s.id LIMIT 1`).Scan(&serverID)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNoServer
		}
		if err != nil {
			return fmt.Errorf("error choosing a database server: %w", err)
		}
		dbName := pgroles.DatabaseName(org.NameBase)
		if _, err := tx.Exec(ctx, `
			UPDATE organizations SET database_server_id = $2, database_name = $3, provision_state = 'provisioning'
			WHERE id = $1`, org.ID, serverID, dbName); err != nil {
			return fmt.Errorf("error placing org %s: %w", org.Key, err)
		}
		org.ServerID, org.DatabaseName, org.ProvisionState = &serverID, &dbName, "provisioning"
		return nil
	})
}

func (s *Service) recordStep(ctx context.Context, q db, orgID int64, step string) error {
	if _, err := q.Exec(ctx, `
		UPDATE org_provisioning SET steps_done = array_append(array_remove(steps_done, $2), $2), updated_at = now()
		WHERE org_id = $1`, orgID, step); err != nil {
		return fmt.Errorf("error recording provisioning step %s: %w", step, err)
	}
	if s.cfg.AfterStep != nil {
		return s.cfg.AfterStep(ctx, orgID, step)
	}
	return nil
}

// Limits are what the maintenance pass holds an org's read-only logins to, whatever they set themselves.
type Limits struct {
	// Query: a query running longer is terminated; default 30 minutes (pg_dump of a typical org database).
	Query time.Duration `json:"query_limit"`
	// IdleInTransaction: a session idle in a transaction longer is terminated; default 10 minutes.
	IdleInTransaction time.Duration `json:"idle_in_transaction_limit"`
}

// ErrInvalidLimits means a limit is under a second.
var ErrInvalidLimits = errors.New("invalid limits: each must be at least 1s")

// OrgLimits returns an org's limits.
func (s *Service) OrgLimits(ctx context.Context, orgID int64) (Limits, error) {
	var l Limits
	err := s.pool.QueryRow(ctx, `SELECT query_limit, idle_in_transaction_limit FROM organizations WHERE id = $1 AND deleted_at IS NULL`, orgID).
		Scan(&l.Query, &l.IdleInTransaction)
	if errors.Is(err, pgx.ErrNoRows) {
		return l, fmt.Errorf("%w: %d", ErrOrgNotFound, orgID)
	}
	if err != nil {
		return l, fmt.Errorf("error reading the limits of org %d: %w", orgID, err)
	}
	return l, nil
}

// SetOrgLimits changes an org's limits; the next maintenance pass applies them.
func (s *Service) SetOrgLimits(ctx context.Context, orgID int64, l Limits) error {
	if l.Query < time.Second || l.IdleInTransaction < time.Second {
		return ErrInvalidLimits
	}
	tag, err := s.pool.Exec(ctx, `UPDATE organizations SET query_limit = $2, idle_in_transaction_limit = $3 WHERE id = $1 AND deleted_at IS NULL`,
		orgID, l.Query, l.IdleInTransaction)
	if err != nil {
		return fmt.Errorf("error setting the limits of org %d: %w", orgID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: %d", ErrOrgNotFound, orgID)
	}
	return nil
}

// ProvisioningSteps returns the steps recorded for an org's last provisioning run and its last error.
func (s *Service) ProvisioningSteps(ctx context.Context, orgID int64) ([]string, string, error) {
	var steps []string
	var lastErr *string
	err := s.pool.QueryRow(ctx, `SELECT steps_done, last_error FROM org_provisioning WHERE org_id = $1`, orgID).Scan(&steps, &lastErr)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("error reading provisioning of org %d: %w", orgID, err)
	}
	if lastErr != nil {
		return steps, *lastErr, nil
	}
	return steps, "", nil
}

// DeleteOrg revokes every credential of the org, has the issuer forget it, drops its database and roles, and
// marks it deleted. Safe to run again after a failure.
func (s *Service) DeleteOrg(ctx context.Context, orgID int64) error {
	return s.withLock(ctx, lockClassOrg, orgID, func(q db) error {
		org, err := s.org(ctx, q, orgID)
		if err != nil {
			return err
		}
		if _, err := q.Exec(ctx, `UPDATE organizations SET provision_state = 'deleting' WHERE id = $1`, orgID); err != nil {
			return fmt.Errorf("error marking org %s deleting: %w", org.Key, err)
		}
		if org.ServerID != nil {
			srv, err := s.server(ctx, q, *org.ServerID)
			if err != nil {
				return err
			}
			creds, err := s.credentials(ctx, q, `WHERE c.org_id = $1 AND c.revoked_at IS NULL`, orgID)
			if err != nil {
				return err
			}
			for _, c := range creds {
				if err := s.revoke(ctx, q, srv, org.NameBase, c); err != nil {
					return err
				}
			}
			keys, err := s.serverOrgKeys(ctx, q, srv.ID) // the org is 'deleting': not listed
			if err != nil {
				return err
			}
			if err := s.cfg.Issuer.RemoveOrg(ctx, srv, org.NameBase, keys); err != nil {
				return fmt.Errorf("error removing org %s from %s credentials: %w", org.Key, s.cfg.Issuer.Mode(), err)
			}
			if err := pgroles.DropOrg(ctx, srv.AdminURL, org.NameBase); err != nil {
				return err
			}
			if err := s.dropRenameTarget(ctx, q, srv, org, keys); err != nil {
				return err
			}
		}
		if _, err := q.Exec(ctx, `UPDATE organizations SET provision_state = 'deleted', deleted_at = now() WHERE id = $1`, orgID); err != nil {
			return fmt.Errorf("error marking org %s deleted: %w", org.Key, err)
		}
		return nil
	})
}
