package migrate_test

import (
	"context"
	"database/sql"
	"io/fs"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/webhookdb-go/webhookdb/internal/migrate"
	"github.com/webhookdb-go/webhookdb/internal/pgtest"
	schema "github.com/webhookdb-go/webhookdb/sql"
)

// Migration 00043 moves servers registered with a downgradable sslmode to require (disable on a loopback
// host, where no network attacker sits between client and server), and keeps orgs named from their keys
// (name_base NULL) until rename-org-databases moves them.
func TestOpaqueNamesMigrationMovesDowngradableSSLModes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.NewEmptyDBURL(t, pgtest.Cluster(t))
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	db := stdlib.OpenDB(*cfg)
	defer db.Close()
	migrations, err := fs.Sub(schema.Migrations, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	provider, err := goose.NewProvider(goose.DialectPostgres, db, migrations, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := provider.UpTo(ctx, 42); err != nil {
		t.Fatal(err)
	}
	for _, row := range [][3]string{
		{"remote", "db.example.com", "prefer"}, {"remote_allow", "10.0.0.1", "allow"}, {"local", "127.0.0.1", "prefer"},
		{"named_local", "localhost", "prefer"}, {"v6_local", "::1", "allow"}, {"verified", "db2.example.com", "verify-full"},
		{"plain_local", "127.0.0.1", "disable"},
	} {
		if _, err := db.ExecContext(ctx, `INSERT INTO database_servers (name, admin_url_enc, public_host, public_port, sslmode) VALUES ($1, 'x', $2, 5432, $3)`,
			row[0], row[1], row[2]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO organizations (key, name) VALUES ('old_org', 'Old')`); err != nil {
		t.Fatal(err)
	}
	if _, err := migrate.Up(ctx, url, nil); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"remote": "require", "remote_allow": "require", "local": "disable", "named_local": "disable", "v6_local": "disable", "verified": "verify-full", "plain_local": "disable"}
	rows, err := db.QueryContext(ctx, `SELECT name, sslmode FROM database_servers`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var name, mode string
		if err := rows.Scan(&name, &mode); err != nil {
			t.Fatal(err)
		}
		if want[name] != mode {
			t.Errorf("server %s: sslmode %s, want %s", name, mode, want[name])
		}
	}
	var base sql.NullString
	if err := db.QueryRowContext(ctx, `SELECT name_base FROM organizations WHERE key = 'old_org'`).Scan(&base); err != nil || base.Valid {
		t.Fatalf("an existing org's name base: %v, %v; want NULL (named from its key until renamed)", base, err)
	}
	if _, err := db.ExecContext(ctx, `UPDATE database_servers SET sslmode = 'prefer' WHERE name = 'remote'`); err == nil {
		t.Error("sslmode prefer is accepted after the migration")
	}
}
