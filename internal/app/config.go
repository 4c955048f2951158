package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5"
	"github.com/spf13/pflag"

	"github.com/webhookdb-go/webhookdb/fanout"
	"github.com/webhookdb-go/webhookdb/internal/backfill"
	"github.com/webhookdb-go/webhookdb/internal/staging"
)

// Role is one part of the system a process can run.
type Role string

const (
	// RoleIngest receives webhooks at /v1/webhooks/{id} and stores them in staging.
	RoleIngest Role = "ingest"
	// RoleAPI serves the management API under /v1.
	RoleAPI Role = "api"
	// RoleFanout consumes staging's publication and applies rows to the org databases.
	RoleFanout Role = "fanout"
	// RoleMaintenance runs the periodic work: staging partitions and retention, credential expiry and
	// reconciliation with Vault, the fanout's password rotation.
	RoleMaintenance Role = "maintenance"
)

// AllRoles is what `serve` and `dev` run.
var AllRoles = []Role{RoleIngest, RoleAPI, RoleFanout, RoleMaintenance}

// Credential modes and encryption modes.
const (
	CredentialsVault    = "vault"
	CredentialsPostgres = "postgres"
	EncryptionTransit   = "transit"
	EncryptionKeyring   = "keyring"
)

// Config is everything a webhookdb process needs, whatever roles it runs. Flags fill it (BindFlags), with
// WEBHOOKDB_* environment variables as fallbacks: one set of names for every command.
type Config struct {
	// Roles are the parts this process runs; default AllRoles.
	Roles []Role

	// DatabaseURL is the application database (WEBHOOKDB_DATABASE_URL).
	DatabaseURL string
	// Listen is the HTTP listen address of ingest and the API (WEBHOOKDB_LISTEN), default ":8080". Unused by a
	// process that runs neither.
	Listen string
	// PublicURL is how senders reach this server (WEBHOOKDB_PUBLIC_URL): webhook URLs are built from it and
	// Twilio signs it. Default: http:// + Listen.
	PublicURL string
	// MetricsListen, when set, serves /metrics and /healthz on an address of their own
	// (WEBHOOKDB_METRICS_LISTEN). Otherwise they are served on Listen when the process serves HTTP at all.
	MetricsListen string

	// VaultAddr and VaultToken reach Vault (VAULT_ADDR, VAULT_TOKEN).
	VaultAddr  string
	VaultToken string
	// VaultRoleID and VaultSecretID log in with an AppRole instead of a token (WEBHOOKDB_VAULT_ROLE_ID,
	// WEBHOOKDB_VAULT_SECRET_ID, or files holding them: WEBHOOKDB_VAULT_ROLE_ID_FILE,
	// WEBHOOKDB_VAULT_SECRET_ID_FILE). The role must issue periodic tokens (token_period), as a server's token
	// must be periodic: leases end with the token that made them.
	VaultRoleID       string
	VaultSecretID     string
	VaultRoleIDFile   string
	VaultSecretIDFile string
	// Keyring and KeyringFile hold the local AES-256-GCM keys that encrypt stored secrets
	// (WEBHOOKDB_KEYRING, WEBHOOKDB_KEYRING_FILE): "VERSION:BASE64KEY" entries, the highest version current.
	// With transit encryption they still decrypt values written before a move to transit.
	Keyring     string
	KeyringFile string
	// Credentials is how org read-only credentials and the fanout's writer logins are issued
	// (WEBHOOKDB_CREDENTIALS): "vault" (default) through Vault's database engine, or "postgres" directly.
	Credentials string
	// Encryption of stored secrets (WEBHOOKDB_ENCRYPTION): "transit" (default with Vault) or "keyring".
	Encryption string
	// TransitMount, TransitKey and DatabaseMount name the Vault engines; defaults transit, webhookdb, database.
	TransitMount  string
	TransitKey    string
	DatabaseMount string

	// Slot is the fanout's replication slot (WEBHOOKDB_SLOT_NAME; WEBHOOKDB_FANOUT_SLOT is a deprecated alias);
	// default webhookdb_fanout. Every process of one deployment must agree on it: the fanout consumes it, and
	// ingest and maintenance read its progress.
	Slot string
	// Fanout tunes the fanout role (workers, batch sizes, timeouts). Its Slot, Writers and Logger are set here.
	Fanout fanout.Config

	// Outgoing configures webhook subscriptions and alerts (outgoing_wiring.go).
	Outgoing OutgoingConfig
	// Backfill tunes the backfill workers (maintenance role): workers and the rate into staging. Its Pool, Box and
	// Logger are set here.
	Backfill backfill.Config

	// Retention is how long staging rows are kept (WEBHOOKDB_RETENTION); default 7 days.
	Retention time.Duration
	// BodyLimit is the default webhook body limit in bytes (WEBHOOKDB_BODY_LIMIT); default 1 MiB.
	BodyLimit int64
	// SQLMaxBytes caps the bytes of a `db sql` answer (WEBHOOKDB_SQL_MAX_BYTES); default 10 MiB.
	SQLMaxBytes int
	// SavedQueries tunes public saved queries: cache TTL, row and byte caps.
	SavedQueries SavedQueryConfig
	// ServerReservedConnections are the connections of each database server that read-only logins never get,
	// on top of the superuser reserve (WEBHOOKDB_SERVER_RESERVED_CONNECTIONS): what webhookdb itself needs there.
	// Default: the fanout's connection cap plus serviceConnections; -1: none.
	ServerReservedConnections int
	// MaxOrgsPerUser caps the live orgs a user who is not a server admin may administer
	// (WEBHOOKDB_MAX_ORGS_PER_USER); default 10, negative: no limit.
	MaxOrgsPerUser int
	// IngestMemory bounds the webhook body bytes ingest holds in flight, in all (WEBHOOKDB_INGEST_MEMORY); default
	// 128 MiB. IngestMemoryPerOrg is one org's share (WEBHOOKDB_INGEST_MEMORY_PER_ORG); default 32 MiB.
	IngestMemory       int64
	IngestMemoryPerOrg int64
	// IngestIdleTimeout cuts a sender whose body stops arriving (WEBHOOKDB_INGEST_IDLE_TIMEOUT); default 10s.
	IngestIdleTimeout time.Duration
	// TrustedProxies are CIDRs whose X-Forwarded-For ingest believes when telling clients apart
	// (WEBHOOKDB_TRUSTED_PROXIES, comma-separated); default none.
	TrustedProxies string
	// KeyRotationPeriod is how old the encryption key's current version may get (WEBHOOKDB_KEY_ROTATION_PERIOD,
	// --key-rotation-period); 0 here means the default, 30 days; negative disables (the flag's and the
	// variable's 0 disables). With transit the maintenance role rotates and rewraps; with the keyring it warns.
	KeyRotationPeriod time.Duration
	// OnKeyRotated runs after a scheduled rotation (dev saves its transit key backup).
	OnKeyRotated func(ctx context.Context) error
	// ShutdownTimeout bounds graceful shutdown (WEBHOOKDB_SHUTDOWN_TIMEOUT); default 15s.
	ShutdownTimeout time.Duration

	Logger *slog.Logger

	// vaultClient is the server's one Vault client, whose token its keeper renews (set by New).
	vaultClient *vaultapi.Client

	// deprecated notes the deprecated environment variables BindFlags read, logged once a logger exists.
	deprecated []string
	// conflicts notes environment variables that cannot be used: a deprecated one set to another value than its
	// replacement, a malformed number.
	conflicts []error
}

// Has reports whether the config runs role r.
func (c Config) Has(r Role) bool { return slices.Contains(c.Roles, r) }

func (c Config) servesHTTP() bool { return c.Has(RoleIngest) || c.Has(RoleAPI) }

// WithDefaults returns a copy of the config with defaults filled in.
func (c Config) WithDefaults() Config {
	if len(c.Roles) == 0 {
		c.Roles = slices.Clone(AllRoles)
	}
	if c.Listen == "" && c.servesHTTP() {
		c.Listen = ":8080"
	}
	if c.PublicURL == "" && c.Listen != "" {
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
	if c.TransitMount == "" {
		c.TransitMount = "transit"
	}
	if c.TransitKey == "" {
		c.TransitKey = "webhookdb"
	}
	if c.DatabaseMount == "" {
		c.DatabaseMount = "database"
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 15 * time.Second
	}
	if c.KeyRotationPeriod == 0 {
		c.KeyRotationPeriod = DefaultKeyRotationPeriod
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.SavedQueries = c.SavedQueries.WithDefaults()
	return c
}

// serviceConnections is what webhookdb needs on a database server besides the fanout's connections: Vault's
// connection pool there (4), provisioning and maintenance, and a margin.
const serviceConnections = 12

// serverReserve is what read-only logins leave free on each database server (a share of its connections and a
// number): the fanout may hold up to its whole connection cap on one server, and maintenance, provisioning and
// Vault need theirs, so no tenant can take them. The fanout's cap is a share of each server's connections
// unless --max-org-connections fixes it.
func (c Config) serverReserve() (percent, connections int) {
	if c.ServerReservedConnections != 0 {
		return 0, c.ServerReservedConnections
	}
	f := c.Fanout.WithDefaults()
	if f.MaxOrgConns != 0 {
		return 0, f.MaxOrgConns + serviceConnections
	}
	return f.ServerConnPercent, serviceConnections
}

func (c Config) validate() error {
	errs := slices.Clone(c.conflicts)
	for _, r := range c.Roles {
		if !slices.Contains(AllRoles, r) {
			errs = append(errs, fmt.Errorf("unknown role %q: want ingest, api, fanout or maintenance", r))
		}
	}
	if c.DatabaseURL == "" {
		errs = append(errs, errors.New("database URL is required (--database-url or WEBHOOKDB_DATABASE_URL)"))
	} else if _, err := pgx.ParseConfig(c.DatabaseURL); err != nil {
		errs = append(errs, fmt.Errorf("database URL is not valid (--database-url or WEBHOOKDB_DATABASE_URL): %w", err))
	}
	if c.servesHTTP() {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			errs = append(errs, fmt.Errorf("listen address %q is not host:port (--listen or WEBHOOKDB_LISTEN): %w", c.Listen, err))
		}
		if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("public URL %q must be an absolute http(s) URL (--public-url or WEBHOOKDB_PUBLIC_URL)", c.PublicURL))
		}
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			errs = append(errs, fmt.Errorf("metrics listen address %q is not host:port (--metrics-listen or WEBHOOKDB_METRICS_LISTEN): %w", c.MetricsListen, err))
		}
	}
	roleID, secretID := c.VaultRoleID != "" || c.VaultRoleIDFile != "", c.VaultSecretID != "" || c.VaultSecretIDFile != ""
	switch {
	case roleID != secretID:
		errs = append(errs, fmt.Errorf("an AppRole login needs both the role id and the secret id (%s or %s, %s or %s)", EnvVaultRoleID, EnvVaultRoleIDFile, EnvVaultSecretID, EnvVaultSecretIDFile))
	case roleID && c.VaultToken != "":
		errs = append(errs, fmt.Errorf("set either VAULT_TOKEN or an AppRole (%s, %s), not both", EnvVaultRoleID, EnvVaultSecretID))
	case c.VaultAddr != "" && c.VaultToken == "" && !roleID:
		errs = append(errs, fmt.Errorf("VAULT_ADDR is set but neither VAULT_TOKEN (--vault-token) nor an AppRole (%s and %s, or their _FILE variants)", EnvVaultRoleID, EnvVaultSecretID))
	}
	switch c.Credentials {
	case CredentialsVault:
		if c.VaultAddr == "" {
			errs = append(errs, errors.New("credentials mode vault needs VAULT_ADDR and VAULT_TOKEN; without Vault, run with --credentials=postgres (WEBHOOKDB_CREDENTIALS=postgres)"))
		}
	case CredentialsPostgres:
	default:
		errs = append(errs, fmt.Errorf("--credentials %q: want vault or postgres", c.Credentials))
	}
	switch c.Encryption {
	case EncryptionTransit:
		if c.VaultAddr == "" {
			errs = append(errs, errors.New("encryption transit needs VAULT_ADDR and VAULT_TOKEN; without Vault use --encryption=keyring with WEBHOOKDB_KEYRING"))
		}
	case EncryptionKeyring:
		if c.Keyring == "" && c.KeyringFile == "" {
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
	if c.IngestMemory < 0 || c.IngestMemoryPerOrg < 0 || c.IngestIdleTimeout < 0 {
		errs = append(errs, errors.New("ingest memory budgets and idle timeout must not be negative"))
	}
	if _, err := c.trustedProxies(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.SavedQueries.validate()...)
	return errors.Join(errs...)
}

// trustedProxies parses TrustedProxies: CIDRs, or single addresses, comma-separated.
func (c Config) trustedProxies() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(c.TrustedProxies, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			a, aerr := netip.ParseAddr(f)
			if aerr != nil {
				return nil, fmt.Errorf("trusted proxy %q is not a CIDR or an address (--trusted-proxies or %s)", f, EnvTrustedProxies)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// FlagGroup selects the flags a command takes: every command shares the names, not every command needs all.
type FlagGroup int

const (
	// FlagsDatabase: the application database.
	FlagsDatabase FlagGroup = 1 << iota
	// FlagsSecrets: encryption of stored secrets, the keyring, Vault and its mounts.
	FlagsSecrets
	// flagsCredentials: the credentials mode.
	flagsCredentials
	// FlagsSlot: the fanout's slot.
	FlagsSlot
	// FlagsHTTP: listen and public URL, body limit, shutdown timeout (ingest and API).
	FlagsHTTP
	// FlagsMetrics: a separate /metrics and /healthz listener.
	FlagsMetrics
	// FlagsFanout: the fanout's tuning.
	FlagsFanout
	// FlagsMaintenance: retention.
	FlagsMaintenance
	// FlagsCore is what every server command takes.
	FlagsCore = FlagsDatabase | FlagsSecrets | flagsCredentials | FlagsSlot
	// FlagsAll is what `serve` takes.
	FlagsAll = FlagsCore | FlagsHTTP | FlagsMetrics | FlagsFanout | FlagsMaintenance
)

// Environment variable names; the README's configuration table lists the same.
const (
	EnvDatabaseURL     = "WEBHOOKDB_DATABASE_URL"
	EnvListen          = "WEBHOOKDB_LISTEN"
	EnvPublicURL       = "WEBHOOKDB_PUBLIC_URL"
	EnvMetricsListen   = "WEBHOOKDB_METRICS_LISTEN"
	EnvVaultAddr       = "VAULT_ADDR"
	EnvVaultToken      = "VAULT_TOKEN"
	EnvKeyring         = "WEBHOOKDB_KEYRING"
	EnvKeyringFile     = "WEBHOOKDB_KEYRING_FILE"
	EnvCredentials     = "WEBHOOKDB_CREDENTIALS"
	EnvEncryption      = "WEBHOOKDB_ENCRYPTION"
	EnvTransitMount    = "WEBHOOKDB_TRANSIT_MOUNT"
	EnvTransitKey      = "WEBHOOKDB_TRANSIT_KEY"
	EnvDatabaseMount   = "WEBHOOKDB_DATABASE_MOUNT"
	EnvSlot            = "WEBHOOKDB_SLOT_NAME"
	EnvRetention       = "WEBHOOKDB_RETENTION"
	EnvBodyLimit       = "WEBHOOKDB_BODY_LIMIT"
	EnvShutdownTimeout = "WEBHOOKDB_SHUTDOWN_TIMEOUT"
	EnvMaxOrgsPerUser  = "WEBHOOKDB_MAX_ORGS_PER_USER"
	EnvSQLMaxBytes     = "WEBHOOKDB_SQL_MAX_BYTES"
	EnvServerReserved  = "WEBHOOKDB_SERVER_RESERVED_CONNECTIONS"

	EnvVaultRoleID       = "WEBHOOKDB_VAULT_ROLE_ID"
	EnvVaultSecretID     = "WEBHOOKDB_VAULT_SECRET_ID"
	EnvVaultRoleIDFile   = "WEBHOOKDB_VAULT_ROLE_ID_FILE"
	EnvVaultSecretIDFile = "WEBHOOKDB_VAULT_SECRET_ID_FILE"
	EnvKeyRotationPeriod = "WEBHOOKDB_KEY_ROTATION_PERIOD"
	EnvBackfillWorkers   = "WEBHOOKDB_BACKFILL_WORKERS"
	EnvBackfillRate      = "WEBHOOKDB_BACKFILL_RATE"

	EnvIngestMemory       = "WEBHOOKDB_INGEST_MEMORY"
	EnvIngestMemoryPerOrg = "WEBHOOKDB_INGEST_MEMORY_PER_ORG"
	EnvIngestIdleTimeout  = "WEBHOOKDB_INGEST_IDLE_TIMEOUT"
	EnvTrustedProxies     = "WEBHOOKDB_TRUSTED_PROXIES"

	// Deprecated names, read when the new one is unset.
	envFanoutSlotDeprecated    = "WEBHOOKDB_FANOUT_SLOT"
	envFanoutMetricsDeprecated = "WEBHOOKDB_FANOUT_METRICS_LISTEN"
)

// Env reads an environment variable; empty counts as unset.
func Env(name string) string {
	v, _ := os.LookupEnv(name)
	return v
}

// envAlias reads name, falling back to a deprecated alias: the fallback is noted for a warning, and the two set
// to different values is an error rather than a silent choice (a deployment must not move to another slot).
func (c *Config) envAlias(name, deprecated string) string {
	v, old := Env(name), Env(deprecated)
	switch {
	case old == "":
		return v
	case v == "":
		c.deprecated = append(c.deprecated, fmt.Sprintf("%s is deprecated: use %s", deprecated, name))
		return old
	case v != old:
		c.conflicts = append(c.conflicts, fmt.Errorf("%s=%q and the deprecated %s=%q disagree: unset %s", name, v, deprecated, old, deprecated))
	}
	return v
}

// BindFlags adds the flags of groups to fs, each defaulting to its environment variable.
func BindFlags(fs *pflag.FlagSet, c *Config, groups FlagGroup) {
	if groups&FlagsDatabase != 0 {
		fs.StringVar(&c.DatabaseURL, "database-url", Env(EnvDatabaseURL), "application database URL ("+EnvDatabaseURL+")")
	}
	if groups&FlagsSecrets != 0 {
		fs.StringVar(&c.VaultAddr, "vault-addr", Env(EnvVaultAddr), "Vault address ("+EnvVaultAddr+")")
		fs.StringVar(&c.VaultToken, "vault-token", Env(EnvVaultToken), "Vault token ("+EnvVaultToken+")")
		fs.StringVar(&c.VaultRoleID, "vault-role-id", Env(EnvVaultRoleID), "log in to Vault with this AppRole role id instead of a token; the role must set token_period ("+EnvVaultRoleID+")")
		fs.StringVar(&c.VaultSecretID, "vault-secret-id", Env(EnvVaultSecretID), "the AppRole's secret id ("+EnvVaultSecretID+")")
		fs.StringVar(&c.VaultRoleIDFile, "vault-role-id-file", Env(EnvVaultRoleIDFile), "file holding the AppRole role id ("+EnvVaultRoleIDFile+")")
		fs.StringVar(&c.VaultSecretIDFile, "vault-secret-id-file", Env(EnvVaultSecretIDFile), "file holding the AppRole secret id ("+EnvVaultSecretIDFile+")")
		fs.StringVar(&c.Keyring, "keyring", Env(EnvKeyring), "local encryption keys, VERSION:BASE64KEY[,...] ("+EnvKeyring+")")
		fs.StringVar(&c.KeyringFile, "keyring-file", Env(EnvKeyringFile), "file of local encryption keys, one VERSION:BASE64KEY a line ("+EnvKeyringFile+")")
		fs.StringVar(&c.Encryption, "encryption", Env(EnvEncryption), "encryption of stored secrets: transit (default with Vault) or keyring ("+EnvEncryption+")")
		fs.StringVar(&c.TransitMount, "transit-mount", Env(EnvTransitMount), "Vault transit mount; default transit ("+EnvTransitMount+")")
		fs.StringVar(&c.TransitKey, "transit-key", Env(EnvTransitKey), "Vault transit key; default webhookdb ("+EnvTransitKey+")")
		fs.StringVar(&c.DatabaseMount, "database-mount", Env(EnvDatabaseMount), "Vault database engine mount; default database ("+EnvDatabaseMount+")")
	}
	if groups&flagsCredentials != 0 {
		fs.StringVar(&c.Credentials, "credentials", Env(EnvCredentials), "how org read-only credentials and the fanout's logins are issued: vault (default), or postgres without Vault ("+EnvCredentials+")")
		fs.IntVar(&c.ServerReservedConnections, "server-reserved-connections", int(c.envInt(EnvServerReserved)), "connections of each database server read-only logins never get, beside the superuser reserve; default the fanout's share of the server's connections (--max-org-connections when set) + 12, -1: none ("+EnvServerReserved+")")
	}
	if groups&FlagsSlot != 0 {
		fs.StringVar(&c.Slot, "slot", c.envAlias(EnvSlot, envFanoutSlotDeprecated), "the fanout's replication slot, the same for every process of a deployment; default webhookdb_fanout ("+EnvSlot+")")
	}
	if groups&FlagsHTTP != 0 {
		fs.StringVar(&c.Listen, "listen", Env(EnvListen), "HTTP listen address of ingest and the API; default :8080 ("+EnvListen+")")
		fs.StringVar(&c.PublicURL, "public-url", Env(EnvPublicURL), "URL senders use to reach this server; default http://<listen> ("+EnvPublicURL+")")
		fs.Int64Var(&c.BodyLimit, "body-limit", c.envInt(EnvBodyLimit), "default webhook body limit in bytes; default 1048576 ("+EnvBodyLimit+")")
		fs.IntVar(&c.SQLMaxBytes, "sql-max-bytes", int(c.envInt(EnvSQLMaxBytes)), "bytes of a `db sql` answer at most; default 10485760 ("+EnvSQLMaxBytes+")")
		fs.IntVar(&c.MaxOrgsPerUser, "max-orgs-per-user", int(c.envInt(EnvMaxOrgsPerUser)), "live orgs a user who is not a server admin may administer; default 10, -1: no limit ("+EnvMaxOrgsPerUser+")")
		fs.Int64Var(&c.IngestMemory, "ingest-memory", c.envInt(EnvIngestMemory), "webhook body bytes ingest holds in flight, in all; over it: 503; default 134217728 ("+EnvIngestMemory+")")
		fs.Int64Var(&c.IngestMemoryPerOrg, "ingest-memory-per-org", c.envInt(EnvIngestMemoryPerOrg), "webhook body bytes in flight of one org; over it: 503 for that org only; default 33554432 ("+EnvIngestMemoryPerOrg+")")
		fs.DurationVar(&c.IngestIdleTimeout, "ingest-idle-timeout", c.envDuration(EnvIngestIdleTimeout), "cut a sender whose body stops arriving for this long; default 10s ("+EnvIngestIdleTimeout+")")
		fs.StringVar(&c.TrustedProxies, "trusted-proxies", Env(EnvTrustedProxies), "CIDRs whose X-Forwarded-For ingest believes, comma-separated ("+EnvTrustedProxies+")")
		fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", c.envDuration(EnvShutdownTimeout), "how long in-flight requests may take to finish on shutdown; default 15s ("+EnvShutdownTimeout+")")
		c.bindSavedQueryFlags(fs)
	}
	if groups&FlagsMetrics != 0 {
		fs.StringVar(&c.MetricsListen, "metrics-listen", c.envAlias(EnvMetricsListen, envFanoutMetricsDeprecated), "serve /metrics and /healthz on this address of their own; empty: on --listen when the process serves HTTP, else off ("+EnvMetricsListen+")")
	}
	if groups&FlagsFanout != 0 {
		f := &c.Fanout
		fs.IntVar(&f.Workers, "workers", 0, "fanout: org transactions in flight at once (default 8)")
		fs.IntVar(&f.MaxOrgConns, "max-org-connections", 0, "fanout: connections to the org databases of each database server (default: half of what each server's max_connections leaves beside its superuser reserve)")
		fs.IntVar(&f.MaxApplyRows, "max-apply-rows", 0, "fanout: staging rows per org transaction at most (default 1000)")
		fs.Int64Var(&f.MaxInFlightBytes, "max-in-flight-bytes", 0, "fanout: bytes of staging rows received and not yet applied; reading pauses at the cap (default 64 MiB)")
		fs.DurationVar(&f.ApplyTimeout, "apply-timeout", 0, "fanout: how long an org transaction may take before its changes are parked (default 10s)")
		fs.DurationVar(&f.HeartbeatInterval, "heartbeat-interval", 0, "fanout: how often a heartbeat is written into the WAL (default 15s)")
	}
	if groups&FlagsMaintenance != 0 {
		c.bindOutgoingFlags(fs) // issue 14: subscriptions and alerts
		fs.DurationVar(&c.Retention, "retention", c.envDuration(EnvRetention), "how long staging rows are kept; default 168h ("+EnvRetention+")")
		period := c.envDuration(EnvKeyRotationPeriod)
		if Env(EnvKeyRotationPeriod) != "" && period == 0 {
			period = -1
		}
		c.KeyRotationPeriod = period
		fs.IntVar(&c.Backfill.Workers, "backfill-workers", int(c.envInt(EnvBackfillWorkers)), "backfill jobs this process runs at once, across all orgs; default 2 ("+EnvBackfillWorkers+")")
		fs.IntVar(&c.Backfill.ObjectsPerSecond, "backfill-rate", int(c.envInt(EnvBackfillRate)), "objects per second this process's backfills store into staging at most; default 2000 ("+EnvBackfillRate+")")
		fs.Var((*rotationPeriod)(&c.KeyRotationPeriod), "key-rotation-period", "rotate the encryption key (transit) or warn (keyring) when its current version is older; 0 disables; default 720h ("+EnvKeyRotationPeriod+")")
	}
}

// envInt and envDuration read numeric defaults; a malformed value is an error at start, not a silent default.
func (c *Config) envInt(name string) int64 {
	v := Env(name)
	if v == "" {
		return 0
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		c.conflicts = append(c.conflicts, fmt.Errorf("%s=%q is not a whole number", name, v))
	}
	return n
}

func (c *Config) envDuration(name string) time.Duration {
	v := Env(name)
	if v == "" {
		return 0
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		c.conflicts = append(c.conflicts, fmt.Errorf("%s=%q is not a duration (like 30s or 168h)", name, v))
	}
	return d
}

// DefaultKeyRotationPeriod is the default --key-rotation-period.
const DefaultKeyRotationPeriod = 30 * 24 * time.Hour

// rotationPeriod is --key-rotation-period: a duration whose 0 disables (stored as -1, since the Config's 0
// means the default).
type rotationPeriod time.Duration

func (p *rotationPeriod) String() string {
	switch d := time.Duration(*p); {
	case d < 0:
		return "0"
	case d == 0:
		return DefaultKeyRotationPeriod.String()
	default:
		return d.String()
	}
}

func (p *rotationPeriod) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	if d <= 0 {
		d = -1
	}
	*p = rotationPeriod(d)
	return nil
}

func (p *rotationPeriod) Type() string { return "duration" }
