package verify

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
)

func TestSensitiveHeaders(t *testing.T) {
	t.Parallel()
	always := []string{"Authorization", "Proxy-Authorization", "Cookie", "Whdb-Webhook-Secret"}
	tests := []struct {
		cfg  Config
		want []string
	}{
		{Config{Scheme: SchemeStripe}, []string{"Stripe-Signature"}},
		{Config{Scheme: SchemeGitHub}, []string{"X-Hub-Signature-256", "X-Hub-Signature"}},
		{Config{Scheme: SchemeShopify}, []string{"X-Shopify-Hmac-Sha256"}},
		{Config{Scheme: SchemeTwilio}, []string{"X-Twilio-Signature"}},
		{Config{Scheme: SchemeStandard}, []string{"Webhook-Signature", "Svix-Signature"}},
		{Config{Scheme: SchemeIntercom}, []string{"X-Hub-Signature"}},
		{Config{Scheme: SchemeHMAC, Header: "x-my-signature"}, []string{"X-My-Signature"}},
		{Config{Scheme: SchemeSecretHeader}, nil},
		{Config{Scheme: SchemeBasicAuth}, nil},
		{Config{Scheme: SchemeNone}, nil},
		{Config{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.cfg.Scheme, func(t *testing.T) {
			t.Parallel()
			got := SensitiveHeaders(tt.cfg)
			want := append(append([]string(nil), always...), tt.want...)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("got %q, want %q", got, want)
			}
			for _, name := range got {
				if name != http.CanonicalHeaderKey(name) {
					t.Errorf("%q is not canonical", name)
				}
			}
		})
	}
}

// Every header a verifier reads a signature or secret from must be listed as sensitive.
func TestSensitiveHeadersCoverVerifiedHeaders(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		scheme string
		cases  []verifyCase
	}{
		{SchemeStripe, stripeCases()},
		{SchemeGitHub, githubCases()},
		{SchemeShopify, shopifyCases()},
		{SchemeTwilio, twilioCases()},
		{SchemeStandard, standardCases()},
		{SchemeIntercom, intercomCases()},
		{SchemeSecretHeader, secretHeaderCases()},
		{SchemeBasicAuth, basicAuthCases()},
	} {
		sensitive := SensitiveHeaders(Config{Scheme: tc.scheme})
		for _, c := range tc.cases {
			if c.wantReason != "" {
				continue
			}
			for name := range c.req.Header {
				lower := strings.ToLower(name)
				if !strings.Contains(lower, "signature") && !strings.Contains(lower, "hmac") && !strings.Contains(lower, "secret") && name != "Authorization" {
					continue
				}
				found := false
				for _, s := range sensitive {
					found = found || s == name
				}
				if !found {
					t.Errorf("%s: %s carries a signature but is not in SensitiveHeaders", tc.scheme, name)
				}
			}
		}
	}
}

func TestDeliveryID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		scheme string
		header http.Header
		body   string
		want   string
	}{
		{"standard webhook-id", SchemeStandard, headers("webhook-id", "msg_1"), "", "msg_1"},
		{"standard svix-id", SchemeStandard, headers("svix-id", "msg_2"), "", "msg_2"},
		{"standard prefers webhook-id", SchemeStandard, headers("svix-id", "msg_2", "webhook-id", "msg_1"), "", "msg_1"},
		{"github", SchemeGitHub, headers("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"), "", "72d3162e-cc78-11e3-81ab-4c9367dc0958"},
		{"shopify", SchemeShopify, headers("X-Shopify-Webhook-Id", "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043", "X-Shopify-Event-Id", "other"), "", "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"},
		{"twilio", SchemeTwilio, headers("I-Twilio-Idempotency-Token", "tok-1"), "", "tok-1"},
		{"twilio X-Request-Id is not a delivery id", SchemeTwilio, headers("X-Request-Id", "req-1"), "", ""},
		{"stripe event id", SchemeStripe, nil, `{"id":"evt_1","object":"event","data":{"object":{"id":"cus_1"}}}`, "evt_1"},
		{"stripe event id after spaces", SchemeStripe, nil, " {\n  \"id\" : \"evt_1\",\n  \"object\": \"event\"}", "evt_1"},
		{"stripe escaped id", SchemeStripe, nil, `{"id":"evt_\u0031"}`, "evt_1"},
		{"stripe unterminated id", SchemeStripe, nil, `{"id":"evt_1`, ""},
		{"stripe id not first", SchemeStripe, nil, `{"object":"event","id":"evt_2"}`, "evt_2"},
		{"stripe nested id only", SchemeStripe, nil, `{"object":"event","data":{"id":"cus_1"}}`, ""},
		{"stripe ID in other case", SchemeStripe, nil, `{"ID":"evt_1"}`, ""},
		{"stripe numeric id", SchemeStripe, nil, `{"id":42}`, ""},
		{"stripe not json", SchemeStripe, nil, `id=evt_1`, ""},
		{"stripe array", SchemeStripe, nil, `[{"id":"evt_1"}]`, ""},
		{"stripe empty body", SchemeStripe, nil, "", ""},
		{"intercom", SchemeIntercom, nil, `{"type":"notification_event","id":"notif_ccd8a4d2"}`, "notif_ccd8a4d2"},
		{"hmac has none", SchemeHMAC, headers("X-GitHub-Delivery", "x"), `{"id":"x"}`, ""},
		{"secret_header has none", SchemeSecretHeader, headers("webhook-id", "x"), "", ""},
		{"none has none", SchemeNone, headers("webhook-id", "x"), "", ""},
		{"too long", SchemeGitHub, headers("X-GitHub-Delivery", strings.Repeat("a", 256)), "", ""},
		{"longest accepted", SchemeGitHub, headers("X-GitHub-Delivery", strings.Repeat("a", 255)), "", strings.Repeat("a", 255)},
		{"control character", SchemeStripe, nil, `{"id":"evt_\n1"}`, ""},
		{"non-ASCII", SchemeStripe, nil, `{"id":"evt_é"}`, ""},
		{"trimmed", SchemeGitHub, headers("X-GitHub-Delivery", " d-1 "), "", "d-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := tt.header
			if h == nil {
				h = http.Header{}
			}
			if got := DeliveryID(tt.scheme, h, []byte(tt.body)); got != tt.want {
				t.Fatalf("DeliveryID = %q, want %q", got, tt.want)
			}
		})
	}
}
