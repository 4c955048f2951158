package app

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/webhookdb-go/webhookdb/internal/pgtest"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
	"github.com/webhookdb-go/webhookdb/internal/vaulttest"
	"github.com/webhookdb-go/webhookdb/vault"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func suffix() string { return strings.ToLower(rand.Text())[:10] }

// A server refuses a token that is not periodic (its leases would die with it), saying how to make one.
func TestServeRefusesANonPeriodicToken(t *testing.T) {
	t.Parallel()
	root := vaulttest.Client(t)
	s, err := root.Auth().Token().Create(&vaultapi.TokenCreateRequest{Policies: []string{"root"}, TTL: "2h"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(context.Background(), Config{
		DatabaseURL: pgtest.NewDBURL(t), VaultAddr: root.Address(), VaultToken: s.Auth.ClientToken,
		Roles: []Role{RoleMaintenance}, Slot: "s_" + suffix(), TransitKey: "k-" + suffix(), Logger: quiet(),
	})
	if err == nil || !strings.Contains(err.Error(), "vault token create -period=768h -policy=webhookdb") {
		t.Fatalf("New with a non-periodic token: %v", err)
	}
}

// serve starts while Vault is unreachable: ingest and the API answer, /healthz says 200 with the Vault state
// degraded (ingest still stores webhooks; degraded Vault must not take it out of a load balancer).
func TestServeStartsWhileVaultIsUnreachable(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := New(ctx, Config{
		DatabaseURL: pgtest.NewDBURL(t), VaultAddr: "http://127.0.0.1:1", VaultToken: "hvs.unreachable",
		Roles: []Role{RoleIngest, RoleAPI, RoleMaintenance}, Listen: "127.0.0.1:0", Slot: "s_" + suffix(), Logger: quiet(),
	})
	if err != nil {
		t.Fatalf("New with Vault unreachable: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	resp, err := http.Get(a.URL() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"vault":"degraded"`) || !strings.Contains(string(body), `"credentials":"reconciling"`) {
		t.Fatalf("healthz: %d %s", resp.StatusCode, body)
	}
}

// An org database server that is unreachable at start does not stop serve: reconcile retries in the
// background, and /healthz says so while Vault itself is fine.
func TestServeStartsWhileADatabaseServerIsUnreachable(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tv := newTestVault(t, ctx)
	root, token, key, tr := tv.root, tv.token, tv.key, tv.transit
	dbURL := pgtest.NewDBURL(t)
	name := "gone" + suffix()
	enc, err := tr.Encrypt(ctx, secrets.Binding{Table: "database_servers", Column: "admin_url_enc", Row: name}, []byte("postgres://admin:pw@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=2"))
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `INSERT INTO database_servers (name, admin_url_enc, public_host, public_port) VALUES ($1, $2, '127.0.0.1', 1)`, name, enc); err != nil {
		t.Fatal(err)
	}
	a, err := New(ctx, Config{
		DatabaseURL: dbURL, VaultAddr: root.Address(), VaultToken: token, TransitKey: key, DatabaseMount: "database",
		Roles: []Role{RoleIngest, RoleAPI, RoleMaintenance}, Listen: "127.0.0.1:0", Slot: "s_" + suffix(), Logger: quiet(),
	})
	if err != nil {
		t.Fatalf("New with a database server unreachable: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	resp, err := http.Get(a.URL() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"vault":"ok"`) || !strings.Contains(string(body), `"credentials":"reconciling"`) {
		t.Fatalf("healthz: %d %s", resp.StatusCode, body)
	}
}

// A database server unreachable at start and reachable later: the background reconcile retries until it
// succeeds (Vault gets the server's connection), and /healthz stops saying "reconciling".
func TestReconcileRetriesUntilTheServerIsBack(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tv := newTestVault(t, ctx)
	root, token, key, tr := tv.root, tv.token, tv.key, tv.transit
	c := pgtest.Cluster(t)
	// A port nothing listens on yet; later a proxy to the cluster listens there.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	adminURL := strings.Replace(c.URL("postgres"), net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Port)), net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 1)

	dbURL := pgtest.NewDBURL(t)
	name := "later" + suffix()
	enc, err := tr.Encrypt(ctx, secrets.Binding{Table: "database_servers", Column: "admin_url_enc", Row: name}, []byte(adminURL))
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `INSERT INTO database_servers (name, admin_url_enc, public_host, public_port) VALUES ($1, $2, '127.0.0.1', $3)`, name, enc, port); err != nil {
		t.Fatal(err)
	}
	a, err := New(ctx, Config{
		DatabaseURL: dbURL, VaultAddr: root.Address(), VaultToken: token, TransitKey: key,
		Roles: []Role{RoleIngest, RoleAPI, RoleMaintenance}, Listen: "127.0.0.1:0", Slot: "s_" + suffix(), Logger: quiet(),
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	if body := healthz(t, a); !strings.Contains(body, `"credentials":"reconciling"`) {
		t.Fatalf("healthz before the server is back: %s", body)
	}
	back := pgtest.NewProxy(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), c.Port)
	go func() { <-ctx.Done(); back.Close() }()
	deadline := time.Now().Add(30 * time.Second)
	for strings.Contains(healthz(t, a), "reconciling") {
		if time.Now().After(deadline) {
			t.Fatal("still reconciling 30s after the server came back")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if s, err := root.Logical().Read("database/config/" + name); err != nil || s == nil {
		t.Fatalf("Vault has no connection for the server after reconcile: %v", err)
	}
}

func healthz(t *testing.T, a *App) string {
	t.Helper()
	resp, err := http.Get(a.URL() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %d %s", resp.StatusCode, body)
	}
	return string(body)
}

// testVault is a real Vault with a periodic token for the server (as serve gets one) and a transit key of its
// own, created.
type testVault struct {
	root    *vaultapi.Client
	token   string
	key     string
	transit *secrets.Transit
}

func newTestVault(t *testing.T, ctx context.Context) testVault {
	t.Helper()
	root := vaulttest.Client(t)
	token, err := vault.CreatePeriodicChild(ctx, root, time.Hour, "root")
	if err != nil {
		t.Fatal(err)
	}
	key := "k-" + suffix()
	tc, _ := root.Clone()
	tc.SetToken(token)
	tr, err := secrets.NewTransit(secrets.TransitConfig{Client: tc, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.EnsureKey(ctx); err != nil {
		t.Fatal(err)
	}
	return testVault{root: root, token: token, key: key, transit: tr}
}
