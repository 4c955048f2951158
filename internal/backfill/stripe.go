package backfill

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Stripe lists each resource from its list endpoint, newest first, 100 a page with starting_after; an
// incremental job lists /v1/events created since the high-water mark (Stripe keeps events 30 days, so an older
// mark makes a full job) and keeps those whose object is the integration's.

// stripeEndpoint is the list endpoint of a Stripe service, and the object type its elements have.
type stripeEndpoint struct {
	path, object string
	query        url.Values
}

var stripeEndpoints = map[string]stripeEndpoint{
	"stripe_charge_v1":         {path: "/v1/charges", object: "charge"},
	"stripe_coupon_v1":         {path: "/v1/coupons", object: "coupon"},
	"stripe_customer_v1":       {path: "/v1/customers", object: "customer"},
	"stripe_dispute_v1":        {path: "/v1/disputes", object: "dispute"},
	"stripe_invoice_v1":        {path: "/v1/invoices", object: "invoice"},
	"stripe_invoice_item_v1":   {path: "/v1/invoiceitems", object: "invoiceitem"},
	"stripe_payment_intent_v1": {path: "/v1/payment_intents", object: "payment_intent"},
	"stripe_payout_v1":         {path: "/v1/payouts", object: "payout"},
	"stripe_price_v1":          {path: "/v1/prices", object: "price"},
	"stripe_product_v1":        {path: "/v1/products", object: "product"},
	"stripe_refund_v1":         {path: "/v1/refunds", object: "refund"},
	// Canceled and ended subscriptions too: the default lists only those not canceled.
	"stripe_subscription_v1": {path: "/v1/subscriptions", object: "subscription", query: url.Values{"status": {"all"}}},
	// Items come inside their subscription (completed from /v1/subscription_items when there are more).
	"stripe_subscription_item_v1": {path: "/v1/subscriptions", object: "subscription", query: url.Values{"status": {"all"}}},
}

const stripePageSize = 100

var stripeVendor = vendorDef{
	name:              "Stripe",
	serves:            func(s string) bool { _, ok := stripeEndpoints[s]; return ok },
	incrementalWindow: 30 * 24 * time.Hour,
	hostAllowed:       func(h string) bool { return h == "api.stripe.com" },
	newClient: func(t Target) (Vendor, error) {
		ep, ok := stripeEndpoints[t.Service.Name]
		if !ok {
			return nil, fmt.Errorf("%w: %s", ErrUnsupported, t.Service.Name)
		}
		base := t.BaseURL
		if base == "" {
			base = "https://api.stripe.com"
		}
		if t.Credentials.Key == "" {
			return nil, fmt.Errorf("%w: Stripe needs a secret or restricted key (sk_... or rk_...)", ErrCredentials)
		}
		if err := decodeOptions(t.Options, &struct{}{}); err != nil {
			return nil, err
		}
		return &stripeClient{base: base, key: t.Credentials.Key, ep: ep, items: t.Service.Name == "stripe_subscription_item_v1",
			f: newFetcher("Stripe", t.HTTP, stripeDecision)}, nil
	},
}

type stripeClient struct {
	base, key string
	ep        stripeEndpoint
	// items: complete each subscription's items (subscription item integrations)
	items bool
	f     *fetcher
}

// stripeDecision honours Stripe-Should-Retry over the status, and reads the message of Stripe's error object.
func stripeDecision(resp *http.Response, body []byte) decision {
	d := defaultDecision(resp, body)
	switch resp.Header.Get("Stripe-Should-Retry") {
	case "true":
		d.retry = true
	case "false":
		d.retry = false
	}
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error.Message != "" {
		d.message = e.Error.Message
	}
	return d
}

type stripeList struct {
	Object  *string           `json:"object"`
	Data    []json.RawMessage `json:"data"`
	HasMore *bool             `json:"has_more"`
}

func (c *stripeClient) list(ctx context.Context, path string, q url.Values, page string) (*stripeList, []string, error) {
	resp, body, err := c.f.get(ctx, c.base+path+"?"+q.Encode(), page, func(r *http.Request) {
		r.Header.Set("Authorization", "Bearer "+c.key)
	})
	if err != nil {
		return nil, nil, err
	}
	bad := func(reason string) error {
		return &BadAnswerError{Vendor: "Stripe", Page: page, Status: resp.StatusCode, Reason: reason, Body: body}
	}
	var l stripeList
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&l); err != nil {
		return nil, nil, bad("not a JSON list object: " + err.Error())
	}
	if l.Object == nil || *l.Object != "list" || l.HasMore == nil || l.Data == nil {
		return nil, nil, bad(`want {"object":"list","data":[...],"has_more":...}`)
	}
	ids := make([]string, len(l.Data))
	for i, o := range l.Data {
		var obj struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(o, &obj); err != nil || obj.ID == "" {
			return nil, nil, bad(fmt.Sprintf("element %d has no id", i))
		}
		ids[i] = obj.ID
	}
	if *l.HasMore && len(l.Data) == 0 {
		return nil, nil, bad("has_more with no data: no cursor for the next page")
	}
	return &l, ids, nil
}

func (c *stripeClient) Verify(ctx context.Context) error {
	q := c.query("")
	q.Set("limit", "1")
	_, _, err := c.list(ctx, c.ep.path, q, c.ep.path+" (first)")
	return err
}

func (c *stripeClient) query(cursor string) url.Values {
	q := url.Values{}
	for k, v := range c.ep.query {
		q[k] = v
	}
	q.Set("limit", strconv.Itoa(stripePageSize))
	if cursor != "" {
		q.Set("starting_after", cursor)
	}
	return q
}

func pageName(path, cursor string) string {
	if cursor == "" {
		return path + " (first)"
	}
	return path + " after " + cursor
}

func (c *stripeClient) Page(ctx context.Context, req PageRequest) (*Page, error) {
	if !req.Since.IsZero() {
		return c.events(ctx, req)
	}
	q := c.query(req.Cursor)
	l, ids, err := c.list(ctx, c.ep.path, q, pageName(c.ep.path, req.Cursor))
	if err != nil {
		return nil, err
	}
	p := &Page{Objects: l.Data, Done: !*l.HasMore, Path: c.ep.path, Query: q.Encode()}
	if len(ids) > 0 {
		p.Next = ids[len(ids)-1]
	}
	if c.items {
		for i, o := range p.Objects {
			if p.Objects[i], err = c.completeItems(ctx, o, ids[i]); err != nil {
				return nil, err
			}
		}
	}
	return p, nil
}

// events lists /v1/events created since the high-water mark, keeping those about the integration's objects.
func (c *stripeClient) events(ctx context.Context, req PageRequest) (*Page, error) {
	q := url.Values{}
	q.Set("limit", strconv.Itoa(stripePageSize))
	q.Set("created[gte]", strconv.FormatInt(req.Since.Unix(), 10))
	if req.Cursor != "" {
		q.Set("starting_after", req.Cursor)
	}
	l, ids, err := c.list(ctx, "/v1/events", q, pageName("/v1/events", req.Cursor))
	if err != nil {
		return nil, err
	}
	p := &Page{Done: !*l.HasMore, Path: "/v1/events", Query: q.Encode()}
	if len(ids) > 0 {
		p.Next = ids[len(ids)-1]
	}
	for _, ev := range l.Data {
		var e struct {
			Data struct {
				Object struct {
					Object string `json:"object"`
				} `json:"object"`
			} `json:"data"`
		}
		if json.Unmarshal(ev, &e) == nil && e.Data.Object.Object == c.ep.object {
			p.Objects = append(p.Objects, ev)
		}
	}
	return p, nil
}

// completeItems fills a subscription's items list when Stripe cut it short (it embeds the first 10).
func (c *stripeClient) completeItems(ctx context.Context, sub json.RawMessage, id string) (json.RawMessage, error) {
	var s map[string]json.RawMessage
	if err := json.Unmarshal(sub, &s); err != nil {
		return nil, fmt.Errorf("error reading subscription %s: %w", id, err)
	}
	var items struct {
		Data    []json.RawMessage `json:"data"`
		HasMore bool              `json:"has_more"`
	}
	if err := json.Unmarshal(s["items"], &items); err != nil || !items.HasMore || len(items.Data) == 0 {
		return sub, nil
	}
	// ids of what the list holds; the next page starts after the last id of the one before (list checked ids).
	idOf := func(it json.RawMessage) string {
		var o struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(it, &o)
		return o.ID
	}
	all := items.Data
	seen := map[string]bool{}
	for _, it := range all {
		seen[idOf(it)] = true
	}
	cursor := idOf(all[len(all)-1])
	for {
		q := url.Values{"subscription": {id}, "limit": {strconv.Itoa(stripePageSize)}, "starting_after": {cursor}}
		l, ids, err := c.list(ctx, "/v1/subscription_items", q, pageName("/v1/subscription_items?subscription="+id, cursor))
		if err != nil {
			return nil, err
		}
		for i, it := range l.Data {
			if !seen[ids[i]] { // a list that moved under us may repeat one
				seen[ids[i]] = true
				all = append(all, it)
			}
		}
		if !*l.HasMore {
			break
		}
		cursor = ids[len(ids)-1]
	}
	b, err := json.Marshal(map[string]any{"object": "list", "data": all, "has_more": false})
	if err != nil {
		return nil, err
	}
	s["items"] = b
	out, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	return out, nil
}
