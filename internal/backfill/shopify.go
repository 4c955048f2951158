package backfill

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"regexp"
	"strings"
	"time"
)

// Shopify lists through the GraphQL Admin API (REST is legacy since October 2024): cursor paging with
// pageInfo { hasNextPage endCursor }, query "updated_at:>..." for incremental jobs, and the cost-based throttle
// of extensions.cost.throttleStatus waited out. The API version is pinned and may be set in the options.

// ShopifyAPIVersion is the Admin API version used unless the options say otherwise.
const ShopifyAPIVersion = "2025-01"

const shopifyPageSize = 100

var shopifyQueries = map[string]struct{ field, nodes string }{
	"shopify_customer_v1": {"customers", "id legacyResourceId email firstName lastName phone state tags verifiedEmail createdAt updatedAt amountSpent { currencyCode }"},
	"shopify_order_v1": {"orders", "id legacyResourceId name email phone createdAt updatedAt cancelledAt closedAt currencyCode " +
		"displayFinancialStatus displayFulfillmentStatus totalPriceSet { shopMoney { amount currencyCode } } customer { legacyResourceId }"},
	"shopify_product_v1": {"products", "id legacyResourceId title handle productType status tags vendor createdAt updatedAt publishedAt"},
}

var (
	shopifyShop    = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	shopifyVersion = regexp.MustCompile(`^[0-9]{4}-(01|04|07|10)$`)
)

var shopifyVendor = vendorDef{
	name:   "Shopify",
	serves: func(s string) bool { _, ok := shopifyQueries[s]; return ok },
	hostAllowed: func(h string) bool {
		shop, ok := strings.CutSuffix(h, ".myshopify.com")
		return ok && shopifyShop.MatchString(shop)
	},
	newClient: func(t Target) (Vendor, error) {
		q, ok := shopifyQueries[t.Service.Name]
		if !ok {
			return nil, fmt.Errorf("%w: %s", ErrUnsupported, t.Service.Name)
		}
		var opts struct {
			Shop       string `json:"shop"`
			APIVersion string `json:"api_version"`
		}
		if err := decodeOptions(t.Options, &opts); err != nil {
			return nil, err
		}
		opts.Shop = strings.TrimSuffix(opts.Shop, ".myshopify.com")
		if t.BaseURL == "" && !shopifyShop.MatchString(opts.Shop) {
			return nil, fmt.Errorf("%w: options: shop: want the shop's name (NAME of NAME.myshopify.com)", ErrCredentials)
		}
		if opts.APIVersion == "" {
			opts.APIVersion = ShopifyAPIVersion
		}
		if !shopifyVersion.MatchString(opts.APIVersion) {
			return nil, fmt.Errorf("%w: options: api_version %q: want YYYY-MM (a quarterly release)", ErrCredentials, opts.APIVersion)
		}
		if t.Credentials.Key == "" {
			return nil, fmt.Errorf("%w: Shopify needs an Admin API access token", ErrCredentials)
		}
		base := t.BaseURL
		if base == "" {
			base = "https://" + opts.Shop + ".myshopify.com"
		}
		query := fmt.Sprintf(`query backfill($first: Int!, $after: String, $query: String) { %s(first: $first, after: $after, query: $query, sortKey: UPDATED_AT) { pageInfo { hasNextPage endCursor } nodes { %s } } }`, q.field, q.nodes)
		return &shopifyClient{url: base + "/admin/api/" + opts.APIVersion + "/graphql.json", token: t.Credentials.Key, field: q.field,
			query: query, f: newFetcher("Shopify", t.HTTP, shopifyDecision), attempts: t.HTTP.WithDefaults().Attempts}, nil
	},
}

type shopifyClient struct {
	url, token, field, query string
	f                        *fetcher
	attempts                 int
}

// shopifyDecision reads Shopify's REST-style error ({"errors": "..."}) of a refused token.
func shopifyDecision(resp *http.Response, body []byte) decision {
	d := defaultDecision(resp, body)
	var e struct {
		Errors json.RawMessage `json:"errors"`
	}
	if json.Unmarshal(body, &e) == nil && len(e.Errors) > 0 {
		var msg string
		if json.Unmarshal(e.Errors, &msg) != nil {
			msg = string(e.Errors)
		}
		d.message = msg
	}
	return d
}

type shopifyAnswer struct {
	Data   map[string]json.RawMessage `json:"data"`
	Errors []struct {
		Message    string `json:"message"`
		Extensions struct {
			Code string `json:"code"`
		} `json:"extensions"`
	} `json:"errors"`
	Extensions struct {
		Cost struct {
			RequestedQueryCost float64 `json:"requestedQueryCost"`
			ThrottleStatus     struct {
				CurrentlyAvailable float64 `json:"currentlyAvailable"`
				RestoreRate        float64 `json:"restoreRate"`
			} `json:"throttleStatus"`
		} `json:"cost"`
	} `json:"extensions"`
}

// throttleWait is how long until the bucket holds what the query costs.
func (a *shopifyAnswer) throttleWait() time.Duration {
	c := a.Extensions.Cost
	if c.ThrottleStatus.RestoreRate <= 0 {
		return time.Second
	}
	need := c.RequestedQueryCost - c.ThrottleStatus.CurrentlyAvailable
	return time.Duration(math.Max(need/c.ThrottleStatus.RestoreRate, 0.1) * float64(time.Second))
}

func (c *shopifyClient) run(ctx context.Context, first int, cursor string, since time.Time) (*Page, error) {
	vars := map[string]any{"first": first}
	if cursor != "" {
		vars["after"] = cursor
	}
	if !since.IsZero() {
		vars["query"] = "updated_at:>'" + since.UTC().Format(time.RFC3339) + "'"
	}
	reqBody, err := json.Marshal(map[string]any{"query": c.query, "variables": vars})
	if err != nil {
		return nil, err
	}
	name := c.field + " " + pageRef(cursor)
	for attempt := 0; ; attempt++ {
		resp, body, err := c.f.send(ctx, http.MethodPost, c.url, reqBody, name, func(r *http.Request) { r.Header.Set("X-Shopify-Access-Token", c.token) })
		if err != nil {
			return nil, err
		}
		bad := func(reason string) error {
			return &BadAnswerError{Vendor: "Shopify", Page: name, Status: resp.StatusCode, Reason: reason, Body: body}
		}
		var a shopifyAnswer
		if err := json.Unmarshal(body, &a); err != nil {
			return nil, bad("not a GraphQL answer: " + err.Error())
		}
		if len(a.Errors) > 0 {
			if a.Errors[0].Extensions.Code == "THROTTLED" {
				if attempt+1 >= c.attempts {
					return nil, &TransientError{Err: fmt.Errorf("Shopify kept throttling page %s", name)}
				}
				if err := c.f.sleep(ctx, min(a.throttleWait(), c.f.cfg.MaxRetryAfter)); err != nil {
					return nil, err
				}
				continue
			}
			return nil, &VendorError{Vendor: "Shopify", Status: resp.StatusCode, Message: a.Errors[0].Message + " (" + a.Errors[0].Extensions.Code + ")"}
		}
		var conn struct {
			PageInfo *struct {
				HasNextPage bool   `json:"hasNextPage"`
				EndCursor   string `json:"endCursor"`
			} `json:"pageInfo"`
			Nodes []json.RawMessage `json:"nodes"`
		}
		if err := json.Unmarshal(a.Data[c.field], &conn); err != nil || conn.PageInfo == nil || conn.Nodes == nil {
			return nil, bad(fmt.Sprintf("want data.%s with pageInfo and nodes", c.field))
		}
		if conn.PageInfo.HasNextPage && conn.PageInfo.EndCursor == "" {
			return nil, bad("hasNextPage without endCursor")
		}
		for i, n := range conn.Nodes {
			var id struct {
				LegacyResourceID string `json:"legacyResourceId"`
			}
			if json.Unmarshal(n, &id) != nil || id.LegacyResourceID == "" {
				return nil, bad(fmt.Sprintf("node %d has no legacyResourceId", i))
			}
		}
		return &Page{Objects: conn.Nodes, Done: !conn.PageInfo.HasNextPage, Next: conn.PageInfo.EndCursor, Path: "/graphql.json", Query: c.field}, nil
	}
}

func (c *shopifyClient) Verify(ctx context.Context) error {
	_, err := c.run(ctx, 1, "", time.Time{})
	return err
}

func (c *shopifyClient) Page(ctx context.Context, req PageRequest) (*Page, error) {
	return c.run(ctx, shopifyPageSize, req.Cursor, req.Since)
}
