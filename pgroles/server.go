package pgroles

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// PrepareServer hardens a database server when it is registered: PUBLIC loses CONNECT and TEMP on every
// database (postgres and template1 included), so a login role issued for one org cannot get in anywhere
// else. Provisioning each org does it again, for databases created since.
func PrepareServer(ctx context.Context, adminURL string) error {
	conn, err := connect(ctx, adminURL, "postgres")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := requireSuperuser(ctx, conn); err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, serverLockID); err != nil {
			return fmt.Errorf("error taking the server lock: %w", err)
		}
		return lockDownDatabases(ctx, tx)
	})
}

// EnsureVaultRole creates or repairs webhookdb_vault, the role Vault's database engine connects as: LOGIN,
// CREATEROLE (to create and drop login roles), pg_signal_backend (to end a revoked role's sessions), CONNECT on
// postgres (where Vault connects, once PUBLIC has lost it), ADMIN OPTION on every org's read-only group on the
// server; never superuser. A non-empty password replaces the current one (Vault rotates it right after, so
// only Vault knows it); an empty one leaves it alone.
func EnsureVaultRole(ctx context.Context, adminURL, password string) error {
	return ensureServiceRole(ctx, adminURL, password, VaultRole, " LOGIN INHERIT CREATEROLE NOSUPERUSER NOCREATEDB NOREPLICATION NOBYPASSRLS",
		"GRANT pg_signal_backend TO "+ident(VaultRole),
		"GRANT CONNECT ON DATABASE postgres TO "+ident(VaultRole))
}

// EnsureFanoutRole creates or repairs webhookdb_fanout, the role the fanout writes as: LOGIN, a member of
// every org owner role on the server (it connects to an org database through that membership and SETs ROLE
// to the owner), no other attribute. A non-empty password replaces the current one.
func EnsureFanoutRole(ctx context.Context, adminURL, password string) error {
	return ensureServiceRole(ctx, adminURL, password, FanoutRole, " LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS")
}

// ensureServiceRole creates or repairs one of webhookdb's own roles under the server lock, with attrs, a new
// password when one is given, and grants; then grants it what it needs on every org of the server.
func ensureServiceRole(ctx context.Context, adminURL, password, role, attrs string, grants ...string) error {
	conn, err := connect(ctx, adminURL, "postgres")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := requireSuperuser(ctx, conn); err != nil {
		return err
	}
	if password != "" {
		verifier, err := scramVerifier(password, serviceScramIterations)
		if err != nil {
			return err
		}
		attrs += " PASSWORD " + quoteLiteral(verifier)
	}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, serverLockID); err != nil {
			return fmt.Errorf("error taking the server lock: %w", err)
		}
		if err := upsertRole(ctx, tx, role, attrs); err != nil {
			return err
		}
		for _, stmt := range grants {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("error running %q: %w", stmt, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("error preparing role %s: %w", role, err)
	}
	keys, err := serverOrgKeys(ctx, conn)
	if err != nil {
		return err
	}
	return grantServiceRoles(ctx, conn, keys)
}

func upsertRole(ctx context.Context, tx pgx.Tx, role, attrs string) error {
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, role).Scan(&exists); err != nil {
		return fmt.Errorf("error checking role %s: %w", role, err)
	}
	verb := "CREATE ROLE "
	if exists {
		verb = "ALTER ROLE "
	}
	if _, err := tx.Exec(ctx, verb+ident(role)+attrs); err != nil {
		return fmt.Errorf("error creating role %s: %w", role, err)
	}
	return nil
}

// serverOrgKeys lists the orgs provisioned on the server, from their databases.
func serverOrgKeys(ctx context.Context, conn *pgx.Conn) ([]string, error) {
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE datname LIKE 'org\_%' ORDER BY datname`)
	if err != nil {
		return nil, fmt.Errorf("error listing org databases: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("error listing org databases: %w", err)
	}
	var keys []string
	for _, n := range names {
		if k, ok := orgKeyFromDatabase(n); ok {
			keys = append(keys, k)
		}
	}
	return keys, nil
}

// grantServiceRoles gives webhookdb_vault ADMIN OPTION on each org's read-only group and webhookdb_fanout
// membership in each org's owner role, for those service roles that exist.
//
// On PostgreSQL 16 and later the ADMIN grant is made with INHERIT FALSE and SET FALSE, so Vault's role can
// grant the group without holding its read privileges. PostgreSQL 15 has no such options: there, CREATEROLE
// alone already lets the role grant any non-superuser role, and ADMIN OPTION comes with plain membership.
func grantServiceRoles(ctx context.Context, conn *pgx.Conn, orgKeys []string) error {
	var vaultExists, fanoutExists bool
	var version int
	err := conn.QueryRow(ctx, `
		SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1),
		       EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $2),
		       current_setting('server_version_num')::int`, VaultRole, FanoutRole).Scan(&vaultExists, &fanoutExists, &version)
	if err != nil {
		return fmt.Errorf("error checking service roles: %w", err)
	}
	if !vaultExists && !fanoutExists {
		return nil
	}
	adminOption := " WITH ADMIN OPTION"
	if version >= 160000 {
		adminOption = " WITH ADMIN OPTION, INHERIT FALSE, SET FALSE"
	}
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, serverLockID); err != nil {
			return fmt.Errorf("error taking the server lock: %w", err)
		}
		for _, key := range orgKeys {
			var haveGroup, haveOwner bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1), EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $2)`,
				ReadonlyRole(key), OwnerRole(key)).Scan(&haveGroup, &haveOwner); err != nil {
				return fmt.Errorf("error checking roles of org %s: %w", key, err)
			}
			var stmts []string
			if vaultExists && haveGroup {
				stmts = append(stmts, "GRANT "+ident(ReadonlyRole(key))+" TO "+ident(VaultRole)+adminOption)
			}
			if fanoutExists && haveOwner {
				stmts = append(stmts, "GRANT "+ident(OwnerRole(key))+" TO "+ident(FanoutRole))
			}
			for _, stmt := range stmts {
				if _, err := tx.Exec(ctx, stmt); err != nil {
					return fmt.Errorf("error running %q: %w", stmt, err)
				}
			}
		}
		return nil
	})
}
