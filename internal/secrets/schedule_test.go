package secrets_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/webhookdb-go/webhookdb/internal/pgtest"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
	"github.com/webhookdb-go/webhookdb/internal/vaulttest"
)

// A key older than the period is rotated and every value rewrapped, by whichever server holds the lock; a
// server that finds the lock taken does nothing; a key younger than the period is left alone.
func TestScheduleRotatesADueKeyUnderTheLock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewDB(t)
	tr := newTransit(t, vaulttest.Client(t), false)
	want := seed(t, pool, tr)
	hooks := 0
	reg := prometheus.NewRegistry()
	s := secrets.NewSchedule(secrets.ScheduleConfig{Pool: pool, Box: tr, Period: time.Nanosecond, Registerer: reg,
		OnRotated: func(context.Context) error { hooks++; return nil }})

	other, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Exec(ctx, `SELECT pg_advisory_lock(x'7768646b726f7421'::bigint)`); err != nil {
		t.Fatal(err)
	}
	res, err := s.Pass(ctx)
	if err != nil || !res.Locked || res.Rotated {
		t.Fatalf("with the lock held elsewhere: %+v, %v", res, err)
	}
	if v, _, _ := tr.KeyVersions(ctx); v != 1 {
		t.Fatalf("rotated without the lock: version %d", v)
	}
	if _, err := other.Exec(ctx, `SELECT pg_advisory_unlock(x'7768646b726f7421'::bigint)`); err != nil {
		t.Fatal(err)
	}
	other.Release()

	res, err = s.Pass(ctx)
	if err != nil || !res.Rotated || res.Version != 2 || hooks != 1 {
		t.Fatalf("due pass: %+v, %v, hooks %d", res, err, hooks)
	}
	if latest, minDec, _ := tr.KeyVersions(ctx); latest != 2 || minDec != 2 {
		t.Fatalf("key versions %d/%d", latest, minDec)
	}
	check(t, pool, tr, want, "vault:v2:")
	if got := gauge(t, reg, "webhookdb_encryption_key_version"); got != 2 {
		t.Fatalf("version metric %v", got)
	}

	young := secrets.NewSchedule(secrets.ScheduleConfig{Pool: pool, Box: tr, Period: time.Hour})
	if res, err := young.Pass(ctx); err != nil || res.Rotated || res.Resumed || res.Version != 2 || res.Age > time.Hour {
		t.Fatalf("young key: %+v, %v", res, err)
	}
}

// A crash mid-rewrap leaves the key rotated, some values under the old version and min_decryption_version
// low: the next pass finishes the rewrap and only then raises the minimum, whatever the key's age.
func TestScheduleFinishesAnInterruptedRotation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewDB(t)
	tr := newTransit(t, vaulttest.Client(t), false)
	want := seed(t, pool, tr)
	if _, err := tr.RotateKey(ctx); err != nil {
		t.Fatal(err)
	}
	// Half the work of an interrupted pass: one column rewrapped.
	var ct string
	if err := pool.QueryRow(ctx, `SELECT admin_url_enc FROM database_servers WHERE name = 's1'`).Scan(&ct); err != nil {
		t.Fatal(err)
	}
	out, err := tr.Rewrap(ctx, []secrets.Sealed{{Binding: secrets.Binding{Table: "database_servers", Column: "admin_url_enc", Row: "s1"}, Ciphertext: ct}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE database_servers SET admin_url_enc = $1 WHERE name = 's1'`, out[0]); err != nil {
		t.Fatal(err)
	}
	s := secrets.NewSchedule(secrets.ScheduleConfig{Pool: pool, Box: tr, Period: 30 * 24 * time.Hour})
	res, err := s.Pass(ctx)
	if err != nil || !res.Resumed || res.Rotated {
		t.Fatalf("pass: %+v, %v", res, err)
	}
	if latest, minDec, _ := tr.KeyVersions(ctx); latest != 2 || minDec != 2 {
		t.Fatalf("key versions %d/%d, want 2/2", latest, minDec)
	}
	check(t, pool, tr, want, "vault:v2:")
}

// The keyring cannot be extended by the server: an old newest version raises the overdue metric (and a
// warning) instead; a version's age counts from when the deployment first saw it.
func TestScheduleWarnsWhenTheKeyringIsOld(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewDB(t)
	kr, err := secrets.ParseKeyring(secrets.NewKeyEntry(1) + "," + secrets.NewKeyEntry(2))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	s := secrets.NewSchedule(secrets.ScheduleConfig{Pool: pool, Box: kr, Keyring: kr, Period: time.Hour, Registerer: reg})
	res, err := s.Pass(ctx)
	if err != nil || res.Version != 2 || res.Age > time.Minute {
		t.Fatalf("first pass: %+v, %v", res, err)
	}
	if gauge(t, reg, "webhookdb_encryption_key_rotation_overdue") != 0 {
		t.Fatal("overdue on a new key")
	}
	if _, err := pool.Exec(ctx, `UPDATE keyring_versions SET first_seen_at = now() - interval '2 hours' WHERE version = 2`); err != nil {
		t.Fatal(err)
	}
	res, err = s.Pass(ctx)
	if err != nil || res.Age < 2*time.Hour {
		t.Fatalf("second pass: %+v, %v", res, err)
	}
	if gauge(t, reg, "webhookdb_encryption_key_rotation_overdue") != 1 || gauge(t, reg, "webhookdb_encryption_key_age_seconds") < 7200 {
		t.Fatal("an old keyring key is not reported")
	}
}

// gauge reads a registered gauge by name.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}
