package pgroles

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/internal/pgerr"
)

// ErrRenameConflict means both the old and the new names of an org's database exist on the server: someone
// else's database is in the way, and nothing is renamed.
var ErrRenameConflict = errors.New("both the old and the new database names exist")

// RenameOrg moves an org's database and group roles on the server from the names of oldBase to those of
// newBase (an org named from its key moving to an opaque name base). Login roles still in the old read-only
// group are dropped first (their names carry the old base; the issuer must issue new ones), then the database
// is closed to new connections, its sessions are terminated, it is renamed and opened again, and the owner
// and read-only roles are renamed. Grants, default privileges and ownership follow the roles' oids, so nothing
// else changes. Every step checks what exists: a run interrupted anywhere and run again ends renamed.
func RenameOrg(ctx context.Context, adminURL, oldBase, newBase string) error {
	for _, b := range []string{oldBase, newBase} {
		if err := ValidateOrgKey(b); err != nil {
			return err
		}
	}
	if oldBase == newBase {
		return nil
	}
	conn, err := connect(ctx, adminURL, "postgres")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := requireSuperuser(ctx, conn); err != nil {
		return err
	}
	// Logins issued under the old names: gone before the group is renamed (DropOrg's sweep, by group).
	logins, err := groupLogins(ctx, conn, ReadonlyRole(oldBase))
	if err != nil {
		return err
	}
	for _, login := range logins {
		if err := dropLogin(ctx, conn, adminURL, login); err != nil {
			return err
		}
	}
	if err := renameDatabase(ctx, conn, DatabaseName(oldBase), DatabaseName(newBase)); err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, serverLockID); err != nil {
			return fmt.Errorf("error taking the server lock: %w", err)
		}
		for _, r := range [][2]string{{OwnerRole(oldBase), OwnerRole(newBase)}, {ReadonlyRole(oldBase), ReadonlyRole(newBase)}} {
			var oldExists, newExists bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1), EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $2)`,
				r[0], r[1]).Scan(&oldExists, &newExists); err != nil {
				return fmt.Errorf("error checking role %s: %w", r[0], err)
			}
			switch {
			case oldExists && newExists:
				return fmt.Errorf("cannot rename role %s: %s exists too", r[0], r[1])
			case oldExists:
				if _, err := tx.Exec(ctx, "ALTER ROLE "+ident(r[0])+" RENAME TO "+ident(r[1])); err != nil {
					return fmt.Errorf("error renaming role %s: %w", r[0], err)
				}
			case !newExists:
				return fmt.Errorf("neither role %s nor %s exists: provision the org first", r[0], r[1])
			}
		}
		return nil
	})
}

// groupLogins lists the login roles in a group, webhookdb's own service roles aside.
func groupLogins(ctx context.Context, conn *pgx.Conn, group string) ([]string, error) {
	rows, err := conn.Query(ctx, `
		SELECT u.rolname FROM pg_auth_members m
		JOIN pg_roles g ON g.oid = m.roleid
		JOIN pg_roles u ON u.oid = m.member
		WHERE g.rolname = $1 AND u.rolname NOT IN ($2, $3)`, group, VaultRole, FanoutRole)
	if err != nil {
		return nil, fmt.Errorf("error listing login roles of %s: %w", group, err)
	}
	logins, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("error listing login roles of %s: %w", group, err)
	}
	return logins, nil
}

// renameDatabase renames a database that may have sessions: it stops new connections (ALLOW_CONNECTIONS
// false, which holds for superusers too), terminates the sessions, renames, and allows connections again, on
// the new name also when an earlier run stopped between the rename and that last step.
func renameDatabase(ctx context.Context, conn *pgx.Conn, oldName, newName string) error {
	var oldExists, newExists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1), EXISTS (SELECT 1 FROM pg_database WHERE datname = $2)`,
		oldName, newName).Scan(&oldExists, &newExists); err != nil {
		return fmt.Errorf("error checking database %s: %w", oldName, err)
	}
	switch {
	case oldExists && newExists:
		return fmt.Errorf("%w: %s and %s", ErrRenameConflict, oldName, newName)
	case !oldExists && !newExists:
		return fmt.Errorf("neither database %s nor %s exists: provision the org first", oldName, newName)
	case oldExists:
		if _, err := conn.Exec(ctx, "ALTER DATABASE "+ident(oldName)+" WITH ALLOW_CONNECTIONS false"); err != nil {
			return fmt.Errorf("error closing database %s to new connections: %w", oldName, err)
		}
		var err error
		for attempt := 1; attempt <= 5; attempt++ {
			// pg_terminate_backend with a timeout waits for each session to end.
			if _, err = conn.Exec(ctx, `SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, oldName); err != nil {
				return fmt.Errorf("error terminating the sessions of %s: %w", oldName, err)
			}
			_, err = conn.Exec(ctx, "ALTER DATABASE "+ident(oldName)+" RENAME TO "+ident(newName))
			if !pgerr.Is(err, pgerrcode.ObjectInUse) {
				break
			}
			// A session that was starting up when connections were closed: end it too.
			time.Sleep(time.Duration(attempt) * 20 * time.Millisecond)
		}
		if err != nil {
			return fmt.Errorf("error renaming database %s: %w", oldName, err)
		}
	}
	if _, err := conn.Exec(ctx, "ALTER DATABASE "+ident(newName)+" WITH ALLOW_CONNECTIONS true"); err != nil {
		return fmt.Errorf("error opening database %s to connections: %w", newName, err)
	}
	return nil
}
