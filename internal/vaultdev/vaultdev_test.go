package vaultdev_test

import (
	"context"
	"testing"

	"github.com/webhookdb-go/webhookdb/internal/pgtest"
	"github.com/webhookdb-go/webhookdb/internal/vaultdev"
	"github.com/webhookdb-go/webhookdb/internal/vaulttest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestDevServerHasEngines(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	client := vaulttest.Client(t)
	mounts, err := client.Sys().ListMountsWithContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for path, typ := range vaultdev.Engines {
		m, ok := mounts[path+"/"]
		if !ok || m.Type != typ {
			t.Fatalf("mount %s/: %+v, want type %s", path, m, typ)
		}
	}
	// Mounting again is a no-op, not an error.
	if err := vaultdev.EnableEngines(ctx, client); err != nil {
		t.Fatal(err)
	}
	// transit really works: encrypt and decrypt a value.
	if _, err := client.Logical().WriteWithContext(ctx, "transit/keys/vaultdev-test", nil); err != nil {
		t.Fatal(err)
	}
	enc, err := client.Logical().WriteWithContext(ctx, "transit/encrypt/vaultdev-test", map[string]any{"plaintext": "aGVsbG8="})
	if err != nil {
		t.Fatal(err)
	}
	dec, err := client.Logical().WriteWithContext(ctx, "transit/decrypt/vaultdev-test", map[string]any{"ciphertext": enc.Data["ciphertext"]})
	if err != nil {
		t.Fatal(err)
	}
	if dec.Data["plaintext"] != "aGVsbG8=" {
		t.Fatalf("round trip: %v", dec.Data["plaintext"])
	}
}
