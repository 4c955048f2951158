package devenv

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/webhookdb-go/webhookdb/internal/app"
	"github.com/webhookdb-go/webhookdb/internal/orgdb"
	"github.com/webhookdb-go/webhookdb/internal/pgtest"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
	"github.com/webhookdb-go/webhookdb/internal/vaultdev"
)

// `webhookdb dev` restarted: a fresh Vault dev server knows nothing. assemble restores the transit key from its
// backup, the app re-creates the Vault connection and roles and replaces the credentials Vault forgot, and
// values an earlier keyring-only dev stored stay readable until keys rotate moves them to transit.
func TestAssembleSurvivesAVaultRestart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	c := pgtest.NewCluster(t)
	appURL := pgtest.NewDBURL(t)
	pool, err := pgxpool.New(ctx, appURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	dir := t.TempDir()
	legacyFile := filepath.Join(dir, "keyring")
	entry := secrets.NewKeyEntry(1)
	if err := os.WriteFile(legacyFile, []byte(entry+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	kr, _ := secrets.ParseKeyring(entry)
	// A value stored by an earlier, keyring-only dev run.
	var orgID int64
	if err := pool.QueryRow(ctx, `INSERT INTO organizations (key, name) VALUES ('dev_legacy', 'x') RETURNING id`).Scan(&orgID); err != nil {
		t.Fatal(err)
	}
	legacyBinding := secrets.Binding{Table: "service_integrations", Column: "secret_enc", Row: "svi_" + "l0000000000000000000000000"}
	legacy, _ := kr.Encrypt(ctx, legacyBinding, []byte("legacy-secret"))
	if _, err := pool.Exec(ctx, `INSERT INTO service_integrations (opaque_id, org_id, service, table_name, secret_enc) VALUES ($1, $2, 'stripe', 't', $3)`, legacyBinding.Row, orgID, legacy); err != nil {
		t.Fatal(err)
	}
	spec := orgdb.ServerSpec{Name: "local", AdminURL: c.URL("postgres"), PublicHost: "127.0.0.1", PublicPort: c.Port, SSLMode: "disable"}
	start := func() (*vaultdev.Server, *app.App) {
		v, err := vaultdev.Start(ctx, vaultdev.Config{Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		a, err := assemble(ctx, assembly{DatabaseURL: appURL, Listen: "127.0.0.1:0", Vault: v, TransitBackupFile: filepath.Join(dir, "transit-key"),
			LegacyKeyringFile: legacyFile, Server: spec, Logger: quiet})
		if err != nil {
			_ = v.Stop()
			t.Fatal(err)
		}
		return v, a
	}
	v1, a1 := start()
	o, err := a1.Orgs().CreateOrg(ctx, "dev_org", "Dev")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a1.Orgs().ProvisionOrg(ctx, o.ID); err != nil {
		t.Fatal(err)
	}
	cred1, err := a1.Orgs().Connection(ctx, o.ID)
	if err != nil {
		t.Fatal(err)
	}
	a1.Close()
	_ = v1.Stop()

	v2, a2 := start()
	defer v2.Stop()
	defer a2.Close()
	defer func() { _ = a2.Orgs().DeleteOrg(context.Background(), o.ID) }()
	if conn, err := pgx.Connect(ctx, cred1.URL); err == nil {
		conn.Close(ctx)
		t.Fatal("credentials the restarted Vault forgot still log in")
	}
	cred2, err := a2.Orgs().Connection(ctx, o.ID)
	if err != nil {
		t.Fatal(err)
	}
	if cred2.Username == cred1.Username {
		t.Fatal("Connection returned the forgotten credentials")
	}
	conn, err := pgx.Connect(ctx, cred2.URL)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if got, err := a2.Box().Decrypt(ctx, legacyBinding, legacy); err != nil || string(got) != "legacy-secret" {
		t.Fatalf("legacy keyring value: %q %v", got, err)
	}
	// keys rotate moves it to transit.
	if _, err := secrets.Rotate(ctx, pool, a2.Box().(secrets.Rotator), secrets.RotateOptions{RotateKey: true}); err != nil {
		t.Fatal(err)
	}
	var stored string
	if err := pool.QueryRow(ctx, `SELECT secret_enc FROM service_integrations WHERE opaque_id = $1`, legacyBinding.Row).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if got, err := a2.Box().Decrypt(ctx, legacyBinding, stored); err != nil || string(got) != "legacy-secret" || stored[:9] != "vault:v2:" {
		t.Fatalf("after rotation: %q %v (%s)", got, err, stored[:9])
	}
}

// A scheduled rotation in dev saves the transit key's backup again: after a Vault restart, a value sealed
// under the new version still decrypts. The app runs with a periodic token of its own, not the root token.
func TestScheduledRotationRefreshesTheTransitBackup(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	c := pgtest.NewCluster(t)
	appURL := pgtest.NewDBURL(t)
	dir := t.TempDir()
	backup := filepath.Join(dir, "transit-key")
	spec := orgdb.ServerSpec{Name: "local", AdminURL: c.URL("postgres"), PublicHost: "127.0.0.1", PublicPort: c.Port, SSLMode: "disable"}
	v1, err := vaultdev.Start(ctx, vaultdev.Config{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = v1.Stop() }()
	a1, err := assemble(ctx, assembly{DatabaseURL: appURL, Listen: "127.0.0.1:0", Vault: v1, TransitBackupFile: backup,
		LegacyKeyringFile: filepath.Join(dir, "none"), Server: spec, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})), KeyRotationPeriod: time.Nanosecond, Slot: "dev_rotation"})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a1.Run(runCtx) }()
	// Poll the saved backup until it holds a rotated key.
	root, _ := v1.Client()
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, _ := os.ReadFile(backup)
		if latestInBackup(t, root, string(b)) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the transit backup was not refreshed after a scheduled rotation")
		}
		time.Sleep(100 * time.Millisecond)
	}
	stop()
	<-done
	b := secrets.Binding{Table: "database_servers", Column: "admin_url_enc", Row: "probe"}
	tr, _ := secrets.NewTransit(secrets.TransitConfig{Client: root})
	ct, err := tr.Encrypt(ctx, b, []byte("after rotation"))
	if err != nil {
		t.Fatal(err)
	}
	// Refresh once more to be sure the version that sealed ct is saved (rotation goes on every second).
	if err := saveTransitBackup(ctx, root, backup); err != nil {
		t.Fatal(err)
	}
	_ = v1.Stop()

	v2, err := vaultdev.Start(ctx, vaultdev.Config{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = v2.Stop() }()
	a2, err := assemble(ctx, assembly{DatabaseURL: appURL, Listen: "127.0.0.1:0", Vault: v2, TransitBackupFile: backup,
		LegacyKeyringFile: filepath.Join(dir, "none"), Server: spec, Logger: quiet, Slot: "dev_rotation"})
	if err != nil {
		t.Fatal(err)
	}
	defer a2.Close()
	if got, err := a2.Box().Decrypt(ctx, b, ct); err != nil || string(got) != "after rotation" {
		t.Fatalf("after a restart: %q %v", got, err)
	}
}

// latestInBackup restores a backup under a scratch name and reads its latest version (0 for no backup).
func latestInBackup(t *testing.T, root *vaultapi.Client, backup string) int {
	t.Helper()
	if strings.TrimSpace(backup) == "" {
		return 0
	}
	name := "probe-" + strings.ToLower(rand.Text())[:8]
	if _, err := root.Logical().Write("transit/restore/"+name, map[string]any{"backup": strings.TrimSpace(backup)}); err != nil {
		t.Fatal(err)
	}
	s, err := root.Logical().Read("transit/keys/" + name)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := s.Data["latest_version"].(json.Number).Int64()
	return int(n)
}
