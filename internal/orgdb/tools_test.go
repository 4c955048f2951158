package orgdb_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/internal/orgdb"
	"github.com/webhookdb-go/webhookdb/internal/pgcluster"
	"github.com/webhookdb-go/webhookdb/pgroles"
)

// Standard tools work with an issued read-only URL: pg_dump of the whole org database (sequences and the
// meta schema included), psql's \d+ and \copy, and a driver's catalog queries.
func TestStandardToolsWithReadOnlyURL(t *testing.T) {
	t.Parallel()
	bin, err := pgcluster.FindBinDir()
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			e := newEnv(t, mode, envOptions{policy: pgroles.LoginPolicy{TTL: time.Hour, MaxTTL: 2 * time.Hour}})
			o := e.newOrg("tools_" + mode[:2])
			c := e.clusterOf(o)
			// A table the owner creates after provisioning, as the fanout does, with a sequence, and an applied position.
			asOwner(t, c, o, `CREATE TABLE stripe_charge_v1 (pk bigserial PRIMARY KEY, stripe_id text UNIQUE, amount int);
				INSERT INTO stripe_charge_v1 (stripe_id, amount) VALUES ('ch_dumped_1', 4200), ('ch_dumped_2', 99);
				INSERT INTO `+pgroles.MetaSchema+`.`+pgroles.AppliedTable+` (source, commit_lsn, seq) VALUES ('app', '0/10', 0)`)
			cred, err := e.svc.Connection(ctx, o.ID)
			if err != nil {
				t.Fatal(err)
			}
			run := func(name string, args ...string) string {
				t.Helper()
				out, err := exec.CommandContext(ctx, filepath.Join(bin, name), args...).CombinedOutput()
				if err != nil {
					t.Fatalf("%s %s: %v\n%s", name, strings.Join(args[1:], " "), err, out)
				}
				return string(out)
			}
			dump := run("pg_dump", "--dbname="+cred.URL, "--no-password")
			for _, want := range []string{"ch_dumped_1\t4200", "ch_dumped_2\t99", "stripe_charge_v1_pk_seq", "CREATE TABLE public.stripe_charge_v1"} {
				if !strings.Contains(dump, want) {
					t.Errorf("pg_dump output lacks %q", want)
				}
			}
			if d := run("psql", cred.URL, "-X", "-c", `\d+ stripe_charge_v1`); !strings.Contains(d, "nextval('stripe_charge_v1_pk_seq'") {
				t.Errorf(`\d+: %s`, d)
			}
			if d := run("psql", cred.URL, "-X", "-c", `\copy stripe_charge_v1 (stripe_id, amount) to stdout`); !strings.Contains(d, "ch_dumped_2\t99") {
				t.Errorf(`\copy: %s`, d)
			}
			conn := connectURL(t, cred.URL)
			var lastValue int64
			var seq string
			if err := conn.QueryRow(ctx, `SELECT pg_get_serial_sequence('stripe_charge_v1', 'pk'), (SELECT last_value FROM stripe_charge_v1_pk_seq)`).Scan(&seq, &lastValue); err != nil || lastValue != 2 {
				t.Fatalf("sequence: %s %d %v", seq, lastValue, err)
			}
			var cols int
			if err := conn.QueryRow(ctx, `SELECT count(*) FROM information_schema.columns WHERE table_name = 'stripe_charge_v1'`).Scan(&cols); err != nil || cols != 3 {
				t.Fatalf("information_schema.columns: %d %v", cols, err)
			}
			// Readable is all: the meta schema and the sequences stay the owner's.
			if _, err := conn.Exec(ctx, `SELECT nextval('stripe_charge_v1_pk_seq')`); err == nil {
				t.Fatal("nextval succeeded")
			}
		})
	}
}

// connectURL connects with a read-only URL, closed when the test ends.
func connectURL(t *testing.T, rawURL string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), rawURL)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// An org provisioned before a provisioning step existed (here: the read grants standard tools need, and the
// fanout login's own grants) gets it from the maintenance pass, which re-provisions every ready org whose
// recorded steps lack one.
func TestMaintainRepairsOrgsMissingNewSteps(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, orgdb.ModePostgres, envOptions{})
	o := e.newOrg("repair_grants")
	c := e.clusterOf(o)
	asOwner(t, c, o, `CREATE TABLE t (pk bigserial PRIMARY KEY)`)
	// What an org provisioned by an older version looks like: no sequence grants, no meta schema access, and
	// no read_grants step recorded.
	admin, err := c.Connect(ctx, *o.DatabaseName)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	ro, owner := pgx.Identifier{pgroles.ReadonlyRole(o.NameBase)}.Sanitize(), pgx.Identifier{pgroles.OwnerRole(o.NameBase)}.Sanitize()
	fanout := pgx.Identifier{pgroles.FanoutRole}.Sanitize()
	if _, err := admin.Exec(ctx, `REVOKE SELECT ON ALL SEQUENCES IN SCHEMA public FROM `+ro+`;
		ALTER DEFAULT PRIVILEGES FOR ROLE `+owner+` IN SCHEMA public REVOKE SELECT ON SEQUENCES FROM `+ro+`;
		REVOKE USAGE ON SCHEMA `+pgroles.MetaSchema+` FROM `+ro+`;
		REVOKE ALL ON ALL TABLES IN SCHEMA public FROM `+fanout+`;
		ALTER DEFAULT PRIVILEGES FOR ROLE `+owner+` IN SCHEMA public REVOKE ALL ON TABLES FROM `+fanout); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(ctx, `UPDATE org_provisioning SET steps_done = array_remove(array_remove(steps_done, 'read_grants'), 'writer_grants') WHERE org_id = $1`, o.ID); err != nil {
		t.Fatal(err)
	}
	readable := func() bool {
		var ok bool
		// the fanout's login checked on its own grants: without membership in the owner role
		if err := admin.QueryRow(ctx, `SELECT has_sequence_privilege($1, 'public.t_pk_seq', 'SELECT') AND has_schema_privilege($1, $2, 'USAGE')
			AND (SELECT bool_or(a.grantee = (SELECT oid FROM pg_roles WHERE rolname = $3) AND a.privilege_type = 'INSERT')
			     FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = 'public.t'::regclass)`,
			pgroles.ReadonlyRole(o.NameBase), pgroles.MetaSchema, pgroles.FanoutRole).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if readable() {
		t.Fatal("the grants are still there")
	}
	res, err := e.svc.Maintain(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Repaired < 1 || !readable() {
		t.Fatalf("after maintenance: %+v, readable %v", res, readable())
	}
	if done, _, err := e.svc.ProvisioningSteps(ctx, o.ID); err != nil || !slices.Contains(done, string(pgroles.StepReadGrants)) || !slices.Contains(done, string(pgroles.StepWriterGrants)) {
		t.Fatalf("recorded steps %v (%v)", done, err)
	}
}
