package fanout_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/webhookdb-go/webhookdb/internal/pgtest"
)

// An org database on a second server goes down during a load: the other org keeps flowing, the down org's
// changes are parked, and after the restart they drain in order with nothing lost.
func TestOrgServerDownParksAndDrainsInOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	second := pgtest.NewCluster(t)
	up, down := e.org(nil), e.org(second)
	inUp := e.integration(up, "json_v1", `{"remote_key_path":"id"}`)
	inDown := e.integration(down, "json_v1", `{"remote_key_path":"id"}`)
	cfg := e.config()
	cfg.ApplyTimeout = time.Second
	cfg.RetryMin = 100 * time.Millisecond
	cfg.RetryMax = 300 * time.Millisecond
	reg, _ := e.start(cfg)
	upDB := e.orgDB(up)

	// The load: each transaction updates a hot key of each org (order-sensitive: json_v1 without a timestamp
	// is last-write-wins) and adds a unique row (loss-sensitive).
	const txns = 240
	var (
		mu      sync.Mutex
		stopped = make(chan struct{})
		loadErr error
	)
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		for i := 1; i <= txns; i++ {
			rows := []staged{
				{in: inUp, body: fmt.Appendf(nil, `{"id":"hot%d","n":%d}`, i%5, i)},
				{in: inUp, body: fmt.Appendf(nil, `{"id":"u%d","n":%d}`, i, i)},
				{in: inDown, body: fmt.Appendf(nil, `{"id":"hot%d","n":%d}`, i%5, i)},
				{in: inDown, body: fmt.Appendf(nil, `{"id":"u%d","n":%d}`, i, i)},
			}
			if err := stageRows(ctx, e.pool, rows); err != nil {
				mu.Lock()
				loadErr = err
				mu.Unlock()
				return
			}
			if i == txns/3 {
				if err := second.Stop(ctx); err != nil {
					mu.Lock()
					loadErr = err
					mu.Unlock()
					return
				}
				close(stopped)
			}
			time.Sleep(15 * time.Millisecond)
		}
	}()

	<-stopped
	// While the server is down, a new change of the live org arrives promptly.
	time.Sleep(500 * time.Millisecond)
	e.stage(staged{in: inUp, body: []byte(`{"id":"probe","n":0}`)})
	probeStart := time.Now()
	eventually(t, 5*time.Second, "the live org's probe row while the other org is down", func() (bool, error) {
		var n int
		err := upDB.QueryRow(ctx, `SELECT count(*) FROM json_v1 WHERE remote_key = 'probe'`).Scan(&n)
		return n == 1, err
	})
	t.Logf("live org lag while the other org's server is down: %s", time.Since(probeStart).Round(time.Millisecond))
	eventually(t, 5*time.Second, "changes of the down org to be parked", func() (bool, error) {
		var n int
		err := e.pool.QueryRow(ctx, `SELECT count(*) FROM fanout.parked_changes WHERE org_id = $1`, down.id).Scan(&n)
		return n > 0, err
	})
	if got := metric(t, reg, "webhookdb_fanout_parked_total", map[string]string{"org_id": fmt.Sprint(down.id)}); got == 0 {
		t.Fatalf("parked metric is 0")
	}
	// the slot keeps being acknowledged: parked changes are settled
	var before string
	if err := e.pool.QueryRow(ctx, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, e.slot).Scan(&before); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the slot to move while an org is down", func() (bool, error) {
		var moved bool
		err := e.pool.QueryRow(ctx, `SELECT confirmed_flush_lsn > $2::text::pg_lsn FROM pg_replication_slots WHERE slot_name = $1`, e.slot, before).Scan(&moved)
		return moved, err
	})

	time.Sleep(time.Second)
	if err := second.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	<-loadDone
	if loadErr != nil {
		t.Fatal(loadErr)
	}
	downDB := e.orgDB(down)
	eventually(t, 30*time.Second, "parked changes to drain", func() (bool, error) {
		var parked, rows int
		if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM fanout.parked_changes`).Scan(&parked); err != nil {
			return false, err
		}
		if err := downDB.QueryRow(ctx, `SELECT count(*) FROM json_v1 WHERE remote_key LIKE 'u%'`).Scan(&rows); err != nil {
			return false, err
		}
		return parked == 0 && rows == txns, nil
	})
	for _, o := range []*org{up, down} {
		db := e.orgDB(o)
		var unique int
		if err := db.QueryRow(ctx, `SELECT count(*) FROM json_v1 WHERE remote_key LIKE 'u%' AND remote_key = 'u' || (data->>'n')`).Scan(&unique); err != nil {
			t.Fatal(err)
		}
		if unique != txns {
			t.Fatalf("org %s: %d of %d unique rows", o.key, unique, txns)
		}
		for k := 0; k < 5; k++ {
			want := txns - (txns-k)%5 // the last i with i%5 == k
			var n int
			if err := db.QueryRow(ctx, `SELECT (data->>'n')::int FROM json_v1 WHERE remote_key = $1`, fmt.Sprintf("hot%d", k)).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != want {
				t.Fatalf("org %s: hot%d holds n=%d, want %d (changes applied out of order)", o.key, k, n, want)
			}
		}
	}
	if got := metric(t, reg, "webhookdb_fanout_parked_changes", map[string]string{"org_id": fmt.Sprint(down.id)}); got != 0 {
		t.Fatalf("parked gauge %v after the drain", got)
	}
}

func TestMalformedPayloadIsRecordedAndDoesNotBlock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	o := e.org(nil)
	in := e.integration(o, "json_v1", `{"remote_key_path":"id"}`)
	charges := e.integration(o, "stripe_charge_v1", "")
	reg, _ := e.start(e.config())
	e.stage(
		staged{in: in, body: []byte(`{"id":"before"}`)},
		staged{in: in, body: []byte(`{not json`)},
		staged{in: in, body: []byte(`{"no_id":1}`)},
		staged{in: charges, body: []byte(`{"id":"evt_x","object":"event","type":"charge.updated","created":1,"data":{"object":{"object":"charge"}}}`)},
		staged{in: in, body: []byte(`{"id":"after"}`)},
	)
	e.stage(staged{in: in, body: []byte(`{"id":"next"}`)})
	db := e.orgDB(o)
	eventually(t, 10*time.Second, "the valid rows", func() (bool, error) {
		var n int
		err := db.QueryRow(ctx, `SELECT count(*) FROM json_v1`).Scan(&n)
		return n == 3, err
	})
	rows, err := e.pool.Query(ctx, `SELECT integration_id, error FROM fanout.failed_changes WHERE org_id = $1 ORDER BY seq`, o.id)
	if err != nil {
		t.Fatal(err)
	}
	var failed []string
	for rows.Next() {
		var integ int64
		var msg string
		if err := rows.Scan(&integ, &msg); err != nil {
			t.Fatal(err)
		}
		failed = append(failed, fmt.Sprintf("%d: %s", integ, msg))
	}
	if rows.Err() != nil || len(failed) != 3 {
		t.Fatalf("failed changes: %q (%v)", failed, rows.Err())
	}
	if got := metric(t, reg, "webhookdb_fanout_failed_total", map[string]string{"org_id": fmt.Sprint(o.id)}); got != 3 {
		t.Fatalf("failed metric %v, want 3", got)
	}
	var parked int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM fanout.parked_changes`).Scan(&parked); err != nil || parked != 0 {
		t.Fatalf("%d parked (%v): a malformed payload must not park", parked, err)
	}
}

// An org database that holds a lock on its table makes applies wait past ApplyTimeout: that org's changes
// are parked, the other org's keep flowing, and once the lock is gone the parked ones drain.
func TestSlowOrgIsParkedPastDeadline(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	slow, fast := e.org(nil), e.org(nil)
	inSlow := e.integration(slow, "json_v1", `{"remote_key_path":"id"}`)
	inFast := e.integration(fast, "json_v1", `{"remote_key_path":"id"}`)
	cfg := e.config()
	cfg.ApplyTimeout = 500 * time.Millisecond
	reg, _ := e.start(cfg)
	e.stage(staged{in: inSlow, body: []byte(`{"id":"first","n":0}`)})
	slowDB, fastDB := e.orgDB(slow), e.orgDB(fast)
	eventually(t, 10*time.Second, "the slow org's table", func() (bool, error) {
		var n int
		err := slowDB.QueryRow(ctx, `SELECT count(*) FROM json_v1`).Scan(&n)
		return n == 1, err
	})

	// A reader holding ACCESS EXCLUSIVE blocks every write to the table.
	lock, err := slowDB.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lock.Exec(ctx, `LOCK TABLE json_v1 IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 20; i++ {
		e.stage(staged{in: inSlow, body: fmt.Appendf(nil, `{"id":"k","n":%d}`, i)}, staged{in: inFast, body: fmt.Appendf(nil, `{"id":"k","n":%d}`, i)})
	}
	eventually(t, 5*time.Second, "the fast org to get every change while the slow one is locked", func() (bool, error) {
		var n int
		err := fastDB.QueryRow(ctx, `SELECT coalesce((SELECT (data->>'n')::int FROM json_v1 WHERE remote_key = 'k'), 0)`).Scan(&n)
		return n == 20, err
	})
	eventually(t, 5*time.Second, "the slow org's changes to be parked", func() (bool, error) {
		return metric(t, reg, "webhookdb_fanout_parked_total", map[string]string{"org_id": fmt.Sprint(slow.id)}) > 0, nil
	})
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the parked changes to drain in order", func() (bool, error) {
		var n, parked int
		if err := slowDB.QueryRow(ctx, `SELECT coalesce((SELECT (data->>'n')::int FROM json_v1 WHERE remote_key = 'k'), 0)`).Scan(&n); err != nil {
			return false, err
		}
		if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM fanout.parked_changes`).Scan(&parked); err != nil {
			return false, err
		}
		return n == 20 && parked == 0, nil
	})
}
