package ingest

import (
	"encoding/json"
	"maps"
	"net/http"
	"testing"
)

// storedHeaders writes its JSON object by hand; it must read back as the headers it kept, whatever bytes they hold.
func TestStoredHeadersIsTheJSONOfTheKeptHeaders(t *testing.T) {
	t.Parallel()
	h := http.Header{
		"Content-Type":     {"application/json"},
		"X-Quote":          {`a "quoted" \\ value`},
		"X-Tab":            {"a\tb"},
		"X-Control":        {"a\x01b\x7fc"},
		"X-Not-Utf8":       {"a\xffb"},
		"X-Unicode":        {"é ✓ \u2028 <&>"},
		"X-Many":           {"1", "2"},
		"Stripe-Signature": {"t=1,v1=00"},
		"Authorization":    {"Bearer x"},
		"X-Empty":          {""},
	}
	want := map[string]string{
		"Content-Type": "application/json",
		"X-Quote":      `a "quoted" \\ value`,
		"X-Tab":        "a\tb",
		"X-Control":    "a\uFFFDb\uFFFDc",
		"X-Not-Utf8":   "a\uFFFDb",
		"X-Unicode":    "é ✓ \u2028 <&>",
		"X-Many":       "1, 2",
		"X-Empty":      "",
	}
	var got map[string]string
	b := storedHeaders(h, map[string]bool{}, false)
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("stored headers %s are not JSON: %v", b, err)
	}
	if !maps.Equal(got, want) {
		t.Fatalf("stored headers = %v, want %v", got, want)
	}
	if b := storedHeaders(http.Header{}, nil, false); string(b) != "{}" {
		t.Fatalf("no headers: %s", b)
	}
}

// webhookPathID takes the paths Register's routes match and leaves the rest (unclean paths among them, which
// the router redirects) to the router.
func TestWebhookPathID(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		path, id string
		ok       bool
	}{
		{"/v1/webhooks/svi_abc", "svi_abc", true},
		{"/v1/webhooks/svi_abc/", "svi_abc", true},
		{"/v1/webhooks/svi_abc/x/y", "svi_abc", true},
		{"/v1/service_integrations/svi_abc", "svi_abc", true},
		{"/v1/webhooks/", "", false},
		{"/v1/webhooks//x", "", false},
		{"/v1/webhooks/svi_abc//x", "svi_abc", false},
		{"/v1/webhooks/svi_abc/../../orgs", "svi_abc", false},
		{"/v1/webhooks/./x", ".", false},
		{"/v1/orgs", "", false},
		{"/healthz", "", false},
	} {
		id, ok := webhookPathID(tt.path)
		if ok != tt.ok || (ok && id != tt.id) {
			t.Errorf("webhookPathID(%q) = %q, %v; want %q, %v", tt.path, id, ok, tt.id, tt.ok)
		}
	}
}
