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

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/webhookdb-go/webhookdb/internal/accounts"
	"github.com/webhookdb-go/webhookdb/internal/migrate"
	"github.com/webhookdb-go/webhookdb/internal/orgdb"
	"github.com/webhookdb-go/webhookdb/internal/pgcluster"
	"github.com/webhookdb-go/webhookdb/internal/pgerr"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
	"github.com/webhookdb-go/webhookdb/internal/server"
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

	// Vault dev keeps nothing across restarts: restore the transit key from its backup, register the local
	// cluster, and re-apply the Vault configuration the application database says should exist.
	if _, err := migrate.Up(ctx, cluster.URL(appDatabase), logger); err != nil {
		return err
	}
	appPool, err := pgxpool.New(ctx, cluster.URL(appDatabase))
	if err != nil {
		return fmt.Errorf("error connecting to the application database: %w", err)
	}
	defer appPool.Close()
	vaultClient, err := vaultSrv.Client()
	if err != nil {
		return err
	}
	var keyring *secrets.Keyring
	if _, err := os.Stat(filepath.Join(dir, "keyring")); err == nil {
		// an earlier dev version encrypted with a local keyring: keep those values readable
		if keyring, err = secrets.LoadKeyringFile(filepath.Join(dir, "keyring")); err != nil {
			return err
		}
	}
	transitBackup := filepath.Join(dir, "transit-key")
	dev, err := vault.SetupDev(ctx, vault.DevConfig{
		Client:            vaultClient,
		Pool:              appPool,
		Keyring:           keyring,
		TransitBackupFile: transitBackup,
		Server: orgdb.ServerSpec{
			Name: LocalServerName, AdminURL: cluster.URL("postgres"), PublicHost: "127.0.0.1", PublicPort: cluster.Port, SSLMode: "disable",
		},
		Issuer: vault.Config{Logger: logger},
	})
	if err != nil {
		return fmt.Errorf("error setting up Vault: %w", err)
	}

	srv, err := server.New(ctx, server.Config{
		DatabaseURL: cluster.URL(appDatabase),
		Listen:      cfg.Listen,
		VaultAddr:   vaultSrv.Addr,
		VaultToken:  vaultSrv.Token,
		Secrets:     dev.Box,
		OrgDB:       dev.Service,
		Encryption:  server.EncryptionTransit,
		Logger:      logger,
	})
	if err != nil {
		return err
	}
	token, err := bootstrap(ctx, cluster, envFile)
	if err != nil {
		return err
	}

	apiURL := srv.URL()
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

	runErr := srv.Run(ctx)
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
