// Package vaulttest shares one real Vault dev server among the tests of a binary. It is started on first use
// and stopped when pgtest.Main finishes; a test that needs Vault fails, never skips, when bin/vault is missing.
package vaulttest

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/webhookdb-go/webhookdb/internal/pgtest"
	"github.com/webhookdb-go/webhookdb/internal/vaultdev"
)

var (
	once   sync.Once
	server *vaultdev.Server
	err    error
)

// Server returns the binary's shared Vault dev server, starting it on first use.
func Server(t testing.TB) *vaultdev.Server {
	t.Helper()
	once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		server, err = vaultdev.Start(ctx, vaultdev.Config{
			Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		})
		if err == nil {
			pgtest.AtExit(func() { _ = server.Stop() })
		}
	})
	if err != nil {
		t.Fatalf("vaulttest: cannot start Vault: %v", err)
	}
	return server
}

// Client returns a root-token client of the shared server.
func Client(t testing.TB) *vaultapi.Client {
	t.Helper()
	c, err := Server(t).Client()
	if err != nil {
		t.Fatal(err)
	}
	return c
}
