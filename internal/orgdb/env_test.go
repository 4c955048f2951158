package orgdb_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/webhookdb-go/webhookdb/internal/orgdb"
	"github.com/webhookdb-go/webhookdb/internal/pgcluster"
	"github.com/webhookdb-go/webhookdb/internal/pgtest"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
	"github.com/webhookdb-go/webhookdb/internal/vaulttest"
	"github.com/webhookdb-go/webhookdb/pgroles"
	"github.com/webhookdb-go/webhookdb/vault"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var modes = []string{orgdb.ModePostgres, orgdb.ModeVault}

var (
	secondOnce sync.Once
	second     *pgcluster.Cluster
)

// secondCluster is the package's second database server (the first is pgtest.Cluster, which also holds the
// application databases).
func secondCluster(t *testing.T) *pgcluster.Cluster {
	t.Helper()
	secondOnce.Do(func() { second = pgtest.NewCluster(t) })
	if second == nil {
		t.Fatal("second cluster did not start")
	}
	return second
}

// env is an application database with two registered database servers, in one credential mode.
type env struct {
	t        *testing.T
	mode     string
	appURL   string
	pool     *pgxpool.Pool
	svc      *orgdb.Service
	box      secrets.Rotator
	clusters []*pgcluster.Cluster
	servers  []*orgdb.ServerInfo
	issuer   orgdb.Issuer

	mu        sync.Mutex
	crashAt   map[int64]string
	errCrash  error
	transitOK bool
}

type envOptions struct {
	// clusters replaces the two shared servers (a test that changes server-wide state of its own).
	clusters    []*pgcluster.Cluster
	policy      pgroles.LoginPolicy
	renewBefore int // seconds; 0 = default
	// wrapIssuer, when set, wraps the mode's issuer (fault injection).
	wrapIssuer func(orgdb.Issuer) orgdb.Issuer
}

func newEnv(t *testing.T, mode string, opts envOptions) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{t: t, mode: mode, crashAt: map[int64]string{}, errCrash: fmt.Errorf("simulated crash")}
	e.clusters = opts.clusters
	if e.clusters == nil {
		e.clusters = []*pgcluster.Cluster{pgtest.Cluster(t), secondCluster(t)}
	}
	e.appURL = pgtest.NewDBURL(t)
	pool, err := pgxpool.New(ctx, e.appURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	e.pool = pool
	switch mode {
	case orgdb.ModePostgres:
		kr, err := secrets.ParseKeyring(secrets.NewKeyEntry(1))
		if err != nil {
			t.Fatal(err)
		}
		e.box = kr
		if e.issuer, err = orgdb.NewPostgresIssuer(opts.policy); err != nil {
			t.Fatal(err)
		}
	case orgdb.ModeVault:
		client := vaulttest.Client(t)
		tr, err := secrets.NewTransit(secrets.TransitConfig{Client: client, Key: "test-" + strings.ToLower(rand.Text())})
		if err != nil {
			t.Fatal(err)
		}
		if err := tr.EnsureKey(ctx); err != nil {
			t.Fatal(err)
		}
		e.box = tr
		if e.issuer, err = vault.NewIssuer(vault.Config{Client: client, Policy: opts.policy}); err != nil {
			t.Fatal(err)
		}
	}
	if opts.wrapIssuer != nil {
		e.issuer = opts.wrapIssuer(e.issuer)
	}
	cfg := orgdb.Config{
		Issuer: e.issuer,
		Box:    e.box,
		AfterStep: func(_ context.Context, orgID int64, step string) error {
			e.mu.Lock()
			defer e.mu.Unlock()
			if e.crashAt[orgID] == step {
				delete(e.crashAt, orgID)
				return e.errCrash
			}
			return nil
		},
	}
	if opts.renewBefore > 0 {
		cfg.RenewBefore = secondsDuration(opts.renewBefore)
	}
	e.svc, err = orgdb.New(pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range e.clusters {
		info, err := e.svc.RegisterServer(ctx, orgdb.ServerSpec{
			Name: serverName(c), AdminURL: c.URL("postgres"), PublicHost: "127.0.0.1", PublicPort: c.Port, SSLMode: "disable",
		})
		if err != nil {
			t.Fatalf("registering %s: %v", serverName(c), err)
		}
		e.servers = append(e.servers, info)
	}
	return e
}

// serverName is the same for a cluster in every test, so that Vault-mode tests share one Vault connection
// per cluster (the cluster has one webhookdb_vault role, whose password only that connection knows).
func serverName(c *pgcluster.Cluster) string { return fmt.Sprintf("pg%d", c.Port) }

// newOrg creates and provisions an org, deleted when the test ends.
func (e *env) newOrg(key string) *orgdb.Org {
	e.t.Helper()
	ctx := context.Background()
	o, err := e.svc.CreateOrg(ctx, key, "Org "+key)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		if err := e.svc.DeleteOrg(context.Background(), o.ID); err != nil {
			e.t.Logf("deleting org %s: %v", key, err)
		}
	})
	o, err = e.svc.ProvisionOrg(ctx, o.ID)
	if err != nil {
		e.t.Fatalf("provisioning %s: %v", key, err)
	}
	return o
}

// clusterOf returns the cluster an org lives on.
func (e *env) clusterOf(o *orgdb.Org) *pgcluster.Cluster {
	for i, s := range e.servers {
		if o.ServerID != nil && s.ID == *o.ServerID {
			return e.clusters[i]
		}
	}
	e.t.Fatalf("org %s is on no known server", o.Key)
	return nil
}
