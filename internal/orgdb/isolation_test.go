package orgdb_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/internal/orgdb"
	"github.com/webhookdb-go/webhookdb/internal/pgcluster"
	"github.com/webhookdb-go/webhookdb/internal/pgerr"
	"github.com/webhookdb-go/webhookdb/internal/pgtest"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
	"github.com/webhookdb-go/webhookdb/pgroles"
)

// The isolation suite: what an org's read-only credentials can and cannot do, over real connections, in
// both credential modes, with orgs on two database servers, for each kind of read-only login: a member's own
// (db connection) and the server's own (db sql). The fanout's writer login has its own suite
// (TestWriterIsolation).
func TestIsolation(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		for _, kind := range []string{orgdb.KindMember, orgdb.KindService} {
			t.Run(mode+"/"+kind, func(t *testing.T) {
				t.Parallel()
				testIsolation(t, mode, kind)
			})
		}
	}
}

// asOwner runs statements in an org database as its owner role (what the fanout does).
func asOwner(t *testing.T, c *pgcluster.Cluster, o *orgdb.Org, sql string) {
	t.Helper()
	ctx := context.Background()
	conn, err := c.Connect(ctx, *o.DatabaseName)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "SET ROLE "+pgx.Identifier{pgroles.OwnerRole(o.NameBase)}.Sanitize()+"; "+sql); err != nil {
		t.Fatalf("as owner of %s: %v", o.Key, err)
	}
}

// withDatabase points a credential URL at another database (same user and password).
func withDatabase(t *testing.T, rawURL, db string, port int) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + db
	if port != 0 {
		u.Host = "127.0.0.1:" + strconv.Itoa(port)
	}
	return u.String()
}

func testIsolation(t *testing.T, mode, kind string) {
	ctx := context.Background()
	policy := pgroles.LoginPolicy{TTL: time.Hour, MaxTTL: 2 * time.Hour, ConnectionLimit: 3, StatementTimeout: time.Second, IdleInTransactionTimeout: 2 * time.Second}
	e := newEnv(t, mode, envOptions{policy: policy})
	p := "iso_" + mode[:2] + "_" + kind[:1]
	a := e.newOrg(p + "_a")
	b := e.newOrg(p + "_b")
	c := e.newOrg(p + "_c")
	if *a.ServerID == *b.ServerID || *a.ServerID != *c.ServerID {
		t.Fatalf("placement: a on %d, b on %d, c on %d; want b on the other server, c with a", *a.ServerID, *b.ServerID, *c.ServerID)
	}
	ca, cb := e.clusterOf(a), e.clusterOf(b)
	asOwner(t, ca, a, `CREATE TABLE items (id int PRIMARY KEY, v text); INSERT INTO items VALUES (1, 'a-one'), (2, 'a-two');
		CREATE TABLE `+pgroles.MetaSchema+`.state (lsn text); INSERT INTO `+pgroles.MetaSchema+`.state VALUES ('0/0');
		CREATE SEQUENCE `+pgroles.MetaSchema+`.seq`)
	asOwner(t, cb, b, `CREATE TABLE secrets (v text); INSERT INTO secrets VALUES ('b-secret')`)
	asOwner(t, ca, c, `CREATE TABLE secrets (v text); INSERT INTO secrets VALUES ('c-secret')`)

	// The login under test, and another of the same org (the service's for a member, a member's for the
	// service) that nothing done with the first may touch.
	member := e.newMember(a, "member@"+p+".example")
	connection, roll, other := func() (*orgdb.Credential, error) { return e.svc.MemberConnection(ctx, a.ID, member) },
		func() (*orgdb.Credential, error) { return e.svc.RollMemberCredentials(ctx, a.ID, member) },
		func() (*orgdb.Credential, error) { return e.svc.ServiceConnection(ctx, a.ID) }
	if kind == orgdb.KindService {
		connection, roll, other = other, func() (*orgdb.Credential, error) { return e.svc.RollCredentials(ctx, a.ID) },
			func() (*orgdb.Credential, error) { return e.svc.MemberConnection(ctx, a.ID, member) }
	}
	cred, err := connection()
	if err != nil {
		t.Fatal(err)
	}
	otherCred, err := other()
	if err != nil {
		t.Fatal(err)
	}
	if cred.Kind != kind || otherCred.Username == cred.Username {
		t.Fatalf("%s login is %s %s; the other is %s", kind, cred.Kind, cred.Username, otherCred.Username)
	}
	u, err := url.Parse(cred.URL)
	if err != nil {
		t.Fatal(err)
	}
	if u.Hostname() != "127.0.0.1" || u.Port() != strconv.Itoa(ca.Port) || u.Path != "/"+*a.DatabaseName || u.Query().Get("sslmode") != "disable" || cred.Mode != mode {
		t.Fatalf("credential URL %s (mode %s)", u.Redacted(), cred.Mode)
	}
	prefix := map[string]string{orgdb.ModeVault: "v-org-", orgdb.ModePostgres: "p-org-"}[mode]
	if !strings.HasPrefix(cred.Username, prefix+a.NameBase) || strings.Contains(cred.Username, a.Key) || cred.Username != strings.ToLower(cred.Username) || len(cred.Username) > 63 {
		t.Fatalf("username %q: want lower case, %s%s..., no org key, at most 63 bytes", cred.Username, prefix, a.NameBase)
	}
	if again, err := connection(); err != nil || again.URL != cred.URL {
		t.Fatalf("second Connection returned other credentials (%v)", err)
	}
	connect := func(t *testing.T, rawURL string) *pgx.Conn {
		t.Helper()
		conn, err := pgx.Connect(ctx, rawURL)
		// A backend of a connection closed a moment ago may still hold its slot under the connection limit.
		for deadline := time.Now().Add(3 * time.Second); pgerr.Code(err) == pgerrcode.TooManyConnections && time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
			conn, err = pgx.Connect(ctx, rawURL)
		}
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		t.Cleanup(func() { conn.Close(context.Background()) })
		return conn
	}
	conn := connect(t, cred.URL)

	t.Run("reads its tables, including one created after issuance", func(t *testing.T) {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM items`).Scan(&n); err != nil || n != 2 {
			t.Fatalf("select: %d %v", n, err)
		}
		asOwner(t, ca, a, `CREATE TABLE later (x int); INSERT INTO later VALUES (42)`)
		var x int
		if err := conn.QueryRow(ctx, `SELECT x FROM later`).Scan(&x); err != nil || x != 42 {
			t.Fatalf("table created after issuance: %d %v", x, err)
		}
		var readOnly string
		if err := conn.QueryRow(ctx, `SHOW default_transaction_read_only`).Scan(&readOnly); err != nil || readOnly != "on" {
			t.Fatalf("default_transaction_read_only = %q %v", readOnly, err)
		}
	})

	t.Run("writes and escapes fail", func(t *testing.T) {
		owner := pgx.Identifier{pgroles.OwnerRole(a.NameBase)}.Sanitize()
		self := pgx.Identifier{cred.Username}.Sanitize()
		sibling := pgx.Identifier{otherCred.Username}.Sanitize()
		attempts := []string{
			`INSERT INTO items VALUES (3, 'x')`,
			`UPDATE items SET v = 'x'`,
			`DELETE FROM items`,
			`TRUNCATE items`,
			`CREATE TABLE evil (x int)`,
			`CREATE TEMP TABLE evil (x int)`,
			`CREATE SCHEMA evil`,
			`CREATE FUNCTION evil() RETURNS int LANGUAGE sql AS 'SELECT 1'`,
			`CREATE FUNCTION pg_temp.evil() RETURNS int LANGUAGE sql AS 'SELECT 1'`,
			`CREATE VIEW evil AS SELECT 1`,
			`COPY items TO PROGRAM 'touch /tmp/whdb-evil'`,
			`COPY items FROM PROGRAM 'echo 9'`,
			`COPY items TO '/tmp/whdb-evil'`,
			`SET ROLE ` + owner,
			`SET SESSION AUTHORIZATION ` + owner,
			`ALTER ROLE ` + self + ` SUPERUSER`,
			`ALTER ROLE ` + self + ` CREATEDB`,
			`ALTER ROLE ` + self + ` CREATEROLE`,
			`ALTER ROLE ` + self + ` CONNECTION LIMIT -1`,
			`ALTER ROLE ` + self + ` VALID UNTIL 'infinity'`,
			`ALTER ROLE ` + self + ` RENAME TO evil`,
			`ALTER ROLE ` + owner + ` LOGIN PASSWORD 'x'`,
			`ALTER ROLE ` + pgx.Identifier{pgroles.ReadonlyRole(a.NameBase)}.Sanitize() + ` LOGIN`,
			`GRANT ` + owner + ` TO ` + self,
			`SET default_transaction_read_only = off; ALTER ROLE ` + sibling + ` PASSWORD 'taken-over-0123456789'`,
			`SET default_transaction_read_only = off; ALTER ROLE ` + sibling + ` NOLOGIN`,
			`SET default_transaction_read_only = off; ALTER ROLE ` + sibling + ` SET statement_timeout = 0`,
			`SET default_transaction_read_only = off; DROP ROLE ` + sibling,
			`SET ROLE ` + sibling,
			`CREATE ROLE evil LOGIN`,
			`SET default_transaction_read_only = off; INSERT INTO items VALUES (3, 'x')`,
			`SET default_transaction_read_only = off; CREATE TABLE evil (x int)`,
			`BEGIN READ WRITE; DELETE FROM items`,
			`SET default_transaction_read_only = off; SELECT lo_create(0)`,
			`SET default_transaction_read_only = off; ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC`,
			`SELECT pg_read_file('/etc/passwd')`,
			`SELECT pg_read_binary_file('postgresql.conf')`,
			`SELECT pg_ls_dir('.')`,
			`SELECT lo_import('/etc/passwd')`,
			`SET default_transaction_read_only = off; INSERT INTO ` + pgroles.MetaSchema + `.state VALUES ('1/0')`,
			`SET default_transaction_read_only = off; SELECT nextval('` + pgroles.MetaSchema + `.seq')`,
			`CREATE EXTENSION dblink`,
			`LOAD 'dblink'`,
			`ALTER SYSTEM SET statement_timeout = 0`,
			`SELECT pg_reload_conf()`,
			`SELECT set_config('session_replication_role', 'replica', false)`,
			`CREATE PUBLICATION evil FOR ALL TABLES`,
		}
		attempt := connect(t, cred.URL)
		for _, sql := range attempts {
			// Statements separated by "; " run one by one: a SET in the same query string would not apply to
			// the implicit transaction it runs in.
			parts := strings.Split(sql, "; ")
			var err error
			for i, part := range parts {
				if _, err = attempt.Exec(ctx, part); err != nil {
					if i < len(parts)-1 {
						t.Errorf("%s: preparatory %q failed: %v", sql, part, err)
					}
					break
				}
			}
			if err == nil {
				t.Errorf("succeeded: %s", sql)
			} else if len(parts) > 1 {
				// Past read-only mode the privileges themselves refuse.
				if code := pgerr.Code(err); code != pgerrcode.InsufficientPrivilege {
					t.Errorf("%s: SQLSTATE %s (%v), want 42501 (privilege, not merely read-only)", sql, code, err)
				}
			}
			if _, err := attempt.Exec(ctx, "ROLLBACK; RESET ALL"); err != nil {
				t.Fatalf("resetting after %s: %v", sql, err)
			}
		}
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM items`).Scan(&n); err != nil || n != 2 {
			t.Fatalf("items changed: %d %v", n, err)
		}
		sib := connect(t, otherCred.URL)
		if err := sib.QueryRow(ctx, `SELECT count(*) FROM items`).Scan(&n); err != nil || n != 2 {
			t.Fatalf("the org's other login after the attempts: %d %v", n, err)
		}
		sib.Close(ctx)
		admin, err := ca.Connect(ctx, *a.DatabaseName)
		if err != nil {
			t.Fatal(err)
		}
		defer admin.Close(ctx)
		var objects int
		if err := admin.QueryRow(ctx, `
			SELECT (SELECT count(*) FROM pg_class WHERE relname = 'evil') + (SELECT count(*) FROM pg_namespace WHERE nspname = 'evil')
			     + (SELECT count(*) FROM pg_proc WHERE proname = 'evil') + (SELECT count(*) FROM pg_roles WHERE rolname = 'evil')
			     + (SELECT count(*) FROM pg_largeobject_metadata) + (SELECT count(*) FROM pg_default_acl WHERE defaclrole = (SELECT oid FROM pg_roles WHERE rolname = $1))`,
			cred.Username).Scan(&objects); err != nil || objects != 0 {
			t.Fatalf("%d objects created by the read-only role (%v)", objects, err)
		}
	})

	t.Run("other databases are unreachable", func(t *testing.T) {
		for _, target := range []struct {
			name string
			url  string
		}{
			{"org c on the same server", withDatabase(t, cred.URL, *c.DatabaseName, 0)},
			{"org b on the other server", withDatabase(t, cred.URL, *b.DatabaseName, cb.Port)},
			{"application database", withDatabase(t, cred.URL, strings.TrimPrefix(mustURL(t, e.appURL).Path, "/"), 0)},
			{"postgres", withDatabase(t, cred.URL, "postgres", 0)},
			{"template1", withDatabase(t, cred.URL, "template1", 0)},
			{"template0", withDatabase(t, cred.URL, "template0", 0)},
			{"postgres on the other server", withDatabase(t, cred.URL, "postgres", cb.Port)},
		} {
			if conn, err := pgx.Connect(ctx, target.url); err == nil {
				conn.Close(ctx)
				t.Errorf("%s: connected", target.name)
			}
		}
	})

	t.Run("other orgs' data is unreachable by any path", func(t *testing.T) {
		for _, sql := range []string{
			`SELECT * FROM ` + pgx.Identifier{*c.DatabaseName, "public", "secrets"}.Sanitize(),
			`SET ROLE ` + pgx.Identifier{pgroles.ReadonlyRole(c.NameBase)}.Sanitize(),
			`SET ROLE ` + pgx.Identifier{pgroles.OwnerRole(c.NameBase)}.Sanitize(),
			`SELECT dblink_connect('dbname=` + *c.DatabaseName + `')`,
			`COPY (SELECT 1) TO PROGRAM 'psql ` + *c.DatabaseName + `'`,
		} {
			attempt := connect(t, cred.URL)
			if _, err := attempt.Exec(ctx, sql); err == nil {
				t.Errorf("succeeded: %s", sql)
			}
			attempt.Close(ctx) // the limit is 3: do not hold one connection per attempt
			attempt.Close(ctx)
		}
		// The login role's only membership is its org's read-only group.
		rows, err := conn.Query(ctx, `SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = current_user)`)
		if err != nil {
			t.Fatal(err)
		}
		groups, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil || len(groups) != 1 || groups[0] != pgroles.ReadonlyRole(a.NameBase) {
			t.Fatalf("memberships %v %v", groups, err)
		}
		// Other sessions' queries are hidden.
		var visible int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE usename <> current_user AND query LIKE '%secret%'`).Scan(&visible); err != nil || visible != 0 {
			t.Fatalf("%d foreign queries visible (%v)", visible, err)
		}
	})

	t.Run("statement timeout cuts a long query", func(t *testing.T) {
		start := time.Now()
		_, err := conn.Exec(ctx, `SELECT pg_sleep(10)`)
		if code := pgerr.Code(err); code != pgerrcode.QueryCanceled {
			t.Fatalf("long query: %v (SQLSTATE %s), want 57014", err, code)
		}
		if d := time.Since(start); d > 4*time.Second {
			t.Fatalf("long query cut after %s, statement_timeout is 1s", d)
		}
	})

	t.Run("idle in transaction sessions are closed", func(t *testing.T) {
		idle := connect(t, cred.URL)
		if _, err := idle.Exec(ctx, `BEGIN`); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second)
		if _, err := idle.Exec(ctx, `SELECT 1`); err == nil {
			t.Fatal("session idle in transaction for 3s past a 2s timeout still works")
		}
	})

	t.Run("connections past the limit are refused", func(t *testing.T) {
		// conn is one; policy allows 3.
		extra := []*pgx.Conn{connect(t, cred.URL), connect(t, cred.URL)}
		over, err := pgx.Connect(ctx, cred.URL)
		if err == nil {
			over.Close(ctx)
			t.Fatal("4th connection accepted with CONNECTION LIMIT 3")
		}
		if code := pgerr.Code(err); code != pgerrcode.TooManyConnections {
			t.Fatalf("4th connection: %v (SQLSTATE %s), want 53300", err, code)
		}
		for _, x := range extra {
			x.Close(ctx)
		}
	})

	var rolled *orgdb.Credential
	t.Run("after roll-credentials the old password fails and old sessions close", func(t *testing.T) {
		old := connect(t, cred.URL)
		start := time.Now()
		sib := connect(t, otherCred.URL)
		rolled, err = roll()
		if err != nil {
			t.Fatal(err)
		}
		if err := sib.Ping(ctx); err != nil {
			t.Fatalf("rolling one login closed another's session: %v", err)
		}
		sib.Close(ctx)
		took := time.Since(start)
		if rolled.URL == cred.URL || rolled.Username == cred.Username {
			t.Fatal("roll returned the old credentials")
		}
		if err := old.Ping(ctx); err == nil {
			t.Fatal("an open session with the old credentials still works after roll returned")
		}
		if c, err := pgx.Connect(ctx, cred.URL); err == nil {
			c.Close(ctx)
			t.Fatal("the old password still logs in")
		}
		if err := conn.Ping(ctx); err == nil {
			t.Fatal("the suite's own old session survived")
		}
		fresh := connect(t, rolled.URL)
		var n int
		if err := fresh.QueryRow(ctx, `SELECT count(*) FROM items`).Scan(&n); err != nil || n != 2 {
			t.Fatalf("new credentials: %d %v", n, err)
		}
		if cur, err := connection(); err != nil || cur.URL != rolled.URL {
			t.Fatalf("Connection after roll returned other credentials (%v)", err)
		}
		t.Logf("%s: roll-credentials took %s", mode, took)
	})

	t.Run("a pg_dump of the application database holds no secret", func(t *testing.T) {
		const webhookSecret = "whsec_plaintext_that_must_not_leak_42"
		opaque := "svi_" + strings.Repeat("k", 26) + mode + kind
		enc, err := e.box.Encrypt(ctx, secrets.Binding{Table: "service_integrations", Column: "secret_enc", Row: opaque}, []byte(webhookSecret))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.pool.Exec(ctx, `INSERT INTO service_integrations (opaque_id, org_id, service, table_name, secret_enc) VALUES ($1, $2, 'stripe', 'stripe_charges', $3)`, opaque, a.ID, enc); err != nil {
			t.Fatal(err)
		}
		out, err := exec.CommandContext(ctx, filepath.Join(ca.BinDir(), "pg_dump"), "--dbname", e.appURL, "--data-only").CombinedOutput()
		if err != nil {
			t.Fatalf("pg_dump: %v: %s", err, out)
		}
		dump := string(out)
		plaintexts := map[string]string{
			"webhook secret":         webhookSecret,
			"admin password":         ca.Password(),
			"admin URL":              ca.URL("postgres"),
			"read-only URL":          cred.URL,
			"rolled read-only URL":   rolled.URL,
			"read-only password":     password(t, cred.URL),
			"rolled password":        password(t, rolled.URL),
			"other server's admin":   cb.Password(),
			"other server's admin 2": e.clusters[1].URL("postgres"),
		}
		for what, p := range plaintexts {
			if strings.Contains(dump, p) {
				t.Errorf("the dump contains the %s", what)
			}
		}
		prefix := map[string]string{orgdb.ModeVault: "vault:v1:", orgdb.ModePostgres: "whdb:v1:"}[mode]
		if !strings.Contains(dump, prefix) || !strings.Contains(dump, rolled.Username) {
			t.Fatalf("the dump lacks the ciphertexts (%s) or credential rows: the check above proves nothing", prefix)
		}
	})
}

func password(t *testing.T, rawURL string) string {
	t.Helper()
	p, ok := mustURL(t, rawURL).User.Password()
	if !ok || len(p) < 16 {
		t.Fatalf("URL has a weak or no password")
	}
	return p
}

func mustURL(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// After expiry the role can no longer log in, and open sessions end when the credentials are revoked at
// expiry (by Vault, or by the maintenance pass in postgres mode).
func TestExpiry(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			e := newEnv(t, mode, envOptions{policy: pgroles.LoginPolicy{TTL: 3 * time.Second, MaxTTL: 3 * time.Second}})
			o := e.newOrg("exp_" + mode[:2])
			cred, err := e.svc.Connection(ctx, o.ID)
			if err != nil {
				t.Fatal(err)
			}
			session, err := pgx.Connect(ctx, cred.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer session.Close(ctx)
			time.Sleep(time.Until(cred.ExpiresAt) + 1500*time.Millisecond)
			if c, err := pgx.Connect(ctx, cred.URL); err == nil {
				c.Close(ctx)
				t.Fatal("the role logs in after expiry")
			}
			if _, err := e.svc.Maintain(ctx); err != nil {
				t.Fatal(err)
			}
			if err := session.Ping(ctx); err == nil {
				t.Fatal("a session survived expiry and revocation")
			}
			var exists bool
			admin, err := e.clusterOf(o).Connect(ctx, "postgres")
			if err != nil {
				t.Fatal(err)
			}
			defer admin.Close(ctx)
			if err := admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, cred.Username).Scan(&exists); err != nil || exists {
				t.Fatalf("expired role still exists: %v %v", exists, err)
			}
			// Asked again, Connection issues new credentials.
			next, err := e.svc.Connection(ctx, o.ID)
			if err != nil || next.Username == cred.Username {
				t.Fatalf("after expiry: %v (same user: %v)", err, next != nil && next.Username == cred.Username)
			}
		})
	}
}

// Connection renews credentials close to expiry (same user, later expiry) and reissues them once the max TTL
// is reached; the predecessor keeps working until its own expiry.
func TestRenewThenReissue(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			e := newEnv(t, mode, envOptions{policy: pgroles.LoginPolicy{TTL: 6 * time.Second, MaxTTL: 10 * time.Second}, renewBefore: 2})
			o := e.newOrg("ren_" + mode[:2])
			first, err := e.svc.Connection(ctx, o.ID)
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Until(first.ExpiresAt) - 1500*time.Millisecond)
			renewed, err := e.svc.Connection(ctx, o.ID)
			if err != nil {
				t.Fatal(err)
			}
			if renewed.Username != first.Username || !renewed.ExpiresAt.After(first.ExpiresAt) {
				t.Fatalf("not renewed: %s until %s, then %s until %s", first.Username, first.ExpiresAt, renewed.Username, renewed.ExpiresAt)
			}
			time.Sleep(time.Until(renewed.ExpiresAt) - 1500*time.Millisecond)
			// Still valid: the role's VALID UNTIL moved with the lease.
			if c, err := pgx.Connect(ctx, renewed.URL); err != nil {
				t.Fatalf("renewed credentials past the original expiry: %v", err)
			} else {
				c.Close(ctx)
			}
			reissued, err := e.svc.Connection(ctx, o.ID)
			if err != nil {
				t.Fatal(err)
			}
			if reissued.Username == renewed.Username {
				t.Fatalf("not reissued at max TTL: %s until %s", reissued.Username, reissued.ExpiresAt)
			}
			for _, u := range []string{renewed.URL, reissued.URL} {
				c, err := pgx.Connect(ctx, u)
				if err != nil {
					t.Fatalf("right after reissue: %v", err)
				}
				c.Close(ctx)
			}
		})
	}
}

// Provisioning stopped after each recorded step, then run again, ends ready and usable.
func TestProvisioningResumesAfterCrashAtEachStep(t *testing.T) {
	t.Parallel()
	steps := []string{"placed"}
	for _, s := range pgroles.Steps {
		steps = append(steps, string(s))
	}
	steps = append(steps, "issuer")
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			e := newEnv(t, mode, envOptions{})
			for i, step := range steps {
				key := fmt.Sprintf("crash_%s_%d", mode[:2], i)
				o, err := e.svc.CreateOrg(ctx, key, "crash "+step)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = e.svc.DeleteOrg(context.Background(), o.ID) })
				e.mu.Lock()
				e.crashAt[o.ID] = step
				e.mu.Unlock()
				if _, err := e.svc.ProvisionOrg(ctx, o.ID); !errors.Is(err, e.errCrash) {
					t.Fatalf("step %s: %v", step, err)
				}
				if _, err := e.svc.Connection(ctx, o.ID); !errors.Is(err, orgdb.ErrNotProvisioned) {
					t.Fatalf("credentials for a half-provisioned org: %v", err)
				}
				got, err := e.svc.ProvisionOrg(ctx, o.ID)
				if err != nil {
					t.Fatalf("rerun after crash at %s: %v", step, err)
				}
				if got.ProvisionState != "ready" {
					t.Fatalf("state %s", got.ProvisionState)
				}
				done, lastErr, err := e.svc.ProvisioningSteps(ctx, o.ID)
				if err != nil || lastErr != "" || strings.Join(done, ",") != strings.Join(steps, ",") {
					t.Fatalf("recorded steps %v, last error %q (%v)", done, lastErr, err)
				}
				cred, err := e.svc.Connection(ctx, o.ID)
				if err != nil {
					t.Fatal(err)
				}
				conn, err := pgx.Connect(ctx, cred.URL)
				if err != nil {
					t.Fatalf("after crash at %s: %v", step, err)
				}
				conn.Close(ctx)
			}
		})
	}
}

func TestOrgKeysAndNamesAreRefusedOrSafe(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, orgdb.ModePostgres, envOptions{})
	for _, key := range []string{"", "Robert", "a b", "a'b", `a"b`, "a;b", "x'); DROP TABLE organizations; --", "a-b", strings.Repeat("x", 42), "üser"} {
		if _, err := e.svc.CreateOrg(ctx, key, "fine"); !errors.Is(err, orgdb.ErrInvalidOrg) {
			t.Errorf("CreateOrg(%q) = %v, want ErrInvalidOrg", key, err)
		}
	}
	for i, name := range []string{`O'Reilly & "Sons"`, `'; DROP TABLE organizations; --`, `Robert"); DROP ROLE postgres;--`, "  spaces  everywhere  ", "ünïcödé 🚀", `\x00 $$ $q$ '' ""`} {
		key := fmt.Sprintf("names_%d", i)
		o, err := e.svc.CreateOrg(ctx, key, name)
		if err != nil {
			t.Fatalf("CreateOrg(%q): %v", name, err)
		}
		t.Cleanup(func() { _ = e.svc.DeleteOrg(context.Background(), o.ID) })
		if _, err := e.svc.ProvisionOrg(ctx, o.ID); err != nil {
			t.Fatalf("provisioning org named %q: %v", name, err)
		}
		got, err := e.svc.Org(ctx, o.ID)
		if err != nil || got.Name != name {
			t.Fatalf("name %q came back as %q (%v)", name, got.Name, err)
		}
	}
	if _, err := e.svc.CreateOrg(ctx, "names_nul", "a\x00b"); !errors.Is(err, orgdb.ErrInvalidOrg) {
		t.Errorf("name with NUL: %v", err)
	}
	var n int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM organizations`).Scan(&n); err != nil || n < 6 {
		t.Fatalf("organizations table: %d %v", n, err)
	}
}

func TestDeleteOrgRevokesAndDrops(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			e := newEnv(t, mode, envOptions{})
			o := e.newOrg("del_" + mode[:2])
			cred, err := e.svc.Connection(ctx, o.ID)
			if err != nil {
				t.Fatal(err)
			}
			session, err := pgx.Connect(ctx, cred.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer session.Close(ctx)
			if err := e.svc.DeleteOrg(ctx, o.ID); err != nil {
				t.Fatal(err)
			}
			if err := session.Ping(ctx); err == nil {
				t.Fatal("session survived org deletion")
			}
			admin, err := e.clusterOf(o).Connect(ctx, "postgres")
			if err != nil {
				t.Fatal(err)
			}
			defer admin.Close(ctx)
			var left int
			if err := admin.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_roles WHERE rolname = ANY($1)) + (SELECT count(*) FROM pg_database WHERE datname = $2)`,
				[]string{cred.Username, pgroles.OwnerRole(o.NameBase), pgroles.ReadonlyRole(o.NameBase)}, *o.DatabaseName).Scan(&left); err != nil || left != 0 {
				t.Fatalf("%d roles/databases left (%v)", left, err)
			}
			if _, err := e.svc.Connection(ctx, o.ID); !errors.Is(err, orgdb.ErrOrgNotFound) {
				t.Fatalf("Connection of a deleted org: %v", err)
			}
		})
	}
}

// The isolation suite for the fanout's writer login (webhookdb_fanout): it writes through the org owner roles
// of its server and can do nothing else; in particular it cannot touch the org's read-only logins (members'
// or the service's), reach the application database, or become anyone but an owner.
func TestWriterIsolation(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			var opts envOptions
			if mode == orgdb.ModePostgres {
				// webhookdb_fanout is one role per server: setting its password here would break the Vault
				// static role of the shared servers. (The application database then lives on another server;
				// in Vault mode it shares the writer's.)
				opts.clusters = []*pgcluster.Cluster{pgtest.NewCluster(t)}
			}
			e := newEnv(t, mode, opts)
			o := e.newOrg("wiso_" + mode[:2])
			asOwner(t, e.clusterOf(o), o, `CREATE TABLE items (id int); INSERT INTO items VALUES (1)`)
			member, err := e.svc.MemberConnection(ctx, o.ID, e.newMember(o, "m@wiso-"+mode+".example"))
			if err != nil {
				t.Fatal(err)
			}
			service, err := e.svc.ServiceConnection(ctx, o.ID)
			if err != nil {
				t.Fatal(err)
			}
			connString, owner, err := e.svc.WriterConnString(ctx, o.ID)
			if err != nil {
				t.Fatal(err)
			}
			session := func(t *testing.T) *pgx.Conn {
				t.Helper()
				w, err := pgx.Connect(ctx, connString)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { w.Close(context.Background()) })
				return w
			}
			w := session(t)
			writer := pgx.Identifier{mustURL(t, connString).User.Username()}.Sanitize()
			if _, err := w.Exec(ctx, "SET ROLE "+pgx.Identifier{owner}.Sanitize()+"; INSERT INTO items VALUES (2); RESET ROLE"); err != nil {
				t.Fatalf("the writer cannot write through the owner: %v", err)
			}
			for _, prefix := range []string{"", "SET ROLE " + pgx.Identifier{owner}.Sanitize() + "; "} {
				for _, sql := range []string{
					`CREATE ROLE evil LOGIN`,
					`ALTER ROLE ` + writer + ` SUPERUSER`,
					`ALTER ROLE ` + writer + ` CREATEROLE`,
					`ALTER ROLE ` + writer + ` BYPASSRLS`,
					`ALTER ROLE ` + pgx.Identifier{member.Username}.Sanitize() + ` PASSWORD 'taken-over-0123456789'`,
					`ALTER ROLE ` + pgx.Identifier{service.Username}.Sanitize() + ` NOLOGIN`,
					`ALTER ROLE ` + pgx.Identifier{member.Username}.Sanitize() + ` SET statement_timeout = 0`,
					`DROP ROLE ` + pgx.Identifier{service.Username}.Sanitize(),
					`SET ROLE ` + pgx.Identifier{member.Username}.Sanitize(),
					`SET ROLE ` + pgx.Identifier{pgroles.VaultRole}.Sanitize(),
					`SET ROLE pg_signal_backend`,
					`SET SESSION AUTHORIZATION postgres`,
					`COPY items TO PROGRAM 'touch /tmp/whdb-evil'`,
					`SELECT pg_read_file('/etc/passwd')`,
					`SELECT lo_import('/etc/passwd')`,
					`CREATE EXTENSION dblink`,
					`ALTER SYSTEM SET statement_timeout = 0`,
					`CREATE PUBLICATION evil FOR ALL TABLES`,
				} {
					attempt := session(t)
					if _, err := attempt.Exec(ctx, prefix+sql); err == nil {
						t.Errorf("the writer succeeded: %s%s", prefix, sql)
					}
					attempt.Close(ctx)
				}
			}
			for _, db := range []string{"postgres", "template1", strings.TrimPrefix(mustURL(t, e.appURL).Path, "/")} {
				if c, err := pgx.Connect(ctx, withDatabase(t, connString, db, 0)); err == nil {
					c.Close(ctx)
					t.Errorf("the writer connects to %s", db)
				}
			}
			mustRead2 := func(rawURL, what string) {
				c, err := pgx.Connect(ctx, rawURL)
				if err != nil {
					t.Fatalf("%s after the writer's attempts: %v", what, err)
				}
				defer c.Close(ctx)
				var n int
				if err := c.QueryRow(ctx, `SELECT count(*) FROM items`).Scan(&n); err != nil || n != 2 {
					t.Fatalf("%s: %d rows %v", what, n, err)
				}
			}
			mustRead2(member.URL, "the member's login")
			mustRead2(service.URL, "the service login")
		})
	}
}
