// Package devenv runs the whole system on one machine for `webhookdb dev` (what `make run` runs): its own
// PostgreSQL cluster (data kept in a directory between runs), a Vault dev server, the application database
// migrated, the local cluster registered as the default database server, an admin token, and the server.
package devenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/internal/accounts"
	"github.com/webhookdb-go/webhookdb/internal/app"
	"github.com/webhookdb-go/webhookdb/internal/migrate"
	"github.com/webhookdb-go/webhookdb/internal/orgdb"
	"github.com/webhookdb-go/webhookdb/internal/pgcluster"
	"github.com/webhookdb-go/webhookdb/internal/pgerr"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
	"github.com/webhookdb-go/webhookdb/internal/vaultdev"
	"github.com/webhookdb-go/webhookdb/vault"
)

const (
	appDatabase = "webhookdb"
	adminEmail  = "admin@localhost"
	// LocalServerName is the name the dev cluster is registered under as a database server.
	LocalServerName = "local"
)

// Config for a dev run.
type Config struct {
	Dir    string
	Listen string
	Logger *slog.Logger
	Out    io.Writer
}

// Run starts everything, prints a banner, writes Dir/dev.env once ready, and stops every child when ctx ends.
func Run(ctx context.Context, cfg Config) (err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Out == nil {
		cfg.Out = os.Stdout
	}
	logger := cfg.Logger
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return fmt.Errorf("error resolving --dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("error creating %s: %w", dir, err)
	}
	envFile := filepath.Join(dir, "dev.env")
	_ = os.Remove(envFile) // appears again only once this run is ready

	cluster, err := pgcluster.Start(ctx, pgcluster.Config{Dir: filepath.Join(dir, "pg"), Logger: logger})
	if err != nil {
		return fmt.Errorf("error starting PostgreSQL: %w", err)
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if stopErr := cluster.Stop(stopCtx); stopErr != nil {
			err = errors.Join(err, stopErr)
		}
	}()
	logger.InfoContext(ctx, "PostgreSQL running", slog.Int("port", cluster.Port), slog.String("dir", cluster.DataDir))

	if err := ensureDatabase(ctx, cluster, appDatabase); err != nil {
		return err
	}

	vaultSrv, err := vaultdev.Start(ctx, vaultdev.Config{Logger: logger})
	if err != nil {
		return fmt.Errorf("error starting Vault: %w", err)
	}
	defer func() { _ = vaultSrv.Stop() }()
	logger.InfoContext(ctx, "Vault dev server running", slog.String("addr", vaultSrv.Addr))

	if _, err := migrate.Up(ctx, cluster.URL(appDatabase), logger); err != nil {
		return err
	}
	transitBackup := filepath.Join(dir, "transit-key")
	a, err := assemble(ctx, assembly{
		DatabaseURL: cluster.URL(appDatabase), Listen: cfg.Listen, Vault: vaultSrv, TransitBackupFile: transitBackup,
		LegacyKeyringFile: filepath.Join(dir, "keyring"), Logger: logger,
		Server: orgdb.ServerSpec{Name: LocalServerName, AdminURL: cluster.URL("postgres"), PublicHost: "127.0.0.1", PublicPort: cluster.Port, SSLMode: "disable"},
	})
	if err != nil {
		return err
	}
	token, err := bootstrap(ctx, cluster, envFile)
	if err != nil {
		return err
	}

	apiURL := a.URL()
	env := fmt.Sprintf("WEBHOOKDB_API_URL=%s\nWEBHOOKDB_TOKEN=%s\nWEBHOOKDB_DATABASE_URL=%s\nVAULT_ADDR=%s\nVAULT_TOKEN=%s\nWEBHOOKDB_TRANSIT_BACKUP_FILE=%s\n",
		apiURL, token, cluster.URL(appDatabase), vaultSrv.Addr, vaultSrv.Token, transitBackup)
	if err := os.WriteFile(envFile, []byte(env), 0o600); err != nil {
		return fmt.Errorf("error writing %s: %w", envFile, err)
	}
	fmt.Fprintf(cfg.Out, `
webhookdb is running.

  API            %s
  Token          %s
  Database       %s
  Vault          %s
  Environment    %s   (source it: set -a; . %s; set +a)

Try:  curl %s/healthz
      webhookdb auth login --url %s --token %s
      webhookdb org create acme && webhookdb org use acme
      webhookdb integrations create stripe_charge_v1
      (README.md, "Your first webhook", goes on from there)
Stop: Ctrl-C (data stays in %s)

`, apiURL, token, cluster.URL(appDatabase), vaultSrv.Addr, envFile, envFile, apiURL, apiURL, token, dir)

	runErr := a.Run(ctx)
	_ = os.Remove(envFile)
	return runErr
}

func ensureDatabase(ctx context.Context, c *pgcluster.Cluster, name string) error {
	conn, err := c.Connect(ctx, "postgres")
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	if err != nil && !pgerr.Is(err, pgerrcode.DuplicateDatabase) { // kept from a previous run
		return fmt.Errorf("error creating database %s: %w", name, err)
	}
	return nil
}

// bootstrap returns a working admin token: the previous run's when it still authenticates, else a new one.
func bootstrap(ctx context.Context, c *pgcluster.Cluster, envFile string) (string, error) {
	conn, err := c.Connect(ctx, appDatabase)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)

	if old := previousToken(envFile + ".last"); old != "" {
		if _, err := accounts.Authenticate(ctx, conn, old); err == nil {
			return old, nil
		}
	}
	user, err := accounts.UserByEmail(ctx, conn, adminEmail)
	if errors.Is(err, accounts.ErrNotFound) {
		user, err = accounts.CreateUser(ctx, conn, adminEmail, true)
	}
	if err != nil {
		return "", err
	}
	token, _, err := accounts.CreateToken(ctx, conn, user.ID, "webhookdb dev")
	if err != nil {
		return "", err
	}
	// Remember the token for the next run (dev.env itself only exists while the system is up).
	if err := os.WriteFile(envFile+".last", []byte("WEBHOOKDB_TOKEN="+token+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("error saving token: %w", err)
	}
	return token, nil
}

func previousToken(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "WEBHOOKDB_TOKEN="); ok {
			return v
		}
	}
	return ""
}

// assembly is what dev brings to the one composition root.
type assembly struct {
	DatabaseURL string
	Listen      string
	Vault       *vaultdev.Server
	// TransitBackupFile keeps the transit key across Vault dev server restarts.
	TransitBackupFile string
	// LegacyKeyringFile, when it exists, decrypts values an earlier keyring-only dev version stored; `keys
	// rotate` moves them to transit.
	LegacyKeyringFile string
	// Server is the local cluster, registered as the default database server.
	Server orgdb.ServerSpec
	// KeyRotationPeriod and Slot override the defaults (tests).
	KeyRotationPeriod time.Duration
	Slot              string
	Logger            *slog.Logger
}

// assemble builds every role the way serve does, on dev's own Vault. Vault dev keeps nothing across
// restarts: the transit key comes back from its backup first, then the app reconciles Vault with what the
// application database says should exist (roles, connections; credentials Vault forgot are revoked and the
// next request issues new ones), and the local cluster is registered (again).
func assemble(ctx context.Context, as assembly) (*app.App, error) {
	client, err := as.Vault.Client()
	if err != nil {
		return nil, err
	}
	if err := prepareTransit(ctx, client, as.TransitBackupFile); err != nil {
		return nil, fmt.Errorf("error preparing the transit key: %w", err)
	}
	// The server runs as production does: with a periodic token carrying the webhookdb policy, never the dev
	// server's root token (which is not periodic, and which the server would refuse).
	if _, err := client.Logical().WriteWithContext(ctx, "sys/policies/acl/webhookdb", map[string]any{
		"policy": vault.Policy("database", "transit", "webhookdb"),
	}); err != nil {
		return nil, fmt.Errorf("error writing the webhookdb Vault policy: %w", err)
	}
	token, err := vault.CreatePeriodicChild(ctx, client, 768*time.Hour, "webhookdb")
	if err != nil {
		return nil, err
	}
	cfg := app.Config{
		Roles:       app.AllRoles,
		DatabaseURL: as.DatabaseURL,
		Listen:      as.Listen,
		VaultAddr:   as.Vault.Addr,
		VaultToken:  token,
		// A scheduled rotation adds a key version the saved backup lacks: save it again (with the root
		// token: the webhookdb policy cannot read a backup), so the next dev start still decrypts.
		OnKeyRotated:      func(ctx context.Context) error { return saveTransitBackup(ctx, client, as.TransitBackupFile) },
		Encryption:        app.EncryptionTransit,
		Credentials:       app.CredentialsVault,
		Logger:            as.Logger,
		KeyRotationPeriod: as.KeyRotationPeriod,
		Slot:              as.Slot,
		// issue 14: dev runs on a developer's machine, where subscription receivers are local
		Outgoing: app.OutgoingConfig{AllowPrivate: true},
	}
	if _, err := os.Stat(as.LegacyKeyringFile); err == nil {
		cfg.KeyringFile = as.LegacyKeyringFile
	}
	app.TuneGC(cfg.Roles, cfg.IngestMemory) // the whole system in one process, as serve runs it
	a, err := app.New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if _, err := a.Orgs().RegisterServer(ctx, as.Server); err != nil {
		return nil, fmt.Errorf("error registering the local database server: %w", err)
	}
	return a, nil
}

// prepareTransit readies the transit key of a Vault dev server: when Vault lacks the key it is restored from
// backupFile (written by an earlier run), or created backupable when there is no backup yet; the backup file
// is then (re)written, so it also holds versions added by a rotation. Never for a real Vault: a backupable
// key can leave Vault.
func prepareTransit(ctx context.Context, client *vaultapi.Client, backupFile string) error {
	tr, err := secrets.NewTransit(secrets.TransitConfig{Client: client, Backupable: true})
	if err != nil {
		return err
	}
	if _, _, err := tr.KeyVersions(ctx); errors.Is(err, secrets.ErrTransitKey) {
		if b, readErr := os.ReadFile(backupFile); readErr == nil {
			if err := tr.Restore(ctx, strings.TrimSpace(string(b))); err != nil {
				return err
			}
		} else if !errors.Is(readErr, os.ErrNotExist) {
			return fmt.Errorf("error reading the transit backup: %w", readErr)
		}
	} else if err != nil {
		return err
	}
	if err := tr.EnsureKey(ctx); err != nil {
		return err
	}
	return saveTransitBackup(ctx, client, backupFile)
}

// saveTransitBackup writes the transit key's backup (every version) to backupFile, atomically.
func saveTransitBackup(ctx context.Context, client *vaultapi.Client, backupFile string) error {
	tr, err := secrets.NewTransit(secrets.TransitConfig{Client: client, Backupable: true})
	if err != nil {
		return err
	}
	backup, err := tr.Backup(ctx)
	if err != nil {
		return err
	}
	tmp := backupFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(backup+"\n"), 0o600); err != nil {
		return fmt.Errorf("error writing the transit backup: %w", err)
	}
	if err := os.Rename(tmp, backupFile); err != nil {
		return fmt.Errorf("error writing the transit backup: %w", err)
	}
	return nil
}
