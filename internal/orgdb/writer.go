package orgdb

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/internal/secrets"
	"github.com/webhookdb-go/webhookdb/pgroles"
)

// WriterCredential is the fanout's login on a server: webhookdb_fanout, a member of every org owner role
// there and nothing else. Connect to an org database with it and SET ROLE to the org's owner.
type WriterCredential struct {
	Username string
	Password string
	// RotatesAt is when the password is next replaced (zero when unknown). Open connections keep working
	// across a rotation; a new connection needs the new password: fetch the credential for every new
	// connection (pgxpool's BeforeConnect), and again after SQLSTATE 28P01.
	RotatesAt time.Time
}

// WriterIssuer is an Issuer that also holds the fanout's credentials (Vault: a static role rotated by
// Vault). Without it (postgres mode) webhookdb keeps and rotates them itself.
type WriterIssuer interface {
	WriterCredential(ctx context.Context, srv Server) (*WriterCredential, error)
}

// WriterBinding binds a server's encrypted fanout password to its row.
func WriterBinding(serverID int64) secrets.Binding {
	return secrets.Binding{Table: "server_writer_credentials", Column: "password_enc", Row: strconv.FormatInt(serverID, 10)}
}

// WriterCredential returns the fanout's current login on a server.
func (s *Service) WriterCredential(ctx context.Context, serverID int64) (*WriterCredential, error) {
	srv, err := s.server(ctx, s.pool, serverID)
	if err != nil {
		return nil, err
	}
	if wi, ok := s.cfg.Issuer.(WriterIssuer); ok {
		return wi.WriterCredential(ctx, srv)
	}
	cred, rotatedAt, err := s.storedWriter(ctx, s.pool, srv)
	if err != nil {
		return nil, err
	}
	if cred != nil {
		cred.RotatesAt = rotatedAt.Add(s.cfg.WriterRotationPeriod)
		return cred, nil
	}
	return s.firstWriter(ctx, srv)
}

// firstWriter sets the server's first fanout password. Many workers resolve orgs of a new server at once:
// under the lock, the first sets it and the others read it, instead of each rotating again and
// invalidating the password the one before handed out.
func (s *Service) firstWriter(ctx context.Context, srv Server) (*WriterCredential, error) {
	var out *WriterCredential
	err := s.withLock(ctx, lockClassWriter, srv.ID, func(q db) error {
		cred, rotatedAt, err := s.storedWriter(ctx, q, srv)
		if err != nil {
			return err
		}
		if cred != nil {
			cred.RotatesAt = rotatedAt.Add(s.cfg.WriterRotationPeriod)
			out = cred
			return nil
		}
		out, err = s.rotateWriterLocked(ctx, q, srv)
		return err
	})
	return out, err
}

// RepairWriter sets the stored fanout password of the org's server on the server again (postgres mode; in
// Vault mode Vault owns it and this does nothing). A rotation is two steps on two databases, ALTER ROLE then
// the store; a process killed between them leaves the server with a password nobody has, which would lock
// the fanout out until the next rotation. The fanout calls this after SQLSTATE 28P01. Idempotent: it only
// ever writes what is stored, under the rotation's lock, so processes repairing at once cannot disagree.
func (s *Service) RepairWriter(ctx context.Context, orgID int64) error {
	if _, ok := s.cfg.Issuer.(WriterIssuer); ok {
		return nil
	}
	org, err := s.org(ctx, s.pool, orgID)
	if err != nil {
		return err
	}
	if org.ServerID == nil {
		return fmt.Errorf("%w: org %s", ErrNotProvisioned, org.Key)
	}
	srv, err := s.server(ctx, s.pool, *org.ServerID)
	if err != nil {
		return err
	}
	return s.withLock(ctx, lockClassWriter, srv.ID, func(q db) error {
		cred, _, err := s.storedWriter(ctx, q, srv)
		if err != nil {
			return err
		}
		if cred == nil {
			_, err = s.rotateWriterLocked(ctx, q, srv)
			return err
		}
		s.cfg.Logger.WarnContext(ctx, "setting the stored fanout password on the server again after a failed login", slog.String("server", srv.Name))
		return pgroles.EnsureFanoutRole(ctx, srv.AdminURL, cred.Password)
	})
}

// WriterConnString returns a connection string to the org's database as the fanout (the server's own
// address, from its admin URL), and the owner role to SET ROLE to after connecting.
func (s *Service) WriterConnString(ctx context.Context, orgID int64) (connString, ownerRole string, err error) {
	org, err := s.org(ctx, s.pool, orgID)
	if err != nil {
		return "", "", err
	}
	if org.ServerID == nil || org.DatabaseName == nil {
		return "", "", fmt.Errorf("%w: org %s", ErrNotProvisioned, org.Key)
	}
	cred, err := s.WriterCredential(ctx, *org.ServerID)
	if err != nil {
		return "", "", err
	}
	srv, err := s.server(ctx, s.pool, *org.ServerID)
	if err != nil {
		return "", "", err
	}
	cfg, err := pgx.ParseConfig(srv.AdminURL)
	if err != nil {
		return "", "", errors.New("error parsing the admin URL")
	}
	u := url.URL{
		Scheme: "postgres", User: url.UserPassword(cred.Username, cred.Password),
		Host: cfg.Host + ":" + strconv.Itoa(int(cfg.Port)), Path: "/" + *org.DatabaseName,
	}
	if m := sslmodeOf(srv.AdminURL); m != "" {
		u.RawQuery = url.Values{"sslmode": {m}}.Encode()
	}
	if cfg.Host != "" && cfg.Host[0] == '/' {
		u.Host = ""
		q := u.Query()
		q.Set("host", cfg.Host)
		q.Set("port", strconv.Itoa(int(cfg.Port)))
		u.RawQuery = q.Encode()
	}
	return u.String(), pgroles.OwnerRole(org.NameBase), nil
}

func sslmodeOf(connString string) string {
	if u, err := url.Parse(connString); err == nil && u.Scheme != "" {
		return u.Query().Get("sslmode")
	}
	return ""
}

func (s *Service) storedWriter(ctx context.Context, q db, srv Server) (*WriterCredential, time.Time, error) {
	var username, enc string
	var rotatedAt time.Time
	err := q.QueryRow(ctx, `SELECT username, password_enc, rotated_at FROM server_writer_credentials WHERE server_id = $1`, srv.ID).Scan(&username, &enc, &rotatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, time.Time{}, nil
	}
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("error reading the fanout credentials of %s: %w", srv.Name, err)
	}
	pw, err := s.cfg.Box.Decrypt(ctx, WriterBinding(srv.ID), enc)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("error decrypting the fanout credentials of %s: %w", srv.Name, err)
	}
	return &WriterCredential{Username: username, Password: string(pw)}, rotatedAt, nil
}

// rotateWriter gives webhookdb_fanout a new random password on the server and stores it. The password is
// set first: a crash before the store leaves the old one stored, which RepairWriter sets again on the
// fanout's first failed login.
func (s *Service) rotateWriter(ctx context.Context, srv Server) (*WriterCredential, error) {
	var out *WriterCredential
	err := s.withLock(ctx, lockClassWriter, srv.ID, func(q db) error {
		var err error
		out, err = s.rotateWriterLocked(ctx, q, srv)
		return err
	})
	return out, err
}

func (s *Service) rotateWriterLocked(ctx context.Context, q db, srv Server) (*WriterCredential, error) {
	password := rand.Text() + rand.Text()
	enc, err := s.cfg.Box.Encrypt(ctx, WriterBinding(srv.ID), []byte(password))
	if err != nil {
		return nil, fmt.Errorf("error encrypting the fanout password: %w", err)
	}
	if err := pgroles.EnsureFanoutRole(ctx, srv.AdminURL, password); err != nil {
		return nil, err
	}
	var rotatedAt time.Time
	err = q.QueryRow(ctx, `
		INSERT INTO server_writer_credentials (server_id, username, password_enc) VALUES ($1, $2, $3)
		ON CONFLICT (server_id) DO UPDATE SET username = EXCLUDED.username, password_enc = EXCLUDED.password_enc, rotated_at = now()
		RETURNING rotated_at`, srv.ID, pgroles.FanoutRole, enc).Scan(&rotatedAt)
	if err != nil {
		return nil, fmt.Errorf("error storing the fanout credentials of %s: %w", srv.Name, err)
	}
	return &WriterCredential{Username: pgroles.FanoutRole, Password: password, RotatesAt: rotatedAt.Add(s.cfg.WriterRotationPeriod)}, nil
}

// RotateWriter replaces the fanout's password on a server now (postgres mode; Vault mode rotates the static
// role).
func (s *Service) RotateWriter(ctx context.Context, serverID int64) (*WriterCredential, error) {
	srv, err := s.server(ctx, s.pool, serverID)
	if err != nil {
		return nil, err
	}
	if _, ok := s.cfg.Issuer.(WriterIssuer); ok {
		return nil, errors.New("the fanout credentials are rotated by Vault (database/rotate-role)")
	}
	return s.rotateWriter(ctx, srv)
}

// rotateDueWriters rotates the stored fanout passwords older than the rotation period.
func (s *Service) rotateDueWriters(ctx context.Context) (int, error) {
	if _, ok := s.cfg.Issuer.(WriterIssuer); ok {
		return 0, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT server_id FROM server_writer_credentials WHERE rotated_at < $1 ORDER BY server_id`, time.Now().Add(-s.cfg.WriterRotationPeriod))
	if err != nil {
		return 0, fmt.Errorf("error listing fanout credentials: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return 0, fmt.Errorf("error listing fanout credentials: %w", err)
	}
	var errs []error
	n := 0
	for _, id := range ids {
		if _, err := s.RotateWriter(ctx, id); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}
