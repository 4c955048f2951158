package pgroles_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/internal/pgcluster"
	"github.com/webhookdb-go/webhookdb/internal/pgtest"
	"github.com/webhookdb-go/webhookdb/pgroles"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// provision provisions an org and drops it when the test ends.
func provision(t *testing.T, c *pgcluster.Cluster, key string) {
	t.Helper()
	t.Cleanup(func() { _ = pgroles.DropOrg(context.Background(), c.URL("postgres"), key) })
	if err := pgroles.ProvisionOrg(context.Background(), c.URL("postgres"), key); err != nil {
		t.Fatal(err)
	}
}

func TestProvisionOrgIsIdempotent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := pgtest.Cluster(t)
	key := "prov_idem"
	t.Cleanup(func() { _ = pgroles.DropOrg(context.Background(), c.URL("postgres"), key) })
	for i := 0; i < 2; i++ {
		if err := pgroles.ProvisionOrg(ctx, c.URL("postgres"), key); err != nil {
			t.Fatalf("run %d: %v", i+1, err)
		}
	}
	conn, err := c.Connect(ctx, pgroles.DatabaseName(key))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var owner string
	if err := conn.QueryRow(ctx, `SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()`).Scan(&owner); err != nil || owner != pgroles.OwnerRole(key) {
		t.Fatalf("owner %q %v", owner, err)
	}
	if _, err := conn.Exec(ctx, "SET ROLE "+pgroles.OwnerRole(key)+"; CREATE TABLE t (x int); RESET ROLE"); err != nil {
		t.Fatal(err)
	}
	var canSelect bool
	if err := conn.QueryRow(ctx, `SELECT has_table_privilege($1, 'public.t', 'SELECT')`, pgroles.ReadonlyRole(key)).Scan(&canSelect); err != nil || !canSelect {
		t.Fatalf("read-only group cannot select a table made after provisioning: %v %v", canSelect, err)
	}
	// The fanout's login writes it with grants of its own, not through the owner role.
	var fanoutWrites, fanoutMember bool
	if err := conn.QueryRow(ctx, `
		SELECT has_table_privilege($1, 'public.t', 'SELECT, INSERT, UPDATE, DELETE'),
		       EXISTS (SELECT 1 FROM pg_auth_members m WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = $1))`,
		pgroles.FanoutRole).Scan(&fanoutWrites, &fanoutMember); err != nil || !fanoutWrites || !fanoutMember {
		t.Fatalf("fanout role: writes a table made after provisioning %v, member of the owner %v, %v", fanoutWrites, fanoutMember, err)
	}
	s := snapshot(t, c, key)
	for _, want := range []string{
		"role owner: login=f super=f createdb=f createrole=f",
		"role readonly: login=f super=f createdb=f createrole=f",
		"schema public owner=owner acl={owner=UC/owner,readonly=U/owner,webhookdb_fanout=U/owner}",
		"database owner=owner acl={owner=CTc/owner,readonly=c/owner,webhookdb_fanout=c/owner}",
		"default acl owner public {readonly=r/owner,webhookdb_fanout=arwd/owner}",
		"event trigger webhookdb_refuse_ddl enabled=A",
	} {
		if !slices.Contains(s, want) {
			t.Errorf("state lacks %q:\n%s", want, strings.Join(s, "\n"))
		}
	}
	// The maintenance databases and every other database lost PUBLIC's CONNECT.
	for _, db := range []string{"postgres", "template1"} {
		var publicConnect bool
		if err := conn.QueryRow(ctx, `SELECT has_database_privilege('public', $1, 'CONNECT')`, db).Scan(&publicConnect); err != nil || publicConnect {
			t.Errorf("PUBLIC can connect to %s: %v %v", db, publicConnect, err)
		}
	}
}

var errCrash = errors.New("simulated crash")

// Provisioning stopped after each step, then run again, ends in exactly the state of an uninterrupted run.
func TestProvisionInterruptedAtEachStepConverges(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := pgtest.Cluster(t)
	provision(t, c, "prov_ref")
	want := snapshot(t, c, "prov_ref")
	for i, step := range pgroles.Steps {
		key := fmt.Sprintf("prov_crash_%d", i)
		t.Cleanup(func() { _ = pgroles.DropOrg(context.Background(), c.URL("postgres"), key) })
		err := pgroles.ProvisionOrgWith(ctx, c.URL("postgres"), key, pgroles.ProvisionOptions{
			AfterStep: func(_ context.Context, s pgroles.Step) error {
				if s == step {
					return errCrash
				}
				return nil
			},
		})
		if !errors.Is(err, errCrash) {
			t.Fatalf("step %s: %v", step, err)
		}
		if i < len(pgroles.Steps)-2 { // the last steps only grant to service roles, which this cluster lacks
			if got := snapshot(t, c, key); slices.Equal(got, want) {
				t.Fatalf("crash after %s already looks complete: the steps after it do nothing", step)
			}
		}
		if err := pgroles.ProvisionOrg(ctx, c.URL("postgres"), key); err != nil {
			t.Fatalf("rerun after crash at %s: %v", step, err)
		}
		if got := snapshot(t, c, key); !slices.Equal(got, want) {
			t.Errorf("crash after %s then rerun:\n got  %s\n want %s", step, strings.Join(got, "\n      "), strings.Join(want, "\n      "))
		}
	}
	// Interrupting mid-statement (a cancelled context at growing delays) then rerunning converges as well.
	for i, d := range []time.Duration{time.Millisecond, 5 * time.Millisecond, 15 * time.Millisecond, 40 * time.Millisecond} {
		key := fmt.Sprintf("prov_cancel_%d", i)
		t.Cleanup(func() { _ = pgroles.DropOrg(context.Background(), c.URL("postgres"), key) })
		cctx, cancel := context.WithTimeout(ctx, d)
		_ = pgroles.ProvisionOrg(cctx, c.URL("postgres"), key)
		cancel()
		if err := pgroles.ProvisionOrg(ctx, c.URL("postgres"), key); err != nil {
			t.Fatalf("rerun after cancel at %s: %v", d, err)
		}
		if got := snapshot(t, c, key); !slices.Equal(got, want) {
			t.Errorf("cancel after %s then rerun:\n got  %s\n want %s", d, strings.Join(got, "\n      "), strings.Join(want, "\n      "))
		}
	}
}

func TestInvalidOrgKeysAreRefusedBeforeAnySQL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := pgtest.Cluster(t)
	conn, err := c.Connect(ctx, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// Other tests create and drop roles in parallel: count only names these keys could have produced.
	count := func() (n int) {
		err := conn.QueryRow(ctx, `
			SELECT (SELECT count(*) FROM pg_roles WHERE rolname ~ '^(org_|p-org-)' AND rolname ~ '[^a-z0-9_-]|drop|l0000000000')
			     + (SELECT count(*) FROM pg_database WHERE datname ~ '^org_' AND datname ~ '[^a-z0-9_]|drop|l0000000000')`).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	bad := []string{
		"", "A", "1abc", "a b", "a'b", `a"b`, "a;drop role postgres", "a-b", "x'); DROP DATABASE postgres; --",
		`robert"; DROP TABLE students; --`, "ab\x00c", "é", strings.Repeat("a", 42), "a\nb", "a/b",
	}
	for _, key := range bad {
		for name, call := range map[string]func() error{
			"ProvisionOrg": func() error { return pgroles.ProvisionOrg(ctx, c.URL("postgres"), key) },
			"DropOrg":      func() error { return pgroles.DropOrg(ctx, c.URL("postgres"), key) },
			"CreationStatements": func() error {
				_, err := pgroles.CreationStatements(key, pgroles.LoginPolicy{})
				return err
			},
			"IssueLogin": func() error {
				_, err := pgroles.IssueLogin(ctx, c.URL("postgres"), key, pgroles.LoginPolicy{})
				return err
			},
		} {
			if err := call(); !errors.Is(err, pgroles.ErrInvalidOrgKey) {
				t.Errorf("%s(%q) = %v, want ErrInvalidOrgKey", name, key, err)
			}
		}
	}
	for _, name := range []string{`x"; DROP ROLE postgres; --`, "x' OR '1'='1", "a b", "", strings.Repeat("a", 64)} {
		if err := pgroles.RevokeLogin(ctx, c.URL("postgres"), "okkey", name); !errors.Is(err, pgroles.ErrInvalidUsername) {
			t.Errorf("RevokeLogin(%q) = %v, want ErrInvalidUsername", name, err)
		}
		if err := pgroles.EnsureLoginGone(ctx, c.URL("postgres"), name); !errors.Is(err, pgroles.ErrInvalidUsername) {
			t.Errorf("EnsureLoginGone(%q) = %v, want ErrInvalidUsername", name, err)
		}
	}
	if n := count(); n != 0 {
		t.Fatalf("%d roles or databases named after invalid keys", n)
	}
	// The longest valid key works end to end (names stay within 63 bytes).
	long := "l" + strings.Repeat("0", 40)
	provision(t, c, long)
	login, err := pgroles.IssueLogin(ctx, c.URL("postgres"), long, pgroles.LoginPolicy{})
	if err != nil {
		t.Fatal(err)
	}
	if len(login.Username) > 63 {
		t.Fatalf("username %q longer than 63", login.Username)
	}
	if err := pgroles.DropOrg(ctx, c.URL("postgres"), long); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 0 {
		t.Fatalf("%d roles or databases left after provisioning and dropping the longest key", n)
	}
}

func TestAdminMustBeSuperuser(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := pgtest.Cluster(t)
	conn, err := c.Connect(ctx, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE ROLE not_super LOGIN CREATEDB CREATEROLE PASSWORD 'pw-not-super'; GRANT CONNECT ON DATABASE postgres TO not_super`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		if conn, err := c.Connect(ctx, "postgres"); err == nil {
			_, _ = conn.Exec(ctx, `REVOKE CONNECT ON DATABASE postgres FROM not_super; DROP ROLE not_super`)
			conn.Close(ctx)
		}
	})
	if err := pgroles.ProvisionOrg(ctx, c.URLFor("not_super", "pw-not-super", "postgres"), "prov_notsuper"); !errors.Is(err, pgroles.ErrNotSuperuser) {
		t.Fatalf("got %v, want ErrNotSuperuser", err)
	}
}

func TestDropOrgRemovesLoginsSessionsDatabaseAndRoles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := pgtest.Cluster(t)
	key := "prov_removal"
	provision(t, c, key)
	login, err := pgroles.IssueLogin(ctx, c.URL("postgres"), key, pgroles.LoginPolicy{})
	if err != nil {
		t.Fatal(err)
	}
	session, err := pgx.Connect(ctx, c.URLFor(login.Username, login.Password, pgroles.DatabaseName(key)))
	if err != nil {
		t.Fatal(err)
	}
	defer session.Close(ctx)
	if err := pgroles.DropOrg(ctx, c.URL("postgres"), key); err != nil {
		t.Fatal(err)
	}
	if err := session.Ping(ctx); err == nil {
		t.Fatal("a session survived DropOrg")
	}
	conn, err := c.Connect(ctx, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_roles WHERE rolname = ANY($1)) + (SELECT count(*) FROM pg_database WHERE datname = $2)`,
		[]string{login.Username, pgroles.OwnerRole(key), pgroles.ReadonlyRole(key)}, pgroles.DatabaseName(key)).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d roles or databases left (%v)", n, err)
	}
	if err := pgroles.DropOrg(ctx, c.URL("postgres"), key); err != nil {
		t.Fatalf("second DropOrg: %v", err)
	}
}

// A login role that ends up owning something (here given by a superuser) is still revoked completely.
func TestRevokeLoginDropsWhatTheRoleOwns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := pgtest.Cluster(t)
	key := "prov_owned"
	provision(t, c, key)
	login, err := pgroles.IssueLogin(ctx, c.URL("postgres"), key, pgroles.LoginPolicy{})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := c.Connect(ctx, pgroles.DatabaseName(key))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	owner := pgx.Identifier{login.Username}.Sanitize()
	if _, err := conn.Exec(ctx, "CREATE TABLE stray (x int); ALTER TABLE stray OWNER TO "+owner+"; ALTER DEFAULT PRIVILEGES FOR ROLE "+owner+" GRANT SELECT ON TABLES TO PUBLIC"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // safe twice
		if err := pgroles.RevokeLogin(ctx, c.URL("postgres"), key, login.Username); err != nil {
			t.Fatalf("revoke %d: %v", i+1, err)
		}
	}
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, login.Username).Scan(&exists); err != nil || exists {
		t.Fatalf("role still exists: %v %v", exists, err)
	}
}

func TestLoginPolicyValidation(t *testing.T) {
	t.Parallel()
	for _, p := range []pgroles.LoginPolicy{
		{TTL: time.Millisecond},
		{TTL: 2 * time.Hour, MaxTTL: time.Hour},
		{ConnectionLimit: -1},
		{StatementTimeout: 48 * time.Hour},
	} {
		if _, err := pgroles.CreationStatements("ok", p); !errors.Is(err, pgroles.ErrInvalidPolicy) {
			t.Errorf("%+v: %v", p, err)
		}
	}
	stmts, err := pgroles.CreationStatements("ok", pgroles.LoginPolicy{StatementTimeout: 1500 * time.Millisecond, ConnectionLimit: 3})
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(stmts, ";")
	for _, want := range []string{`"{{name}}"`, "least(3, budget - used)", "statement_timeout = 1500", `IN ROLE "org_ok_readonly"`, "default_transaction_read_only = on", "VALID UNTIL '{{expiration}}'"} {
		if !strings.Contains(all, want) {
			t.Errorf("creation statements lack %q: %s", want, all)
		}
	}
}

func TestVaultAndFanoutRoles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := pgtest.NewCluster(t) // the service roles are server-wide: keep them off the shared cluster
	key := "prov_svc"
	provision(t, c, key)
	if err := pgroles.EnsureVaultRole(ctx, c.URL("postgres"), "vault-pw-1"); err != nil {
		t.Fatal(err)
	}
	if err := pgroles.EnsureFanoutRole(ctx, c.URL("postgres"), "fanout-pw-1"); err != nil {
		t.Fatal(err)
	}
	// An org provisioned after the service roles exist gets the grants too.
	provision(t, c, "prov_svc2")
	conn, err := c.Connect(ctx, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var super, createrole, signal, adminOnGroups, fanoutOwners bool
	err = conn.QueryRow(ctx, `
		SELECT r.rolsuper, r.rolcreaterole, pg_has_role(r.oid, 'pg_signal_backend', 'MEMBER'),
		       (SELECT bool_and(m.admin_option) AND count(*) = 2 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
		        WHERE m.member = r.oid AND g.rolname IN ('org_prov_svc_readonly', 'org_prov_svc2_readonly')),
		       (SELECT count(*) = 2 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
		        WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = 'webhookdb_fanout') AND g.rolname IN ('org_prov_svc_owner', 'org_prov_svc2_owner'))
		FROM pg_roles r WHERE r.rolname = 'webhookdb_vault'`).Scan(&super, &createrole, &signal, &adminOnGroups, &fanoutOwners)
	if err != nil {
		t.Fatal(err)
	}
	if super || !createrole || !signal || !adminOnGroups || !fanoutOwners {
		t.Fatalf("super=%v createrole=%v signal=%v adminOnGroups=%v fanoutOwners=%v", super, createrole, signal, adminOnGroups, fanoutOwners)
	}
	// Vault's role reaches postgres (PUBLIC no longer can); the fanout reaches the org database and writes as the owner.
	vconn, err := pgx.Connect(ctx, c.URLFor("webhookdb_vault", "vault-pw-1", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	vconn.Close(ctx)
	fconn, err := pgx.Connect(ctx, c.URLFor("webhookdb_fanout", "fanout-pw-1", pgroles.DatabaseName(key)))
	if err != nil {
		t.Fatal(err)
	}
	defer fconn.Close(ctx)
	// Service logins carry random passwords: their verifiers use the small iteration count each connect pays.
	var fanoutVerifier string
	if err := conn.QueryRow(ctx, `SELECT rolpassword FROM pg_authid WHERE rolname = 'webhookdb_fanout'`).Scan(&fanoutVerifier); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(fanoutVerifier, "SCRAM-SHA-256$16:") {
		t.Fatalf("fanout verifier %q, want 16 iterations", fanoutVerifier)
	}
	if _, err := fconn.Exec(ctx, "SET ROLE "+pgroles.OwnerRole(key)+"; CREATE TABLE written (x int); INSERT INTO written VALUES (1); CREATE TABLE "+pgroles.MetaSchema+".applied (lsn pg_lsn)"); err != nil {
		t.Fatalf("fanout cannot write as the owner: %v", err)
	}
	if _, err := pgx.Connect(ctx, c.URLFor("webhookdb_fanout", "fanout-pw-1", "postgres")); err == nil {
		t.Fatal("the fanout role can connect to postgres")
	}
	// A password left empty is kept.
	if err := pgroles.EnsureVaultRole(ctx, c.URL("postgres"), ""); err != nil {
		t.Fatal(err)
	}
	vconn, err = pgx.Connect(ctx, c.URLFor("webhookdb_vault", "vault-pw-1", "postgres"))
	if err != nil {
		t.Fatalf("password changed by EnsureVaultRole with an empty password: %v", err)
	}
	vconn.Close(ctx)
}

// snapshot describes everything provisioning sets up for an org, with the org's names replaced by
// placeholders so two orgs compare equal. ACL items are sorted: PostgreSQL orders some lists by the grantees'
// OIDs, and webhookdb_fanout is created by whichever test provisions first on the shared cluster.
func snapshot(t *testing.T, c *pgcluster.Cluster, key string) []string {
	t.Helper()
	ctx := context.Background()
	norm := func(s string) string {
		s = strings.ReplaceAll(s, pgroles.OwnerRole(key), "owner")
		s = strings.ReplaceAll(s, pgroles.ReadonlyRole(key), "readonly")
		s = strings.ReplaceAll(s, pgroles.DatabaseName(key), "orgdb")
		return s
	}
	var out []string
	add := func(conn *pgx.Conn, label, sql string, args ...any) {
		rows, err := conn.Query(ctx, sql, args...)
		if err != nil {
			t.Fatalf("%s: %v", label, err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("%s: %v", label, err)
		}
		for _, l := range lines {
			out = append(out, norm(l))
		}
	}
	conn, err := c.Connect(ctx, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	add(conn, "roles", `
		SELECT format('role %s: login=%s super=%s createdb=%s createrole=%s', rolname, rolcanlogin, rolsuper, rolcreatedb, rolcreaterole)
		FROM pg_roles WHERE rolname IN ($1, $2) ORDER BY 1`, pgroles.OwnerRole(key), pgroles.ReadonlyRole(key))
	add(conn, "database", `
		SELECT format('database owner=%s acl=%s', pg_get_userbyid(datdba), (SELECT array_agg(a::text ORDER BY a::text) FROM unnest(datacl) AS a)::text) FROM pg_database WHERE datname = $1`, pgroles.DatabaseName(key))
	add(conn, "maintenance", `
		SELECT format('%s public connect=%s', datname, has_database_privilege('public', oid, 'CONNECT'))
		FROM pg_database WHERE datname IN ('postgres', 'template1') ORDER BY 1`)
	var dbExists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, pgroles.DatabaseName(key)).Scan(&dbExists); err != nil {
		t.Fatal(err)
	}
	if !dbExists {
		return out
	}
	orgConn, err := c.Connect(ctx, pgroles.DatabaseName(key))
	if err != nil {
		t.Fatal(err)
	}
	defer orgConn.Close(ctx)
	add(orgConn, "schemas", `
		SELECT format('schema %s owner=%s acl=%s', nspname, pg_get_userbyid(nspowner), (SELECT array_agg(a::text ORDER BY a::text) FROM unnest(nspacl) AS a)::text)
		FROM pg_namespace WHERE nspname IN ('public', $1, $2) ORDER BY 1`, pgroles.MetaSchema, pgroles.GuardSchema)
	add(orgConn, "default acl", `
		SELECT format('default acl %s %s %s', pg_get_userbyid(defaclrole), coalesce(n.nspname, '-'), (SELECT array_agg(a::text ORDER BY a::text) FROM unnest(defaclacl) AS a)::text)
		FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace ORDER BY 1`)
	add(orgConn, "event triggers", `SELECT format('event trigger %s enabled=%s', evtname, evtenabled) FROM pg_event_trigger ORDER BY 1`)
	add(orgConn, "lo acl", `SELECT format('function %s acl=%s', proname, (SELECT array_agg(a::text ORDER BY a::text) FROM unnest(proacl) AS a)::text) FROM pg_proc WHERE proname IN ('lo_create', 'lo_creat', 'lo_from_bytea') ORDER BY 1`)
	return out
}
