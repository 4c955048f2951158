package vault_test

import (
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/webhookdb-go/webhookdb/internal/vaulttest"
	"github.com/webhookdb-go/webhookdb/vault"
)

// A token that is not periodic dies at its max TTL with every lease it issued: the keeper refuses it, with a
// message saying how to make a periodic one.
func TestKeeperRefusesANonPeriodicToken(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	root := vaulttest.Client(t)
	s, err := root.Auth().Token().Create(&vaultapi.TokenCreateRequest{Policies: []string{"default"}, TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := root.Clone()
	c.SetToken(s.Auth.ClientToken)
	k := vault.NewTokenKeeper(vault.KeeperConfig{Client: c})
	err = k.Start(ctx)
	if !errors.Is(err, vault.ErrTokenNotPeriodic) {
		t.Fatalf("Start with a non-periodic token: %v", err)
	}
	for _, want := range []string{"vault token create -period=768h -policy=webhookdb", "token_period"} {
		if !contains(err.Error(), want) {
			t.Fatalf("message %q does not say %q", err, want)
		}
	}
}

// A periodic token is renewed for as long as the keeper runs: with a 3s period it outlives several periods,
// and its TTL is exported.
func TestKeeperRenewsAPeriodicToken(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root := vaulttest.Client(t)
	tok, err := vault.CreatePeriodicChild(ctx, root, 3*time.Second, "default")
	if err != nil {
		t.Fatal(err)
	}
	c, _ := root.Clone()
	c.SetToken(tok)
	reg := prometheus.NewRegistry()
	k := vault.NewTokenKeeper(vault.KeeperConfig{Client: c, Registerer: reg, RetryInterval: 100 * time.Millisecond})
	if err := k.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, err := k.Healthy(); !ok {
		t.Fatalf("healthy after start: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- k.Run(ctx) }()
	// Poll until the token has lived well past its period and been renewed a few times.
	start := time.Now()
	deadline := start.Add(30 * time.Second)
	for time.Since(start) < 7*time.Second || metric(t, reg, "webhookdb_vault_token_renewals_total", "ok") < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("renewals: %v", metric(t, reg, "webhookdb_vault_token_renewals_total", "ok"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := vault.LookupSelf(ctx, c); err != nil {
		t.Fatalf("the token died while the keeper ran: %v", err)
	}
	if ttl := metric(t, reg, "webhookdb_vault_token_ttl_seconds", ""); ttl <= 0 || ttl > 3 {
		t.Fatalf("ttl gauge: %v", ttl)
	}
	// Renewal failing (the token revoked behind its back) is reported.
	if err := root.Auth().Token().RevokeTree(tok); err != nil {
		t.Fatal(err)
	}
	for {
		if ok, _ := k.Healthy(); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the keeper still says healthy after its token was revoked")
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	<-done
}

// An AppRole whose tokens are periodic: the keeper logs in, and logs in again when the token is lost.
func TestKeeperLogsInWithAppRole(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	root := vaulttest.Client(t)
	mount := "approle-" + randomSuffix(t)
	if err := root.Sys().EnableAuthWithOptions(mount, &vaultapi.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Logical().Write("auth/"+mount+"/role/webhookdb", map[string]any{"token_period": "1h", "token_policies": "default"}); err != nil {
		t.Fatal(err)
	}
	rid, err := root.Logical().Read("auth/" + mount + "/role/webhookdb/role-id")
	if err != nil {
		t.Fatal(err)
	}
	sid, err := root.Logical().Write("auth/"+mount+"/role/webhookdb/secret-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := root.Clone()
	c.ClearToken()
	ar := &vault.AppRole{RoleID: rid.Data["role_id"].(string), SecretID: sid.Data["secret_id"].(string), Mount: mount}
	k := vault.NewTokenKeeper(vault.KeeperConfig{Client: c, AppRole: ar})
	if err := k.Start(ctx); err != nil {
		t.Fatal(err)
	}
	info, err := vault.LookupSelf(ctx, c)
	if err != nil || info.Period != time.Hour {
		t.Fatalf("logged-in token: %+v, %v", info, err)
	}
	first := c.Token()
	if err := root.Auth().Token().RevokeTree(first); err != nil {
		t.Fatal(err)
	}
	if err := k.Renew(ctx); err != nil {
		t.Fatalf("renewal after the token was revoked: %v", err)
	}
	if c.Token() == first {
		t.Fatal("no new login")
	}
	// Non-periodic AppRole tokens are refused.
	if _, err := root.Logical().Write("auth/"+mount+"/role/webhookdb", map[string]any{"token_period": "0", "token_ttl": "1h"}); err != nil {
		t.Fatal(err)
	}
	c2, _ := root.Clone()
	c2.ClearToken()
	if err := vault.NewTokenKeeper(vault.KeeperConfig{Client: c2, AppRole: ar}).Start(ctx); !errors.Is(err, vault.ErrTokenNotPeriodic) {
		t.Fatalf("non-periodic AppRole token: %v", err)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func randomSuffix(t *testing.T) string { t.Helper(); return strings.ToLower(rand.Text())[:10] }

// metric reads a gauge or counter (with the label value, when given) from reg.
func metric(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" && (len(m.GetLabel()) == 0 || m.GetLabel()[0].GetValue() != label) {
				continue
			}
			if m.Gauge != nil || m.Untyped != nil {
				if m.Untyped != nil {
					return m.GetUntyped().GetValue()
				}
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}
