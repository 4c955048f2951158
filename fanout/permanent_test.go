package fanout_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/webhookdb-go/webhookdb/fanout"
	"github.com/webhookdb-go/webhookdb/internal/integrations"
	"github.com/webhookdb-go/webhookdb/internal/pgtest"
	"github.com/webhookdb-go/webhookdb/internal/staging"
	"github.com/webhookdb-go/webhookdb/pgroles"
)

func randomBase64(n int) string {
	b := make([]byte, n*3/4)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// failedOf lists an org's failed changes.
func failedOf(t *testing.T, e *env, orgID int64) []fanout.ChangeError {
	t.Helper()
	list, err := fanout.ListErrors(context.Background(), e.pool, orgID, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []fanout.ChangeError
	for _, c := range list {
		if c.Kind == "failed" {
			out = append(out, c)
		}
	}
	return out
}

func countRows(t *testing.T, e *env, o *org, where string) func() (bool, int, error) {
	db := e.orgDB(o)
	return func() (bool, int, error) {
		var n int
		err := db.QueryRow(context.Background(), `SELECT count(*) FROM json_v1 WHERE `+where).Scan(&n)
		return true, n, err
	}
}

// A delivery whose remote key is 3.2 KB of random base64 (too long for a btree index entry) fails with a clear
// reason, and the org's next, ordinary delivery is applied.
func TestUnindexableKeyFailsAndDoesNotBlockTheOrg(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	o := e.org(nil)
	in := e.integration(o, "json_v1", `{"remote_key_path":"id"}`)
	e.start(e.config())
	e.stage(staged{in: in, body: []byte(`{"id":"first"}`)})
	e.stage(staged{in: in, body: fmt.Appendf(nil, `{"id":%q}`, randomBase64(3200))})
	e.stage(staged{in: in, body: []byte(`{"id":"later"}`)})
	rows := countRows(t, e, o, `remote_key IN ('first', 'later')`)
	eventually(t, 15*time.Second, "the later ordinary delivery", func() (bool, error) {
		_, n, err := rows()
		return n == 2, err
	})
	eventually(t, 5*time.Second, "the long key listed as failed", func() (bool, error) {
		f := failedOf(t, e, o.id)
		return len(f) == 1 && strings.Contains(f[0].Error, "longer than 2000") && f[0].ID != nil, nil
	})
	var parked int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM fanout.parked_changes`).Scan(&parked); err != nil || parked != 0 {
		t.Fatalf("%d parked (%v)", parked, err)
	}
}

// makeNarrow gives the org's json_v1 table a smallint column generated from data->>'n', as an org owner may:
// a row whose n does not fit is refused by the org database with numeric_value_out_of_range (22003).
func makeNarrow(t *testing.T, e *env, o *org) {
	t.Helper()
	ctx := context.Background()
	db := e.orgDB(o)
	if _, err := db.Exec(ctx, `SET ROLE `+pgroles.OwnerRole(o.key)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(ctx, `ALTER TABLE json_v1 ADD COLUMN n smallint GENERATED ALWAYS AS ((data->>'n')::smallint) STORED`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(ctx, `RESET ROLE`); err != nil {
		t.Fatal(err)
	}
}

// An out-of-range value in one row of a multi-row org transaction fails only that row: the others of the same
// staging transaction are applied, and so are later ones.
func TestOutOfRangeValueFailsOnlyItsRow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	o := e.org(nil)
	in := e.integration(o, "json_v1", `{"remote_key_path":"id"}`)
	e.start(e.config())
	e.stage(staged{in: in, body: []byte(`{"id":"setup","n":1}`)})
	rows := countRows(t, e, o, `true`)
	eventually(t, 10*time.Second, "the org's table", func() (bool, error) {
		_, n, err := rows()
		return n == 1, err
	})
	makeNarrow(t, e, o)

	var batch []staged
	for i := range 20 {
		n := i
		if i == 13 {
			n = 100000 // too big for smallint
		}
		batch = append(batch, staged{in: in, body: fmt.Appendf(nil, `{"id":"r%d","n":%d}`, i, n)})
	}
	e.stage(batch...)
	e.stage(staged{in: in, body: []byte(`{"id":"later","n":2}`)})
	eventually(t, 15*time.Second, "every good row", func() (bool, error) {
		_, n, err := rows()
		return n == 1+19+1, err
	})
	var bad int
	if err := e.orgDB(o).QueryRow(ctx, `SELECT count(*) FROM json_v1 WHERE remote_key = 'r13'`).Scan(&bad); err != nil || bad != 0 {
		t.Fatalf("the out-of-range row was applied (%d, %v)", bad, err)
	}
	eventually(t, 5*time.Second, "the bad row listed as failed", func() (bool, error) {
		f := failedOf(t, e, o.id)
		return len(f) == 1 && strings.Contains(f[0].Error, "22003"), nil
	})
	var parked int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM fanout.parked_changes`).Scan(&parked); err != nil || parked != 0 {
		t.Fatalf("%d parked (%v): a permanent error must not park", parked, err)
	}
	// The applied position moved past the failed row: the org database has everything up to the last row.
	var failedLSN, appliedLSN string
	if err := e.pool.QueryRow(ctx, `SELECT commit_lsn::text FROM fanout.failed_changes WHERE org_id = $1`, o.id).Scan(&failedLSN); err != nil {
		t.Fatal(err)
	}
	if err := e.orgDB(o).QueryRow(ctx, `SELECT commit_lsn::text FROM webhookdb_meta.fanout_applied`).Scan(&appliedLSN); err != nil {
		t.Fatal(err)
	}
	var past bool
	if err := e.pool.QueryRow(ctx, `SELECT $1::text::pg_lsn > $2::text::pg_lsn`, appliedLSN, failedLSN).Scan(&past); err != nil || !past {
		t.Fatalf("applied position %s not past the failed row's %s (%v)", appliedLSN, failedLSN, err)
	}
}

// stageAt inserts one accepted row received at a given time (its day's partition is made first).
func stageAt(t *testing.T, e *env, in *integrations.Integration, at time.Time, body string) {
	t.Helper()
	ctx := context.Background()
	if _, err := e.pool.Exec(ctx, `SELECT staging.ensure_partitions($1::date, 1)`, at.UTC().Format(time.DateOnly)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(ctx, `
		INSERT INTO staging.webhooks (received_at, org_id, integration_id, method, path, content_type, headers, body, accepted)
		VALUES ($1, $2, $3, 'POST', '/', 'application/json', '{"Content-Type":"application/json"}', $4, true)`,
		at, in.OrgID, in.ID, []byte(body)); err != nil {
		t.Fatal(err)
	}
}

// A change parked while its org server is down becomes failed after the bound, carrying its payload: the
// staging partition it came from can be dropped, and retrying it once the server is back applies it.
func TestParkedPastBoundFailsWithPayloadAndFreesRetention(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	second := pgtest.NewCluster(t)
	o := e.org(second)
	in := e.integration(o, "json_v1", `{"remote_key_path":"id"}`)
	if err := second.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	cfg := e.config()
	cfg.ParkedMaxAge = 500 * time.Millisecond
	e.start(cfg)

	old := time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -10).Add(time.Hour)
	stageAt(t, e, in, old, `{"id":"old","n":1}`)
	part := "webhooks_" + old.Format("20060102")

	var id int64
	eventually(t, 20*time.Second, "the parked change to become failed", func() (bool, error) {
		f := failedOf(t, e, o.id)
		if len(f) != 1 || f[0].ID == nil {
			return false, nil
		}
		id = *f[0].ID
		var parked int
		err := e.pool.QueryRow(ctx, `SELECT count(*) FROM fanout.parked_changes WHERE org_id = $1`, o.id).Scan(&parked)
		return parked == 0, err
	})
	var bodyLen int
	if err := e.pool.QueryRow(ctx, `SELECT length(body) FROM fanout.failed_changes WHERE id = $1`, id).Scan(&bodyLen); err != nil || bodyLen == 0 {
		t.Fatalf("failed change keeps no payload (%d, %v)", bodyLen, err)
	}

	up := staging.NewUpkeep(e.pool, staging.UpkeepConfig{Slot: e.slot, Holders: []staging.Holder{fanout.ParkedHolder{Pool: e.pool}}})
	eventually(t, 20*time.Second, "upkeep to drop the old partition", func() (bool, error) {
		res, err := up.RunOnce(ctx)
		if err != nil {
			return false, err
		}
		return slices.Contains(res.Dropped, part), nil
	})

	if err := second.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	n, err := fanout.RetryError(ctx, e.pool, o.id, id)
	if err != nil || n != 1 {
		t.Fatalf("RetryError = %d, %v", n, err)
	}
	rows := countRows(t, e, o, `remote_key = 'old'`)
	eventually(t, 20*time.Second, "the retried change applied", func() (bool, error) {
		_, n, err := rows()
		return n == 1, err
	})
	if f := failedOf(t, e, o.id); len(f) != 0 {
		t.Fatalf("still failed: %+v", f)
	}
}

// Skip drops a failed change for good; a retry of an unknown id finds nothing.
func TestSkipRemovesFailedChange(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	o, other := e.org(nil), e.org(nil)
	in := e.integration(o, "json_v1", `{"remote_key_path":"id"}`)
	e.start(e.config())
	e.stage(staged{in: in, body: []byte(`{not json`)}, staged{in: in, body: []byte(`{"no_id":1}`)})
	eventually(t, 10*time.Second, "two failed changes", func() (bool, error) {
		return len(failedOf(t, e, o.id)) == 2, nil
	})
	f := failedOf(t, e, o.id)
	if err := fanout.SkipError(ctx, e.pool, other.id, *f[0].ID); err != fanout.ErrNoSuchError {
		t.Fatalf("skip of another org's change: %v", err)
	}
	if err := fanout.SkipError(ctx, e.pool, o.id, *f[0].ID); err != nil {
		t.Fatal(err)
	}
	left := failedOf(t, e, o.id)
	if len(left) != 1 || *left[0].ID != *f[1].ID {
		t.Fatalf("after skip: %+v", left)
	}
	if err := fanout.SkipError(ctx, e.pool, o.id, *f[0].ID); err != fanout.ErrNoSuchError {
		t.Fatalf("second skip: %v", err)
	}
	if _, err := fanout.RetryError(ctx, e.pool, o.id, *f[0].ID); err != fanout.ErrNoSuchError {
		t.Fatalf("retry of a skipped change: %v", err)
	}
}
