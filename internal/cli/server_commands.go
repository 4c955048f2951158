package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/webhookdb-go/webhookdb/internal/accounts"
	"github.com/webhookdb-go/webhookdb/internal/devenv"
	"github.com/webhookdb-go/webhookdb/internal/migrate"
	"github.com/webhookdb-go/webhookdb/internal/server"
)

func addServerFlags(cmd *cobra.Command, cfg *server.Config) {
	f := cmd.Flags()
	f.StringVar(&cfg.DatabaseURL, "database-url", envOr("WEBHOOKDB_DATABASE_URL", ""), "application database URL (WEBHOOKDB_DATABASE_URL)")
	f.StringVar(&cfg.Listen, "listen", envOr("WEBHOOKDB_LISTEN", ":8080"), "HTTP listen address (WEBHOOKDB_LISTEN)")
	f.StringVar(&cfg.PublicURL, "public-url", envOr("WEBHOOKDB_PUBLIC_URL", ""), "URL senders use to reach this server; default http://<listen> (WEBHOOKDB_PUBLIC_URL)")
	f.StringVar(&cfg.VaultAddr, "vault-addr", envOr("VAULT_ADDR", ""), "Vault address (VAULT_ADDR)")
	f.StringVar(&cfg.VaultToken, "vault-token", envOr("VAULT_TOKEN", ""), "Vault token (VAULT_TOKEN)")
	f.StringVar(&cfg.Keyring, "keyring", envOr("WEBHOOKDB_KEYRING", ""), "local encryption keys, VERSION:BASE64KEY[,...] (WEBHOOKDB_KEYRING)")
	f.StringVar(&cfg.KeyringFile, "keyring-file", envOr("WEBHOOKDB_KEYRING_FILE", ""), "file of local encryption keys, one VERSION:BASE64KEY a line (WEBHOOKDB_KEYRING_FILE)")
	f.StringVar(&cfg.Credentials, "credentials", envOr("WEBHOOKDB_CREDENTIALS", "vault"), "how org read-only credentials are issued: vault, or postgres without Vault (WEBHOOKDB_CREDENTIALS)")
	f.StringVar(&cfg.Encryption, "encryption", envOr("WEBHOOKDB_ENCRYPTION", ""), "encryption of stored secrets: transit (default with Vault) or keyring (WEBHOOKDB_ENCRYPTION)")
	f.StringVar(&cfg.TransitMount, "transit-mount", envOr("WEBHOOKDB_TRANSIT_MOUNT", "transit"), "Vault transit mount (WEBHOOKDB_TRANSIT_MOUNT)")
	f.StringVar(&cfg.TransitKey, "transit-key", envOr("WEBHOOKDB_TRANSIT_KEY", "webhookdb"), "Vault transit key (WEBHOOKDB_TRANSIT_KEY)")
	f.StringVar(&cfg.DatabaseMount, "database-mount", envOr("WEBHOOKDB_DATABASE_MOUNT", "database"), "Vault database engine mount (WEBHOOKDB_DATABASE_MOUNT)")
	f.StringVar(&cfg.Slot, "slot", envOr("WEBHOOKDB_SLOT_NAME", ""), "the fanout's replication slot; default webhookdb_fanout (WEBHOOKDB_SLOT_NAME)")
	f.BoolVar(&cfg.NoFanout, "no-fanout", false, "do not run the fanout here (run `webhookdb fanout` as its own process)")
	f.DurationVar(&cfg.Retention, "retention", 0, "how long staging rows are kept (default 168h)")
	f.Int64Var(&cfg.BodyLimit, "body-limit", 0, "default webhook body limit in bytes (default 1048576)")
	f.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", 0, "how long in-flight requests may take to finish on shutdown (default 15s)")
}

func newServeCommand(g *globalOptions) *cobra.Command {
	cfg := server.Config{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the webhookdb server (ingest, fanout, API) against an existing database",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			cfg.Logger = logger
			srv, err := server.New(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			return srv.Run(cmd.Context())
		},
	}
	addServerFlags(cmd, &cfg)
	return cmd
}

func newMigrateCommand(g *globalOptions) *cobra.Command {
	var dbURL string
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply the application database migrations (a no-op when up to date)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dbURL == "" {
				return errors.New("database URL is required (--database-url or WEBHOOKDB_DATABASE_URL)")
			}
			logger, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			res, err := migrate.Up(cmd.Context(), dbURL, logger)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "applied %d migration(s); database at version %d\n", len(res.Applied), res.Current)
			return nil
		},
	}
	cmd.Flags().StringVar(&dbURL, "database-url", envOr("WEBHOOKDB_DATABASE_URL", ""), "application database URL (WEBHOOKDB_DATABASE_URL)")
	return cmd
}

func newDevCommand(g *globalOptions) *cobra.Command {
	cfg := devenv.Config{}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the whole system on this machine: its own Postgres and Vault, migrated, with an admin token",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			cfg.Logger = logger
			cfg.Out = cmd.OutOrStdout()
			return devenv.Run(cmd.Context(), cfg)
		},
	}
	cmd.Flags().StringVar(&cfg.Dir, "dir", envOr("WEBHOOKDB_DEV_DIR", ".webhookdb"), "directory for the dev cluster's data, kept between runs (WEBHOOKDB_DEV_DIR)")
	cmd.Flags().StringVar(&cfg.Listen, "listen", envOr("WEBHOOKDB_LISTEN", "127.0.0.1:8080"), "HTTP listen address (WEBHOOKDB_LISTEN)")
	return cmd
}

func newAdminCommand(g *globalOptions) *cobra.Command {
	admin := &cobra.Command{Use: "admin", Short: "Administration run directly against the application database"}
	var dbURL, email string
	var serverAdmin bool
	create := &cobra.Command{
		Use:   "create-user",
		Short: "Create a user and print an API token for it (bootstraps the first admin)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dbURL == "" {
				return errors.New("database URL is required (--database-url or WEBHOOKDB_DATABASE_URL)")
			}
			if email == "" {
				return errors.New("--email is required")
			}
			token, err := createUserWithToken(cmd.Context(), dbURL, email, serverAdmin)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s\n", token)
			fmt.Fprintf(cmd.ErrOrStderr(), "Created %s. The token above is shown only once; export it as WEBHOOKDB_TOKEN.\n", email)
			return nil
		},
	}
	create.Flags().StringVar(&dbURL, "database-url", envOr("WEBHOOKDB_DATABASE_URL", ""), "application database URL (WEBHOOKDB_DATABASE_URL)")
	create.Flags().StringVar(&email, "email", "", "the user's email")
	create.Flags().BoolVar(&serverAdmin, "server-admin", false, "may manage database servers, keys and the fanout")
	admin.AddCommand(create)
	return admin
}

func createUserWithToken(ctx context.Context, dbURL, email string, serverAdmin bool) (string, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return "", fmt.Errorf("error connecting to the database: %w", err)
	}
	defer conn.Close(ctx)
	u, err := accounts.CreateUser(ctx, conn, email, serverAdmin)
	if err != nil {
		return "", err
	}
	token, _, err := accounts.CreateToken(ctx, conn, u.ID, "created by admin create-user")
	return token, err
}
