package api_test

import (
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/webhookdb-go/webhookdb/internal/api"
)

// One user cannot create orgs without end (each is a database on a shared server): concurrent creations
// count each other, and server admins have no limit.
func TestOrgLimitPerUser(t *testing.T) {
	t.Parallel()
	f := newFixtureWith(t, func(c *api.Config) { c.MaxOrgsPerUser = 3 }, nil)
	mallory := f.user("mallory@x.example", false)
	var wg sync.WaitGroup
	statuses := make(chan int, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, _ := f.call(mallory, "POST", "/v1/orgs", map[string]any{"key": fmt.Sprintf("m%d", i)})
			statuses <- status
		}()
	}
	wg.Wait()
	close(statuses)
	created, refused := 0, 0
	for s := range statuses {
		switch s {
		case http.StatusCreated:
			created++
		case http.StatusForbidden:
			refused++
		default:
			t.Errorf("status %d", s)
		}
	}
	if created != 3 || refused != 5 {
		t.Fatalf("created %d, refused %d; want 3 and 5", created, refused)
	}
	status, out := f.call(mallory, "POST", "/v1/orgs", map[string]any{"key": "one_more"})
	if e, _ := out["error"].(map[string]any); status != http.StatusForbidden || e["code"] != "org_limit" {
		t.Fatalf("over the limit: %d %v", status, out)
	}
	admin := f.user("ops@x.example", true)
	for i := range 5 {
		f.must(admin, "POST", "/v1/orgs", map[string]any{"key": fmt.Sprintf("ops%d", i)}, http.StatusCreated)
	}
}
