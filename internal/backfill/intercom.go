package backfill

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Intercom lists contacts and conversations with cursor paging (pages.next.starting_after); an incremental job
// searches them by updated_at (the search endpoints page the same way). The region picks the host.

type intercomEndpoint struct {
	path string
	// listKey is where a list answer holds its items ("data" for contacts, "conversations")
	listKey string
}

var intercomEndpoints = map[string]intercomEndpoint{
	"intercom_contact_v1":      {path: "/contacts", listKey: "data"},
	"intercom_conversation_v1": {path: "/conversations", listKey: "conversations"},
}

var intercomHosts = map[string]string{"": "api.intercom.io", "us": "api.intercom.io", "eu": "api.eu.intercom.io", "au": "api.au.intercom.io"}

const intercomPageSize = 150

var intercomVendor = vendorDef{
	name:   "Intercom",
	serves: func(s string) bool { _, ok := intercomEndpoints[s]; return ok },
	hostAllowed: func(h string) bool {
		return h == "api.intercom.io" || h == "api.eu.intercom.io" || h == "api.au.intercom.io"
	},
	newClient: func(t Target) (Vendor, error) {
		ep, ok := intercomEndpoints[t.Service.Name]
		if !ok {
			return nil, fmt.Errorf("%w: %s", ErrUnsupported, t.Service.Name)
		}
		var opts struct {
			Region string `json:"region"`
		}
		if err := decodeOptions(t.Options, &opts); err != nil {
			return nil, err
		}
		host, ok := intercomHosts[opts.Region]
		if !ok {
			return nil, fmt.Errorf("%w: options: region %q: want us, eu or au", ErrCredentials, opts.Region)
		}
		if t.Credentials.Key == "" {
			return nil, fmt.Errorf("%w: Intercom needs an access token", ErrCredentials)
		}
		base := t.BaseURL
		if base == "" {
			base = "https://" + host
		}
		return &intercomClient{base: base, token: t.Credentials.Key, ep: ep, f: newFetcher("Intercom", t.HTTP, intercomDecision)}, nil
	},
}

type intercomClient struct {
	base, token string
	ep          intercomEndpoint
	f           *fetcher
}

// intercomDecision waits a 429 out until X-RateLimit-Reset, and reads Intercom's error list.
func intercomDecision(resp *http.Response, body []byte) decision {
	d := defaultDecision(resp, body)
	if resp.StatusCode == http.StatusTooManyRequests && d.wait == 0 {
		if reset, err := strconv.ParseInt(resp.Header.Get("X-RateLimit-Reset"), 10, 64); err == nil {
			d.wait = max(time.Until(time.Unix(reset, 0)), time.Second)
		}
	}
	var e struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &e) == nil && len(e.Errors) > 0 {
		d.message = e.Errors[0].Message + " (" + e.Errors[0].Code + ")"
	}
	return d
}

func (c *intercomClient) prepare(r *http.Request) {
	r.Header.Set("Authorization", "Bearer "+c.token)
	r.Header.Set("Intercom-Version", "2.11")
}

func (c *intercomClient) page(ctx context.Context, method, uri string, body []byte, name string) (*Page, error) {
	resp, b, err := c.f.send(ctx, method, c.base+uri, body, name, c.prepare)
	if err != nil {
		return nil, err
	}
	var l map[string]json.RawMessage
	var items []json.RawMessage
	var pages struct {
		Next *struct {
			StartingAfter string `json:"starting_after"`
		} `json:"next"`
	}
	if err := json.Unmarshal(b, &l); err != nil || json.Unmarshal(l[c.ep.listKey], &items) != nil || items == nil {
		return nil, &BadAnswerError{Vendor: "Intercom", Page: name, Status: resp.StatusCode, Reason: fmt.Sprintf("want a list with %q", c.ep.listKey), Body: b}
	}
	if raw, ok := l["pages"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &pages); err != nil {
			return nil, &BadAnswerError{Vendor: "Intercom", Page: name, Status: resp.StatusCode, Reason: "pages is not an object", Body: b}
		}
	}
	p := &Page{Objects: items, Done: pages.Next == nil}
	if !p.Done {
		if pages.Next.StartingAfter == "" {
			return nil, &BadAnswerError{Vendor: "Intercom", Page: name, Status: resp.StatusCode, Reason: "pages.next without starting_after", Body: b}
		}
		p.Next = pages.Next.StartingAfter
	}
	if u, err := url.Parse(uri); err == nil {
		p.Path, p.Query = u.Path, u.RawQuery
	}
	return p, nil
}

func (c *intercomClient) Verify(ctx context.Context) error {
	_, err := c.page(ctx, http.MethodGet, c.ep.path+"?per_page=1", nil, c.ep.path+" (first)")
	return err
}

func (c *intercomClient) Page(ctx context.Context, req PageRequest) (*Page, error) {
	name := c.ep.path + " " + pageRef(req.Cursor)
	if req.Since.IsZero() {
		q := url.Values{"per_page": {strconv.Itoa(intercomPageSize)}}
		if req.Cursor != "" {
			q.Set("starting_after", req.Cursor)
		}
		return c.page(ctx, http.MethodGet, c.ep.path+"?"+q.Encode(), nil, name)
	}
	pagination := map[string]any{"per_page": intercomPageSize}
	if req.Cursor != "" {
		pagination["starting_after"] = req.Cursor
	}
	body, err := json.Marshal(map[string]any{
		"query":      map[string]any{"field": "updated_at", "operator": ">", "value": req.Since.Unix()},
		"pagination": pagination,
	})
	if err != nil {
		return nil, err
	}
	return c.page(ctx, http.MethodPost, c.ep.path+"/search", body, c.ep.path+"/search "+pageRef(req.Cursor))
}
