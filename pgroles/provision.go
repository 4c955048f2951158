package pgroles

import (
	"context"
	"errors"
	"fmt"
	"net/url"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/internal/pgerr"
)

// Step is one resumable step of provisioning an org. Each step checks what exists and converges, and each
// runs in one transaction (except CREATE DATABASE, which is atomic by itself), so a run interrupted anywhere
// and run again ends in the same state.
type Step string

const (
	// StepRoles creates the owner and read-only group roles (NOLOGIN) and resets their attributes.
	StepRoles Step = "roles"
	// StepDatabase creates the org database, owned by the owner role, from template0.
	StepDatabase Step = "database"
	// StepServerACL takes every privilege on the org database from PUBLIC, gives CONNECT to the read-only
	// group, and takes CONNECT and TEMP from PUBLIC on every other database of the server.
	StepServerACL Step = "server_acl"
	// StepSchemas sets up the schemas inside the org database: public owned by the owner, USAGE and SELECT
	// (now and by default) for the read-only group, CREATE for nobody else, the meta schema the owner's with
	// the fanout's applied-position table (AppliedTable) in it.
	StepSchemas Step = "schemas"
	// StepReadGrants lets the read-only group read everything a standard tool reads (pg_dump, psql's \d+, a
	// driver's catalog queries): SELECT on the sequences of public, now and by default, and USAGE and SELECT
	// (now and by default) on the meta schema, which pg_dump locks like any other. Organisations provisioned
	// before this step existed get it from the maintenance pass's repair (orgdb re-provisions every ready org
	// whose recorded steps lack one).
	StepReadGrants Step = "read_grants"
	// StepGuard installs the event trigger that refuses DDL from anyone but the owner (and superusers).
	StepGuard Step = "guard"
	// StepWriterGrants gives webhookdb_fanout (created NOLOGIN when missing; EnsureFanoutRole gives it its
	// login) CONNECT on the org database, USAGE on its two schemas, and SELECT, INSERT, UPDATE and DELETE on
	// their tables and USAGE, SELECT and UPDATE on their sequences, now and by default for what the owner
	// creates. Granted directly rather than reached through the owner role: a backend checking a privilege
	// that comes through membership first computes every role its login belongs to, and the fanout belongs
	// to the owner role of every org on the server. At 1,000 orgs that is 1,000 catalog lookups for each new
	// backend, about as much as the rest of its first transaction. The fanout still assumes the owner role
	// (SET LOCAL ROLE) for the DDL it runs, rarely.
	StepWriterGrants Step = "writer_grants"
	// StepServiceRoles grants the read-only group to webhookdb_vault WITH ADMIN OPTION and the owner role
	// to webhookdb_fanout, for those of them that exist on the server.
	StepServiceRoles Step = "service_roles"
)

// Steps lists the provisioning steps in the order they run.
var Steps = []Step{StepRoles, StepDatabase, StepServerACL, StepSchemas, StepReadGrants, StepGuard, StepWriterGrants, StepServiceRoles}

// ProvisionOptions tune ProvisionOrgWith.
type ProvisionOptions struct {
	// AfterStep, when set, is called after each step completes; the caller records progress there. An error
	// stops provisioning and is returned (tests use it to simulate a crash after any step).
	AfterStep func(ctx context.Context, step Step) error
}

// serverLockID serialises the statements that touch server-wide rows (database ACLs, role memberships of the
// service roles): concurrent GRANT/REVOKE on one pg_database row fails with "tuple concurrently updated".
const serverLockID = 0x77686472 // "whdr"

// ProvisionOrg creates (or completes) an org's database and roles on the server reached by adminURL (a
// superuser URL to any database of that server). Every step checks what exists, so a run interrupted at any
// point and run again ends in the same state.
func ProvisionOrg(ctx context.Context, adminURL, orgKey string) error {
	return ProvisionOrgWith(ctx, adminURL, orgKey, ProvisionOptions{})
}

// ProvisionOrgWith is ProvisionOrg with options.
func ProvisionOrgWith(ctx context.Context, adminURL, orgKey string, opts ProvisionOptions) error {
	if err := ValidateOrgKey(orgKey); err != nil {
		return err
	}
	conn, err := connect(ctx, adminURL, "postgres")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := requireSuperuser(ctx, conn); err != nil {
		return err
	}
	var orgConn *pgx.Conn
	defer func() {
		if orgConn != nil {
			orgConn.Close(context.WithoutCancel(ctx))
		}
	}()
	for _, step := range Steps {
		switch step {
		case StepRoles:
			err = stepRoles(ctx, conn, orgKey)
		case StepDatabase:
			err = stepDatabase(ctx, conn, orgKey)
		case StepServerACL:
			err = stepServerACL(ctx, conn, orgKey)
		case StepSchemas, StepReadGrants, StepGuard:
			if orgConn == nil {
				if orgConn, err = connect(ctx, adminURL, DatabaseName(orgKey)); err != nil {
					break
				}
			}
			switch step {
			case StepSchemas:
				err = stepSchemas(ctx, orgConn, orgKey)
			case StepReadGrants:
				err = stepReadGrants(ctx, orgConn, orgKey)
			default:
				err = stepGuard(ctx, orgConn)
			}
		case StepWriterGrants:
			if err = grantWriterConnect(ctx, conn, orgKey); err != nil {
				break
			}
			if orgConn == nil {
				if orgConn, err = connect(ctx, adminURL, DatabaseName(orgKey)); err != nil {
					break
				}
			}
			err = stepWriterGrants(ctx, orgConn, orgKey)
		case StepServiceRoles:
			err = grantServiceRoles(ctx, conn, []string{orgKey})
		}
		if err != nil {
			return fmt.Errorf("error provisioning org %s (step %s): %w", orgKey, step, err)
		}
		if opts.AfterStep != nil {
			if err := opts.AfterStep(ctx, step); err != nil {
				return err
			}
		}
	}
	return nil
}

func stepRoles(ctx context.Context, conn *pgx.Conn, orgKey string) error {
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for _, role := range []string{OwnerRole(orgKey), ReadonlyRole(orgKey)} {
			if err := createRoleIfMissing(ctx, tx, role); err != nil {
				return err
			}
			// Converge attributes too: a role left behind by someone else must not keep LOGIN or more.
			if _, err := tx.Exec(ctx, "ALTER ROLE "+ident(role)+" NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD NULL"); err != nil {
				return fmt.Errorf("error resetting role %s: %w", role, err)
			}
		}
		return nil
	})
}

func stepDatabase(ctx context.Context, conn *pgx.Conn, orgKey string) error {
	db, owner := DatabaseName(orgKey), OwnerRole(orgKey)
	var currentOwner string
	err := conn.QueryRow(ctx, `SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1`, db).Scan(&currentOwner)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		// template0, not template1: whatever someone installed into template1 must not reach org databases.
		_, err := conn.Exec(ctx, "CREATE DATABASE "+ident(db)+" OWNER "+ident(owner)+" TEMPLATE template0")
		if err != nil && !pgerr.Is(err, pgerrcode.DuplicateDatabase) { // duplicate_database: created concurrently
			return fmt.Errorf("error creating database %s: %w", db, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("error checking database %s: %w", db, err)
	case currentOwner != owner:
		if _, err := conn.Exec(ctx, "ALTER DATABASE "+ident(db)+" OWNER TO "+ident(owner)); err != nil {
			return fmt.Errorf("error setting the owner of %s: %w", db, err)
		}
	}
	return nil
}

func stepServerACL(ctx context.Context, conn *pgx.Conn, orgKey string) error {
	db := DatabaseName(orgKey)
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, serverLockID); err != nil {
			return fmt.Errorf("error taking the server lock: %w", err)
		}
		for _, stmt := range []string{
			"REVOKE ALL ON DATABASE " + ident(db) + " FROM PUBLIC",
			"GRANT CONNECT ON DATABASE " + ident(db) + " TO " + ident(ReadonlyRole(orgKey)),
		} {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("error running %q: %w", stmt, err)
			}
		}
		return lockDownDatabases(ctx, tx)
	})
}

// lockDownDatabases takes CONNECT and TEMP from PUBLIC on every database that still grants them: a login role
// issued for one org must not get into postgres, template1, the application database or anything else on the
// server. Owners and explicit grantees keep their access.
func lockDownDatabases(ctx context.Context, tx pgx.Tx) error {
	rows, err := tx.Query(ctx, `
		SELECT datname FROM pg_database
		WHERE datallowconn
		  AND (has_database_privilege('public', oid, 'CONNECT') OR has_database_privilege('public', oid, 'TEMPORARY'))`)
	if err != nil {
		return fmt.Errorf("error listing databases: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("error listing databases: %w", err)
	}
	for _, name := range names {
		stmt := "REVOKE CONNECT, TEMPORARY ON DATABASE " + ident(name) + " FROM PUBLIC"
		for attempt := 1; ; attempt++ {
			if _, err := tx.Exec(ctx, "SAVEPOINT lockdown"); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, stmt)
			if err == nil {
				break
			}
			// Dropped since we listed it (invalid_catalog_name), or dropped or changed by someone else while we
			// changed it ("tuple concurrently deleted/updated", internal_error): look again.
			if !pgerr.Is(err, pgerrcode.InvalidCatalogName, pgerrcode.InternalError) || attempt == 3 {
				return fmt.Errorf("error running %q: %w", stmt, err)
			}
			if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT lockdown"); err != nil {
				return err
			}
			var open bool
			if err := tx.QueryRow(ctx, `
				SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1 AND datallowconn
				  AND (has_database_privilege('public', oid, 'CONNECT') OR has_database_privilege('public', oid, 'TEMPORARY')))`, name).Scan(&open); err != nil {
				return fmt.Errorf("error checking database %s: %w", name, err)
			}
			if !open {
				break
			}
		}
	}
	return nil
}

func stepSchemas(ctx context.Context, conn *pgx.Conn, orgKey string) error {
	owner, readonly := ident(OwnerRole(orgKey)), ident(ReadonlyRole(orgKey))
	meta := ident(MetaSchema)
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for _, stmt := range []string{
			"ALTER SCHEMA public OWNER TO " + owner,
			// PostgreSQL 15 no longer gives PUBLIC CREATE on public, but a database from an older dump might.
			"REVOKE ALL ON SCHEMA public FROM PUBLIC",
			"GRANT USAGE ON SCHEMA public TO " + readonly,
			"GRANT SELECT ON ALL TABLES IN SCHEMA public TO " + readonly,
			// Tables the fanout creates later (as the owner) are readable without another grant.
			"ALTER DEFAULT PRIVILEGES FOR ROLE " + owner + " IN SCHEMA public GRANT SELECT ON TABLES TO " + readonly,
			// A function the owner creates must not become callable by everyone (a SECURITY DEFINER one would
			// run as the owner).
			"ALTER DEFAULT PRIVILEGES FOR ROLE " + owner + " REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC",
			"CREATE SCHEMA IF NOT EXISTS " + meta + " AUTHORIZATION " + owner,
			"ALTER SCHEMA " + meta + " OWNER TO " + owner,
			"REVOKE ALL ON SCHEMA " + meta + " FROM PUBLIC",
			// The fanout's applied position: made here, its first transaction in the org runs no DDL.
			AppliedTableSQL(),
			"ALTER TABLE " + pgx.Identifier{MetaSchema, AppliedTable}.Sanitize() + " OWNER TO " + owner,
			// Large objects need no privilege to create; one owned by a login role would block dropping it.
			"REVOKE EXECUTE ON FUNCTION pg_catalog.lo_create(oid), pg_catalog.lo_creat(integer), pg_catalog.lo_from_bytea(oid, bytea) FROM PUBLIC",
		} {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("error running %q: %w", stmt, err)
			}
		}
		return nil
	})
}

func stepReadGrants(ctx context.Context, conn *pgx.Conn, orgKey string) error {
	owner, readonly := ident(OwnerRole(orgKey)), ident(ReadonlyRole(orgKey))
	meta := ident(MetaSchema)
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for _, stmt := range []string{
			// pg_dump reads every sequence of the tables it dumps (SELECT last_value).
			"GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO " + readonly,
			"ALTER DEFAULT PRIVILEGES FOR ROLE " + owner + " IN SCHEMA public GRANT SELECT ON SEQUENCES TO " + readonly,
			// pg_dump locks every table of every schema it dumps: the meta schema (the fanout's applied
			// position, about this org's own data) is readable, never writable.
			"GRANT USAGE ON SCHEMA " + meta + " TO " + readonly,
			"GRANT SELECT ON ALL TABLES IN SCHEMA " + meta + " TO " + readonly,
			"GRANT SELECT ON ALL SEQUENCES IN SCHEMA " + meta + " TO " + readonly,
			"ALTER DEFAULT PRIVILEGES FOR ROLE " + owner + " IN SCHEMA " + meta + " GRANT SELECT ON TABLES TO " + readonly,
			"ALTER DEFAULT PRIVILEGES FOR ROLE " + owner + " IN SCHEMA " + meta + " GRANT SELECT ON SEQUENCES TO " + readonly,
		} {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("error running %q: %w", stmt, err)
			}
		}
		return nil
	})
}

// grantWriterConnect creates webhookdb_fanout NOLOGIN when it is missing (so the grants inside the database
// have a grantee before the fanout first logs in) and gives it CONNECT on the org database, under the server
// lock: both touch rows every org of the server shares.
func grantWriterConnect(ctx context.Context, conn *pgx.Conn, orgKey string) error {
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, serverLockID); err != nil {
			return fmt.Errorf("error taking the server lock: %w", err)
		}
		if err := createRoleIfMissing(ctx, tx, FanoutRole); err != nil {
			return err
		}
		stmt := "GRANT CONNECT ON DATABASE " + ident(DatabaseName(orgKey)) + " TO " + ident(FanoutRole)
		if _, err := tx.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("error running %q: %w", stmt, err)
		}
		return nil
	})
}

func stepWriterGrants(ctx context.Context, conn *pgx.Conn, orgKey string) error {
	owner, fanout := ident(OwnerRole(orgKey)), ident(FanoutRole)
	var stmts []string
	for _, schema := range []string{"public", MetaSchema} {
		s := ident(schema)
		stmts = append(stmts,
			"GRANT USAGE ON SCHEMA "+s+" TO "+fanout,
			"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "+s+" TO "+fanout,
			"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA "+s+" TO "+fanout,
			"ALTER DEFAULT PRIVILEGES FOR ROLE "+owner+" IN SCHEMA "+s+" GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO "+fanout,
			"ALTER DEFAULT PRIVILEGES FOR ROLE "+owner+" IN SCHEMA "+s+" GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO "+fanout)
	}
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for _, stmt := range stmts {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("error running %q: %w", stmt, err)
			}
		}
		return nil
	})
}

// guardFunction refuses DDL from anyone who is not a member of the database's owner (superusers are members
// of every role). Read-only logins have no CREATE anywhere, but ALTER DEFAULT PRIVILEGES, for one, needs no
// privilege and would leave catalog entries that block dropping the login role at revocation.
const guardFunction = `CREATE OR REPLACE FUNCTION ` + GuardSchema + `.refuse_ddl() RETURNS event_trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT pg_catalog.pg_has_role(current_user,
            (SELECT datdba FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()), 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied: % is not allowed with read-only credentials', tg_tag
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END
$$`

const guardTrigger = "webhookdb_refuse_ddl"

func stepGuard(ctx context.Context, conn *pgx.Conn) error {
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for _, stmt := range []string{
			"CREATE SCHEMA IF NOT EXISTS " + ident(GuardSchema),
			"REVOKE ALL ON SCHEMA " + ident(GuardSchema) + " FROM PUBLIC",
			guardFunction,
			"REVOKE ALL ON FUNCTION " + ident(GuardSchema) + ".refuse_ddl() FROM PUBLIC",
		} {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("error running %q: %w", stmt, err)
			}
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = $1)`, guardTrigger).Scan(&exists); err != nil {
			return fmt.Errorf("error checking the event trigger: %w", err)
		}
		stmts := []string{"ALTER EVENT TRIGGER " + ident(guardTrigger) + " ENABLE ALWAYS"}
		if !exists {
			stmts = append([]string{"CREATE EVENT TRIGGER " + ident(guardTrigger) + " ON ddl_command_start EXECUTE FUNCTION " + ident(GuardSchema) + ".refuse_ddl()"}, stmts...)
		}
		for _, stmt := range stmts {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("error running %q: %w", stmt, err)
			}
		}
		return nil
	})
}

func createRoleIfMissing(ctx context.Context, tx pgx.Tx, role string) error {
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, role).Scan(&exists); err != nil {
		return fmt.Errorf("error checking role %s: %w", role, err)
	}
	if exists {
		return nil
	}
	if _, err := tx.Exec(ctx, "CREATE ROLE "+ident(role)+" NOLOGIN"); err != nil {
		return fmt.Errorf("error creating role %s: %w", role, err)
	}
	return nil
}

// DropOrg deletes an org from its server: every login role still in its read-only group is disabled, its
// sessions terminated and dropped, then the database (sessions and all) and the two roles go. Issued
// credentials should be revoked through their issuer first (so Vault forgets its leases); this is the
// backstop. Safe to run again.
func DropOrg(ctx context.Context, adminURL, orgKey string) error {
	if err := ValidateOrgKey(orgKey); err != nil {
		return err
	}
	conn, err := connect(ctx, adminURL, "postgres")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, `
		SELECT u.rolname FROM pg_auth_members m
		JOIN pg_roles g ON g.oid = m.roleid
		JOIN pg_roles u ON u.oid = m.member
		WHERE g.rolname = $1 AND u.rolname NOT IN ($2, $3)`, ReadonlyRole(orgKey), VaultRole, FanoutRole)
	if err != nil {
		return fmt.Errorf("error listing login roles of org %s: %w", orgKey, err)
	}
	logins, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("error listing login roles of org %s: %w", orgKey, err)
	}
	for _, login := range logins {
		if err := dropLogin(ctx, conn, adminURL, login); err != nil {
			return err
		}
	}
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident(DatabaseName(orgKey))+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("error dropping database of org %s: %w", orgKey, err)
	}
	// The group roles go under the server lock: granting the service roles on every org of the server checks
	// that each group exists, then grants, and must not see one vanish in between.
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, serverLockID); err != nil {
			return fmt.Errorf("error taking the server lock: %w", err)
		}
		for _, role := range []string{ReadonlyRole(orgKey), OwnerRole(orgKey)} {
			if _, err := tx.Exec(ctx, "DROP ROLE IF EXISTS "+ident(role)); err != nil {
				return fmt.Errorf("error dropping role %s: %w", role, err)
			}
		}
		return nil
	})
}

// OrgURL is adminURL pointed at the org's database (the fanout then SETs ROLE to the owner).
func OrgURL(adminURL, orgKey string) string { return withDatabase(adminURL, DatabaseName(orgKey)) }

// ErrNotSuperuser means the admin URL does not log in as a superuser: taking CONNECT on postgres and
// template1 from PUBLIC, and installing the DDL guard (an event trigger), need one.
var ErrNotSuperuser = errors.New("the admin URL must log in as a superuser")

func requireSuperuser(ctx context.Context, conn *pgx.Conn) error {
	var super bool
	if err := conn.QueryRow(ctx, `SELECT rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&super); err != nil {
		return fmt.Errorf("error checking the admin role: %w", err)
	}
	if !super {
		return ErrNotSuperuser
	}
	return nil
}

func connect(ctx context.Context, adminURL, db string) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, withDatabase(adminURL, db))
	if err != nil {
		return nil, fmt.Errorf("error connecting to database %s on the database server: %w", db, err)
	}
	return conn, nil
}

func withDatabase(connURL, db string) string {
	u, err := url.Parse(connURL)
	if err != nil || u.Scheme == "" {
		// key=value form: a later dbname wins.
		return connURL + " dbname=" + db
	}
	u.Path = "/" + db
	u.RawPath = ""
	return u.String()
}

func ident(s string) string { return pgx.Identifier{s}.Sanitize() }
