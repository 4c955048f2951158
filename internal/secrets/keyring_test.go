package secrets

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestKeyringRoundTripAndBinding(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	k1, err := ParseKeyring(NewKeyEntry(1))
	if err != nil {
		t.Fatal(err)
	}
	b := Binding{Table: "service_integrations", Column: "secret_enc", Row: "svi_1"}
	ct, err := k1.Encrypt(ctx, b, []byte("whsec_abc"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(ct, "whsec_abc") || !strings.HasPrefix(ct, "whdb:v1:") {
		t.Fatalf("ciphertext %q", ct)
	}
	got, err := k1.Decrypt(ctx, b, ct)
	if err != nil || string(got) != "whsec_abc" {
		t.Fatalf("decrypt: %q %v", got, err)
	}
	for _, other := range []Binding{
		{Table: "service_integrations", Column: "secret_enc", Row: "svi_2"},
		{Table: "service_integrations", Column: "previous_secret_enc", Row: "svi_1"},
		{Table: "database_servers", Column: "secret_enc", Row: "svi_1"},
	} {
		if _, err := k1.Decrypt(ctx, other, ct); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("ciphertext moved to %v decrypted: %v", other, err)
		}
	}
}

func TestKeyringRotation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e1, e2 := NewKeyEntry(1), NewKeyEntry(2)
	old, _ := ParseKeyring(e1)
	both, err := ParseKeyring(e1 + "\n" + e2)
	if err != nil {
		t.Fatal(err)
	}
	b := Binding{Table: "t", Column: "c", Row: "1"}
	ct, _ := old.Encrypt(ctx, b, []byte("s"))
	if got, err := both.Decrypt(ctx, b, ct); err != nil || string(got) != "s" {
		t.Fatalf("old ciphertext under rotated ring: %q %v", got, err)
	}
	ct2, _ := both.Encrypt(ctx, b, []byte("s"))
	if v, _ := both.KeyVersion(ct2); v != 2 {
		t.Fatalf("new ciphertext uses v%d", v)
	}
	if _, err := old.Decrypt(ctx, b, ct2); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("v2 ciphertext opened by v1-only ring: %v", err)
	}
}

func TestParseKeyringErrors(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"", "nokey", "0:" + strings.Repeat("A", 44), "1:short", "x:abc", NewKeyEntry(1) + "," + NewKeyEntry(1)} {
		if _, err := ParseKeyring(bad); !errors.Is(err, ErrKeyringInvalid) {
			t.Errorf("ParseKeyring(%q) = %v, want ErrKeyringInvalid", bad, err)
		}
	}
}
