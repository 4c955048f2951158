package backfilltest

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ShopifyConfig sets a fake Shopify's token and its cost bucket.
type ShopifyConfig struct {
	// FailOnce answers the first request after the first 500 (once).
	FailOnce bool
	// Token is the Admin API access token it accepts; default "shpat_fake".
	Token string
	// Bucket and RestoreRate are the cost bucket's size and refill per second; defaults 1000 and 50 (Shopify's
	// standard plan). A query costs first + 2 up front.
	Bucket, RestoreRate float64
}

// Shopify is a fake of the GraphQL Admin API's products and orders connections: first/after cursors with pageInfo, the
// query filter updated_at:>'T', sortKey UPDATED_AT, and cost throttling reported in extensions.cost.
type Shopify struct {
	URL string
	cfg ShopifyConfig
	srv *httptest.Server

	mu        sync.Mutex
	available float64
	refilled  time.Time
	throttled int
	requests  int
	failed    bool
	// nodes by connection ("products", "orders"), by updatedAt ascending
	nodes map[string][]map[string]any
}

// NewShopify starts a fake Shopify.
func NewShopify(cfg ShopifyConfig) *Shopify {
	if cfg.Token == "" {
		cfg.Token = "shpat_fake"
	}
	if cfg.Bucket == 0 {
		cfg.Bucket = 1000
	}
	if cfg.RestoreRate == 0 {
		cfg.RestoreRate = 50
	}
	f := &Shopify{cfg: cfg, available: cfg.Bucket, refilled: time.Now(), nodes: map[string][]map[string]any{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.handle))
	f.URL = f.srv.URL
	return f
}

// Close stops the server.
func (f *Shopify) Close() { f.srv.Close() }

// Token is the token it accepts.
func (f *Shopify) Token() string { return f.cfg.Token }

// Throttled counts the queries answered THROTTLED.
func (f *Shopify) Throttled() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.throttled
}

// AddProducts adds n products updated a second apart from updated.
func (f *Shopify) AddProducts(n int, updated time.Time) {
	f.add("products", n, updated, func(id int64, i int, at string) map[string]any {
		return map[string]any{"id": fmt.Sprintf("gid://shopify/Product/%d", id), "legacyResourceId": strconv.FormatInt(id, 10),
			"title": fmt.Sprintf("Product %d", i), "handle": fmt.Sprintf("product-%d", i), "productType": "Hats", "status": "ACTIVE",
			"tags": []string{"summer", "wool"}, "vendor": "Acme", "createdAt": at, "updatedAt": at, "publishedAt": at}
	})
}

// AddOrders adds n paid, unfulfilled orders updated a second apart from updated.
func (f *Shopify) AddOrders(n int, updated time.Time) {
	f.add("orders", n, updated, func(id int64, i int, at string) map[string]any {
		return map[string]any{"id": fmt.Sprintf("gid://shopify/Order/%d", id), "legacyResourceId": strconv.FormatInt(id, 10),
			"name": fmt.Sprintf("#%d", 1001+i), "email": fmt.Sprintf("buyer%d@example.com", i), "phone": nil,
			"createdAt": at, "updatedAt": at, "cancelledAt": nil, "closedAt": nil, "currencyCode": "USD",
			"displayFinancialStatus": "PAID", "displayFulfillmentStatus": "UNFULFILLED",
			"totalPriceSet": map[string]any{"shopMoney": map[string]any{"amount": "10.50", "currencyCode": "USD"}},
			"customer":      map[string]any{"legacyResourceId": "207119551"}}
	})
}

func (f *Shopify) add(conn string, n int, updated time.Time, node func(id int64, i int, at string) map[string]any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range n {
		id := int64(7000000000000 + len(f.nodes[conn]))
		f.nodes[conn] = append(f.nodes[conn], node(id, i, updated.Add(time.Duration(i)*time.Second).UTC().Format(time.RFC3339)))
	}
}

var updatedAfter = regexp.MustCompile(`^updated_at:>'([^']+)'$`)

func (f *Shopify) handle(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if r.Header.Get("X-Shopify-Access-Token") != f.cfg.Token {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"errors":"[API] Invalid API key or access token (unrecognized login or wrong password)"}`))
		return
	}
	f.requests++
	if f.cfg.FailOnce && !f.failed && f.requests > 1 {
		f.failed = true
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(`{"errors":"Internal Server Error"}`))
		return
	}
	if r.Method != http.MethodPost || !strings.HasPrefix(r.URL.Path, "/admin/api/") || !strings.HasSuffix(r.URL.Path, "/graphql.json") {
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"errors":"Not Found"}`))
		return
	}
	var req struct {
		Query     string `json:"query"`
		Variables struct {
			First int     `json:"first"`
			After *string `json:"after"`
			Query *string `json:"query"`
		} `json:"variables"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Variables.First < 1 || req.Variables.First > 250 {
		_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]any{{"message": "Parse error or unsupported query", "extensions": map[string]string{"code": "BAD_REQUEST"}}}})
		return
	}
	conn := ""
	for _, c := range []string{"products", "orders"} {
		if strings.Contains(req.Query, c+"(") {
			conn = c
		}
	}
	if conn == "" {
		_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]any{{"message": "Field doesn't exist on type 'QueryRoot'", "extensions": map[string]string{"code": "undefinedField"}}}})
		return
	}
	now := time.Now()
	f.available = min(f.cfg.Bucket, f.available+now.Sub(f.refilled).Seconds()*f.cfg.RestoreRate)
	f.refilled = now
	requested := float64(req.Variables.First + 2)
	cost := func(actual any) map[string]any {
		return map[string]any{"cost": map[string]any{"requestedQueryCost": requested, "actualQueryCost": actual,
			"throttleStatus": map[string]any{"maximumAvailable": f.cfg.Bucket, "currentlyAvailable": f.available, "restoreRate": f.cfg.RestoreRate}}}
	}
	if f.available < requested {
		f.throttled++
		_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]any{{"message": "Throttled", "extensions": map[string]string{"code": "THROTTLED", "documentation": "https://shopify.dev/api/usage/rate-limits"}}}, "extensions": cost(nil)})
		return
	}
	all := f.nodes[conn]
	if q := req.Variables.Query; q != nil && *q != "" {
		m := updatedAfter.FindStringSubmatch(*q)
		var t time.Time
		var err error
		if m != nil {
			t, err = time.Parse(time.RFC3339, m[1])
		}
		if m == nil || err != nil {
			_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]any{{"message": "Invalid search query", "extensions": map[string]string{"code": "BAD_REQUEST"}}}})
			return
		}
		all = slices.DeleteFunc(slices.Clone(all), func(p map[string]any) bool {
			u, _ := time.Parse(time.RFC3339, p["updatedAt"].(string))
			return !u.After(t)
		})
	}
	start := 0
	if a := req.Variables.After; a != nil {
		id, err := base64.StdEncoding.DecodeString(*a)
		i := slices.IndexFunc(all, func(p map[string]any) bool { return p["legacyResourceId"] == string(id) })
		if err != nil || i < 0 {
			_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]any{{"message": "Invalid cursor for current pagination sort.", "extensions": map[string]string{"code": "BAD_REQUEST"}}}})
			return
		}
		start = i + 1
	}
	end := min(start+req.Variables.First, len(all))
	nodes := append([]map[string]any{}, all[start:end]...)
	var endCursor any
	if len(nodes) > 0 {
		endCursor = base64.StdEncoding.EncodeToString([]byte(nodes[len(nodes)-1]["legacyResourceId"].(string)))
	}
	actual := float64(len(nodes) + 2)
	f.available -= actual
	_ = json.NewEncoder(w).Encode(map[string]any{
		"data":       map[string]any{conn: map[string]any{"pageInfo": map[string]any{"hasNextPage": end < len(all), "endCursor": endCursor}, "nodes": nodes}},
		"extensions": cost(actual),
	})
}
