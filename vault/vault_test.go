package vault_test

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/internal/orgdb"
	"github.com/webhookdb-go/webhookdb/internal/pgcluster"
	"github.com/webhookdb-go/webhookdb/internal/pgtest"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
	"github.com/webhookdb-go/webhookdb/internal/vaulttest"
	"github.com/webhookdb-go/webhookdb/pgroles"
	"github.com/webhookdb-go/webhookdb/vault"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// sharedServer is the shared cluster as a server; every test using it uses this one Vault connection name
// (the cluster has one webhookdb_vault role, whose password only that connection knows).
func sharedServer(t *testing.T) (orgdb.Server, *pgcluster.Cluster) {
	c := pgtest.Cluster(t)
	return orgdb.Server{ID: 1, Name: "shared", AdminURL: c.URL("postgres"), PublicHost: "127.0.0.1", PublicPort: c.Port, SSLMode: "disable"}, c
}

func newIssuer(t *testing.T, client *vaultapi.Client) *vault.Issuer {
	t.Helper()
	i, err := vault.NewIssuer(vault.Config{Client: client, Policy: pgroles.LoginPolicy{TTL: time.Hour}, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		t.Fatal(err)
	}
	return i
}

// setupOrg provisions an org on a server and its Vault role.
func setupOrg(t *testing.T, i *vault.Issuer, srv orgdb.Server, key string) {
	t.Helper()
	ctx := context.Background()
	t.Cleanup(func() {
		_ = i.RemoveOrg(context.Background(), srv, key, nil)
		_ = pgroles.DropOrg(context.Background(), srv.AdminURL, key)
	})
	if err := pgroles.ProvisionOrg(ctx, srv.AdminURL, key); err != nil {
		t.Fatal(err)
	}
	if err := i.SetupOrg(ctx, srv, key, nil); err != nil {
		t.Fatal(err)
	}
}

func vaultPassword(t *testing.T, c *pgcluster.Cluster) string {
	t.Helper()
	ctx := context.Background()
	conn, err := c.Connect(ctx, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var verifier string
	if err := conn.QueryRow(ctx, `SELECT rolpassword FROM pg_authid WHERE rolname = $1`, pgroles.VaultRole).Scan(&verifier); err != nil {
		t.Fatal(err)
	}
	return verifier
}

func TestRotateRootChangesThePasswordOnlyVaultKnows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	i := newIssuer(t, vaulttest.Client(t))
	srv, c := sharedServer(t)
	if err := i.SetupServer(ctx, srv, nil); err != nil {
		t.Fatal(err)
	}
	setupOrg(t, i, srv, "rr_org")
	before := vaultPassword(t, c)
	if err := i.RotateRoot(ctx, srv.Name); err != nil {
		t.Fatal(err)
	}
	if after := vaultPassword(t, c); after == before {
		t.Fatal("rotate-root did not change webhookdb_vault's password")
	}
	// Vault still works with the password only it knows.
	lease, err := i.Issue(ctx, srv, "rr_org")
	if err != nil {
		t.Fatal(err)
	}
	if err := i.Revoke(ctx, srv, "rr_org", *lease); err != nil {
		t.Fatal(err)
	}
	if err := i.RotateRoot(ctx, "no-such-server"); !errors.Is(err, vault.ErrNotConfigured) {
		t.Fatalf("rotate-root of an unknown server: %v", err)
	}
}

// Each server's Vault connection allows only its own orgs' roles.
func TestAllowedRolesArePerServer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	client := vaulttest.Client(t)
	i := newIssuer(t, client)
	shared, _ := sharedServer(t)
	oc := pgtest.NewCluster(t)
	other := orgdb.Server{ID: 2, Name: "other", AdminURL: oc.URL("postgres"), PublicHost: "127.0.0.1", PublicPort: oc.Port, SSLMode: "disable"}
	for _, s := range []orgdb.Server{shared, other} {
		if err := i.SetupServer(ctx, s, nil); err != nil {
			t.Fatal(err)
		}
	}
	setupOrg(t, i, shared, "ar_one")
	setupOrg(t, i, other, "ar_two")
	allowed := func(name string) []string {
		s, err := client.Logical().ReadWithContext(ctx, "database/config/"+name)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range s.Data["allowed_roles"].([]any) {
			out = append(out, r.(string))
		}
		return out
	}
	if a := allowed("shared"); !slices.Contains(a, "org-ar_one-readonly") || slices.Contains(a, "org-ar_two-readonly") || slices.Contains(a, "*") {
		t.Fatalf("shared allows %v", a)
	}
	if a := allowed("other"); !slices.Contains(a, "org-ar_two-readonly") || slices.Contains(a, "org-ar_one-readonly") {
		t.Fatalf("other allows %v", a)
	}
	// A role pointed at the wrong server is refused by Vault.
	if _, err := client.Logical().WriteWithContext(ctx, "database/roles/org-ar_one-readonly", map[string]any{"db_name": "other"}); err != nil {
		t.Fatal(err)
	}
	if _, err := i.Issue(ctx, other, "ar_one"); err == nil {
		t.Fatal("issued org ar_one credentials through the other server's connection")
	}
	if err := i.SetupOrg(ctx, shared, "ar_one", nil); err != nil { // put it back for cleanup
		t.Fatal(err)
	}
	// Removing an org disallows its role.
	if err := i.RemoveOrg(ctx, other, "ar_two", nil); err != nil {
		t.Fatal(err)
	}
	if a := allowed("other"); slices.Contains(a, "org-ar_two-readonly") {
		t.Fatalf("removed role still allowed: %v", a)
	}
}

// A Vault whose connection password is stale (someone reset it) or which lost the connection is repaired by
// SetupServer through the admin URL.
func TestSetupServerRepairsAStaleConnection(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	client := vaulttest.Client(t)
	i := newIssuer(t, client)
	c := pgtest.NewCluster(t) // this test resets webhookdb_vault: keep it off the shared cluster
	srv := orgdb.Server{ID: 3, Name: "stale", AdminURL: c.URL("postgres"), PublicHost: "127.0.0.1", PublicPort: c.Port, SSLMode: "disable"}
	if err := i.SetupServer(ctx, srv, nil); err != nil {
		t.Fatal(err)
	}
	setupOrg(t, i, srv, "st_org")
	admin, err := c.Connect(ctx, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, `ALTER ROLE webhookdb_vault PASSWORD 'someone-else-knows'`); err != nil {
		t.Fatal(err)
	}
	if _, err := i.Issue(ctx, srv, "st_org"); err == nil {
		t.Log("vault kept a pooled connection; issuing still worked")
	}
	if err := i.SetupServer(ctx, srv, []string{"st_org"}); err != nil {
		t.Fatal(err)
	}
	lease, err := i.Issue(ctx, srv, "st_org")
	if err != nil {
		t.Fatalf("after repair: %v", err)
	}
	if err := i.Revoke(ctx, srv, "st_org", *lease); err != nil {
		t.Fatal(err)
	}
	var super bool
	if err := admin.QueryRow(ctx, `SELECT rolsuper FROM pg_roles WHERE rolname = 'webhookdb_vault'`).Scan(&super); err != nil || super {
		t.Fatalf("webhookdb_vault superuser=%v (%v)", super, err)
	}
}

// The fanout writes with a Vault static role, rotated on a period; a rotation leaves open connections alone
// and new connections need the new password.
func TestFanoutStaticRole(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	i := newIssuer(t, vaulttest.Client(t))
	srv, c := sharedServer(t)
	if err := i.SetupServer(ctx, srv, nil); err != nil {
		t.Fatal(err)
	}
	setupOrg(t, i, srv, "fo_org")
	if err := i.SetupServer(ctx, srv, []string{"fo_org"}); err != nil { // grants the new org's owner to the fanout
		t.Fatal(err)
	}
	cred, err := i.FanoutCredential(ctx, srv.Name)
	if err != nil {
		t.Fatal(err)
	}
	if cred.Username != pgroles.FanoutRole || cred.RotatesAt.IsZero() || time.Until(cred.RotatesAt) > time.Hour+time.Minute {
		t.Fatalf("credential %s rotates at %s", cred.Username, cred.RotatesAt)
	}
	conn, err := pgx.Connect(ctx, c.URLFor(cred.Username, cred.Password, pgroles.DatabaseName("fo_org")))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "SET ROLE "+pgroles.OwnerRole("fo_org")+"; CREATE TABLE t (x int); INSERT INTO t VALUES (1)"); err != nil {
		t.Fatalf("fanout cannot write as the owner: %v", err)
	}
	var super bool
	if err := conn.QueryRow(ctx, `SELECT rolsuper FROM pg_roles WHERE rolname = session_user`).Scan(&super); err != nil || super {
		t.Fatalf("fanout role superuser=%v %v", super, err)
	}
	if err := i.RotateFanout(ctx, srv.Name); err != nil {
		t.Fatal(err)
	}
	next, err := i.FanoutCredential(ctx, srv.Name)
	if err != nil || next.Password == cred.Password {
		t.Fatalf("rotation kept the password (%v)", err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO t VALUES (2)"); err != nil {
		t.Fatalf("an open connection broke on rotation: %v", err)
	}
	if c2, err := pgx.Connect(ctx, c.URLFor(cred.Username, cred.Password, pgroles.DatabaseName("fo_org"))); err == nil {
		c2.Close(ctx)
		t.Fatal("the old fanout password still logs in")
	}
	c3, err := pgx.Connect(ctx, c.URLFor(next.Username, next.Password, pgroles.DatabaseName("fo_org")))
	if err != nil {
		t.Fatal(err)
	}
	c3.Close(ctx)
}

// Everything webhookdb does works with a token that has only Policy.
func TestPolicyIsEnough(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	root := vaulttest.Client(t)
	key := "pol-" + strings.ToLower(rand.Text())
	if err := root.Sys().PutPolicyWithContext(ctx, key, vault.Policy("database", "transit", key)); err != nil {
		t.Fatal(err)
	}
	tok, err := root.Auth().Token().CreateWithContext(ctx, &vaultapi.TokenCreateRequest{Policies: []string{key}, NoDefaultPolicy: true, Period: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	client, err := root.Clone()
	if err != nil {
		t.Fatal(err)
	}
	client.SetToken(tok.Auth.ClientToken)

	tr, err := secrets.NewTransit(secrets.TransitConfig{Client: client, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.EnsureKey(ctx); err != nil {
		t.Fatal(err)
	}
	pool := pgtest.NewDB(t)
	b := secrets.Binding{Table: "database_servers", Column: "admin_url_enc", Row: "x"}
	ct, err := tr.Encrypt(ctx, b, []byte("p"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO database_servers (name, admin_url_enc, public_host, public_port) VALUES ('x', $1, 'h', 1)`, ct); err != nil {
		t.Fatal(err)
	}
	if _, err := secrets.Rotate(ctx, pool, tr, secrets.RotateOptions{RotateKey: true}); err != nil {
		t.Fatal(err)
	}

	i := newIssuer(t, client)
	srv, _ := sharedServer(t)
	if err := i.SetupServer(ctx, srv, nil); err != nil {
		t.Fatal(err)
	}
	setupOrg(t, i, srv, "pol_org")
	lease, err := i.Issue(ctx, srv, "pol_org")
	if err != nil {
		t.Fatal(err)
	}
	if known, err := i.Known(ctx, srv, *lease); err != nil || !known {
		t.Fatalf("lookup: %v %v", known, err)
	}
	renewing := *lease
	renewing.ExpiresAt = time.Now().Add(time.Minute) // as if most of the hour had passed
	if exp, err := i.Renew(ctx, srv, "pol_org", renewing); err != nil || time.Until(exp) < 59*time.Minute {
		t.Fatalf("renew: %s %v", exp, err)
	}
	if err := i.Revoke(ctx, srv, "pol_org", *lease); err != nil {
		t.Fatal(err)
	}
	if _, err := i.FanoutCredential(ctx, srv.Name); err != nil {
		t.Fatal(err)
	}
	if err := i.RotateRoot(ctx, srv.Name); err != nil {
		t.Fatal(err)
	}
	if err := i.RemoveOrg(ctx, srv, "pol_org", nil); err != nil {
		t.Fatal(err)
	}
	// And nothing beyond it.
	if _, err := client.Logical().ReadWithContext(ctx, "database/creds/not-an-org"); err == nil {
		t.Fatal("read outside the policy")
	}
}
