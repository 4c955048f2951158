package main_test

import (
	"context"
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"github.com/webhookdb-go/webhookdb/internal/api"
	"github.com/webhookdb-go/webhookdb/pgroles"
)

// The upgrade step: an org named from its key (as every org was before opaque names) is moved by
// `webhookdb admin rename-org-databases` while serve runs. Its data stays, new webhooks keep arriving, the next
// `db connection` is a login under the new names, and a second run has nothing to do.
func TestAdminRenameOrgDatabases(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tp := newTopology(t, "rename_slot")
	tp.start("serve", nil, "serve", "--log-level", "warn")
	waitHTTP(t, "http://"+tp.listen+"/healthz")
	orgDB, webhookURL := tp.setup()
	tp.send(webhookURL, "ch_before", 100)
	waitAmount(t, orgDB, "ch_before", 100)
	_ = orgDB.Close(ctx)

	// Make the org look provisioned before opaque names: named from its key.
	appDB := connect(t, tp.appURL)
	var base string
	if err := appDB.QueryRow(ctx, `SELECT name_base FROM organizations WHERE key = 'acme'`).Scan(&base); err != nil || !pgroles.IsOpaqueNameBase(base) {
		t.Fatalf("a new org's name base: %q, %v", base, err)
	}
	if err := pgroles.RenameOrg(ctx, tp.cluster.URL("postgres"), base, "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := appDB.Exec(ctx, `UPDATE organizations SET name_base = NULL, database_name = 'org_acme' WHERE key = 'acme'`); err != nil {
		t.Fatal(err)
	}
	var before api.Credential
	if err := json.Unmarshal([]byte(tp.cli("db", "connection", "-o", "json")), &before); err != nil || !strings.Contains(before.Username, "acme") {
		t.Fatalf("legacy login %q, %v", before.Username, err)
	}

	if out := tp.cli("admin", "rename-org-databases"); !strings.Contains(out, "1 orgs renamed, 0 failed") {
		t.Fatalf("rename-org-databases: %s", out)
	}
	var after api.Credential
	if err := json.Unmarshal([]byte(tp.cli("db", "connection", "-o", "json")), &after); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(after.URL)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(after.Username, "acme") || strings.Contains(u.Path, "acme") {
		t.Fatalf("after the rename: user %s, database %s", after.Username, u.Path)
	}
	renamed := connect(t, after.URL)
	waitAmount(t, renamed, "ch_before", 100)
	tp.send(webhookURL, "ch_after", 200)
	waitAmount(t, renamed, "ch_after", 200)
	if out := tp.cli("admin", "rename-org-databases"); !strings.Contains(out, "0 orgs renamed, 0 failed") {
		t.Fatalf("second run: %s", out)
	}
}
