package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/webhookdb-go/webhookdb/internal/backfill/backfilltest"
)

// A backfill through a real `webhookdb serve`: bad credentials are refused with Stripe's reason when set; the
// server is killed (SIGKILL) mid-job and started again; the job resumes from its checkpoint, refetches at most
// one page, and every charge lands exactly once in staging and in the org's table. Backfilled objects are not
// listed as deliveries unless asked for.
func TestBackfillSurvivesKill(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const n = 3000 // 30 pages
	fake := backfilltest.NewStripe(backfilltest.StripeConfig{RateLimitEvery: 9, FailOnce: true, PageDelay: 150 * time.Millisecond})
	defer fake.Close()
	fake.AddCharges("k", n, time.Now().Add(-72*time.Hour))

	tp := newTopology(t, "backfill_kill")
	serve := tp.start("serve", nil, "serve", "--log-level", "warn")
	waitHTTP(t, "http://"+tp.listen+"/healthz")
	orgDB, webhookURL := tp.setup()
	id := webhookURL[strings.LastIndex(webhookURL, "/")+1:]

	// A wrong key is refused at once, with Stripe's own message.
	cmd := exec.Command(tp.bin, "integrations", "update", id, "--backfill-key", "sk_test_nope", "--backfill-base-url", fake.URL)
	cmd.Env = tp.env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil || !strings.Contains(stderr.String(), "Invalid API Key provided") {
		t.Fatalf("a wrong key: %v, %s", err, stderr.String())
	}
	out := tp.cli("integrations", "update", id, "--backfill-key", fake.Key(), "--backfill-base-url", fake.URL, "-o", "json")
	if strings.Contains(out, fake.Key()) || !strings.Contains(out, `"credentials_set": true`) {
		t.Fatalf("settings after setting credentials:\n%s", out)
	}

	var started struct {
		Job struct {
			ID int64 `json:"id"`
		} `json:"job"`
	}
	if err := json.Unmarshal([]byte(tp.cli("backfill", id, "-o", "json")), &started); err != nil || started.Job.ID == 0 {
		t.Fatalf("starting the backfill: %v", err)
	}
	app := connect(t, tp.appURL)
	pages := func() (done int64, state string) {
		if err := app.QueryRow(ctx, `SELECT pages_done, state FROM backfill_jobs WHERE id = $1`, started.Job.ID).Scan(&done, &state); err != nil {
			t.Fatal(err)
		}
		return done, state
	}
	waitFor(t, 2*time.Minute, "5 pages", func() (bool, error) { p, _ := pages(); return p >= 5, nil })
	if err := serve.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = serve.cmd.Wait()
	atKill, state := pages()
	if state != "running" || atKill >= n/100 {
		t.Fatalf("killed too late: %s after %d pages", state, atKill)
	}

	tp.start("serve again", nil, "serve", "--log-level", "warn")
	waitHTTP(t, "http://"+tp.listen+"/healthz")
	waitFor(t, 3*time.Minute, "the job to finish", func() (bool, error) { _, s := pages(); return s != "running" && s != "queued", nil })
	if done, s := pages(); s != "succeeded" || done != n/100 {
		t.Fatalf("after the restart: %s with %d pages, want succeeded with %d", s, done, n/100)
	}
	var staged, distinct int
	if err := app.QueryRow(ctx, `SELECT count(*), count(DISTINCT body) FROM staging.webhooks WHERE backfill_job_id = $1`, started.Job.ID).Scan(&staged, &distinct); err != nil {
		t.Fatal(err)
	}
	if staged != n || distinct != n {
		t.Fatalf("staged %d rows (%d distinct) for %d charges", staged, distinct, n)
	}
	if r := fake.Refetched(); r > 1 {
		t.Fatalf("%d pages fetched twice; the checkpoint allows at most one", r)
	}
	waitFor(t, 2*time.Minute, "every charge in the org's table", func() (bool, error) {
		var rows int
		err := orgDB.QueryRow(ctx, `SELECT count(*) FROM stripe_charge_v1`).Scan(&rows)
		if rows > n {
			t.Fatalf("%d rows for %d charges", rows, n)
		}
		return rows == n, err
	})

	// Deliveries lists leave backfilled objects out unless asked.
	var list struct {
		Webhooks []struct {
			Source string `json:"source"`
		} `json:"webhooks"`
	}
	if err := json.Unmarshal([]byte(tp.cli("webhooks", "list", "-o", "json")), &list); err != nil || len(list.Webhooks) != 0 {
		t.Fatalf("webhooks list after a backfill: %v, %+v", err, list.Webhooks)
	}
	if err := json.Unmarshal([]byte(tp.cli("webhooks", "list", "--include-backfill", "--limit", "3", "-o", "json")), &list); err != nil ||
		len(list.Webhooks) != 3 || list.Webhooks[0].Source != "backfill" {
		t.Fatalf("webhooks list --include-backfill: %v, %+v", err, list.Webhooks)
	}
	// The next run is incremental from the saved mark, followed to its end.
	out = tp.cli("backfill", id, "--wait", "-o", "json")
	if !strings.Contains(out, `"kind": "incremental"`) || !strings.Contains(out, `"state": "succeeded"`) {
		t.Fatalf("backfill --wait:\n%s", out)
	}
}
