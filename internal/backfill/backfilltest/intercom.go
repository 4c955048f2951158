package backfilltest

import (
	"encoding/base64"
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

// IntercomConfig sets a fake Intercom's token and faults.
type IntercomConfig struct {
	// FailOnce answers the first request after the first 500 (once).
	FailOnce bool
	// Token is the access token it accepts; default "dG9rOmZha2U=".
	Token string
	// RateLimitEvery answers every Nth request 429 with X-RateLimit-Reset a second ahead (no Retry-After).
	RateLimitEvery int
}

// Intercom is a fake of Intercom's contacts and conversations lists and searches: per_page (at most 150),
// cursor paging with pages.next.starting_after, searches by updated_at, Intercom's error lists.
type Intercom struct {
	URL string
	cfg IntercomConfig
	srv *httptest.Server

	mu       sync.Mutex
	requests int
	failed   bool
	// items by resource: "contacts", "conversations"
	items map[string][]map[string]any
}

// NewIntercom starts a fake Intercom.
func NewIntercom(cfg IntercomConfig) *Intercom {
	if cfg.Token == "" {
		cfg.Token = "dG9rOmZha2U="
	}
	f := &Intercom{cfg: cfg, items: map[string][]map[string]any{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.handle))
	f.URL = f.srv.URL
	return f
}

// Close stops the server.
func (f *Intercom) Close() { f.srv.Close() }

// Token is the token it accepts.
func (f *Intercom) Token() string { return f.cfg.Token }

// AddContacts adds n contacts updated a second apart from updated.
func (f *Intercom) AddContacts(prefix string, n int, updated time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range n {
		at := updated.Add(time.Duration(i) * time.Second).Unix()
		f.items["contacts"] = append(f.items["contacts"], map[string]any{"type": "contact", "id": fmt.Sprintf("%s%023x", prefix, i), "workspace_id": "ecahpwf5",
			"external_id": nil, "role": "user", "email": fmt.Sprintf("%s%d@example.com", prefix, i), "phone": nil, "name": "Contact " + strconv.Itoa(i),
			"created_at": at, "updated_at": at, "last_seen_at": nil})
	}
}

// AddConversations adds n open conversations updated a second apart from updated.
func (f *Intercom) AddConversations(prefix string, n int, updated time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range n {
		at := updated.Add(time.Duration(i) * time.Second).Unix()
		f.items["conversations"] = append(f.items["conversations"], map[string]any{"type": "conversation", "id": fmt.Sprintf("%s%d", prefix, 100000+i),
			"title": nil, "created_at": at, "updated_at": at, "waiting_since": at, "snoozed_until": nil, "open": true, "state": "open",
			"read": false, "priority": "not_priority", "admin_assignee_id": nil, "team_assignee_id": nil})
	}
}

func intercomError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"type": "error.list", "request_id": "fake", "errors": []map[string]string{{"code": code, "message": msg}}})
}

func (f *Intercom) handle(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests++
	if r.Header.Get("Authorization") != "Bearer "+f.cfg.Token {
		intercomError(w, http.StatusUnauthorized, "unauthorized", "Access Token Invalid")
		return
	}
	w.Header().Set("X-RateLimit-Limit", "10000")
	if f.cfg.RateLimitEvery > 0 && f.requests%f.cfg.RateLimitEvery == 0 {
		w.Header().Set("X-RateLimit-Remaining", "0")
		w.Header().Set("X-RateLimit-Reset", strconv.FormatInt(time.Now().Add(time.Second).Unix(), 10))
		intercomError(w, http.StatusTooManyRequests, "rate_limit_exceeded", "You have exceeded the rate limit. Please try again later.")
		return
	}
	if f.cfg.FailOnce && !f.failed && f.requests > 1 {
		f.failed = true
		intercomError(w, http.StatusInternalServerError, "server_error", "Server Error")
		return
	}
	resource, search := strings.CutSuffix(strings.TrimPrefix(r.URL.Path, "/"), "/search")
	if resource != "contacts" && resource != "conversations" {
		intercomError(w, http.StatusNotFound, "not_found", "Resource Not Found")
		return
	}
	all := f.items[resource]
	perPage, after := 50, ""
	switch {
	case r.Method == http.MethodGet && !search:
		q := r.URL.Query()
		if v, err := strconv.Atoi(q.Get("per_page")); err == nil && v > 0 {
			perPage = min(v, 150)
		}
		after = q.Get("starting_after")
	case r.Method == http.MethodPost && search:
		var body struct {
			Query struct {
				Field    string `json:"field"`
				Operator string `json:"operator"`
				Value    int64  `json:"value"`
			} `json:"query"`
			Pagination struct {
				PerPage       int    `json:"per_page"`
				StartingAfter string `json:"starting_after"`
			} `json:"pagination"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Query.Field != "updated_at" || body.Query.Operator != ">" {
			intercomError(w, http.StatusBadRequest, "parameter_invalid", "Invalid query")
			return
		}
		all = slices.DeleteFunc(slices.Clone(all), func(c map[string]any) bool { return c["updated_at"].(int64) <= body.Query.Value })
		if body.Pagination.PerPage > 0 {
			perPage = min(body.Pagination.PerPage, 150)
		}
		after = body.Pagination.StartingAfter
	default:
		intercomError(w, http.StatusNotFound, "not_found", "Resource Not Found")
		return
	}
	start := 0
	if after != "" {
		id, err := base64.StdEncoding.DecodeString(after)
		i := slices.IndexFunc(all, func(c map[string]any) bool { return c["id"] == string(id) })
		if err != nil || i < 0 {
			intercomError(w, http.StatusBadRequest, "parameter_invalid", "starting_after is invalid")
			return
		}
		start = i + 1
	}
	end := min(start+perPage, len(all))
	pages := map[string]any{"type": "pages", "page": start/perPage + 1, "per_page": perPage, "total_pages": (len(all) + perPage - 1) / perPage}
	if end < len(all) {
		pages["next"] = map[string]any{"page": start/perPage + 2, "starting_after": base64.StdEncoding.EncodeToString([]byte(all[end-1]["id"].(string)))}
	}
	w.Header().Set("Content-Type", "application/json")
	page := append([]map[string]any{}, all[start:end]...)
	if resource == "conversations" {
		_ = json.NewEncoder(w).Encode(map[string]any{"type": "conversation.list", "conversations": page, "total_count": len(all), "pages": pages})
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"type": "list", "data": page, "total_count": len(all), "pages": pages})
}
