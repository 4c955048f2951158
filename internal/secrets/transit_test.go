package secrets_test

import (
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/webhookdb-go/webhookdb/internal/pgtest"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
	"github.com/webhookdb-go/webhookdb/internal/vaulttest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func newTransit(t *testing.T, client *vaultapi.Client, backupable bool) *secrets.Transit {
	t.Helper()
	tr, err := secrets.NewTransit(secrets.TransitConfig{Client: client, Key: "t-" + strings.ToLower(rand.Text()), Backupable: backupable})
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.EnsureKey(context.Background()); err != nil {
		t.Fatal(err)
	}
	return tr
}

func TestTransitRoundTripAndBinding(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tr := newTransit(t, vaulttest.Client(t), false)
	b := secrets.Binding{Table: "service_integrations", Column: "secret_enc", Row: "svi_1"}
	ct, err := tr.Encrypt(ctx, b, []byte("whsec_abc"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(ct, "whsec_abc") || !strings.HasPrefix(ct, "vault:v1:") {
		t.Fatalf("ciphertext %q", ct)
	}
	got, err := tr.Decrypt(ctx, b, ct)
	if err != nil || string(got) != "whsec_abc" {
		t.Fatalf("decrypt: %q %v", got, err)
	}
	for _, other := range []secrets.Binding{
		{Table: "service_integrations", Column: "secret_enc", Row: "svi_2"},
		{Table: "service_integrations", Column: "previous_secret_enc", Row: "svi_1"},
		{Table: "database_servers", Column: "secret_enc", Row: "svi_1"},
	} {
		if _, err := tr.Decrypt(ctx, other, ct); !errors.Is(err, secrets.ErrDecrypt) {
			t.Fatalf("ciphertext moved to %v decrypted: %v", other, err)
		}
	}
	// Empty plaintexts round-trip too.
	ct, err = tr.Encrypt(ctx, b, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := tr.Decrypt(ctx, b, ct); err != nil || len(got) != 0 {
		t.Fatalf("empty: %q %v", got, err)
	}
}

func TestTransitRefusesAKeyThatIsNotDerived(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	client := vaulttest.Client(t)
	name := "plain-" + strings.ToLower(rand.Text())
	if _, err := client.Logical().WriteWithContext(ctx, "transit/keys/"+name, nil); err != nil {
		t.Fatal(err)
	}
	tr, err := secrets.NewTransit(secrets.TransitConfig{Client: client, Key: name})
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.EnsureKey(ctx); !errors.Is(err, secrets.ErrTransitKey) {
		t.Fatalf("EnsureKey on a key without derivation: %v", err)
	}
}

func TestTransitBackupRestore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	client := vaulttest.Client(t)
	tr := newTransit(t, client, true)
	b := secrets.Binding{Table: "t", Column: "c", Row: "1"}
	ct, err := tr.Encrypt(ctx, b, []byte("kept across a restart"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.RotateKey(ctx); err != nil {
		t.Fatal(err)
	}
	ct2, err := tr.Encrypt(ctx, b, []byte("v2"))
	if err != nil {
		t.Fatal(err)
	}
	backup, err := tr.Backup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A restarted dev server has no key: simulate by deleting it.
	name := strings.TrimPrefix(tr.KeyPath(), "transit/keys/")
	if _, err := client.Logical().WriteWithContext(ctx, "transit/keys/"+name+"/config", map[string]any{"deletion_allowed": true}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Logical().DeleteWithContext(ctx, "transit/keys/"+name); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Decrypt(ctx, b, ct); err == nil {
		t.Fatal("decrypted without a key")
	}
	if err := tr.Restore(ctx, backup); err != nil {
		t.Fatal(err)
	}
	for want, c := range map[string]string{"kept across a restart": ct, "v2": ct2} {
		if got, err := tr.Decrypt(ctx, b, c); err != nil || string(got) != want {
			t.Fatalf("after restore: %q %v", got, err)
		}
	}
}
