package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/webhookdb-go/webhookdb/internal/app"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
	"github.com/webhookdb-go/webhookdb/vault"
)

func newKeysCommand(_ *globalOptions) *cobra.Command {
	keys := &cobra.Command{Use: "keys", Short: "Encryption keys of stored secrets (transit or the local keyring)"}

	var genOpts app.Config
	var version int
	generate := &cobra.Command{
		Use:   "generate",
		Short: "Print a fresh keyring entry (VERSION:BASE64KEY): the next version of the configured keyring, or --version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if version == 0 {
				version = 1
				genOpts.Encryption = app.EncryptionKeyring
				if genOpts.Keyring != "" || genOpts.KeyringFile != "" {
					keys, err := app.OpenKeys(cmd.Context(), genOpts, false)
					if err != nil {
						return err
					}
					version = keys.Keyring.Current() + 1
				}
			}
			if version < 1 {
				return errors.New("--version must be positive")
			}
			fmt.Fprintln(cmd.OutOrStdout(), secrets.NewKeyEntry(version))
			return nil
		},
	}
	generate.Flags().IntVar(&version, "version", 0, "key version (default: one past the configured keyring's newest, or 1)")
	generate.Flags().StringVar(&genOpts.Keyring, "keyring", app.Env(app.EnvKeyring), "the current keyring ("+app.EnvKeyring+")")
	generate.Flags().StringVar(&genOpts.KeyringFile, "keyring-file", app.Env(app.EnvKeyringFile), "the current keyring file ("+app.EnvKeyringFile+")")

	var rotOpts app.Config
	var transitBackupFile string
	var batch int
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Rotate the key, re-encrypt every stored secret in batches, then retire the old key versions",
		Long: `With transit: rotates the transit key, rewraps every encrypted value (the plaintext never leaves Vault),
checks none is left under an older version, then raises the key's min_decryption_version.

With the local keyring: add a new version first (webhookdb keys generate --keyring-file F >> F, then restart the
servers with it), then run keys rotate: every value is re-encrypted under the newest version, and it tells you
which old versions you can then remove from the keyring.

Values still under the local keyring are moved to transit when both are configured.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if rotOpts.DatabaseURL == "" {
				return errors.New("database URL is required (--database-url or WEBHOOKDB_DATABASE_URL)")
			}
			return runKeysRotate(cmd.Context(), cmd.OutOrStdout(), rotOpts, transitBackupFile, batch)
		},
	}
	rotate.Flags().IntVar(&batch, "batch-size", 100, "values re-encrypted per round trip")
	rotate.Flags().StringVar(&transitBackupFile, "transit-backup-file", envOr("WEBHOOKDB_TRANSIT_BACKUP_FILE", ""), "dev only: after rotating, write the transit key's backup here (WEBHOOKDB_TRANSIT_BACKUP_FILE)")
	app.BindFlags(rotate.Flags(), &rotOpts, app.FlagsDatabase|app.FlagsSecrets)

	keys.AddCommand(generate, rotate)
	return keys
}

func runKeysRotate(ctx context.Context, out io.Writer, cfg app.Config, transitBackupFile string, batch int) error {
	cfg = cfg.WithDefaults()
	mode := cfg.Encryption
	keys, err := app.OpenKeys(ctx, cfg, true)
	if err != nil {
		return err
	}
	kr, transit := keys.Keyring, keys.Transit
	if mode == app.EncryptionKeyring && len(kr.Versions()) < 2 {
		return fmt.Errorf("the keyring has only version %d: add a new version first (webhookdb keys generate --keyring-file FILE >> FILE), restart the servers with it, then run keys rotate", kr.Current())
	}
	box, ok := keys.Box.(secrets.Rotator)
	if !ok {
		return errors.New("this encryption cannot be rotated")
	}
	conn, err := pgx.Connect(ctx, cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("error connecting to the database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rep, err := secrets.Rotate(ctx, conn, box, secrets.RotateOptions{RotateKey: mode == app.EncryptionTransit, BatchSize: batch, Progress: out})
	if err != nil {
		return err
	}
	if transit != nil && transitBackupFile != "" {
		backup, err := transit.Backup(ctx)
		if err != nil {
			return err
		}
		if err := os.WriteFile(transitBackupFile, []byte(backup+"\n"), 0o600); err != nil {
			return fmt.Errorf("error writing the transit backup: %w", err)
		}
	}
	switch mode {
	case app.EncryptionTransit:
		fmt.Fprintf(out, "Every value is under transit key version %d; min_decryption_version raised to %d.\n", rep.Version, rep.MinDecryptionVersion)
	default:
		old := slices.DeleteFunc(kr.Versions(), func(v int) bool { return v == rep.Version })
		olds := make([]string, len(old))
		for i, v := range old {
			olds[i] = fmt.Sprint(v)
		}
		fmt.Fprintf(out, "Every value is under keyring version %d. You can now remove version(s) %s from the keyring and restart the servers.\n",
			rep.Version, strings.Join(olds, ", "))
	}
	return nil
}

func newVaultCommand(_ *globalOptions) *cobra.Command {
	v := &cobra.Command{Use: "vault", Short: "Vault administration"}
	var o app.Config
	var server string
	rotateRoot := &cobra.Command{
		Use:   "rotate-root",
		Short: "Rotate the password of webhookdb_vault on a database server, so that only Vault knows it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if server == "" {
				return errors.New("--server is required")
			}
			client, err := o.VaultClient()
			if err != nil {
				return err
			}
			issuer, err := vault.NewIssuer(vault.Config{Client: client, DatabaseMount: o.WithDefaults().DatabaseMount})
			if err != nil {
				return err
			}
			if err := issuer.RotateRoot(cmd.Context(), server); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Rotated the password of webhookdb_vault on %s; only Vault knows it now.\n", server)
			return nil
		},
	}
	rotateRoot.Flags().StringVar(&server, "server", "", "database server name (as registered)")
	rotateRoot.Flags().StringVar(&o.VaultAddr, "vault-addr", app.Env(app.EnvVaultAddr), "Vault address ("+app.EnvVaultAddr+")")
	rotateRoot.Flags().StringVar(&o.VaultToken, "vault-token", app.Env(app.EnvVaultToken), "Vault token ("+app.EnvVaultToken+")")
	rotateRoot.Flags().StringVar(&o.DatabaseMount, "database-mount", app.Env(app.EnvDatabaseMount), "database secrets engine mount path; default database ("+app.EnvDatabaseMount+")")
	var pc app.Config
	policy := &cobra.Command{
		Use:   "policy",
		Short: "Print the Vault policy webhookdb's token needs (vault policy write webhookdb -)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c := pc.WithDefaults()
			fmt.Fprint(cmd.OutOrStdout(), vault.Policy(c.DatabaseMount, c.TransitMount, c.TransitKey))
			return nil
		},
	}
	policy.Flags().StringVar(&pc.DatabaseMount, "database-mount", app.Env(app.EnvDatabaseMount), "database secrets engine mount path; default database ("+app.EnvDatabaseMount+")")
	policy.Flags().StringVar(&pc.TransitMount, "transit-mount", app.Env(app.EnvTransitMount), "transit mount; default transit ("+app.EnvTransitMount+")")
	policy.Flags().StringVar(&pc.TransitKey, "transit-key", app.Env(app.EnvTransitKey), "transit key; default webhookdb ("+app.EnvTransitKey+")")
	v.AddCommand(rotateRoot, policy)
	return v
}
