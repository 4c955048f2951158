package backfill

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// GitHub lists each repository's resource through the REST API, following the Link header: issues and comments
// with since and sort=updated, pulls sorted by updated descending until the high-water mark (the endpoint has no
// since), releases in full. The repositories are the options' (owner/name), or every one the token can read.

type githubEndpoint struct {
	// path is under /repos/{owner}/{repo}
	path  string
	query url.Values
	// since: the endpoint takes since (else incremental reads descending until the mark, or everything)
	since, descending, release bool
}

var githubEndpoints = map[string]githubEndpoint{
	"github_issue_v1":         {path: "/issues", query: url.Values{"state": {"all"}, "sort": {"updated"}, "direction": {"asc"}}, since: true},
	"github_issue_comment_v1": {path: "/issues/comments", query: url.Values{"sort": {"updated"}, "direction": {"asc"}}, since: true},
	"github_pull_v1":          {path: "/pulls", query: url.Values{"state": {"all"}, "sort": {"updated"}, "direction": {"desc"}}, descending: true},
	"github_release_v1":       {path: "/releases", release: true},
}

const githubPageSize = 100

var githubVendor = vendorDef{
	name:        "GitHub",
	serves:      func(s string) bool { _, ok := githubEndpoints[s]; return ok },
	hostAllowed: func(h string) bool { return h == "api.github.com" },
	newClient: func(t Target) (Vendor, error) {
		ep, ok := githubEndpoints[t.Service.Name]
		if !ok {
			return nil, fmt.Errorf("%w: %s", ErrUnsupported, t.Service.Name)
		}
		var opts struct {
			Repositories []string `json:"repositories"`
		}
		if err := decodeOptions(t.Options, &opts); err != nil {
			return nil, err
		}
		for _, r := range opts.Repositories {
			if !githubRepo.MatchString(r) {
				return nil, fmt.Errorf("%w: options: repository %q is not owner/name", ErrCredentials, r)
			}
		}
		if t.Credentials.Key == "" {
			return nil, fmt.Errorf("%w: GitHub needs a token", ErrCredentials)
		}
		base := t.BaseURL
		if base == "" {
			base = "https://api.github.com"
		}
		u, err := url.Parse(base)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBaseURL, err)
		}
		return &githubClient{base: base, host: u.Host, token: t.Credentials.Key, ep: ep, repos: opts.Repositories,
			f: newFetcher("GitHub", t.HTTP, githubDecision)}, nil
	},
}

var githubRepo = regexp.MustCompile(`^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$`)

type githubClient struct {
	base, host, token string
	ep                githubEndpoint
	repos             []string
	f                 *fetcher
}

// githubDecision tells GitHub's rate limits (403 or 429 with x-ratelimit-remaining: 0, or a secondary limit)
// from a refusal: they are waited out, until x-ratelimit-reset or after Retry-After.
func githubDecision(resp *http.Response, body []byte) decision {
	var e struct {
		Message string `json:"message"`
	}
	_ = json.Unmarshal(body, &e)
	msg := e.Message
	if msg == "" {
		msg = strings.TrimSpace(string(body))
	}
	if resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusTooManyRequests {
		if wait := retryAfter(resp.Header); wait > 0 {
			return decision{retry: true, wait: wait}
		}
		if resp.Header.Get("X-Ratelimit-Remaining") == "0" {
			wait := time.Minute
			if reset, err := strconv.ParseInt(resp.Header.Get("X-Ratelimit-Reset"), 10, 64); err == nil {
				wait = max(time.Until(time.Unix(reset, 0)), time.Second)
			}
			return decision{retry: true, wait: wait}
		}
		if strings.Contains(strings.ToLower(msg), "secondary rate limit") {
			return decision{retry: true, wait: time.Minute}
		}
	}
	d := defaultDecision(resp, body)
	d.message = msg
	return d
}

// githubCursor is where a job is: the repositories (listed first when not configured), the one it is in, and
// the next page's URL there ("" its first).
type githubCursor struct {
	Repos []string `json:"repos,omitempty"`
	// Listing: the repositories are still being listed from /user/repos, at Next.
	Listing bool   `json:"listing,omitempty"`
	Repo    int    `json:"repo"`
	Next    string `json:"next,omitempty"`
}

func (c *githubClient) prepare(r *http.Request) {
	r.Header.Set("Authorization", "Bearer "+c.token)
	r.Header.Set("Accept", "application/vnd.github+json")
	r.Header.Set("X-GitHub-Api-Version", "2022-11-28")
}

// get fetches a page that must be a JSON array, and its Link next URL (on the API's own host only).
func (c *githubClient) get(ctx context.Context, rawURL, page string) ([]json.RawMessage, string, error) {
	resp, body, err := c.f.get(ctx, rawURL, page, c.prepare)
	if err != nil {
		return nil, "", err
	}
	var items []json.RawMessage
	if err := json.Unmarshal(body, &items); err != nil || items == nil {
		return nil, "", &BadAnswerError{Vendor: "GitHub", Page: page, Status: resp.StatusCode, Reason: "not a JSON array", Body: body}
	}
	next := linkNext(resp.Header.Get("Link"))
	if next != "" {
		u, err := url.Parse(next)
		if err != nil || u.Host != c.host {
			return nil, "", &BadAnswerError{Vendor: "GitHub", Page: page, Status: resp.StatusCode, Reason: "a Link next URL off the API's host: " + next, Body: body}
		}
	}
	return items, next, nil
}

var linkPart = regexp.MustCompile(`<([^>]*)>\s*;\s*rel="?([a-z]+)"?`)

// linkNext is the rel="next" URL of a Link header, or "".
func linkNext(h string) string {
	for _, m := range linkPart.FindAllStringSubmatch(h, -1) {
		if m[2] == "next" {
			return m[1]
		}
	}
	return ""
}

func (c *githubClient) Verify(ctx context.Context) error {
	if len(c.repos) > 0 {
		_, _, err := c.get(ctx, c.firstURL(c.repos[0], time.Time{}, 1), "/repos/"+c.repos[0]+c.ep.path+" (first)")
		return err
	}
	_, _, err := c.get(ctx, c.base+"/user/repos?per_page=1", "/user/repos (first)")
	return err
}

func (c *githubClient) firstURL(repo string, since time.Time, perPage int) string {
	q := url.Values{}
	for k, v := range c.ep.query {
		q[k] = v
	}
	q.Set("per_page", strconv.Itoa(perPage))
	if c.ep.since && !since.IsZero() {
		q.Set("since", since.UTC().Format(time.RFC3339))
	}
	return c.base + "/repos/" + repo + c.ep.path + "?" + q.Encode()
}

func (c *githubClient) Page(ctx context.Context, req PageRequest) (*Page, error) {
	var cur githubCursor
	if req.Cursor == "" {
		cur = githubCursor{Repos: c.repos, Listing: len(c.repos) == 0}
	} else if err := json.Unmarshal([]byte(req.Cursor), &cur); err != nil {
		return nil, fmt.Errorf("error reading the GitHub cursor: %w", err)
	}
	p := &Page{}
	if cur.Listing {
		u := cur.Next
		if u == "" {
			u = c.base + "/user/repos?per_page=" + strconv.Itoa(githubPageSize)
		}
		items, next, err := c.get(ctx, u, "/user/repos "+pageRef(cur.Next))
		if err != nil {
			return nil, err
		}
		for i, it := range items {
			var r struct {
				FullName string `json:"full_name"`
			}
			if json.Unmarshal(it, &r) != nil || !githubRepo.MatchString(r.FullName) {
				return nil, &BadAnswerError{Vendor: "GitHub", Page: "/user/repos " + pageRef(cur.Next), Status: 200, Reason: fmt.Sprintf("repository %d has no full_name", i), Body: it}
			}
			cur.Repos = append(cur.Repos, r.FullName)
		}
		cur.Next, cur.Listing = next, next != ""
		p.Path = "/user/repos"
		return c.advance(p, cur)
	}
	if cur.Repo >= len(cur.Repos) {
		p.Done = true
		return p, nil
	}
	repo := cur.Repos[cur.Repo]
	u := cur.Next
	if u == "" {
		u = c.firstURL(repo, req.Since, githubPageSize)
	}
	name := "/repos/" + repo + c.ep.path + " " + pageRef(cur.Next)
	items, next, err := c.get(ctx, u, name)
	if err != nil {
		return nil, err
	}
	if parsed, err := url.Parse(u); err == nil {
		p.Path, p.Query = parsed.Path, parsed.RawQuery
	}
	for i, it := range items {
		var o struct {
			ID          json.Number     `json:"id"`
			UpdatedAt   string          `json:"updated_at"`
			PullRequest json.RawMessage `json:"pull_request"`
		}
		if err := json.Unmarshal(it, &o); err != nil || o.ID == "" {
			return nil, &BadAnswerError{Vendor: "GitHub", Page: name, Status: 200, Reason: fmt.Sprintf("element %d has no id", i), Body: it}
		}
		if c.ep.path == "/issues" && len(o.PullRequest) > 0 {
			continue // the issues endpoint lists pull requests too; they are the pulls table's
		}
		if c.ep.descending && !req.Since.IsZero() {
			if t, err := time.Parse(time.RFC3339, o.UpdatedAt); err == nil && t.Before(req.Since) {
				next = "" // sorted by updated, descending: the rest is older than the mark
				break
			}
		}
		if c.ep.release {
			// A release does not say its repository; the webhook's event does, beside it.
			b, err := json.Marshal(map[string]any{"release": it, "repository": map[string]string{"full_name": repo}})
			if err != nil {
				return nil, err
			}
			it = b
		}
		p.Objects = append(p.Objects, it)
	}
	cur.Next = next
	if next == "" {
		cur.Repo++
	}
	return c.advance(p, cur)
}

// advance sets the page's next cursor, or Done after the last repository.
func (c *githubClient) advance(p *Page, cur githubCursor) (*Page, error) {
	if !cur.Listing && cur.Repo >= len(cur.Repos) {
		p.Done = true
		return p, nil
	}
	b, err := json.Marshal(cur)
	if err != nil {
		return nil, err
	}
	p.Next = string(b)
	return p, nil
}

func pageRef(next string) string {
	if next == "" {
		return "(first)"
	}
	return next
}
