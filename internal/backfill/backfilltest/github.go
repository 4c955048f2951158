package backfilltest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// GitHubConfig sets a fake GitHub's token and faults.
type GitHubConfig struct {
	// Token is the token it accepts; default "ghp_fake".
	Token string
	// RateLimitEvery answers every Nth request 403 with x-ratelimit-remaining: 0 and a reset a second ahead.
	RateLimitEvery int
	// FailOnce answers the first request for a page after the first 502.
	FailOnce bool
}

// GitHub is a fake of GitHub's REST list endpoints: per_page (default 30, at most 100), page, Link headers,
// since and sort=updated with direction, GitHub's error objects and rate-limit headers.
type GitHub struct {
	URL string
	cfg GitHubConfig
	srv *httptest.Server

	mu       sync.Mutex
	requests int
	failed   bool
	// lists by path under /repos/{owner}/{repo}
	lists map[string][]map[string]any
	repos []string
}

// NewGitHub starts a fake GitHub.
func NewGitHub(cfg GitHubConfig) *GitHub {
	if cfg.Token == "" {
		cfg.Token = "ghp_fake"
	}
	g := &GitHub{cfg: cfg, lists: map[string][]map[string]any{}}
	g.srv = httptest.NewServer(http.HandlerFunc(g.handle))
	g.URL = g.srv.URL
	return g
}

// Close stops the server.
func (g *GitHub) Close() { g.srv.Close() }

// Token is the token the fake accepts.
func (g *GitHub) Token() string { return g.cfg.Token }

// AddIssues adds n issues to repo (and, every fifth, a pull request as the issues endpoint lists them), updated
// a minute apart from updated.
func (g *GitHub) AddIssues(repo string, n int, updated time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !slices.Contains(g.repos, repo) {
		g.repos = append(g.repos, repo)
	}
	base := int64(len(g.lists["/repos/"+repo+"/issues"]))
	for i := range n {
		num := base + int64(i) + 1
		at := updated.Add(time.Duration(i) * time.Minute).UTC().Format(time.RFC3339)
		issue := map[string]any{"id": 1000000*int64(len(g.repos)) + num, "node_id": fmt.Sprintf("I_%d", num), "number": num,
			"title": fmt.Sprintf("Issue %d", num), "state": "open", "locked": false, "comments": 0,
			"created_at": at, "updated_at": at, "closed_at": nil, "html_url": fmt.Sprintf("https://github.com/%s/issues/%d", repo, num),
			"repository_url": "https://api.github.com/repos/" + repo, "user": map[string]any{"login": "octocat", "id": 1}}
		if num%5 == 0 {
			issue["pull_request"] = map[string]any{"url": fmt.Sprintf("https://api.github.com/repos/%s/pulls/%d", repo, num)}
		}
		g.lists["/repos/"+repo+"/issues"] = append(g.lists["/repos/"+repo+"/issues"], issue)
	}
}

func githubError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"message": msg, "documentation_url": "https://docs.github.com/rest", "status": strconv.Itoa(status)})
}

func (g *GitHub) handle(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.requests++
	w.Header().Set("X-Ratelimit-Limit", "5000")
	if r.Header.Get("Authorization") != "Bearer "+g.cfg.Token {
		githubError(w, http.StatusUnauthorized, "Bad credentials")
		return
	}
	if g.cfg.RateLimitEvery > 0 && g.requests%g.cfg.RateLimitEvery == 0 {
		w.Header().Set("X-Ratelimit-Remaining", "0")
		w.Header().Set("X-Ratelimit-Reset", strconv.FormatInt(time.Now().Add(time.Second).Unix(), 10))
		githubError(w, http.StatusForbidden, "API rate limit exceeded for user ID 1.")
		return
	}
	w.Header().Set("X-Ratelimit-Remaining", "4999")
	q := r.URL.Query()
	if g.cfg.FailOnce && !g.failed && q.Get("page") != "" {
		g.failed = true
		githubError(w, http.StatusBadGateway, "Server Error")
		return
	}
	var all []map[string]any
	switch {
	case r.URL.Path == "/user/repos":
		for _, repo := range g.repos {
			all = append(all, map[string]any{"id": len(all) + 1, "full_name": repo, "private": false})
		}
	case strings.HasPrefix(r.URL.Path, "/repos/"):
		var ok bool
		if all, ok = g.lists[r.URL.Path]; !ok {
			githubError(w, http.StatusNotFound, "Not Found")
			return
		}
		all = slices.Clone(all)
		if since := q.Get("since"); since != "" {
			t, err := time.Parse(time.RFC3339, since)
			if err != nil {
				githubError(w, http.StatusUnprocessableEntity, "Validation Failed")
				return
			}
			all = slices.DeleteFunc(all, func(o map[string]any) bool {
				u, _ := time.Parse(time.RFC3339, o["updated_at"].(string))
				return u.Before(t)
			})
		}
		if q.Get("sort") == "updated" {
			slices.SortStableFunc(all, func(a, b map[string]any) int {
				return strings.Compare(a["updated_at"].(string), b["updated_at"].(string))
			})
			if q.Get("direction") == "desc" {
				slices.Reverse(all)
			}
		}
	default:
		githubError(w, http.StatusNotFound, "Not Found")
		return
	}
	perPage, page := 30, 1
	if v, err := strconv.Atoi(q.Get("per_page")); err == nil && v > 0 {
		perPage = min(v, 100)
	}
	if v, err := strconv.Atoi(q.Get("page")); err == nil && v > 0 {
		page = v
	}
	start, end := min((page-1)*perPage, len(all)), min(page*perPage, len(all))
	if end < len(all) {
		next := *r.URL
		nq := next.Query()
		nq.Set("page", strconv.Itoa(page+1))
		next.RawQuery = nq.Encode()
		last := (len(all) + perPage - 1) / perPage
		nq.Set("page", strconv.Itoa(last))
		lastURL := *r.URL
		lastURL.RawQuery = nq.Encode()
		w.Header().Set("Link", fmt.Sprintf(`<%s%s>; rel="next", <%s%s>; rel="last"`, g.URL, next.RequestURI(), g.URL, lastURL.RequestURI()))
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(append([]map[string]any{}, all[start:end]...))
}
