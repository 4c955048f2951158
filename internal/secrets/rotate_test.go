package secrets_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/webhookdb-go/webhookdb/internal/pgtest"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
	"github.com/webhookdb-go/webhookdb/internal/vaulttest"
)

// seed fills every encrypted column of a fresh application database with values sealed by box and returns
// the expected plaintext per binding.
func seed(t *testing.T, pool *pgxpool.Pool, box secrets.Box) map[secrets.Binding]string {
	t.Helper()
	ctx := context.Background()
	want := map[secrets.Binding]string{}
	enc := func(table, column, row, plain string) string {
		b := secrets.Binding{Table: table, Column: column, Row: row}
		ct, err := box.Encrypt(ctx, b, []byte(plain))
		if err != nil {
			t.Fatal(err)
		}
		want[b] = plain
		return ct
	}
	var serverID, orgID int64
	if err := pool.QueryRow(ctx, `INSERT INTO database_servers (name, admin_url_enc, public_host, public_port) VALUES ('s1', $1, 'h', 5432) RETURNING id`,
		enc("database_servers", "admin_url_enc", "s1", "postgres://admin:pw@h/postgres")).Scan(&serverID); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `INSERT INTO organizations (key, name) VALUES ('o', 'O') RETURNING id`).Scan(&orgID); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 7; i++ {
		opaque := fmt.Sprintf("svi_%026d", i)
		if _, err := pool.Exec(ctx, `INSERT INTO service_integrations (opaque_id, org_id, service, table_name, secret_enc, previous_secret_enc) VALUES ($1, $2, 'stripe', $3, $4, $5)`,
			opaque, orgID, fmt.Sprintf("t%d", i), enc("service_integrations", "secret_enc", opaque, "secret-"+opaque), enc("service_integrations", "previous_secret_enc", opaque, "prev-"+opaque)); err != nil {
			t.Fatal(err)
		}
	}
	id := "crd_" + strings.Repeat("a", 26)
	if _, err := pool.Exec(ctx, `INSERT INTO org_credentials (id, org_id, database_server_id, mode, username, url_enc, lease_id, expires_at, max_expires_at) VALUES ($1, $2, $3, 'postgres', 'u', $4, 'l', now(), now())`,
		id, orgID, serverID, enc("org_credentials", "url_enc", id, "postgres://u:p@h/db")); err != nil {
		t.Fatal(err)
	}
	return want
}

// check reads every encrypted value back, decrypts it with box, and checks its version prefix.
func check(t *testing.T, pool *pgxpool.Pool, box secrets.Box, want map[secrets.Binding]string, prefix string) {
	t.Helper()
	ctx := context.Background()
	for _, c := range secrets.EncryptedColumns() {
		rows, err := pool.Query(ctx, fmt.Sprintf(`SELECT %s::text, %s FROM %s WHERE %s IS NOT NULL`, c.RowKey, c.Column, c.Table, c.Column))
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var row, ct string
			if err := rows.Scan(&row, &ct); err != nil {
				t.Fatal(err)
			}
			b := secrets.Binding{Table: c.Table, Column: c.Column, Row: row}
			if !strings.HasPrefix(ct, prefix) {
				t.Errorf("%s: %q, want prefix %s", b, ct[:min(len(ct), 12)], prefix)
			}
			got, err := box.Decrypt(ctx, b, ct)
			if err != nil || string(got) != want[b] {
				t.Errorf("%s: %q %v, want %q", b, got, err, want[b])
			}
		}
		rows.Close()
	}
}

func TestRotateTransit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewDB(t)
	tr := newTransit(t, vaulttest.Client(t), false)
	want := seed(t, pool, tr)
	var oldCT string
	if err := pool.QueryRow(ctx, `SELECT admin_url_enc FROM database_servers WHERE name = 's1'`).Scan(&oldCT); err != nil {
		t.Fatal(err)
	}
	rep, err := secrets.Rotate(ctx, pool, tr, secrets.RotateOptions{RotateKey: true, BatchSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Version != 2 || rep.MinDecryptionVersion != 2 {
		t.Fatalf("report %+v", rep)
	}
	total := 0
	for _, c := range rep.Columns {
		total += c.Rewrapped
	}
	if total != len(want) {
		t.Fatalf("rewrapped %d of %d values (%+v)", total, len(want), rep.Columns)
	}
	check(t, pool, tr, want, "vault:v2:")
	if _, min, err := tr.KeyVersions(ctx); err != nil || min != 2 {
		t.Fatalf("min_decryption_version %d %v", min, err)
	}
	// A copy of an old ciphertext (a stolen backup, say) no longer decrypts.
	if _, err := tr.Decrypt(ctx, secrets.Binding{Table: "database_servers", Column: "admin_url_enc", Row: "s1"}, oldCT); err == nil {
		t.Fatal("a v1 ciphertext still decrypts after rotation")
	}
	// Running it again without rotating the key is a no-op.
	rep, err = secrets.Rotate(ctx, pool, tr, secrets.RotateOptions{})
	if err != nil || rep.Version != 2 {
		t.Fatalf("second run: %+v %v", rep, err)
	}
	for _, c := range rep.Columns {
		if c.Rewrapped != 0 {
			t.Fatalf("second run rewrapped %+v", c)
		}
	}
}

func TestRotateKeyring(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewDB(t)
	e1, e2 := secrets.NewKeyEntry(1), secrets.NewKeyEntry(2)
	v1, _ := secrets.ParseKeyring(e1)
	want := seed(t, pool, v1)
	// keyring mode cannot rotate the key itself: the operator adds a version.
	if _, err := secrets.Rotate(ctx, pool, v1, secrets.RotateOptions{RotateKey: true}); err == nil {
		t.Fatal("RotateKey with a keyring succeeded")
	}
	both, err := secrets.ParseKeyring(e1 + "," + e2)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := secrets.Rotate(ctx, pool, both, secrets.RotateOptions{BatchSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Version != 2 || rep.MinDecryptionVersion != 0 {
		t.Fatalf("report %+v", rep)
	}
	// The old version can go: a keyring with only v2 reads everything.
	only2, _ := secrets.ParseKeyring(e2)
	check(t, pool, only2, want, "whdb:v2:")
}

func TestRotateMovesKeyringValuesToTransit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewDB(t)
	kr, _ := secrets.ParseKeyring(secrets.NewKeyEntry(1))
	want := seed(t, pool, kr)
	tr := newTransit(t, vaulttest.Client(t), false)
	box := secrets.WithFallback(tr, kr)
	// Before rotation, the fallback reads keyring values.
	check(t, pool, box, want, "whdb:v1:")
	if _, err := secrets.Rotate(ctx, pool, box, secrets.RotateOptions{}); err != nil {
		t.Fatal(err)
	}
	check(t, pool, tr, want, "vault:v1:")
}

func TestRotateRefusesUndeclaredEncryptedColumns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewDB(t)
	tr := newTransit(t, vaulttest.Client(t), false)
	want := seed(t, pool, tr)
	if _, err := pool.Exec(ctx, `CREATE TABLE api_keys (id text PRIMARY KEY, key_enc text)`); err != nil {
		t.Fatal(err)
	}
	if _, err := secrets.Rotate(ctx, pool, tr, secrets.RotateOptions{RotateKey: true}); !errors.Is(err, secrets.ErrUndeclaredColumn) || !strings.Contains(err.Error(), "api_keys.key_enc") {
		t.Fatalf("got %v, want ErrUndeclaredColumn naming api_keys.key_enc", err)
	}
	if latest, min, err := tr.KeyVersions(ctx); err != nil || latest != 1 || min != 1 {
		t.Fatalf("key touched: latest %d min %d %v", latest, min, err)
	}
	check(t, pool, tr, want, "vault:v1:")
}
