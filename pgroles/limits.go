package pgroles

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// Setting is one role setting (ALTER ROLE ... SET name = value).
type Setting struct {
	Name, Value string
}

// LoginSettings are the role settings every issued login gets (role settings are not inherited from groups),
// in the form pg_db_role_setting stores them.
func LoginSettings(p LoginPolicy) []Setting {
	p = p.WithDefaults()
	return []Setting{
		{"default_transaction_read_only", "on"},
		{"statement_timeout", strconv.FormatInt(p.StatementTimeout.Milliseconds(), 10)},
		{"idle_in_transaction_session_timeout", strconv.FormatInt(p.IdleInTransactionTimeout.Milliseconds(), 10)},
	}
}

// OrgLimits are the limits enforced from outside on the read-only logins of one org.
type OrgLimits struct {
	// NameBase names the org's roles (pgroles' names are built from it, never from the org key).
	NameBase string
	// Query ends a query (a session in state active) running longer.
	Query time.Duration
	// IdleInTransaction ends a session idle in a transaction longer.
	IdleInTransaction time.Duration
}

// EnforceResult counts what EnforceLimits did.
type EnforceResult struct {
	Terminated int // sessions terminated
	Reset      int // logins whose role settings were put back
}

// EnforceLimits holds an org's read-only logins to their limits whatever they did to themselves: any login may
// SET its own timeouts, and ALTER ROLE CURRENT_USER SET them (or anything else) for its next sessions. On the
// server reached by adminURL, for each org, it terminates the sessions of the members of the org's read-only
// group (webhookdb's own roles excepted) whose query has run longer than the org's query limit or which have
// been idle in a transaction longer than its idle limit, and puts back the role settings of any such login whose
// pg_db_role_setting differs from LoginSettings(p) (settings in one database included).
func EnforceLimits(ctx context.Context, adminURL string, orgs []OrgLimits, p LoginPolicy) (EnforceResult, error) {
	var res EnforceResult
	for _, o := range orgs {
		if err := ValidateOrgKey(o.NameBase); err != nil {
			return res, err
		}
	}
	conn, err := connect(ctx, adminURL, "postgres")
	if err != nil {
		return res, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	want := LoginSettings(p)
	wantConfig := make([]string, len(want))
	for i, s := range want {
		wantConfig[i] = s.Name + "=" + s.Value
	}
	slices.Sort(wantConfig)
	var errs []error
	for _, o := range orgs {
		var n int
		err := conn.QueryRow(ctx, `
			WITH logins AS (
			    SELECT m.member AS oid FROM pg_catalog.pg_auth_members m
			    JOIN pg_catalog.pg_roles g ON g.oid = m.roleid
			    JOIN pg_catalog.pg_roles u ON u.oid = m.member
			    WHERE g.rolname = $1 AND u.rolname NOT IN ($2, $3))
			SELECT count(*) FILTER (WHERE pg_catalog.pg_terminate_backend(a.pid))
			FROM pg_catalog.pg_stat_activity a
			WHERE a.usesysid IN (SELECT oid FROM logins) AND a.pid <> pg_catalog.pg_backend_pid()
			  AND ((a.state IN ('active', 'fastpath function call') AND a.query_start < now() - $4::interval)
			    OR (a.state IN ('idle in transaction', 'idle in transaction (aborted)') AND a.state_change < now() - $5::interval))`,
			ReadonlyRole(o.NameBase), VaultRole, FanoutRole, o.Query, o.IdleInTransaction).Scan(&n)
		if err != nil {
			errs = append(errs, fmt.Errorf("error ending sessions past the limits of org %s: %w", o.NameBase, err))
			continue
		}
		res.Terminated += n
		changed, err := changedLogins(ctx, conn, o.NameBase, wantConfig)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, login := range changed {
			if err := resetLoginSettings(ctx, conn, login, want); err != nil {
				errs = append(errs, err)
				continue
			}
			res.Reset++
		}
	}
	return res, errors.Join(errs...)
}

// changedLogins lists the org's read-only logins whose role settings are not exactly wantConfig (sorted).
func changedLogins(ctx context.Context, conn *pgx.Conn, orgKey string, wantConfig []string) ([]string, error) {
	rows, err := conn.Query(ctx, `
		SELECT u.rolname FROM pg_catalog.pg_auth_members m
		JOIN pg_catalog.pg_roles g ON g.oid = m.roleid
		JOIN pg_catalog.pg_roles u ON u.oid = m.member
		WHERE g.rolname = $1 AND u.rolname NOT IN ($2, $3) AND u.rolcanlogin
		  AND (EXISTS (SELECT 1 FROM pg_catalog.pg_db_role_setting s WHERE s.setrole = u.oid AND s.setdatabase <> 0)
		    OR coalesce((SELECT array_agg(c ORDER BY c COLLATE "C") FROM pg_catalog.pg_db_role_setting s, unnest(s.setconfig) c
		                 WHERE s.setrole = u.oid AND s.setdatabase = 0), '{}') IS DISTINCT FROM $4::text[])
		ORDER BY 1`, ReadonlyRole(orgKey), VaultRole, FanoutRole, wantConfig)
	if err != nil {
		return nil, fmt.Errorf("error checking the settings of the logins of org %s: %w", orgKey, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("error checking the settings of the logins of org %s: %w", orgKey, err)
	}
	return names, nil
}

// resetLoginSettings drops every setting of a login (in every database) and sets want again, in one
// transaction.
func resetLoginSettings(ctx context.Context, conn *pgx.Conn, login string, want []Setting) error {
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `
			SELECT d.datname FROM pg_catalog.pg_db_role_setting s JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase
			WHERE s.setrole = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $1)`, login)
		if err != nil {
			return fmt.Errorf("error reading the settings of %s: %w", login, err)
		}
		dbs, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("error reading the settings of %s: %w", login, err)
		}
		stmts := []string{"ALTER ROLE " + ident(login) + " RESET ALL"}
		for _, db := range dbs {
			stmts = append(stmts, "ALTER ROLE "+ident(login)+" IN DATABASE "+ident(db)+" RESET ALL")
		}
		for _, s := range want {
			stmts = append(stmts, "ALTER ROLE "+ident(login)+" SET "+s.Name+" = "+quoteLiteral(s.Value))
		}
		for _, stmt := range stmts {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("error resetting the settings of %s (%q): %w", login, stmt, err)
			}
		}
		return nil
	})
}
