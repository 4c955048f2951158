package orgdb_test

import (
	"context"
	"testing"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/internal/orgdb"
	"github.com/webhookdb-go/webhookdb/internal/pgcluster"
	"github.com/webhookdb-go/webhookdb/internal/pgerr"
	"github.com/webhookdb-go/webhookdb/internal/pgtest"
	"github.com/webhookdb-go/webhookdb/vault"
)

// The fanout writes as webhookdb_fanout through the org's owner role; users' read-only credentials see what
// it writes; a rotation leaves open connections alone and new ones use the new password.
func TestFanoutWriterCredentials(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			var opts envOptions
			if mode == orgdb.ModePostgres {
				// webhookdb_fanout is one role per server: setting its password here would break the Vault
				// static role of the shared servers.
				opts.clusters = []*pgcluster.Cluster{pgtest.NewCluster(t)}
			}
			e := newEnv(t, mode, opts)
			o := e.newOrg("wr_" + mode[:2])
			connString, owner, err := e.svc.WriterConnString(ctx, o.ID)
			if err != nil {
				t.Fatal(err)
			}
			w, err := pgx.Connect(ctx, connString)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close(ctx)
			var super bool
			if err := w.QueryRow(ctx, `SELECT rolsuper FROM pg_roles WHERE rolname = session_user`).Scan(&super); err != nil || super {
				t.Fatalf("fanout is superuser=%v (%v)", super, err)
			}
			if _, err := w.Exec(ctx, "SET ROLE "+pgx.Identifier{owner}.Sanitize()+"; CREATE TABLE charges (id text PRIMARY KEY); INSERT INTO charges VALUES ('ch_1')"); err != nil {
				t.Fatalf("fanout cannot write: %v", err)
			}
			cred, err := e.svc.Connection(ctx, o.ID)
			if err != nil {
				t.Fatal(err)
			}
			r, err := pgx.Connect(ctx, cred.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close(ctx)
			var id string
			if err := r.QueryRow(ctx, `SELECT id FROM charges`).Scan(&id); err != nil || id != "ch_1" {
				t.Fatalf("reader: %q %v", id, err)
			}
			// Rotate.
			switch mode {
			case orgdb.ModePostgres:
				if _, err := e.svc.RotateWriter(ctx, *o.ServerID); err != nil {
					t.Fatal(err)
				}
			case orgdb.ModeVault:
				if err := e.issuer.(*vault.Issuer).RotateFanout(ctx, serverName(e.clusterOf(o))); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := w.Exec(ctx, "INSERT INTO charges VALUES ('ch_2')"); err != nil {
				t.Fatalf("open fanout connection broke on rotation: %v", err)
			}
			if c, err := pgx.Connect(ctx, connString); err == nil {
				c.Close(ctx)
				t.Fatal("the old fanout password still logs in")
			}
			fresh, _, err := e.svc.WriterConnString(ctx, o.ID)
			if err != nil {
				t.Fatal(err)
			}
			c, err := pgx.Connect(ctx, fresh)
			if err != nil {
				t.Fatalf("new fanout password: %v", err)
			}
			c.Close(ctx)
		})
	}
}

// Many concurrent first `db connection` calls issue one credential, not one each.
func TestConcurrentFirstConnectionIssuesOnce(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			e := newEnv(t, mode, envOptions{})
			o := e.newOrg("conc_" + mode[:2])
			urls := make(chan string, 8)
			errs := make(chan error, 8)
			for range 8 {
				go func() {
					c, err := e.svc.Connection(ctx, o.ID)
					if err != nil {
						errs <- err
						return
					}
					urls <- c.URL
				}()
			}
			var first string
			for range 8 {
				select {
				case err := <-errs:
					t.Fatal(err)
				case u := <-urls:
					if first == "" {
						first = u
					} else if u != first {
						t.Fatal("concurrent calls got different credentials")
					}
				}
			}
			var n int
			if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM org_credentials WHERE org_id = $1`, o.ID).Scan(&n); err != nil || n != 1 {
				t.Fatalf("%d credentials issued (%v)", n, err)
			}
		})
	}
}

// A rotation cut short between ALTER ROLE and the store (a process killed there) leaves the server with a
// password nobody holds; RepairWriter sets the stored one again, and the stored connection string logs in.
// Concurrent first calls on a new server agree on one password instead of each rotating it again.
func TestRepairWriterAfterCutRotation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cluster := pgtest.NewCluster(t)
	e := newEnv(t, orgdb.ModePostgres, envOptions{clusters: []*pgcluster.Cluster{cluster}})
	o := e.newOrg("repair_wr")

	type result struct {
		conn string
		err  error
	}
	results := make(chan result, 8)
	for range 8 {
		go func() {
			c, _, err := e.svc.WriterConnString(ctx, o.ID)
			results <- result{c, err}
		}()
	}
	var connString string
	for range 8 {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		if connString == "" {
			connString = r.conn
		} else if r.conn != connString {
			t.Fatal("concurrent first calls handed out different fanout passwords")
		}
	}
	login := func() error {
		c, err := pgx.Connect(ctx, connString)
		if err == nil {
			c.Close(ctx)
		}
		return err
	}
	if err := login(); err != nil {
		t.Fatalf("the fanout password handed out does not log in: %v", err)
	}

	admin, err := pgx.Connect(ctx, cluster.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, `ALTER ROLE webhookdb_fanout PASSWORD 'set-by-a-rotation-that-never-stored-it'`); err != nil {
		t.Fatal(err)
	}
	if err := login(); pgerr.Code(err) != pgerrcode.InvalidPassword {
		t.Fatalf("after the cut rotation the login gave %v, want SQLSTATE 28P01", err)
	}
	if err := e.svc.RepairWriter(ctx, o.ID); err != nil {
		t.Fatal(err)
	}
	if err := login(); err != nil {
		t.Fatalf("the stored password does not log in after the repair: %v", err)
	}
	again, _, err := e.svc.WriterConnString(ctx, o.ID)
	if err != nil || again != connString {
		t.Fatalf("the repair changed the stored credential (%v)", err)
	}
}
