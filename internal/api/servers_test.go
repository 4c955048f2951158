package api_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/webhookdb-go/webhookdb/internal/api"
)

// registry accepts require and refuses prefer as the real one does, choosing require when none is given.
type registry struct {
	mu  sync.Mutex
	got []api.ServerRegistration
}

func (r *registry) received() []api.ServerRegistration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

func (r *registry) RegisterServer(_ context.Context, reg api.ServerRegistration) (string, error) {
	r.mu.Lock()
	r.got = append(r.got, reg)
	r.mu.Unlock()
	switch reg.SSLMode {
	case "":
		return "require", nil
	case "prefer":
		return "", fmt.Errorf("%w: prefer can be downgraded", api.ErrInvalidSSLMode)
	}
	return reg.SSLMode, nil
}

// POST /admin/servers passes no sslmode of its own (the registry chooses), answers with the one chosen, and
// reports a refused sslmode on the sslmode field, not the admin URL.
func TestAddServerSSLMode(t *testing.T) {
	t.Parallel()
	reg := &registry{}
	f := newFixtureWith(t, func(cfg *api.Config) { cfg.Servers = reg }, nil)
	admin := f.user("root@x.example", true)
	body := map[string]any{"name": "pg2", "admin_url": "postgres://x", "public_host": "db.example.com", "public_port": 5432}
	out := f.must(admin, "POST", "/v1/admin/servers", body, 201)
	if s, _ := out["server"].(map[string]any); s["sslmode"] != "require" || len(reg.received()) != 1 || reg.received()[0].SSLMode != "" {
		t.Fatalf("answer %v, registry got %+v; want sslmode require chosen by the registry", out, reg.received())
	}
	body["sslmode"], body["ca_cert"] = "prefer", "PEM"
	out = f.must(admin, "POST", "/v1/admin/servers", body, 422)
	if e, _ := out["error"].(map[string]any); e["field"] != "sslmode" || reg.received()[1].CACert != "PEM" {
		t.Fatalf("answer %v; want an invalid sslmode", out)
	}
}

// A credential with a CA certificate connects with that CA as the only root.
func TestReadOnlyConnConfigUsesServerCA(t *testing.T) {
	t.Parallel()
	c := &api.Credential{URL: "postgres://u:p@db.example.com:5432/org_x?sslmode=verify-full", CACert: testCA(t)}
	cfg, err := api.ReadOnlyConnConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TLSConfig == nil || cfg.TLSConfig.RootCAs == nil || cfg.TLSConfig.ServerName != "db.example.com" {
		t.Fatalf("TLS config %+v: want the server's CA as root", cfg.TLSConfig)
	}
	c.CACert = "not PEM"
	if _, err := api.ReadOnlyConnConfig(c); err == nil {
		t.Fatal("a CA certificate that does not parse was accepted")
	}
}

func testCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}
