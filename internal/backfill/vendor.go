package backfill

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/webhookdb-go/webhookdb/internal/replicator"
)

// Credentials are what a vendor's API accepts: a key (Stripe's secret key, a GitHub token, Twilio's account
// SID) and, where the vendor needs one, a secret (Twilio's auth token).
type Credentials struct {
	Key    string
	Secret string
}

// PageRequest asks for one page.
type PageRequest struct {
	// Cursor is the vendor's cursor of the page; "" is the first.
	Cursor string
	// Since, when set, lists only what changed since then (an incremental job).
	Since time.Time
}

// Page is one page of a vendor's list.
type Page struct {
	// Objects are the vendor's API objects (or, for Stripe's /v1/events, events), one staging row each.
	Objects []json.RawMessage
	// Next is the cursor of the next page; ignored when Done.
	Next string
	Done bool
	// Path and Query are what was requested, stored with the rows.
	Path, Query string
}

// Vendor is one integration's client of its vendor's API.
type Vendor interface {
	// Verify fetches the first page with the credentials: a refusal is a *VendorError with the vendor's reason.
	Verify(ctx context.Context) error
	// Page fetches one page.
	Page(ctx context.Context, req PageRequest) (*Page, error)
}

// Target is what a vendor client is built for.
type Target struct {
	Service *replicator.Service
	// Options are the integration's backfill options (GitHub's repositories, a Shopify shop).
	Options     json.RawMessage
	Credentials Credentials
	// BaseURL replaces the vendor's own API host (a fake server in tests; a GitHub Enterprise host); only server
	// admins set it.
	BaseURL string
	HTTP    HTTPConfig
}

// vendorDef is a vendor: which services it serves and how to build its client.
type vendorDef struct {
	name string
	// serves reports whether the vendor can list a service's objects.
	serves func(service string) bool
	// needsSecret: the credentials need a secret besides the key.
	needsSecret bool
	// incrementalWindow is how far back an incremental job may start (Stripe keeps events 30 days); older
	// high-water marks make a full job. Zero: no limit.
	incrementalWindow time.Duration
	// hostAllowed checks a base URL's host against the vendor's own patterns.
	hostAllowed func(host string) bool
	newClient   func(t Target) (Vendor, error)
}

var vendors = []vendorDef{stripeVendor, githubVendor, twilioVendor, intercomVendor, shopifyVendor}

// ErrUnsupported means no vendor client lists the integration's service.
var ErrUnsupported = errors.New("backfill is not supported for this service")

func vendorOf(service string) (vendorDef, error) {
	for _, v := range vendors {
		if v.serves(service) {
			return v, nil
		}
	}
	return vendorDef{}, fmt.Errorf("%w: %s", ErrUnsupported, service)
}

// Supported reports whether a service can be backfilled.
func Supported(service string) bool {
	_, err := vendorOf(service)
	return err == nil
}

// decodeOptions decodes a vendor's options strictly: a typo is an error, not a silently ignored setting.
func decodeOptions(raw json.RawMessage, v any) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: options: %w", ErrCredentials, err)
	}
	return nil
}

// ErrBaseURL means a base URL that is not the vendor's or not allowed for the caller.
var ErrBaseURL = errors.New("invalid base URL")

// checkBaseURL parses a base URL; one whose host is not among the vendor's own patterns needs a server admin.
func checkBaseURL(v vendorDef, raw string, serverAdmin bool) (string, error) {
	if raw == "" {
		return "", nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("%w: want http(s)://host[:port][/path]", ErrBaseURL)
	}
	if serverAdmin {
		return strings.TrimRight(u.String(), "/"), nil
	}
	if u.Scheme != "https" || !v.hostAllowed(u.Hostname()) || u.Port() != "" {
		return "", fmt.Errorf("%w: %s is not one of %s's API hosts; only a server administrator may set another", ErrBaseURL, u.Host, v.name)
	}
	return strings.TrimRight(u.String(), "/"), nil
}
