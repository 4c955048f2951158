package api_test

import (
	"context"
	"net/http"
	"sync"
	"testing"

	"github.com/webhookdb-go/webhookdb/fanout"
	"github.com/webhookdb-go/webhookdb/internal/api"
)

// fakeErrors has one failed change, id 7, in whichever org asks first.
type fakeErrors struct {
	mu      sync.Mutex
	org     int64
	skipped bool
	retried int
}

func (f *fakeErrors) ListErrors(context.Context, int64, int64, int) ([]fanout.ChangeError, error) {
	return nil, nil
}
func (f *fakeErrors) RetryErrors(context.Context, int64, int64) (int64, error) { return 0, nil }

func (f *fakeErrors) has(orgID, id int64) bool {
	if f.org == 0 {
		f.org = orgID
	}
	return f.org == orgID && id == 7 && !f.skipped
}

func (f *fakeErrors) RetryError(_ context.Context, orgID, id int64) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.has(orgID, id) {
		return 0, fanout.ErrNoSuchError
	}
	f.retried++
	return 1, nil
}

func (f *fakeErrors) SkipError(_ context.Context, orgID, id int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.has(orgID, id) {
		return fanout.ErrNoSuchError
	}
	f.skipped = true
	return nil
}

// One failed change is retried or skipped by its id; unknown ids, and ids that are not numbers, are 404.
func TestRetryAndSkipOneFailedChange(t *testing.T) {
	t.Parallel()
	fake := &fakeErrors{}
	f := newFixtureWith(t, func(c *api.Config) { c.Errors = fake }, nil)
	alice := f.user("alice@a.example", false)
	f.must(alice, "POST", "/v1/orgs", map[string]any{"key": "org_a", "name": "A"}, 201)

	if out := f.must(alice, "POST", "/v1/orgs/org_a/errors/7/retry", nil, 200); out["retrying"] != float64(1) {
		t.Fatalf("retry: %v", out)
	}
	f.must(alice, "POST", "/v1/orgs/org_a/errors/8/retry", nil, http.StatusNotFound)
	f.must(alice, "POST", "/v1/orgs/org_a/errors/x/skip", nil, http.StatusNotFound)
	if out := f.must(alice, "POST", "/v1/orgs/org_a/errors/7/skip", nil, 200); out["skipped"] != float64(7) {
		t.Fatalf("skip: %v", out)
	}
	f.must(alice, "POST", "/v1/orgs/org_a/errors/7/skip", nil, http.StatusNotFound)
	f.must(alice, "POST", "/v1/orgs/org_a/errors/7/retry", nil, http.StatusNotFound)
	if fake.retried != 1 || !fake.skipped {
		t.Fatalf("fake: %+v", fake)
	}
}
