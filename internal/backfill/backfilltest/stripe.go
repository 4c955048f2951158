package backfilltest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// StripeConfig sets a fake Stripe's key and faults.
type StripeConfig struct {
	// Key is the secret key it accepts; default "sk_test_fake".
	Key string
	// RateLimitEvery answers every Nth list request 429 with Retry-After (0: never).
	RateLimitEvery int
	// RetryAfter is the Retry-After of those 429s, in seconds; default "1".
	RetryAfter string
	// FailOnce answers the first list request after the first page 500 with Stripe-Should-Retry: true.
	FailOnce bool
	// PageDelay delays every list answer (to catch a job mid-way).
	PageDelay time.Duration
	// Generated, when set, makes /v1/charges list that many charges made on the fly (ch_gen_00000000 newest
	// first), none of them held in memory: for backfills of millions.
	Generated int
}

// Stripe is a fake of Stripe's list endpoints: objects newest first, limit (default 10, at most 100),
// starting_after, has_more, Stripe's error objects.
type Stripe struct {
	URL     string
	cfg     StripeConfig
	srv     *httptest.Server
	started time.Time

	mu      sync.Mutex
	revoked bool
	// lists are each resource's objects, newest first, by path
	lists map[string][]map[string]any
	// events are /v1/events, newest first
	events   []map[string]any
	requests int
	failed   bool
	served   map[string]int // successful answers by path, starting_after and limit
	// index finds an object's position in its list by id (rebuilt after additions): a page is not a scan.
	index     map[string]map[string]int
	malformed map[string]string
}

// NewStripe starts a fake Stripe; Close stops it.
func NewStripe(cfg StripeConfig) *Stripe {
	if cfg.Key == "" {
		cfg.Key = "sk_test_fake"
	}
	if cfg.RetryAfter == "" {
		cfg.RetryAfter = "1"
	}
	s := &Stripe{cfg: cfg, started: time.Now(), lists: map[string][]map[string]any{}, served: map[string]int{}, malformed: map[string]string{}}
	s.srv = httptest.NewServer(http.HandlerFunc(s.handle))
	s.URL = s.srv.URL
	return s
}

// Close stops the server.
func (s *Stripe) Close() { s.srv.Close() }

// Key is the key the fake accepts.
func (s *Stripe) Key() string { return s.cfg.Key }

// Revoke makes the key invalid from now on, as rolling it in the dashboard does.
func (s *Stripe) Revoke() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.revoked = true
}

// MalformNext makes the next answer for path a body that is not JSON.
func (s *Stripe) MalformNext(path, body string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.malformed[path] = body
}

// Charge is a charge as Stripe's API returns it.
func Charge(id string, created int64, amount int) map[string]any {
	return map[string]any{
		"id": id, "object": "charge", "amount": amount, "amount_captured": amount, "amount_refunded": 0,
		"balance_transaction": "txn_" + id, "captured": true, "created": created, "currency": "usd",
		"customer": "cus_" + strconv.Itoa(amount%97), "description": nil, "invoice": nil, "livemode": false,
		"metadata": map[string]any{}, "paid": true, "payment_intent": "pi_" + id, "receipt_email": nil,
		"refunded": false, "status": "succeeded",
	}
}

// AddCharges adds n charges ch_<prefix>_00000.. created one second apart from created, and returns their ids.
func (s *Stripe) AddCharges(prefix string, n int, created time.Time) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, n)
	added := make([]map[string]any, n)
	for i := range n {
		ids[i] = fmt.Sprintf("ch_%s_%05d", prefix, i)
		// Newest first: the last created goes to the front.
		added[n-1-i] = Charge(ids[i], created.Unix()+int64(i), 100+i)
	}
	s.lists["/v1/charges"] = append(added, s.lists["/v1/charges"]...)
	s.index = nil
	return ids
}

// Add adds an object (newest) to the list at path.
func (s *Stripe) Add(path string, obj map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lists[path] = slices.Insert(s.lists[path], 0, obj)
	s.index = nil
}

// AddEvent adds an event (newest) about obj, as Stripe records it.
func (s *Stripe) AddEvent(id, typ string, created time.Time, obj map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = slices.Insert(s.events, 0, map[string]any{"id": id, "object": "event", "api_version": "2024-06-20",
		"created": created.Unix(), "type": typ, "livemode": false, "pending_webhooks": 0,
		"data": map[string]any{"object": obj}})
}

// Refetched counts the pages (path, starting_after, limit) answered 200 more than once.
func (s *Stripe) Refetched() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.served {
		if c > 1 {
			n++
		}
	}
	return n
}

// Requests counts the list requests, answered or not.
func (s *Stripe) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

// generated answers a page of Generated charges: position i (newest first) is ch_gen_<i>, created i seconds
// before the fake started.
func (s *Stripe) generated(w http.ResponseWriter, q url.Values) {
	limit, start := 10, 0
	if l, err := strconv.Atoi(q.Get("limit")); err == nil && l >= 1 && l <= 100 {
		limit = l
	}
	if after := q.Get("starting_after"); after != "" {
		i, err := strconv.Atoi(strings.TrimPrefix(after, "ch_gen_"))
		if err != nil || !strings.HasPrefix(after, "ch_gen_") || i < 0 || i >= s.cfg.Generated {
			stripeError(w, http.StatusBadRequest, "invalid_request_error", "No such charge: '"+after+"'", "starting_after")
			return
		}
		start = i + 1
	}
	end := min(start+limit, s.cfg.Generated)
	data := make([]map[string]any, 0, end-start)
	for i := start; i < end; i++ {
		data = append(data, Charge(fmt.Sprintf("ch_gen_%08d", i), s.started.Unix()-int64(i), 100+i%1000))
	}
	s.mu.Lock()
	s.served["/v1/charges|"+q.Get("starting_after")+"|"+strconv.Itoa(limit)]++
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"object": "list", "url": "/v1/charges", "has_more": end < s.cfg.Generated, "data": data})
}

// indexOf is an object's position in the list at path; the caller holds mu.
func (s *Stripe) indexOf(path, id string) (int, bool) {
	if s.index == nil {
		s.index = map[string]map[string]int{}
	}
	idx, ok := s.index[path]
	if !ok {
		idx = make(map[string]int, len(s.lists[path]))
		for i, o := range s.lists[path] {
			idx[o["id"].(string)] = i
		}
		s.index[path] = idx
	}
	i, ok := idx[id]
	return i, ok
}

func stripeError(w http.ResponseWriter, status int, typ, msg, param string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Request-Id", "req_fake")
	w.WriteHeader(status)
	e := map[string]any{"type": typ, "message": msg}
	if param != "" {
		e["param"] = param
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"error": e})
}

func (s *Stripe) handle(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		stripeError(w, http.StatusMethodNotAllowed, "invalid_request_error", "Unrecognized request URL (POST: "+r.URL.Path+")", "")
		return
	}
	key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		key, _, ok = r.BasicAuth()
	}
	s.mu.Lock()
	s.requests++
	n, revoked := s.requests, s.revoked
	s.mu.Unlock()
	if !ok || key == "" {
		stripeError(w, http.StatusUnauthorized, "invalid_request_error", "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').", "")
		return
	}
	if key != s.cfg.Key || revoked {
		masked := key
		if len(masked) > 4 {
			masked = masked[:min(8, len(masked)-4)] + "****" + masked[len(masked)-4:]
		}
		msg := "Invalid API Key provided: " + masked
		if revoked && key == s.cfg.Key {
			msg = "Expired API Key provided: " + masked
		}
		stripeError(w, http.StatusUnauthorized, "invalid_request_error", msg, "")
		return
	}
	if s.cfg.PageDelay > 0 {
		select {
		case <-time.After(s.cfg.PageDelay):
		case <-r.Context().Done():
			return
		}
	}
	if s.cfg.RateLimitEvery > 0 && n%s.cfg.RateLimitEvery == 0 {
		w.Header().Set("Retry-After", s.cfg.RetryAfter)
		stripeError(w, http.StatusTooManyRequests, "invalid_request_error", "Too many requests hit the API too quickly. We recommend an exponential backoff of your requests.", "")
		return
	}
	q := r.URL.Query()
	s.mu.Lock()
	if s.cfg.FailOnce && !s.failed && q.Get("starting_after") != "" {
		s.failed = true
		s.mu.Unlock()
		w.Header().Set("Stripe-Should-Retry", "true")
		stripeError(w, http.StatusInternalServerError, "api_error", "An unknown error occurred", "")
		return
	}
	if body, ok := s.malformed[r.URL.Path]; ok {
		delete(s.malformed, r.URL.Path)
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(body))
		return
	}
	if r.URL.Path == "/v1/charges" && s.cfg.Generated > 0 {
		s.mu.Unlock()
		s.generated(w, q)
		return
	}
	var all []map[string]any
	filtered := true
	switch {
	case r.URL.Path == "/v1/events":
		all = s.events
		if gte := q.Get("created[gte]"); gte != "" {
			t, _ := strconv.ParseInt(gte, 10, 64)
			all = slices.DeleteFunc(slices.Clone(all), func(e map[string]any) bool { return e["created"].(int64) < t })
		}
	case r.URL.Path == "/v1/subscription_items":
		all = slices.DeleteFunc(slices.Clone(s.lists[r.URL.Path]), func(o map[string]any) bool { return o["subscription"] != q.Get("subscription") })
	default:
		var known bool
		all, known = s.lists[r.URL.Path]
		if !known && !slices.Contains([]string{"/v1/charges", "/v1/customers", "/v1/subscriptions"}, r.URL.Path) {
			s.mu.Unlock()
			stripeError(w, http.StatusNotFound, "invalid_request_error", "Unrecognized request URL (GET: "+r.URL.Path+").", "")
			return
		}
		filtered = false
		if r.URL.Path == "/v1/subscriptions" && q.Get("status") != "all" {
			all = slices.DeleteFunc(slices.Clone(all), func(o map[string]any) bool { return o["status"] == "canceled" })
			filtered = true
		}
	}
	limit := 10
	if l := q.Get("limit"); l != "" {
		v, err := strconv.Atoi(l)
		if err != nil || v < 1 || v > 100 {
			s.mu.Unlock()
			stripeError(w, http.StatusBadRequest, "invalid_request_error", "Invalid integer: "+l, "limit")
			return
		}
		limit = v
	}
	start := 0
	after := q.Get("starting_after")
	if after != "" {
		i := -1
		if filtered {
			i = slices.IndexFunc(all, func(o map[string]any) bool { return o["id"] == after })
		} else if j, ok := s.indexOf(r.URL.Path, after); ok {
			i = j
		}
		if i < 0 {
			s.mu.Unlock()
			stripeError(w, http.StatusBadRequest, "invalid_request_error", "No such object: '"+after+"'", "starting_after")
			return
		}
		start = i + 1
	}
	end := min(start+limit, len(all))
	data := append([]map[string]any{}, all[start:end]...) // [] when empty, as Stripe sends
	s.served[r.URL.Path+"|"+after+"|"+strconv.Itoa(limit)]++
	body, err := json.Marshal(map[string]any{"object": "list", "url": r.URL.Path, "has_more": end < len(all), "data": data})
	s.mu.Unlock()
	if err != nil {
		stripeError(w, http.StatusInternalServerError, "api_error", err.Error(), "")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Request-Id", "req_fake")
	_, _ = w.Write(body)
}
