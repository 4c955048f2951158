package orgdb

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/internal/secrets"
	"github.com/webhookdb-go/webhookdb/pgroles"
)

// Credential is a read-only connection string to an org's database: a member's own login, or the
// server's own login for the org.
type Credential struct {
	// URL is postgres://user:password@public-host:port/org_<name base>?sslmode=...
	URL       string    `json:"url"`
	Username  string    `json:"username"`
	Database  string    `json:"database"`
	ExpiresAt time.Time `json:"expires_at"`
	Mode      string    `json:"mode"`
	// Kind is KindMember or KindService.
	Kind string `json:"kind"`
	// CACert is the server's CA certificate (PEM) when its sslmode is verify-ca or verify-full: clients
	// need it as sslrootcert.
	CACert string `json:"ca_cert,omitempty"`
}

// Credential kinds. Every member of an org gets a login of their own (MemberConnection), and the server one
// of its own per org (ServiceConnection: db sql, db tables), so that whatever a login does to itself (change
// its password or role settings) affects nobody else.
const (
	KindMember  = "member"
	KindService = "service"
)

// ErrNotMember means the user is not (or no longer) a member of the org: no login is issued for them.
var ErrNotMember = errors.New("not a member of the organization")

// ErrRevokePending means new credentials were issued and stored, but the old ones could not be revoked yet;
// the maintenance pass keeps trying. The caller should report a failure: the old password may still work.
var ErrRevokePending = errors.New("new credentials issued, but revoking the old ones failed (retried in the background)")

// URLBinding binds a credential's encrypted URL to its row.
func URLBinding(credentialID string) secrets.Binding {
	return secrets.Binding{Table: "org_credentials", Column: "url_enc", Row: credentialID}
}

// credential is an org_credentials row.
type credential struct {
	ID           string
	OrgID        int64
	ServerID     int64
	Mode         string
	Username     string
	URLEnc       string
	LeaseID      string
	IssuedAt     time.Time
	ExpiresAt    time.Time
	MaxExpiresAt time.Time
	SupersededAt *time.Time
	RevokeAfter  *time.Time
	UserID       *int64 // the member whose login it is; nil for the service login
	// from the org
	OrgKey   string
	NameBase string
	Database string
	CACert   string // from the server
	OrgReady bool
}

func (c credential) lease() Lease {
	return Lease{ID: c.LeaseID, Username: c.Username, IssuedAt: c.IssuedAt, ExpiresAt: c.ExpiresAt}
}

// credentials reads org_credentials rows (alias c) with their org (alias o); where filters them.
func (s *Service) credentials(ctx context.Context, q db, where string, args ...any) ([]credential, error) {
	rows, err := q.Query(ctx, `
		SELECT c.id, c.org_id, c.database_server_id, c.mode, c.username, c.url_enc, c.lease_id, c.issued_at, c.expires_at,
		       c.max_expires_at, c.superseded_at, c.revoke_after, c.user_id, o.key, coalesce(o.name_base, o.key), coalesce(o.database_name, ''),
		       o.provision_state = 'ready' AND o.deleted_at IS NULL, coalesce(s.ca_cert, '')
		FROM org_credentials c JOIN organizations o ON o.id = c.org_id
		JOIN database_servers s ON s.id = c.database_server_id `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("error reading credentials: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (credential, error) {
		var c credential
		err := r.Scan(&c.ID, &c.OrgID, &c.ServerID, &c.Mode, &c.Username, &c.URLEnc, &c.LeaseID, &c.IssuedAt, &c.ExpiresAt, &c.MaxExpiresAt, &c.SupersededAt, &c.RevokeAfter, &c.UserID, &c.OrgKey, &c.NameBase, &c.Database, &c.OrgReady, &c.CACert)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("error reading credentials: %w", err)
	}
	return out, nil
}

// holderIs filters credentials (alias c) on their holder, argument n: a user id, 0 for the service login.
func holderIs(n int) string { return fmt.Sprintf("coalesce(c.user_id, 0) = $%d", n) }

func kindOf(userID *int64) string {
	if userID == nil {
		return KindService
	}
	return KindMember
}

// holderID is the user_id column's value for a holder: NULL for the service login.
func holderID(userID int64) *int64 {
	if userID == 0 {
		return nil
	}
	return &userID
}

// current returns the holder's current credential (userID 0: the service login's), or nil.
func (s *Service) current(ctx context.Context, q db, orgID, userID int64) (*credential, error) {
	cs, err := s.credentials(ctx, q, `WHERE c.org_id = $1 AND `+holderIs(2)+` AND c.superseded_at IS NULL AND c.revoked_at IS NULL`, orgID, userID)
	if err != nil || len(cs) == 0 {
		return nil, err
	}
	return &cs[0], nil
}

// checkMember fails with ErrNotMember unless the user is a member of the org (userID 0, the service login,
// passes). Run under the org's lock, after a removal it keeps a login from being issued to the removed member.
func (s *Service) checkMember(ctx context.Context, q db, orgID, userID int64) error {
	if userID == 0 {
		return nil
	}
	var ok bool
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM memberships WHERE org_id = $1 AND user_id = $2)`, orgID, userID).Scan(&ok); err != nil {
		return fmt.Errorf("error checking membership: %w", err)
	}
	if !ok {
		return fmt.Errorf("%w: user %d, org %d", ErrNotMember, userID, orgID)
	}
	return nil
}

func (s *Service) open(ctx context.Context, c *credential) (*Credential, error) {
	plain, err := s.cfg.Box.Decrypt(ctx, URLBinding(c.ID), c.URLEnc)
	if err != nil {
		return nil, fmt.Errorf("error decrypting credentials: %w", err)
	}
	return &Credential{URL: string(plain), Username: c.Username, Database: c.Database, ExpiresAt: c.ExpiresAt, Mode: c.Mode, Kind: kindOf(c.UserID), CACert: c.CACert}, nil
}

// fresh reports whether a credential needs neither renewal nor reissue.
func (s *Service) fresh(c *credential) bool {
	return c.Mode == s.cfg.Issuer.Mode() && time.Until(c.ExpiresAt) > s.cfg.RenewBefore
}

// MemberConnection returns the member's own read-only URL (`db connection`): nobody else uses that login,
// so nothing its holder does to it (a new password, changed role settings) affects another member or the
// server. ErrNotMember when the user is not a member of the org. See ServiceConnection for its life cycle.
func (s *Service) MemberConnection(ctx context.Context, orgID, userID int64) (*Credential, error) {
	if userID <= 0 {
		return nil, fmt.Errorf("%w: user %d", ErrNotMember, userID)
	}
	return s.connection(ctx, orgID, userID)
}

// ServiceConnection returns the read-only URL the server itself uses for the org (db sql, db tables): a
// login of its own, never handed to a member. Like a member's, it is issued on first use, renewed when less
// than RenewBefore of it is left, reissued when it cannot be renewed (past its max TTL, or forgotten by the
// issuer); a reissued credential's predecessor is revoked at its own expiry.
func (s *Service) ServiceConnection(ctx context.Context, orgID int64) (*Credential, error) {
	return s.connection(ctx, orgID, 0)
}

// Connection is ServiceConnection.
func (s *Service) Connection(ctx context.Context, orgID int64) (*Credential, error) {
	return s.ServiceConnection(ctx, orgID)
}

// connection returns the holder's current credential (userID 0: the service login), issuing, renewing or
// reissuing it as needed.
func (s *Service) connection(ctx context.Context, orgID, userID int64) (*Credential, error) {
	// Fast path, no lock: a fresh current credential. (A removed member's are revoked before removal
	// returns, so they are never current here.)
	if c, err := s.current(ctx, s.pool, orgID, userID); err != nil {
		return nil, err
	} else if c != nil && c.OrgReady && s.fresh(c) {
		return s.open(ctx, c)
	}
	var out *Credential
	err := s.withLock(ctx, lockClassOrg, orgID, func(q db) error {
		org, srv, err := s.readyOrg(ctx, q, orgID)
		if err != nil {
			return err
		}
		if err := s.checkMember(ctx, q, orgID, userID); err != nil {
			return err
		}
		c, err := s.current(ctx, q, orgID, userID)
		if err != nil {
			return err
		}
		if c != nil && s.fresh(c) {
			out, err = s.open(ctx, c)
			return err
		}
		if c != nil && c.Mode == s.cfg.Issuer.Mode() {
			expires, err := s.cfg.Issuer.Renew(ctx, srv, org.NameBase, c.lease())
			switch {
			case err == nil && time.Until(expires) > s.cfg.RenewBefore:
				if _, err := q.Exec(ctx, `UPDATE org_credentials SET expires_at = $2 WHERE id = $1`, c.ID, expires); err != nil {
					return fmt.Errorf("error recording renewal: %w", err)
				}
				c.ExpiresAt = expires
				out, err = s.open(ctx, c)
				return err
			case err == nil, errors.Is(err, ErrLeaseGone), errors.Is(err, ErrNotRenewable):
				// reissue below
			case time.Until(c.ExpiresAt) > 0:
				// The issuer is unreachable, but the credential still works: hand it out rather than fail.
				s.cfg.Logger.WarnContext(ctx, "cannot renew read-only credentials; returning the current ones", "org", org.Key, "expires_at", c.ExpiresAt, "error", err)
				out, err = s.open(ctx, c)
				return err
			default:
				return fmt.Errorf("error renewing credentials of org %s: %w", org.Key, err)
			}
		}
		var revokeAfter time.Time
		if c != nil {
			revokeAfter = c.ExpiresAt // whoever still uses it keeps it until it expires
		}
		out, _, err = s.issue(ctx, q, org, srv, userID, c, revokeAfter)
		return err
	})
	return out, err
}

// RollMemberCredentials issues the member a new login, then revokes every older one of theirs
// synchronously: when it returns, the old passwords fail and sessions opened with them are closed. Nobody
// else's login changes. It returns the new credentials; ErrNotMember when the user is not a member.
func (s *Service) RollMemberCredentials(ctx context.Context, orgID, userID int64) (*Credential, error) {
	if userID <= 0 {
		return nil, fmt.Errorf("%w: user %d", ErrNotMember, userID)
	}
	return s.rollOne(ctx, orgID, userID)
}

// RollCredentials rolls the org's service login (as RollMemberCredentials does a member's).
func (s *Service) RollCredentials(ctx context.Context, orgID int64) (*Credential, error) {
	return s.rollOne(ctx, orgID, 0)
}

func (s *Service) rollOne(ctx context.Context, orgID, userID int64) (*Credential, error) {
	var out *Credential
	err := s.withLock(ctx, lockClassOrg, orgID, func(q db) error {
		org, srv, err := s.readyOrg(ctx, q, orgID)
		if err != nil {
			return err
		}
		if err := s.checkMember(ctx, q, orgID, userID); err != nil {
			return err
		}
		out, err = s.roll(ctx, q, org, srv, userID)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// RollAllCredentials revokes every login of the org, members' and the service's, synchronously, and issues
// a new service login and a new login for userID (the caller, a member; 0 for none), which it returns. The
// other members get new logins on their next MemberConnection. Callers must check the caller is an org admin.
func (s *Service) RollAllCredentials(ctx context.Context, orgID, userID int64) (*Credential, error) {
	var out *Credential
	err := s.withLock(ctx, lockClassOrg, orgID, func(q db) error {
		org, srv, err := s.readyOrg(ctx, q, orgID)
		if err != nil {
			return err
		}
		if err := s.checkMember(ctx, q, orgID, userID); err != nil {
			return err
		}
		// Every member's login other than the caller's: due now (a crash leaves them to the maintenance pass).
		others, err := s.credentials(ctx, q, `WHERE c.org_id = $1 AND c.user_id IS NOT NULL AND c.user_id <> $2 AND c.revoked_at IS NULL`, orgID, userID)
		if err != nil {
			return err
		}
		if err := s.markDue(ctx, q, others); err != nil {
			return err
		}
		var errs []error
		if _, err := s.roll(ctx, q, org, srv, 0); err != nil {
			errs = append(errs, err)
		}
		if userID != 0 {
			if out, err = s.roll(ctx, q, org, srv, userID); err != nil {
				errs = append(errs, err)
			}
		}
		for _, c := range others {
			if err := s.revoke(ctx, q, srv, org.NameBase, c); err != nil {
				errs = append(errs, fmt.Errorf("%w: %w", ErrRevokePending, err))
			}
		}
		return errors.Join(errs...)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// RevokeMember revokes every login of the user in the org synchronously (the API calls it when a member is
// removed, after the membership is gone): when it returns, their passwords fail and their sessions are
// closed. Should a revocation fail, the credential stays due and the maintenance pass retries it (it also
// revokes, on its own, the logins of anyone who is no longer a member).
func (s *Service) RevokeMember(ctx context.Context, orgID, userID int64) error {
	if userID <= 0 {
		return nil
	}
	return s.withLock(ctx, lockClassOrg, orgID, func(q db) error {
		creds, err := s.credentials(ctx, q, `WHERE c.org_id = $1 AND c.user_id = $2 AND c.revoked_at IS NULL`, orgID, userID)
		if err != nil || len(creds) == 0 {
			return err
		}
		if err := s.markDue(ctx, q, creds); err != nil {
			return err
		}
		srv, err := s.server(ctx, q, creds[0].ServerID)
		if err != nil {
			return err
		}
		var errs []error
		for _, c := range creds {
			if err := s.revoke(ctx, q, srv, c.NameBase, c); err != nil {
				errs = append(errs, fmt.Errorf("%w: %w", ErrRevokePending, err))
			}
		}
		return errors.Join(errs...)
	})
}

// markDue supersedes credentials and makes them due for revocation now.
func (s *Service) markDue(ctx context.Context, q db, creds []credential) error {
	if len(creds) == 0 {
		return nil
	}
	ids := make([]string, len(creds))
	for i, c := range creds {
		ids[i] = c.ID
	}
	if _, err := q.Exec(ctx, `UPDATE org_credentials SET superseded_at = coalesce(superseded_at, now()), revoke_after = now() WHERE id = ANY($1)`, ids); err != nil {
		return fmt.Errorf("error marking credentials for revocation: %w", err)
	}
	return nil
}

// roll issues a new credential for the holder, then revokes every older one of theirs synchronously. The new
// one is stored first, with the old ones marked due: a crash between the two steps leaves the new URL in
// place and the old ones for the maintenance pass to revoke.
func (s *Service) roll(ctx context.Context, q db, org *Org, srv Server, userID int64) (*Credential, error) {
	olds, err := s.credentials(ctx, q, `WHERE c.org_id = $1 AND `+holderIs(2)+` AND c.revoked_at IS NULL`, org.ID, userID)
	if err != nil {
		return nil, err
	}
	var cur *credential
	var superseded []credential
	for i := range olds {
		if olds[i].SupersededAt == nil {
			cur = &olds[i]
		} else {
			superseded = append(superseded, olds[i])
		}
	}
	if err := s.markDue(ctx, q, superseded); err != nil {
		return nil, err
	}
	out, _, err := s.issue(ctx, q, org, srv, userID, cur, time.Now())
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, c := range olds {
		if err := s.revoke(ctx, q, srv, org.NameBase, c); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return out, fmt.Errorf("%w: %w", ErrRevokePending, errors.Join(errs...))
	}
	return out, nil
}

func (s *Service) readyOrg(ctx context.Context, q db, orgID int64) (*Org, Server, error) {
	org, err := s.org(ctx, q, orgID)
	if err != nil {
		return nil, Server{}, err
	}
	if org.ProvisionState != "ready" || org.ServerID == nil || org.DatabaseName == nil {
		return nil, Server{}, fmt.Errorf("%w: org %s is %s", ErrNotProvisioned, org.Key, org.ProvisionState)
	}
	srv, err := s.server(ctx, q, *org.ServerID)
	if err != nil {
		return nil, Server{}, err
	}
	return org, srv, nil
}

// issue issues a credential and stores it as the holder's current one (userID 0: the org's service login);
// old, when set, is superseded and due for revocation at revokeAfter.
func (s *Service) issue(ctx context.Context, q db, org *Org, srv Server, userID int64, old *credential, revokeAfter time.Time) (*Credential, *credential, error) {
	lease, err := s.cfg.Issuer.Issue(ctx, srv, org.NameBase)
	if err != nil {
		return nil, nil, fmt.Errorf("error issuing credentials for org %s: %w", org.Key, err)
	}
	id := randomID("crd_")
	url := readonlyURL(srv, *org.DatabaseName, lease.Username, lease.Password)
	enc, err := s.cfg.Box.Encrypt(ctx, URLBinding(id), []byte(url))
	if err != nil {
		s.abandon(ctx, srv, org.NameBase, *lease)
		return nil, nil, fmt.Errorf("error encrypting credentials: %w", err)
	}
	c := &credential{
		ID: id, OrgID: org.ID, ServerID: srv.ID, Mode: s.cfg.Issuer.Mode(), Username: lease.Username, URLEnc: enc,
		LeaseID: lease.ID, IssuedAt: lease.IssuedAt, ExpiresAt: lease.ExpiresAt, MaxExpiresAt: lease.IssuedAt.Add(s.cfg.Issuer.Policy().MaxTTL),
		UserID: holderID(userID),
	}
	err = pgx.BeginFunc(ctx, q, func(tx pgx.Tx) error {
		if old != nil {
			if _, err := tx.Exec(ctx, `UPDATE org_credentials SET superseded_at = now(), revoke_after = $2 WHERE id = $1`, old.ID, revokeAfter); err != nil {
				return fmt.Errorf("error superseding credentials: %w", err)
			}
		}
		_, err := tx.Exec(ctx, `
			INSERT INTO org_credentials (id, org_id, database_server_id, mode, username, url_enc, lease_id, issued_at, expires_at, max_expires_at, user_id)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
			c.ID, c.OrgID, c.ServerID, c.Mode, c.Username, c.URLEnc, c.LeaseID, c.IssuedAt, c.ExpiresAt, c.MaxExpiresAt, c.UserID)
		if err != nil {
			return fmt.Errorf("error storing credentials: %w", err)
		}
		return nil
	})
	if err != nil {
		s.abandon(ctx, srv, org.NameBase, *lease)
		return nil, nil, err
	}
	return &Credential{URL: url, Username: lease.Username, Database: *org.DatabaseName, ExpiresAt: lease.ExpiresAt, Mode: c.Mode, Kind: kindOf(c.UserID), CACert: srv.CACert}, c, nil
}

// abandon revokes a lease that could not be stored, so that failures do not pile up live logins.
func (s *Service) abandon(ctx context.Context, srv Server, orgKey string, lease Lease) {
	ctx = context.WithoutCancel(ctx)
	if err := s.cfg.Issuer.Revoke(ctx, srv, orgKey, lease); err != nil {
		s.cfg.Logger.WarnContext(ctx, "cannot revoke unstored credentials; they expire on their own", "org", orgKey, "username", lease.Username, "expires_at", lease.ExpiresAt, "error", err)
	}
}

// revoke revokes a stored credential through its issuer, then makes sure in the database itself that the
// role is gone and has no session left (Vault's revocation statements run in one transaction, and a lease
// Vault has forgotten is never revoked by Vault). It is revoked once that backstop has succeeded.
func (s *Service) revoke(ctx context.Context, q db, srv Server, orgKey string, c credential) error {
	var issuerErr error
	if c.Mode == s.cfg.Issuer.Mode() {
		issuerErr = s.cfg.Issuer.Revoke(ctx, srv, orgKey, c.lease())
	}
	if err := pgroles.EnsureLoginGone(ctx, srv.AdminURL, c.Username); err != nil {
		err = errors.Join(issuerErr, err)
		if _, recErr := q.Exec(context.WithoutCancel(ctx), `UPDATE org_credentials SET last_error = $2 WHERE id = $1`, c.ID, err.Error()); recErr != nil {
			s.cfg.Logger.ErrorContext(ctx, "cannot record revocation error", "credential", c.ID, "error", recErr)
		}
		return fmt.Errorf("error revoking credentials %s of org %s: %w", c.Username, orgKey, err)
	}
	if issuerErr != nil {
		// The role is gone; the issuer's lease ends at its expiry, and its revocation is safe to run then.
		s.cfg.Logger.WarnContext(ctx, "issuer could not revoke the lease; the login role was dropped directly", "org", orgKey, "username", c.Username, "error", issuerErr)
	}
	if _, err := q.Exec(ctx, `
		UPDATE org_credentials SET revoked_at = now(), superseded_at = coalesce(superseded_at, now()), last_error = $2
		WHERE id = $1`, c.ID, errString(issuerErr)); err != nil {
		return fmt.Errorf("error recording revocation: %w", err)
	}
	return nil
}

func errString(err error) *string {
	if err == nil {
		return nil
	}
	s := err.Error()
	return &s
}
