package cli

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/webhookdb-go/webhookdb/internal/api"
)

const testCAPEM = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n"

// db connection --ca-file saves the server's CA certificate and points the URL's sslrootcert at it, so that
// psql verifies the server (sslmode verify-full) against that CA.
func TestDBConnectionSavesCAFile(t *testing.T) {
	fakeAPI(t, func(*http.Request) any {
		return api.Credential{URL: "postgres://u:p@db.example.com:5432/org_x?sslmode=verify-full", Username: "u", ExpiresAt: time.Now().Add(time.Hour), CACert: testCAPEM}
	})
	path := filepath.Join(t.TempDir(), "ca.pem")
	out, err := runCLI(context.Background(), "db", "connection", "--ca-file", path)
	if err != nil {
		t.Fatal(err)
	}
	saved, err := os.ReadFile(path)
	if err != nil || string(saved) != testCAPEM {
		t.Fatalf("saved CA: %q, %v", saved, err)
	}
	u, err := url.Parse(strings.TrimSpace(out))
	if err != nil {
		t.Fatal(err)
	}
	if u.Query().Get("sslrootcert") != path || u.Query().Get("sslmode") != "verify-full" {
		t.Fatalf("URL %s: want sslrootcert=%s and sslmode verify-full", u.Redacted(), path)
	}
	out, err = runCLI(context.Background(), "db", "roll-credentials", "--yes", "--ca-file", path, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var c api.Credential
	if err := json.Unmarshal([]byte(out), &c); err != nil || !strings.Contains(c.URL, "sslrootcert=") {
		t.Fatalf("roll-credentials -o json: %s, %v", out, err)
	}
}

// A server without a CA certificate has nothing to save: --ca-file says so rather than write an empty file.
func TestDBConnectionCAFileWithoutCA(t *testing.T) {
	fakeAPI(t, func(*http.Request) any {
		return api.Credential{URL: "postgres://u:p@db.example.com:5432/org_x?sslmode=require", Username: "u"}
	})
	path := filepath.Join(t.TempDir(), "ca.pem")
	if _, err := runCLI(context.Background(), "db", "connection", "--ca-file", path); err == nil || !strings.Contains(err.Error(), "no CA certificate") {
		t.Fatalf("err %v; want no CA certificate", err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("a CA file was written: %v", err)
	}
}

// servers add sends the CA file's PEM and no sslmode unless one is given (the server picks require, or disable
// for loopback).
func TestServersAddSendsCAFile(t *testing.T) {
	var got api.ServerRegistration
	fakeAPI(t, func(r *http.Request) any {
		if r.URL.Path == "/v1/admin/servers" {
			b, _ := io.ReadAll(r.Body)
			_ = json.Unmarshal(b, &got)
		}
		return api.ServerEnvelope{Server: api.ServerView{Name: "pg2", SSLMode: "verify-full", CACert: true}}
	})
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, []byte(testCAPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := runCLI(context.Background(), "servers", "add", "pg2", "--admin-url", "postgres://x", "--public-host", "db.example.com", "--sslmode", "verify-full", "--ca-file", path); err != nil {
		t.Fatal(err)
	}
	if got.SSLMode != "verify-full" || got.CACert != testCAPEM || got.PublicHost != "db.example.com" {
		t.Fatalf("sent %+v", got)
	}
	if _, err := runCLI(context.Background(), "servers", "add", "pg2", "--admin-url", "postgres://x", "--public-host", "db.example.com"); err != nil {
		t.Fatal(err)
	}
	if got.SSLMode != "" || got.CACert != "" {
		t.Fatalf("without flags, sent sslmode %q and a CA: want neither (the server chooses)", got.SSLMode)
	}
}
