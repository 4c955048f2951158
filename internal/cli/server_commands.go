package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/webhookdb-go/webhookdb/fanout"
	"github.com/webhookdb-go/webhookdb/internal/accounts"
	"github.com/webhookdb-go/webhookdb/internal/app"
	"github.com/webhookdb-go/webhookdb/internal/devenv"
	"github.com/webhookdb-go/webhookdb/internal/migrate"
	"github.com/webhookdb-go/webhookdb/internal/staging"
)

func newServeCommand(g *globalOptions) *cobra.Command {
	cfg := app.Config{}
	var noFanout bool
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the webhookdb server (ingest, API, fanout, maintenance) against an existing database",
		Long: "Runs every role in one process. With --no-fanout the fanout is left to a separate `webhookdb fanout`\n" +
			"process, which must use the same --slot (WEBHOOKDB_SLOT_NAME).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			cfg.Logger = logger
			cfg.Roles = app.AllRoles
			if noFanout {
				cfg.Roles = []app.Role{app.RoleIngest, app.RoleAPI, app.RoleMaintenance}
			}
			app.TuneGC(cfg.Roles, cfg.IngestMemory)
			a, err := app.New(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			return a.Run(cmd.Context())
		},
	}
	app.BindFlags(cmd.Flags(), &cfg, app.FlagsAll)
	cmd.Flags().BoolVar(&noFanout, "no-fanout", false, "do not run the fanout here (run `webhookdb fanout` as its own process, with the same --slot)")
	return cmd
}

func newFanoutCommand(g *globalOptions) *cobra.Command {
	cfg := app.Config{}
	cmd := &cobra.Command{
		Use:   "fanout",
		Short: "Run the fanout alone: replicate accepted webhooks from staging into the org databases",
		Long: "Runs the fanout as its own process (serve and dev run it too). It consumes the staging publication\n" +
			"through a persistent replication slot and applies typed upserts to each org's database with the same\n" +
			"narrow writer login serve uses, so it takes the same encryption, Vault and --credentials settings.\n" +
			"Run one per application database: a slot serves one consumer at a time, so a second one waits.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			cfg.Logger = logger
			cfg.Roles = []app.Role{app.RoleFanout}
			a, err := app.New(cmd.Context(), cfg)
			if err == nil {
				err = a.Run(cmd.Context())
			}
			if cmd.Context().Err() != nil {
				return nil // stopped by a signal, possibly while starting: not a failure
			}
			return err
		},
	}
	app.BindFlags(cmd.Flags(), &cfg, app.FlagsCore|app.FlagsMetrics|app.FlagsFanout)
	cmd.AddCommand(fanoutStatusCommand(), newFanoutResyncCommand(g))
	return cmd
}

// newFanoutResyncCommand is the recovery when the slot no longer holds what the org databases lack (Postgres
// invalidated it, or it was dropped): re-apply the accepted deliveries since a time.
func newFanoutResyncCommand(g *globalOptions) *cobra.Command {
	cfg := app.Config{}
	var since string
	var recreate bool
	cmd := &cobra.Command{
		Use:   "resync --since T",
		Short: "Re-apply every accepted webhook received since T (after a lost replication slot)",
		Long: "Stores again every accepted delivery received since T, page by page with a checkpoint after each, so\n" +
			"the fanout applies them once more: the conflict policies make that idempotent (a row only moves to a\n" +
			"newer version). With --recreate-slot a slot Postgres invalidated (wal_status lost) or that is missing is\n" +
			"created anew first. Staging partitions the resync still has to read are kept until it is done; if this\n" +
			"command stops, a running serve finishes the resync.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.DatabaseURL == "" {
				return errors.New("database URL is required (--database-url or WEBHOOKDB_DATABASE_URL)")
			}
			if since == "" {
				return errors.New("--since is required: an RFC 3339 time or a duration back from now (e.g. 26h)")
			}
			from, err := parseWhen(since)
			if err != nil {
				return fmt.Errorf("--since: %w", err)
			}
			cfg = cfg.WithDefaults()
			ctx := cmd.Context()
			pool, err := pgxpool.New(ctx, cfg.DatabaseURL)
			if err != nil {
				return fmt.Errorf("error connecting to the database: %w", err)
			}
			defer pool.Close()
			out := cmd.OutOrStdout()
			if recreate {
				recreated, err := fanout.RecreateSlot(ctx, pool, cfg.Slot)
				if err != nil {
					return err
				}
				if recreated {
					fmt.Fprintf(out, "Re-created replication slot %s at the current position.\n", cfg.Slot)
				}
			}
			rs, err := staging.StartResync(ctx, pool, from)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "Resync %d: accepted deliveries received from %s to %s.\n", rs.ID, rs.Since.Format(time.RFC3339), rs.Until.Format(time.RFC3339))
			var copied int64
			err = staging.RunResync(ctx, pool, rs.ID, func(n int64) {
				copied = n
				fmt.Fprintf(out, "  %d stored again\n", n)
			})
			if err != nil {
				return fmt.Errorf("%w (resync %d is recorded: a running serve finishes it)", err, rs.ID)
			}
			fmt.Fprintf(out, "Resync %d done: %d deliveries stored again; the fanout applies them (webhookdb fanout status shows its lag).\n", rs.ID, copied)
			return nil
		},
	}
	app.BindFlags(cmd.Flags(), &cfg, app.FlagsDatabase|app.FlagsSlot)
	cmd.Flags().StringVar(&since, "since", "", "first receive time to re-apply: RFC 3339, or a duration back from now (e.g. 26h)")
	cmd.Flags().BoolVar(&recreate, "recreate-slot", false, "first re-create the slot if Postgres invalidated it (wal_status lost) or it is missing")
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
	cmd.Flags().StringVar(&dbURL, "database-url", app.Env(app.EnvDatabaseURL), "application database URL (WEBHOOKDB_DATABASE_URL)")
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
	cmd.Flags().StringVar(&cfg.Listen, "listen", envOr(app.EnvListen, "127.0.0.1:8080"), "HTTP listen address (WEBHOOKDB_LISTEN)")
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
	create.Flags().StringVar(&dbURL, "database-url", app.Env(app.EnvDatabaseURL), "application database URL (WEBHOOKDB_DATABASE_URL)")
	create.Flags().StringVar(&email, "email", "", "the user's email")
	create.Flags().BoolVar(&serverAdmin, "server-admin", false, "may manage database servers, keys and the fanout")
	admin.AddCommand(create, newRenameOrgDatabasesCommand())
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

func newRenameOrgDatabasesCommand() *cobra.Command {
	var cfg app.Config
	cmd := &cobra.Command{
		Use:   "rename-org-databases",
		Short: "Move orgs provisioned before opaque names to them (an upgrade step; safe to run again)",
		Long: `Org databases, their roles and the logins issued for them used to be named from the org key, which every
login on a shared database server can read in pg_database, pg_roles and pg_stat_activity. This moves every
org still named that way to an opaque name, one org at a time: it revokes the org's read-only logins (users
run db connection again for new ones), terminates the sessions in its database, renames the database and its
roles, updates Vault's roles and the stored names. An org is unreachable only while it is being renamed; the
fanout catches up afterwards. An org that fails is reported and left to the next run, which resumes it.
Run it with the same credential mode and encryption settings as the servers.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := app.RenameOrgDatabases(cmd.Context(), cfg, func(orgKey string, err error) {
				if err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "%s: %v\n", orgKey, err)
					return
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "%s: renamed\n", orgKey)
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d orgs renamed, %d failed\n", len(res.Renamed), len(res.Failed))
			if len(res.Failed) > 0 {
				return fmt.Errorf("%d orgs could not be renamed: run the command again once the cause is fixed", len(res.Failed))
			}
			return nil
		},
	}
	app.BindFlags(cmd.Flags(), &cfg, app.FlagsCore)
	return cmd
}
