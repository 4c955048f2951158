// Package fanoutcmd is the fanout as its own process: the flags and the run loop behind `webhookdb fanout`.
package fanoutcmd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"

	"github.com/webhookdb-go/webhookdb/fanout"
	"github.com/webhookdb-go/webhookdb/internal/migrate"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
)

// Options of a fanout process. Encryption settings are serve's: the fanout decrypts the database servers'
// admin URLs that serve stored.
type Options struct {
	DatabaseURL string
	// Encryption is "transit" (default when VaultAddr is set) or "keyring".
	Encryption   string
	VaultAddr    string
	VaultToken   string
	TransitMount string
	TransitKey   string
	// Keyring and KeyringFile hold local keys: the box with keyring encryption, a fallback for values written
	// before a move to transit otherwise.
	Keyring       string
	KeyringFile   string
	MetricsListen string
	Config        fanout.Config
}

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

// AddFlags adds the fanout's flags, with their environment fallbacks, to fs.
func AddFlags(f *pflag.FlagSet, o *Options) {
	f.StringVar(&o.DatabaseURL, "database-url", envOr("WEBHOOKDB_DATABASE_URL", ""), "application database URL (WEBHOOKDB_DATABASE_URL)")
	f.StringVar(&o.Encryption, "encryption", envOr("WEBHOOKDB_ENCRYPTION", ""), "encryption of stored secrets: transit (default with Vault) or keyring (WEBHOOKDB_ENCRYPTION)")
	f.StringVar(&o.VaultAddr, "vault-addr", envOr("VAULT_ADDR", ""), "Vault address (VAULT_ADDR)")
	f.StringVar(&o.VaultToken, "vault-token", envOr("VAULT_TOKEN", ""), "Vault token (VAULT_TOKEN)")
	f.StringVar(&o.TransitMount, "transit-mount", envOr("WEBHOOKDB_TRANSIT_MOUNT", "transit"), "Vault transit mount (WEBHOOKDB_TRANSIT_MOUNT)")
	f.StringVar(&o.TransitKey, "transit-key", envOr("WEBHOOKDB_TRANSIT_KEY", "webhookdb"), "Vault transit key (WEBHOOKDB_TRANSIT_KEY)")
	f.StringVar(&o.Keyring, "keyring", envOr("WEBHOOKDB_KEYRING", ""), "local encryption keys, VERSION:BASE64KEY[,...] (WEBHOOKDB_KEYRING)")
	f.StringVar(&o.KeyringFile, "keyring-file", envOr("WEBHOOKDB_KEYRING_FILE", ""), "file of local encryption keys, one VERSION:BASE64KEY a line (WEBHOOKDB_KEYRING_FILE)")
	f.StringVar(&o.MetricsListen, "metrics-listen", envOr("WEBHOOKDB_FANOUT_METRICS_LISTEN", ""), "serve /metrics and /healthz on this address; empty: off (WEBHOOKDB_FANOUT_METRICS_LISTEN)")
	f.StringVar(&o.Config.Slot, "slot", envOr("WEBHOOKDB_FANOUT_SLOT", ""), "replication slot (default webhookdb_fanout) (WEBHOOKDB_FANOUT_SLOT)")
	f.StringVar(&o.Config.Publication, "publication", "", "publication to consume (default webhookdb_staging)")
	f.IntVar(&o.Config.Workers, "workers", 0, "org transactions in flight at once (default 8)")
	f.IntVar(&o.Config.MaxOrgConns, "max-org-connections", 0, "connections to org databases across all orgs (default 64)")
	f.IntVar(&o.Config.MaxApplyRows, "max-apply-rows", 0, "staging rows per org transaction at most (default 1000)")
	f.Int64Var(&o.Config.MaxInFlightBytes, "max-in-flight-bytes", 0, "bytes of staging rows received and not yet applied; reading pauses at the cap (default 64 MiB)")
	f.DurationVar(&o.Config.ApplyTimeout, "apply-timeout", 0, "how long an org transaction may take before its changes are parked (default 10s)")
	f.DurationVar(&o.Config.HeartbeatInterval, "heartbeat-interval", 0, "how often a heartbeat is written into the WAL (default 15s)")
}

// Run runs the fanout until ctx ends: it validates the options, applies the application database's migrations
// (as serve does), makes sure the slot exists, serves metrics when asked, and consumes the stream.
func Run(ctx context.Context, o *Options) error {
	box, err := o.box()
	if err != nil {
		return err
	}
	logger := o.Config.Logger
	if logger == nil {
		logger = slog.Default()
		o.Config.Logger = logger
	}
	if _, err := migrate.Up(ctx, o.DatabaseURL, logger); err != nil {
		return err
	}
	poolCfg, err := pgxpool.ParseConfig(o.DatabaseURL)
	if err != nil {
		return fmt.Errorf("error parsing the database URL: %w", err)
	}
	// Workers park, drain and look up orgs in the application database; the heartbeat and lag loops too.
	poolCfg.MaxConns = int32(o.Config.WithDefaults().Workers + 4)
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return fmt.Errorf("error connecting to the database: %w", err)
	}
	defer pool.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	consumer, err := fanout.New(o.DatabaseURL, pool, box, o.Config, reg)
	if err != nil {
		return err
	}
	if err := consumer.EnsureSlot(ctx); err != nil {
		return err
	}
	if o.MetricsListen != "" {
		ln, err := net.Listen("tcp", o.MetricsListen)
		if err != nil {
			return fmt.Errorf("error listening on %s: %w", o.MetricsListen, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
			pingCtx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
			defer cancel()
			w.Header().Set("Content-Type", "application/json")
			if err := pool.Ping(pingCtx); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = w.Write([]byte(`{"ok":false,"database":"unreachable"}`))
				return
			}
			_, _ = w.Write([]byte(`{"ok":true}`))
		})
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer func() {
			shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(shutdownCtx)
		}()
		logger.InfoContext(ctx, "fanout metrics listening", slog.String("addr", ln.Addr().String()))
	}
	return consumer.Run(ctx)
}

// box builds the configured encryption, as serve does (without creating the transit key: serve owns it).
func (o *Options) box() (secrets.Box, error) {
	if o.Encryption == "" {
		o.Encryption = "keyring"
		if o.VaultAddr != "" {
			o.Encryption = "transit"
		}
	}
	var errs []error
	if o.DatabaseURL == "" {
		errs = append(errs, errors.New("database URL is required (--database-url or WEBHOOKDB_DATABASE_URL)"))
	}
	if o.Keyring != "" && o.KeyringFile != "" {
		errs = append(errs, errors.New("set only one of WEBHOOKDB_KEYRING and WEBHOOKDB_KEYRING_FILE"))
	}
	switch o.Encryption {
	case "transit":
		if o.VaultAddr == "" || o.VaultToken == "" {
			errs = append(errs, errors.New("transit encryption needs VAULT_ADDR and VAULT_TOKEN"))
		}
	case "keyring":
		if o.Keyring == "" && o.KeyringFile == "" {
			errs = append(errs, errors.New("no encryption key for stored secrets: set WEBHOOKDB_KEYRING or WEBHOOKDB_KEYRING_FILE"))
		}
	default:
		errs = append(errs, fmt.Errorf("--encryption %q: want transit or keyring", o.Encryption))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("invalid configuration:\n%w", err)
	}
	var keyring *secrets.Keyring
	var err error
	switch {
	case o.KeyringFile != "":
		keyring, err = secrets.LoadKeyringFile(o.KeyringFile)
	case o.Keyring != "":
		keyring, err = secrets.ParseKeyring(o.Keyring)
	}
	if err != nil {
		return nil, err
	}
	if o.Encryption == "keyring" {
		return keyring, nil
	}
	vc := vaultapi.DefaultConfig()
	vc.Address = o.VaultAddr
	client, err := vaultapi.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("error creating Vault client: %w", err)
	}
	client.SetToken(o.VaultToken)
	transit, err := secrets.NewTransit(secrets.TransitConfig{Client: client, Mount: o.TransitMount, Key: o.TransitKey})
	if err != nil {
		return nil, err
	}
	if keyring != nil {
		return secrets.WithFallback(transit, keyring), nil
	}
	return transit, nil
}
