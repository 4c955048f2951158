package server

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/internal/orgdb"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
	"github.com/webhookdb-go/webhookdb/internal/staging"
)

// Config is everything `webhookdb serve` needs. Flags fill it, with WEBHOOKDB_* environment variables as fallbacks.
type Config struct {
	// DatabaseURL is the application database (WEBHOOKDB_DATABASE_URL).
	DatabaseURL string
	// Listen is the HTTP listen address (WEBHOOKDB_LISTEN), default ":8080".
	Listen string
	// PublicURL is how senders reach this server (WEBHOOKDB_PUBLIC_URL): webhook URLs are built from it and
	// Twilio signs it. Default: http:// + Listen.
	PublicURL string
	// VaultAddr and VaultToken reach Vault (VAULT_ADDR, VAULT_TOKEN).
	VaultAddr  string
	VaultToken string
	// Keyring and KeyringFile hold the local AES-256-GCM keys that encrypt stored secrets
	// (WEBHOOKDB_KEYRING, WEBHOOKDB_KEYRING_FILE): "VERSION:BASE64KEY" entries, the highest version current.
	Keyring     string
	KeyringFile string
	// Secrets, when set, is used instead of a keyring or transit (tests, dev).
	Secrets secrets.Box
	// Credentials is how org read-only credentials are issued (WEBHOOKDB_CREDENTIALS): "vault" (default)
	// through Vault's database engine, or "postgres" directly, for self-hosters without Vault.
	Credentials string
	// Encryption of stored secrets (WEBHOOKDB_ENCRYPTION): "transit" (default with Vault) or "keyring".
	Encryption string
	// TransitMount, TransitKey and DatabaseMount name the Vault engines; defaults transit, webhookdb, database.
	TransitMount  string
	TransitKey    string
	DatabaseMount string
	// Slot is the fanout's replication slot (WEBHOOKDB_SLOT_NAME); default webhookdb_fanout. Two servers
	// on one PostgreSQL cluster with different application databases need different slots.
	Slot string
	// NoFanout leaves the fanout to a separate `webhookdb fanout` process.
	NoFanout bool
	// OrgDB, when set, is used instead of building one from the modes above (dev).
	OrgDB *orgdb.Service
	// Retention is how long staging rows are kept (WEBHOOKDB_RETENTION); default 7 days.
	Retention time.Duration
	// BodyLimit is the default webhook body limit in bytes; default 1 MiB.
	BodyLimit int64
	// ShutdownTimeout bounds graceful shutdown.
	ShutdownTimeout time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// WithDefaults returns a copy of the config with defaults filled in.
func (c Config) WithDefaults() Config {
	if c.Listen == "" {
		c.Listen = ":8080"
	}
	if c.PublicURL == "" {
		host, port, err := net.SplitHostPort(c.Listen)
		if err == nil {
			if host == "" || host == "0.0.0.0" || host == "::" {
				host = "localhost"
			}
			c.PublicURL = "http://" + net.JoinHostPort(host, port)
		}
	}
	c.PublicURL = strings.TrimRight(c.PublicURL, "/")
	if c.Slot == "" {
		c.Slot = staging.DefaultSlot
	}
	if c.Credentials == "" {
		c.Credentials = CredentialsVault
	}
	if c.Encryption == "" {
		c.Encryption = EncryptionKeyring
		if c.VaultAddr != "" {
			c.Encryption = EncryptionTransit
		}
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 15 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	if c.DatabaseURL == "" {
		errs = append(errs, errors.New("database URL is required (--database-url or WEBHOOKDB_DATABASE_URL)"))
	} else if _, err := pgx.ParseConfig(c.DatabaseURL); err != nil {
		errs = append(errs, fmt.Errorf("database URL is not valid (--database-url or WEBHOOKDB_DATABASE_URL): %w", err))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen address %q is not host:port (--listen or WEBHOOKDB_LISTEN): %w", c.Listen, err))
	}
	if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("public URL %q must be an absolute http(s) URL (--public-url or WEBHOOKDB_PUBLIC_URL)", c.PublicURL))
	}
	if (c.VaultAddr == "") != (c.VaultToken == "") && c.VaultToken == "" {
		errs = append(errs, errors.New("VAULT_ADDR is set but VAULT_TOKEN is not (--vault-token or VAULT_TOKEN)"))
	}
	switch c.Credentials {
	case CredentialsVault:
		if c.VaultAddr == "" && c.OrgDB == nil {
			errs = append(errs, errors.New("credentials mode vault needs VAULT_ADDR and VAULT_TOKEN; without Vault, run with --credentials=postgres (WEBHOOKDB_CREDENTIALS=postgres)"))
		}
	case CredentialsPostgres:
	default:
		errs = append(errs, fmt.Errorf("--credentials %q: want vault or postgres", c.Credentials))
	}
	switch c.Encryption {
	case EncryptionTransit:
		if c.VaultAddr == "" && c.Secrets == nil {
			errs = append(errs, errors.New("encryption transit needs VAULT_ADDR and VAULT_TOKEN; without Vault use --encryption=keyring with WEBHOOKDB_KEYRING"))
		}
	case EncryptionKeyring:
		if c.Secrets == nil && c.Keyring == "" && c.KeyringFile == "" {
			errs = append(errs, errors.New("no encryption key for stored secrets: set WEBHOOKDB_KEYRING or WEBHOOKDB_KEYRING_FILE (generate one with `webhookdb keys generate`)"))
		}
	default:
		errs = append(errs, fmt.Errorf("--encryption %q: want transit or keyring", c.Encryption))
	}
	if c.Keyring != "" && c.KeyringFile != "" {
		errs = append(errs, errors.New("set only one of WEBHOOKDB_KEYRING and WEBHOOKDB_KEYRING_FILE"))
	}
	if c.Retention < 0 || c.BodyLimit < 0 {
		errs = append(errs, errors.New("retention and body limit must not be negative"))
	}
	return errors.Join(errs...)
}
