package backfill_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/webhookdb-go/webhookdb/internal/backfill"
	"github.com/webhookdb-go/webhookdb/internal/backfill/backfilltest"
)

// GitHub issues of every repository the token reads, through Link paging, a rate-limit 403 waited out and a 502:
// each issue once, no pull request (the issues endpoint lists those too); then incremental with since.
func TestGitHubIssues(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, backfill.Config{})
	fake := backfilltest.NewGitHub(backfilltest.GitHubConfig{RateLimitEvery: 4, FailOnce: true})
	defer fake.Close()
	fake.AddIssues("acme/api", 150, time.Now().Add(-48*time.Hour))
	fake.AddIssues("acme/web", 150, time.Now().Add(-48*time.Hour))
	orgID := e.org()
	in := e.integration(orgID, "github_issue_v1")

	_, err := e.svc.SetCredentials(ctx, in, backfill.CredentialParams{Key: ptr("ghp_wrong"), BaseURL: ptr(fake.URL), ServerAdmin: true})
	var ve *backfill.VendorError
	if !errors.As(err, &ve) || ve.Status != 401 || ve.Message != "Bad credentials" {
		t.Fatalf("a wrong token: %v, want GitHub's 401 Bad credentials", err)
	}
	e.setCredentials(in, backfill.CredentialParams{Key: ptr(fake.Token()), BaseURL: ptr(fake.URL)})
	e.run()
	job := e.backfillOnce(in, false, backfill.KindFull, 240)
	var prs int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM staging.webhooks WHERE backfill_job_id = $1 AND convert_from(body, 'UTF8')::jsonb ? 'pull_request'`, job.ID).Scan(&prs); err != nil || prs != 0 {
		t.Fatalf("pull requests stored as issues: %d, %v", prs, err)
	}

	fake.AddIssues("acme/web", 10, time.Now())
	e.backfillOnce(in, false, backfill.KindIncremental, 8)
}

// Configured repositories are listed, and only those; options are checked strictly.
func TestGitHubOptions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, backfill.Config{Slice: time.Minute})
	fake := backfilltest.NewGitHub(backfilltest.GitHubConfig{})
	defer fake.Close()
	fake.AddIssues("acme/api", 20, time.Now().Add(-time.Hour))
	fake.AddIssues("acme/web", 20, time.Now().Add(-time.Hour))
	orgID := e.org()
	in := e.integration(orgID, "github_issue_v1")
	for _, bad := range []string{`{"repos":["acme/api"]}`, `{"repositories":["not a repo"]}`} {
		_, err := e.svc.SetCredentials(ctx, in, backfill.CredentialParams{Key: ptr(fake.Token()), BaseURL: ptr(fake.URL), ServerAdmin: true, Options: json.RawMessage(bad)})
		if !errors.Is(err, backfill.ErrCredentials) {
			t.Fatalf("options %s: %v, want ErrCredentials", bad, err)
		}
	}
	e.setCredentials(in, backfill.CredentialParams{Key: ptr(fake.Token()), BaseURL: ptr(fake.URL), Options: json.RawMessage(`{"repositories":["acme/web"]}`)})
	job, err := e.svc.Start(ctx, in, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	j, err := backfill.GetJob(ctx, e.pool, orgID, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	var fromAPI int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM staging.webhooks WHERE backfill_job_id = $1 AND path LIKE '/repos/acme/api/%'`, job.ID).Scan(&fromAPI); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.stagedCount(job.ID); j.State != backfill.StateSucceeded || got != 16 || fromAPI != 0 || !strings.Contains(j.Service, "github") {
		t.Fatalf("configured repository: %s, %d staged, %d from another repository", j.State, got, fromAPI)
	}
}
