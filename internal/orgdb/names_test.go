package orgdb_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/internal/orgdb"
	"github.com/webhookdb-go/webhookdb/internal/pgcluster"
	"github.com/webhookdb-go/webhookdb/internal/pgtest"
	"github.com/webhookdb-go/webhookdb/internal/vaulttest"
	"github.com/webhookdb-go/webhookdb/pgroles"
	"github.com/webhookdb-go/webhookdb/vault"
)

// catalogText is everything a login can read about the server's other tenants from the shared catalogs:
// database names, role names, and each session's database, user and application_name.
func catalogText(t *testing.T, conn *pgx.Conn) string {
	t.Helper()
	ctx := context.Background()
	var b strings.Builder
	for _, q := range []string{
		`SELECT datname FROM pg_database`,
		`SELECT rolname FROM pg_roles`,
		`SELECT coalesce(datname, '') || ' ' || coalesce(usename, '') || ' ' || coalesce(application_name, '') FROM pg_stat_activity`,
	} {
		rows, err := conn.Query(ctx, q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		b.WriteString(strings.Join(names, "\n") + "\n")
	}
	return b.String()
}

// A read-only login of one org learns nothing of another org's key (nor of its own) from pg_database,
// pg_roles or pg_stat_activity, while the other org has sessions open: its own read-only login and one as
// the fanout names its sessions.
func TestCatalogsCarryNoOrgKey(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			e := newEnv(t, mode, envOptions{})
			p := "leak" + mode[:2]
			a := e.newOrg(p + "_alpha")
			e.newOrg(p + "_elsewhere") // the other server
			b := e.newOrg(p + "_bravo")
			if *a.ServerID != *b.ServerID {
				t.Fatalf("placement: a on %d, b on %d; want one server", *a.ServerID, *b.ServerID)
			}
			credA, err := e.svc.Connection(ctx, a.ID)
			if err != nil {
				t.Fatal(err)
			}
			credB, err := e.svc.Connection(ctx, b.ID)
			if err != nil {
				t.Fatal(err)
			}
			connB, err := pgx.Connect(ctx, credB.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer connB.Close(ctx)
			cluster := e.clusterOf(b)
			fanoutCfg, err := pgx.ParseConfig(cluster.URL(*b.DatabaseName))
			if err != nil {
				t.Fatal(err)
			}
			fanoutCfg.RuntimeParams["application_name"] = "webhookdb-fanout"
			fanoutConn, err := pgx.ConnectConfig(ctx, fanoutCfg)
			if err != nil {
				t.Fatal(err)
			}
			defer fanoutConn.Close(ctx)

			connA, err := pgx.Connect(ctx, credA.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer connA.Close(ctx)
			seen := catalogText(t, connA)
			// The test means something only if B's database and login are there to be seen.
			if !strings.Contains(seen, *b.DatabaseName) || !strings.Contains(seen, credB.Username) {
				t.Fatalf("org b's database %s and login %s are not in the catalogs:\n%s", *b.DatabaseName, credB.Username, seen)
			}
			for _, key := range []string{b.Key, a.Key, p} {
				if strings.Contains(seen, key) {
					t.Errorf("a read-only login of %s reads org key %q in the catalogs:\n%s", a.Key, key, seen)
				}
			}
			for _, o := range []*orgdb.Org{a, b} {
				if !pgroles.IsOpaqueNameBase(o.NameBase) || *o.DatabaseName != pgroles.DatabaseName(o.NameBase) {
					t.Errorf("org %s: name base %q, database %q; want an opaque base and org_<base>", o.Key, o.NameBase, *o.DatabaseName)
				}
			}
		})
	}
}

// An org provisioned before opaque names (named from its key) moves to opaque names with
// RenameOrgDatabases: its open sessions end, its old login is gone, its data is still there under the new
// names, new credentials are issued under them, and a second run has nothing to do.
func TestRenameOrgDatabases(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			e := newEnv(t, mode, envOptions{})
			p := "legacy" + mode[:2]
			o := e.newLegacyOrg(p + "_acme")
			if o.NameBase != o.Key || *o.DatabaseName != "org_"+o.Key {
				t.Fatalf("legacy org: base %q, database %q", o.NameBase, *o.DatabaseName)
			}
			cluster := e.clusterOf(o)
			asOwner(t, cluster, o, `CREATE TABLE items (id int); INSERT INTO items VALUES (42)`)
			oldCred, err := e.svc.Connection(ctx, o.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(oldCred.Username, o.Key) {
				t.Fatalf("legacy login %q does not carry the key: the test sets up nothing to rename", oldCred.Username)
			}
			session, err := pgx.Connect(ctx, oldCred.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer session.Close(ctx)

			res, err := e.svc.RenameOrgDatabases(ctx, nil)
			if err != nil || len(res.Failed) != 0 || len(res.Renamed) != 1 || res.Renamed[0] != o.Key {
				t.Fatalf("rename: %+v, %v", res, err)
			}
			if _, err := session.Exec(ctx, "SELECT 1"); err == nil {
				t.Error("a session opened before the rename is still alive")
			}
			if c, err := pgx.Connect(ctx, oldCred.URL); err == nil {
				c.Close(ctx)
				t.Error("the old URL still connects")
			}
			checkRenamed(t, e, o.ID, cluster)

			res, err = e.svc.RenameOrgDatabases(ctx, nil)
			if err != nil || len(res.Renamed) != 0 || len(res.Failed) != 0 {
				t.Fatalf("second run: %+v, %v; want nothing to do", res, err)
			}
		})
	}
}

// A rename that stops after any of its steps resumes when the command runs again.
func TestRenameOrgDatabasesResumesAfterCrashAtEachStep(t *testing.T) {
	t.Parallel()
	steps := []string{orgdb.RenameStepTarget, orgdb.RenameStepIssuer, orgdb.RenameStepRevoke, orgdb.RenameStepServer}
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			e := newEnv(t, mode, envOptions{})
			for i, step := range steps {
				o := e.newLegacyOrg("crash" + mode[:2] + "_" + string(rune('a'+i)))
				asOwner(t, e.clusterOf(o), o, `CREATE TABLE items (id int); INSERT INTO items VALUES (42)`)
				if _, err := e.svc.Connection(ctx, o.ID); err != nil {
					t.Fatal(err)
				}
				e.mu.Lock()
				e.crashAt[o.ID] = step
				e.mu.Unlock()
				if err := e.svc.RenameOrgDatabase(ctx, o.ID); !errors.Is(err, e.errCrash) {
					t.Fatalf("step %s: %v; want the simulated crash", step, err)
				}
				res, err := e.svc.RenameOrgDatabases(ctx, nil)
				if err != nil || len(res.Failed) != 0 {
					t.Fatalf("resuming after %s: %+v, %v", step, res, err)
				}
				checkRenamed(t, e, o.ID, e.clusterOf(o))
			}
		})
	}
}

// newLegacyOrg creates and provisions an org as webhookdb did before opaque names: named from its key.
func (e *env) newLegacyOrg(key string) *orgdb.Org {
	e.t.Helper()
	ctx := context.Background()
	o, err := e.svc.CreateOrg(ctx, key, "Org "+key)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.pool.Exec(ctx, `UPDATE organizations SET name_base = NULL WHERE id = $1`, o.ID); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		if err := e.svc.DeleteOrg(context.Background(), o.ID); err != nil {
			e.t.Logf("deleting org %s: %v", key, err)
		}
	})
	if o, err = e.svc.ProvisionOrg(ctx, o.ID); err != nil {
		e.t.Fatalf("provisioning %s: %v", key, err)
	}
	return o
}

// checkRenamed checks an org has opaque names, its data under them, new credentials that read it, and that
// nothing on its server carries its key any more.
func checkRenamed(t *testing.T, e *env, orgID int64, cluster *pgcluster.Cluster) {
	t.Helper()
	ctx := context.Background()
	o, err := e.svc.Org(ctx, orgID)
	if err != nil {
		t.Fatal(err)
	}
	if !pgroles.IsOpaqueNameBase(o.NameBase) || *o.DatabaseName != pgroles.DatabaseName(o.NameBase) {
		t.Fatalf("org %s after rename: base %q, database %q", o.Key, o.NameBase, *o.DatabaseName)
	}
	cred, err := e.svc.Connection(ctx, o.ID)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(cred.URL)
	if err != nil {
		t.Fatal(err)
	}
	if u.Path != "/"+*o.DatabaseName || strings.Contains(cred.Username, o.Key) {
		t.Fatalf("credentials after rename: database %s, user %s", u.Path, cred.Username)
	}
	conn, err := pgx.Connect(ctx, cred.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var v int
	if err := conn.QueryRow(ctx, `SELECT id FROM items`).Scan(&v); err != nil || v != 42 {
		t.Fatalf("reading the org's data after rename: %d, %v", v, err)
	}
	if seen := catalogText(t, conn); strings.Contains(seen, o.Key) {
		t.Fatalf("the catalogs still carry key %q:\n%s", o.Key, seen)
	}
	// The fanout writes as the owner role, under its new name.
	asOwner(t, cluster, o, `INSERT INTO items VALUES (43)`)
}

// testCA returns a self-signed CA certificate, PEM-encoded.
func testCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "webhookdb test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// A server's sslmode is chosen at registration: require by default, disable only for loopback, verify-full
// and verify-ca only with a CA certificate that parses (then handed out with every read-only URL); prefer and
// allow, which a network attacker can downgrade, are refused.
func TestRegisterServerSSLMode(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, orgdb.ModePostgres, envOptions{clusters: []*pgcluster.Cluster{pgtest.Cluster(t)}})
	c := e.clusters[0]
	ca := testCA(t)
	spec := func(host, mode, caCert string) orgdb.ServerSpec {
		return orgdb.ServerSpec{Name: "tls", AdminURL: c.URL("postgres"), PublicHost: host, PublicPort: 5432, SSLMode: mode, CACert: caCert}
	}
	for _, tc := range []struct {
		spec orgdb.ServerSpec
		want string // the sslmode chosen; "" = refused
	}{
		{spec("db.example.com", "", ""), "require"},
		{spec("10.0.0.5", "", ""), "require"},
		{spec("127.0.0.1", "", ""), "disable"},
		{spec("localhost", "", ""), "disable"},
		{spec("::1", "disable", ""), "disable"},
		{spec("db.example.com", "require", ""), "require"},
		{spec("db.example.com", "verify-full", ca), "verify-full"},
		{spec("db.example.com", "verify-ca", ca), "verify-ca"},
		{spec("db.example.com", "disable", ""), ""},
		{spec("localhost.example.com", "disable", ""), ""},
		{spec("db.example.com", "prefer", ""), ""},
		{spec("db.example.com", "allow", ""), ""},
		{spec("db.example.com", "verify-full", ""), ""},
		{spec("db.example.com", "verify-full", "not a certificate"), ""},
		{spec("db.example.com", "verify-full", strings.Replace(ca, "CERTIFICATE", "PRIVATE KEY", 2)), ""},
		{spec("db.example.com", "require", ca), ""},
		{spec("db.example.com", "bogus", ""), ""},
	} {
		info, err := e.svc.RegisterServer(ctx, tc.spec)
		switch {
		case tc.want == "" && !errors.Is(err, orgdb.ErrInvalidSSLMode):
			t.Errorf("host %s sslmode %q (CA %t): %v; want ErrInvalidSSLMode", tc.spec.PublicHost, tc.spec.SSLMode, tc.spec.CACert != "", err)
		case tc.want != "" && (err != nil || info.SSLMode != tc.want):
			t.Errorf("host %s sslmode %q: %+v, %v; want %s", tc.spec.PublicHost, tc.spec.SSLMode, info, err, tc.want)
		}
	}
	// The database refuses a downgradable mode whatever the code says.
	if _, err := e.pool.Exec(ctx, `UPDATE database_servers SET sslmode = 'prefer'`); err == nil {
		t.Error("database_servers took sslmode prefer")
	}

	// verify-full: the CA is stored with the server and handed out with each read-only URL.
	if _, err := e.svc.RegisterServer(ctx, spec("db.example.com", "verify-full", ca)); err != nil {
		t.Fatal(err)
	}
	e.newOrg("tls_first") // placed on the first server; the next org goes to the empty one
	o := e.newOrg("tls_org")
	cred, err := e.svc.Connection(ctx, o.ID)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(cred.URL)
	if err != nil {
		t.Fatal(err)
	}
	if u.Query().Get("sslmode") != "verify-full" || u.Hostname() != "db.example.com" || cred.CACert != ca {
		t.Fatalf("credential on a verify-full server: URL %s, CA %q", u.Redacted(), cred.CACert)
	}
	servers, err := e.svc.Servers(ctx)
	if err != nil || len(servers) != 2 || servers[1].Name != "tls" || servers[1].CACert != ca {
		t.Fatalf("servers: %+v, %v", servers, err)
	}
}

// Reconcile (what `dev` and every server start run) re-creates a forgotten Vault role under the org's opaque
// names, so credentials can be issued again.
func TestReconcileRestoresVaultRoleUnderOpaqueNames(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, orgdb.ModeVault, envOptions{})
	o := e.newOrg("reconcile_opaque")
	role := "database/roles/" + vault.RoleName(o.NameBase)
	client := vaulttest.Client(t)
	if _, err := client.Logical().DeleteWithContext(ctx, role); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if s, err := client.Logical().ReadWithContext(ctx, role); err != nil || s == nil {
		t.Fatalf("vault role %s after reconcile: %v, %v", role, s, err)
	}
	cred, err := e.svc.Connection(ctx, o.ID)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, cred.URL)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
}

// Deleting an org whose rename stopped half-way drops whatever it has under either name.
func TestDeleteOrgMidRename(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			e := newEnv(t, mode, envOptions{})
			o := e.newLegacyOrg("midrename" + mode[:2])
			cluster := e.clusterOf(o)
			e.mu.Lock()
			e.crashAt[o.ID] = orgdb.RenameStepServer
			e.mu.Unlock()
			if err := e.svc.RenameOrgDatabase(ctx, o.ID); !errors.Is(err, e.errCrash) {
				t.Fatalf("%v; want the simulated crash", err)
			}
			var target string
			if err := e.pool.QueryRow(ctx, `SELECT renaming_to FROM organizations WHERE id = $1`, o.ID).Scan(&target); err != nil {
				t.Fatal(err)
			}
			if err := e.svc.DeleteOrg(ctx, o.ID); err != nil {
				t.Fatal(err)
			}
			super, err := cluster.Connect(ctx, "postgres")
			if err != nil {
				t.Fatal(err)
			}
			defer super.Close(ctx)
			var left int
			if err := super.QueryRow(ctx, `
				SELECT (SELECT count(*) FROM pg_database WHERE datname = ANY($1)) + (SELECT count(*) FROM pg_roles WHERE rolname = ANY($2))`,
				[]string{pgroles.DatabaseName(o.Key), pgroles.DatabaseName(target)},
				[]string{pgroles.OwnerRole(o.Key), pgroles.ReadonlyRole(o.Key), pgroles.OwnerRole(target), pgroles.ReadonlyRole(target)}).Scan(&left); err != nil || left != 0 {
				t.Fatalf("%d databases and roles left after deleting an org mid-rename (%v)", left, err)
			}
		})
	}
}
