package orgdb

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/internal/secrets"
	"github.com/webhookdb-go/webhookdb/pgroles"
)

var serverNamePattern = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,40}$`)

// ErrInvalidSSLMode means a server's sslmode or CA certificate is refused (ErrInvalidServer).
var ErrInvalidSSLMode = fmt.Errorf("%w sslmode", ErrInvalidServer)

// SSL modes a server's read-only URLs may carry. prefer and allow are not among them: a network attacker can
// answer "no TLS here" and read the password exchange and every row.
const (
	SSLDisable    = "disable"     // loopback hosts only (webhookdb dev, a server on the same machine)
	SSLRequire    = "require"     // encrypted, server not authenticated; the default off loopback
	SSLVerifyCA   = "verify-ca"   // encrypted, certificate signed by the server's CA (CACert)
	SSLVerifyFull = "verify-full" // as verify-ca, and the certificate names the public host
)

// ServerSpec registers a database server.
type ServerSpec struct {
	// Name identifies the server (and its Vault connection, database/config/<name>).
	Name string
	// AdminURL logs in as a superuser; it is stored encrypted and used to provision orgs.
	AdminURL string
	// PublicHost and PublicPort are how users reach the server; they go into read-only URLs.
	PublicHost string
	PublicPort int
	// SSLMode goes into read-only URLs: SSLRequire (the default for any host but loopback), SSLVerifyFull or
	// SSLVerifyCA (with CACert), or SSLDisable (the default for a loopback host, refused for any other).
	SSLMode string
	// CACert is the PEM certificate(s) of the CA that signed the server's certificate, required by (and only
	// allowed with) the verify modes. It is stored with the server and handed out with each read-only URL
	// (`db connection --ca-file PATH` saves it for psql).
	CACert string
}

// IsLoopbackHost reports whether host names this machine: localhost or a loopback address.
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// withSSLDefault fills in the sslmode when none was given: require, or disable for a loopback host.
func (s ServerSpec) withSSLDefault() ServerSpec {
	if s.SSLMode == "" {
		s.SSLMode = SSLRequire
		if IsLoopbackHost(s.PublicHost) && s.CACert == "" {
			s.SSLMode = SSLDisable
		}
	}
	return s
}

func (s ServerSpec) validateSSL() error {
	switch s.SSLMode {
	case SSLDisable:
		if !IsLoopbackHost(s.PublicHost) {
			return fmt.Errorf("%w: disable sends passwords and rows in the clear; it is only allowed for a loopback public host (got %q): use require, or verify-full with the server's CA certificate", ErrInvalidSSLMode, s.PublicHost)
		}
	case SSLRequire:
	case SSLVerifyCA, SSLVerifyFull:
		if s.CACert == "" {
			return fmt.Errorf("%w: %s needs the CA certificate that signed the server's certificate (servers add --ca-file)", ErrInvalidSSLMode, s.SSLMode)
		}
		if err := checkCACert(s.CACert); err != nil {
			return fmt.Errorf("%w: CA certificate: %w", ErrInvalidSSLMode, err)
		}
		return nil
	case "prefer", "allow":
		return fmt.Errorf("%w: %s falls back to an unencrypted connection when a network attacker asks it to: use require, or verify-full with the server's CA certificate", ErrInvalidSSLMode, s.SSLMode)
	default:
		return fmt.Errorf("%w: %q is not one of disable (loopback only), require, verify-ca, verify-full", ErrInvalidSSLMode, s.SSLMode)
	}
	if s.CACert != "" {
		return fmt.Errorf("%w: a CA certificate is only used with verify-ca or verify-full (sslmode is %s)", ErrInvalidSSLMode, s.SSLMode)
	}
	return nil
}

// checkCACert checks that pem holds one or more PEM certificates, nothing else, each of which parses.
func checkCACert(data string) error {
	if len(data) > 1<<20 {
		return errors.New("larger than 1 MiB")
	}
	rest := []byte(data)
	n := 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return fmt.Errorf("PEM block %d is a %s, not a CERTIFICATE", n+1, block.Type)
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return fmt.Errorf("certificate %d does not parse: %w", n+1, err)
		}
		n++
	}
	if n == 0 {
		return errors.New("no PEM certificate found")
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return errors.New("trailing data after the PEM certificates")
	}
	return nil
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
	if err := s.validateSSL(); err != nil {
		errs = append(errs, err)
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
	CACert     string `json:"ca_cert,omitempty"`
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
	spec = spec.withSSLDefault()
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
			INSERT INTO database_servers (name, admin_url_enc, public_host, public_port, sslmode, ca_cert)
			VALUES ($1, $2, $3, $4, $5, nullif($6, ''))
			ON CONFLICT (name) DO UPDATE SET admin_url_enc = EXCLUDED.admin_url_enc, public_host = EXCLUDED.public_host,
				public_port = EXCLUDED.public_port, sslmode = EXCLUDED.sslmode, ca_cert = EXCLUDED.ca_cert
			RETURNING id`, spec.Name, enc, spec.PublicHost, spec.PublicPort, spec.SSLMode, spec.CACert).Scan(&id)
		if err != nil {
			return fmt.Errorf("error registering database server %s: %w", spec.Name, err)
		}
		srv := Server{ID: id, Name: spec.Name, AdminURL: spec.AdminURL, PublicHost: spec.PublicHost, PublicPort: spec.PublicPort, SSLMode: spec.SSLMode, CACert: spec.CACert}
		keys, err := s.serverOrgKeys(ctx, q, id)
		if err != nil {
			return err
		}
		if err := s.cfg.Issuer.SetupServer(ctx, srv, keys); err != nil {
			return fmt.Errorf("error setting up %s credentials for server %s: %w", s.cfg.Issuer.Mode(), spec.Name, err)
		}
		info = &ServerInfo{ID: id, Name: spec.Name, PublicHost: spec.PublicHost, PublicPort: spec.PublicPort, SSLMode: spec.SSLMode, CACert: spec.CACert, Orgs: len(keys)}
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
		SELECT s.id, s.name, s.public_host, s.public_port, s.sslmode, coalesce(s.ca_cert, ''), count(o.id)::int
		FROM database_servers s
		LEFT JOIN organizations o ON o.database_server_id = s.id AND o.deleted_at IS NULL
		GROUP BY s.id ORDER BY s.name`)
	if err != nil {
		return nil, fmt.Errorf("error listing database servers: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ServerInfo, error) {
		var i ServerInfo
		err := r.Scan(&i.ID, &i.Name, &i.PublicHost, &i.PublicPort, &i.SSLMode, &i.CACert, &i.Orgs)
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
	err := q.QueryRow(ctx, `SELECT id, name, admin_url_enc, public_host, public_port, sslmode, coalesce(ca_cert, '') FROM database_servers WHERE id = $1`, id).
		Scan(&srv.ID, &srv.Name, &enc, &srv.PublicHost, &srv.PublicPort, &srv.SSLMode, &srv.CACert)
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

// serverOrgKeys lists the name bases (Org.NameBase) of the live orgs placed on a server.
func (s *Service) serverOrgKeys(ctx context.Context, q db, serverID int64) ([]string, error) {
	rows, err := q.Query(ctx, `
		SELECT coalesce(name_base, key) FROM organizations
		WHERE database_server_id = $1 AND deleted_at IS NULL AND provision_state IN ('provisioning', 'ready')
		ORDER BY 1`, serverID)
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
