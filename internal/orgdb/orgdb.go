package orgdb

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/webhookdb-go/webhookdb/internal/secrets"
)

var (
	// ErrOrgNotFound means no live organization has that id.
	ErrOrgNotFound = errors.New("organization not found")
	// ErrNotProvisioned means the org's database is not ready yet (provisioning has not finished).
	ErrNotProvisioned = errors.New("organization database is not provisioned")
	// ErrNoServer means no database server is registered to place an org on.
	ErrNoServer = errors.New("no database server registered")
	// ErrServerNotFound means no database server has that id or name.
	ErrServerNotFound = errors.New("database server not found")
	// ErrInvalidServer means a server registration is invalid.
	ErrInvalidServer = errors.New("invalid database server")
	// ErrInvalidOrg means an org's key or name is invalid; ErrInvalidOrgKey and ErrInvalidOrgName say which.
	ErrInvalidOrg     = errors.New("invalid organization")
	ErrInvalidOrgKey  = fmt.Errorf("%w key", ErrInvalidOrg)
	ErrInvalidOrgName = fmt.Errorf("%w name", ErrInvalidOrg)
	// ErrOrgExists means a live org already has that key.
	ErrOrgExists = errors.New("an organization with that key exists")
)

// Config configures a Service.
type Config struct {
	// Issuer issues read-only credentials (required): a vault.Issuer, or a PostgresIssuer.
	Issuer Issuer
	// Box encrypts admin URLs and read-only URLs (required).
	Box secrets.Box
	// RenewBefore is how much validity a credential must have left not to be renewed (by Connection and by
	// the maintenance pass); default a third of the TTL.
	RenewBefore time.Duration
	// MaintainInterval is how often Run makes a maintenance pass; default 1 minute.
	MaintainInterval time.Duration
	// WriterRotationPeriod is how often the fanout's password is replaced in postgres mode (Vault rotates
	// its static role itself); default 1h.
	WriterRotationPeriod time.Duration
	// AfterStep, when set, is called after each provisioning step is recorded; an error stops provisioning
	// (tests use it to simulate a crash).
	AfterStep func(ctx context.Context, orgID int64, step string) error
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// WithDefaults returns a copy with defaults filled in.
func (c Config) WithDefaults() Config {
	if c.RenewBefore == 0 && c.Issuer != nil {
		c.RenewBefore = c.Issuer.Policy().TTL / 3
	}
	if c.MaintainInterval == 0 {
		c.MaintainInterval = time.Minute
	}
	if c.WriterRotationPeriod == 0 {
		c.WriterRotationPeriod = time.Hour
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	if c.Issuer == nil {
		errs = append(errs, errors.New("orgdb: Issuer is required"))
	}
	if c.Box == nil {
		errs = append(errs, errors.New("orgdb: Box is required"))
	}
	if c.Issuer != nil && (c.RenewBefore < 0 || c.RenewBefore >= c.Issuer.Policy().TTL) {
		errs = append(errs, fmt.Errorf("orgdb: RenewBefore %s must be under the credential TTL %s", c.RenewBefore, c.Issuer.Policy().TTL))
	}
	if c.WriterRotationPeriod < 0 {
		errs = append(errs, errors.New("orgdb: WriterRotationPeriod must not be negative"))
	}
	if c.MaintainInterval < 0 {
		errs = append(errs, errors.New("orgdb: MaintainInterval must not be negative"))
	}
	return errors.Join(errs...)
}

// Service manages database servers, org databases and read-only credentials.
type Service struct {
	pool *pgxpool.Pool
	cfg  Config
	// renewFailed, when set, is told of credentials the maintenance pass could not renew (SetRenewalAlert).
	renewFailed RenewalAlert
}

// RenewalAlert is told when read-only credentials could not be renewed (internal/alerts, through the app).
type RenewalAlert interface {
	RenewalFailed(ctx context.Context, orgID int64, username string, err error)
}

// SetRenewalAlert sets who is told of renewals that failed; call it before Run.
func (s *Service) SetRenewalAlert(a RenewalAlert) { s.renewFailed = a }

// New returns a Service on the application database.
func New(pool *pgxpool.Pool, cfg Config) (*Service, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Service{pool: pool, cfg: cfg}, nil
}

// Mode is the credential mode (ModeVault or ModePostgres), for the server's start-up message.
func (s *Service) Mode() string { return s.cfg.Issuer.Mode() }

// Advisory lock classes (the two-int4 form keeps them apart from other users of advisory locks).
const (
	lockClassOrg       = 0x77686f67 // "whog": one org's provisioning and credentials
	lockClassPlacement = 0x77687370 // "whsp": choosing servers, registering them
	lockClassWriter    = 0x77687772 // "whwr": one server's fanout password
)

// withLock runs fn holding a session advisory lock, so that one org's operations are serialised across
// every webhookdb process sharing the application database. fn must do all its database work on q, the
// connection holding the lock: a holder that needed a second pool connection could wait forever on a pool
// exhausted by waiters.
func (s *Service) withLock(ctx context.Context, class int32, id int64, fn func(q db) error) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("error acquiring a connection: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1, $2)`, class, int32(id)); err != nil {
		return fmt.Errorf("error taking lock: %w", err)
	}
	defer func() {
		if _, err := conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1, $2)`, class, int32(id)); err != nil {
			// Never hand a connection that may still hold the lock back to the pool.
			_ = conn.Conn().Close(context.WithoutCancel(ctx))
		}
	}()
	return fn(conn)
}

// db is what the queries here need of a pool, connection or transaction.
type db interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Begin(ctx context.Context) (pgx.Tx, error)
}

func randomID(prefix string) string {
	const set = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 26)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = set[int(b[i])%len(set)] // 256 % 36 bias is irrelevant for an identifier
	}
	return prefix + string(b)
}

func isCode(err error, code string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == code
}
