package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	vaultapi "github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/webhookdb-go/webhookdb/internal/secrets"
	"github.com/webhookdb-go/webhookdb/vault"
)

// keyOptions say where the encryption keys are: transit (Vault) or the local keyring.
type keyOptions struct {
	vaultAddr, vaultToken    string
	transitMount, transitKey string
	transitBackupFile        string
	keyring, keyringFile     string
	encryption               string
}

func addKeyFlags(cmd *cobra.Command, o *keyOptions) {
	f := cmd.Flags()
	f.StringVar(&o.encryption, "encryption", envOr("WEBHOOKDB_ENCRYPTION", ""), "transit or keyring; default transit when a Vault address is set (WEBHOOKDB_ENCRYPTION)")
	f.StringVar(&o.vaultAddr, "vault-addr", envOr("VAULT_ADDR", ""), "Vault address (VAULT_ADDR)")
	f.StringVar(&o.vaultToken, "vault-token", envOr("VAULT_TOKEN", ""), "Vault token (VAULT_TOKEN)")
	f.StringVar(&o.transitMount, "transit-mount", envOr("WEBHOOKDB_TRANSIT_MOUNT", "transit"), "transit engine mount path (WEBHOOKDB_TRANSIT_MOUNT)")
	f.StringVar(&o.transitKey, "transit-key", envOr("WEBHOOKDB_TRANSIT_KEY", "webhookdb"), "transit key name (WEBHOOKDB_TRANSIT_KEY)")
	f.StringVar(&o.transitBackupFile, "transit-backup-file", envOr("WEBHOOKDB_TRANSIT_BACKUP_FILE", ""), "dev only: after rotating, write the transit key's backup here (WEBHOOKDB_TRANSIT_BACKUP_FILE)")
	f.StringVar(&o.keyring, "keyring", envOr("WEBHOOKDB_KEYRING", ""), "local encryption keys, VERSION:BASE64KEY[,...] (WEBHOOKDB_KEYRING)")
	f.StringVar(&o.keyringFile, "keyring-file", envOr("WEBHOOKDB_KEYRING_FILE", ""), "file of local encryption keys, one VERSION:BASE64KEY a line (WEBHOOKDB_KEYRING_FILE)")
}

func (o *keyOptions) loadKeyring() (*secrets.Keyring, error) {
	switch {
	case o.keyring != "" && o.keyringFile != "":
		return nil, errors.New("set only one of --keyring and --keyring-file")
	case o.keyringFile != "":
		return secrets.LoadKeyringFile(o.keyringFile)
	case o.keyring != "":
		return secrets.ParseKeyring(o.keyring)
	}
	return nil, nil
}

func (o *keyOptions) vaultClient() (*vaultapi.Client, error) {
	if o.vaultAddr == "" || o.vaultToken == "" {
		return nil, errors.New("Vault address and token are required (--vault-addr/VAULT_ADDR, --vault-token/VAULT_TOKEN)")
	}
	cfg := vaultapi.DefaultConfig()
	cfg.Address = o.vaultAddr
	c, err := vaultapi.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("error creating vault client: %w", err)
	}
	c.SetToken(o.vaultToken)
	return c, nil
}

func newKeysCommand(_ *globalOptions) *cobra.Command {
	keys := &cobra.Command{Use: "keys", Short: "Encryption keys of stored secrets (transit or the local keyring)"}

	var genOpts keyOptions
	var version int
	generate := &cobra.Command{
		Use:   "generate",
		Short: "Print a fresh keyring entry (VERSION:BASE64KEY): the next version of the configured keyring, or --version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if version == 0 {
				version = 1
				kr, err := genOpts.loadKeyring()
				if err != nil {
					return err
				}
				if kr != nil {
					version = kr.Current() + 1
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
	generate.Flags().StringVar(&genOpts.keyring, "keyring", envOr("WEBHOOKDB_KEYRING", ""), "the current keyring (WEBHOOKDB_KEYRING)")
	generate.Flags().StringVar(&genOpts.keyringFile, "keyring-file", envOr("WEBHOOKDB_KEYRING_FILE", ""), "the current keyring file (WEBHOOKDB_KEYRING_FILE)")

	var rotOpts keyOptions
	var dbURL string
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
			if dbURL == "" {
				return errors.New("database URL is required (--database-url or WEBHOOKDB_DATABASE_URL)")
			}
			return runKeysRotate(cmd.Context(), cmd.OutOrStdout(), dbURL, &rotOpts, batch)
		},
	}
	rotate.Flags().StringVar(&dbURL, "database-url", envOr("WEBHOOKDB_DATABASE_URL", ""), "application database URL (WEBHOOKDB_DATABASE_URL)")
	rotate.Flags().IntVar(&batch, "batch-size", 100, "values re-encrypted per round trip")
	addKeyFlags(rotate, &rotOpts)

	keys.AddCommand(generate, rotate)
	return keys
}

func runKeysRotate(ctx context.Context, out io.Writer, dbURL string, o *keyOptions, batch int) error {
	kr, err := o.loadKeyring()
	if err != nil {
		return err
	}
	mode := o.encryption
	if mode == "" {
		mode = "keyring"
		if o.vaultAddr != "" {
			mode = "transit"
		}
	}
	var box secrets.Rotator
	var transit *secrets.Transit
	switch mode {
	case "transit":
		client, err := o.vaultClient()
		if err != nil {
			return err
		}
		if transit, err = secrets.NewTransit(secrets.TransitConfig{Client: client, Mount: o.transitMount, Key: o.transitKey}); err != nil {
			return err
		}
		if err := transit.EnsureKey(ctx); err != nil {
			return err
		}
		box = transit
		if kr != nil {
			box = secrets.WithFallback(transit, kr)
		}
	case "keyring":
		if kr == nil {
			return errors.New("no keyring: set --keyring or --keyring-file (WEBHOOKDB_KEYRING, WEBHOOKDB_KEYRING_FILE)")
		}
		if len(kr.Versions()) < 2 {
			return fmt.Errorf("the keyring has only version %d: add a new version first (webhookdb keys generate --keyring-file FILE >> FILE), restart the servers with it, then run keys rotate", kr.Current())
		}
		box = kr
	default:
		return fmt.Errorf("--encryption %q: want transit or keyring", mode)
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("error connecting to the database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rep, err := secrets.Rotate(ctx, conn, box, secrets.RotateOptions{RotateKey: mode == "transit", BatchSize: batch, Progress: out})
	if err != nil {
		return err
	}
	if transit != nil && o.transitBackupFile != "" {
		backup, err := transit.Backup(ctx)
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.transitBackupFile, []byte(backup+"\n"), 0o600); err != nil {
			return fmt.Errorf("error writing the transit backup: %w", err)
		}
	}
	switch mode {
	case "transit":
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
	var o keyOptions
	var server, mount string
	rotateRoot := &cobra.Command{
		Use:   "rotate-root",
		Short: "Rotate the password of webhookdb_vault on a database server, so that only Vault knows it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if server == "" {
				return errors.New("--server is required")
			}
			client, err := o.vaultClient()
			if err != nil {
				return err
			}
			issuer, err := vault.NewIssuer(vault.Config{Client: client, DatabaseMount: mount})
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
	rotateRoot.Flags().StringVar(&mount, "database-mount", envOr("WEBHOOKDB_DATABASE_MOUNT", "database"), "database secrets engine mount path (WEBHOOKDB_DATABASE_MOUNT)")
	rotateRoot.Flags().StringVar(&o.vaultAddr, "vault-addr", envOr("VAULT_ADDR", ""), "Vault address (VAULT_ADDR)")
	rotateRoot.Flags().StringVar(&o.vaultToken, "vault-token", envOr("VAULT_TOKEN", ""), "Vault token (VAULT_TOKEN)")
	v.AddCommand(rotateRoot)
	return v
}
