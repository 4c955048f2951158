package orgdb

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/internal/secrets"
	"github.com/webhookdb-go/webhookdb/pgroles"
)

var serverNamePattern = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,40}$`)

var sslModes = map[string]bool{"disable": true, "allow": true, "prefer": true, "require": true, "verify-ca": true, "verify-full": true}

// ServerSpec registers a database server.
type ServerSpec struct {
	// Name identifies the server (and its Vault connection, database/config/<name>).
	Name string
	// AdminURL logs in as a superuser; it is stored encrypted and used to provision orgs.
	AdminURL string
	// PublicHost and PublicPort are how users reach the server; they go into read-only URLs.
	PublicHost string
	PublicPort int
	// SSLMode goes into read-only URLs; default prefer.
	SSLMode string
}

func (s ServerSpec) validate() error {
	var errs []error
	if !serverNamePattern.MatchString(s.Name) {
		errs = append(errs, fmt.Errorf("%w: name %q must match %s", ErrInvalidServer, s.Name, serverNamePattern))
	}
	if _, err := pgx.ParseConfig(s.AdminURL); err != nil {
		errs = append(errs, fmt.Errorf("%w: admin URL does not parse", ErrInvalidServer)) // never echo the URL: it holds a password
	}
	if s.PublicHost == "" {
		errs = append(errs, fmt.Errorf("%w: public host is required", ErrInvalidServer))
	}
	if s.PublicPort < 1 || s.PublicPort > 65535 {
		errs = append(errs, fmt.Errorf("%w: public port %d out of range", ErrInvalidServer, s.PublicPort))
	}
	if !sslModes[s.SSLMode] {
		errs = append(errs, fmt.Errorf("%w: sslmode %q", ErrInvalidServer, s.SSLMode))
	}
	return errors.Join(errs...)
}

// ServerInfo describes a registered server (without its admin URL).
type ServerInfo struct {
	ID         int64  `json:"id"`
	Name       string `json:"name"`
	PublicHost string `json:"public_host"`
	PublicPort int    `json:"public_port"`
	SSLMode    string `json:"sslmode"`
	Orgs       int    `json:"orgs"`
}

// AdminURLBinding binds a server's encrypted admin URL to its row.
func AdminURLBinding(serverName string) secrets.Binding {
	return secrets.Binding{Table: "database_servers", Column: "admin_url_enc", Row: serverName}
}

// RegisterServer registers a database server, or updates one of the same name: it checks the admin URL
// logs in as a superuser, takes CONNECT and TEMP from PUBLIC on the server's databases, stores the admin URL
// encrypted, and has the issuer set the server up (Vault: webhookdb_vault and database/config/<name>).
func (s *Service) RegisterServer(ctx context.Context, spec ServerSpec) (*ServerInfo, error) {
	if spec.SSLMode == "" {
		spec.SSLMode = "prefer"
	}
	if err := spec.validate(); err != nil {
		return nil, err
	}
	if err := pgroles.PrepareServer(ctx, spec.AdminURL); err != nil {
		return nil, fmt.Errorf("error preparing database server %s: %w", spec.Name, err)
	}
	enc, err := s.cfg.Box.Encrypt(ctx, AdminURLBinding(spec.Name), []byte(spec.AdminURL))
	if err != nil {
		return nil, fmt.Errorf("error encrypting the admin URL: %w", err)
	}
	var info *ServerInfo
	err = s.withLock(ctx, lockClassPlacement, 0, func(q db) error {
		var id int64
		err := q.QueryRow(ctx, `
			INSERT INTO database_servers (name, admin_url_enc, public_host, public_port, sslmode)
			VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (name) DO UPDATE SET admin_url_enc = EXCLUDED.admin_url_enc, public_host = EXCLUDED.public_host,
				public_port = EXCLUDED.public_port, sslmode = EXCLUDED.sslmode
			RETURNING id`, spec.Name, enc, spec.PublicHost, spec.PublicPort, spec.SSLMode).Scan(&id)
		if err != nil {
			return fmt.Errorf("error registering database server %s: %w", spec.Name, err)
		}
		srv := Server{ID: id, Name: spec.Name, AdminURL: spec.AdminURL, PublicHost: spec.PublicHost, PublicPort: spec.PublicPort, SSLMode: spec.SSLMode}
		keys, err := s.serverOrgKeys(ctx, q, id)
		if err != nil {
			return err
		}
		if err := s.cfg.Issuer.SetupServer(ctx, srv, keys); err != nil {
			return fmt.Errorf("error setting up %s credentials for server %s: %w", s.cfg.Issuer.Mode(), spec.Name, err)
		}
		info = &ServerInfo{ID: id, Name: spec.Name, PublicHost: spec.PublicHost, PublicPort: spec.PublicPort, SSLMode: spec.SSLMode, Orgs: len(keys)}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return info, nil
}

// Servers lists the registered servers with their number of live orgs.
func (s *Service) Servers(ctx context.Context) ([]ServerInfo, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT s.id, s.name, s.public_host, s.public_port, s.sslmode, count(o.id)::int
		FROM database_servers s
		LEFT JOIN organizations o ON o.database_server_id = s.id AND o.deleted_at IS NULL
		GROUP BY s.id ORDER BY s.name`)
	if err != nil {
		return nil, fmt.Errorf("error listing database servers: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ServerInfo, error) {
		var i ServerInfo
		err := r.Scan(&i.ID, &i.Name, &i.PublicHost, &i.PublicPort, &i.SSLMode, &i.Orgs)
		return i, err
	})
	if err != nil {
		return nil, fmt.Errorf("error listing database servers: %w", err)
	}
	return out, nil
}

// ServerByName returns a registered server, admin URL decrypted (for the CLI's vault rotate-root, say).
func (s *Service) ServerByName(ctx context.Context, name string) (Server, error) {
	var id int64
	err := s.pool.QueryRow(ctx, `SELECT id FROM database_servers WHERE name = $1`, name).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return Server{}, fmt.Errorf("%w: %s", ErrServerNotFound, name)
	}
	if err != nil {
		return Server{}, fmt.Errorf("error reading database server %s: %w", name, err)
	}
	return s.server(ctx, s.pool, id)
}

// server loads a server and decrypts its admin URL.
func (s *Service) server(ctx context.Context, q db, id int64) (Server, error) {
	var srv Server
	var enc string
	err := q.QueryRow(ctx, `SELECT id, name, admin_url_enc, public_host, public_port, sslmode FROM database_servers WHERE id = $1`, id).
		Scan(&srv.ID, &srv.Name, &enc, &srv.PublicHost, &srv.PublicPort, &srv.SSLMode)
	if errors.Is(err, pgx.ErrNoRows) {
		return Server{}, fmt.Errorf("%w: id %d", ErrServerNotFound, id)
	}
	if err != nil {
		return Server{}, fmt.Errorf("error reading database server %d: %w", id, err)
	}
	plain, err := s.cfg.Box.Decrypt(ctx, AdminURLBinding(srv.Name), enc)
	if err != nil {
		return Server{}, fmt.Errorf("error decrypting the admin URL of server %s: %w", srv.Name, err)
	}
	srv.AdminURL = string(plain)
	return srv, nil
}

// serverOrgKeys lists the keys of the live orgs placed on a server.
func (s *Service) serverOrgKeys(ctx context.Context, q db, serverID int64) ([]string, error) {
	rows, err := q.Query(ctx, `
		SELECT key FROM organizations
		WHERE database_server_id = $1 AND deleted_at IS NULL AND provision_state IN ('provisioning', 'ready')
		ORDER BY key`, serverID)
	if err != nil {
		return nil, fmt.Errorf("error listing orgs of server %d: %w", serverID, err)
	}
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("error listing orgs of server %d: %w", serverID, err)
	}
	return keys, nil
}

// readonlyURL is the URL users get: the server's public host and port, the org database, sslmode.
func readonlyURL(srv Server, database, username, password string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(username, password),
		Host:     net.JoinHostPort(srv.PublicHost, strconv.Itoa(srv.PublicPort)),
		Path:     "/" + database,
		RawQuery: url.Values{"sslmode": {srv.SSLMode}}.Encode(),
	}
	return u.String()
}
