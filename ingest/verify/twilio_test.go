package verify

import (
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

const (
	twilioVectorToken = "12345"
	twilioVectorURL   = "https://mycompany.com/myapp.php?foo=1&bar=2"
	twilioVectorSig   = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="

	twilioToken      = "auth-token-current-0123456789"
	twilioOldToken   = "auth-token-previous-987654321"
	twilioOtherToken = "auth-token-unrelated-aaaaaaaa"
	formType         = "application/x-www-form-urlencoded"
)

var twilioVectorParams = url.Values{
	"CallSid": {"CA1234567890ABCDE"},
	"Caller":  {"+12349013030"},
	"Digits":  {"1234"},
	"From":    {"+12349013030"},
	"To":      {"+18005551212"},
}

func TestTwilioPublishedVector(t *testing.T) {
	t.Parallel()
	if got := signTwilio(twilioVectorToken, twilioVectorURL, twilioVectorParams); got != twilioVectorSig {
		t.Fatalf("signTwilio = %s, want %s", got, twilioVectorSig)
	}
}

func twilioRequest(method, rawURL, contentType, body string, pairs ...string) *Request {
	h := headers(pairs...)
	if contentType != "" {
		h.Set("Content-Type", contentType)
	}
	return &Request{Method: method, PublicURL: rawURL, Header: h, Body: []byte(body)}
}

func twilioCases() []verifyCase {
	const base = "https://hooks.example.com/v1/service_integrations/abc"
	params := url.Values{"MessageSid": {"SM123"}, "Body": {"Hello & good bye+ünïcode"}, "From": {"+15005550006"}}
	form := params.Encode()
	sig := signTwilio(twilioToken, base, params)

	jsonBody := `{"sid":"SM123","status":"delivered"}`
	bodyHash := sha256.Sum256([]byte(jsonBody))
	jsonURL := base + "?bodySHA256=" + hex.EncodeToString(bodyHash[:])
	jsonSig := signTwilio(twilioToken, jsonURL, nil)

	return []verifyCase{
		{
			name:    "published vector, form post",
			req:     twilioRequest("POST", twilioVectorURL, formType, "To=%2B18005551212&From=%2B12349013030&Digits=1234&Caller=%2B12349013030&CallSid=CA1234567890ABCDE", "X-Twilio-Signature", twilioVectorSig),
			secrets: []string{twilioVectorToken},
		},
		{name: "form post", req: twilioRequest("POST", base, formType, form, "X-Twilio-Signature", sig), secrets: []string{twilioToken}},
		{name: "form post with charset", req: twilioRequest("POST", base, formType+"; charset=utf-8", form, "X-Twilio-Signature", sig), secrets: []string{twilioToken}},
		{
			name:    "repeated parameter, values sorted",
			req:     twilioRequest("POST", base, formType, "b=2&a=z&a=y&a=z", "X-Twilio-Signature", signTwilio(twilioToken, base, url.Values{"a": {"z", "y", "z"}, "b": {"2"}})),
			secrets: []string{twilioToken},
		},
		{
			name:    "repeated parameter signed as name+value per value",
			req:     twilioRequest("POST", base, formType, "a=2&a=1", "X-Twilio-Signature", signTwilio(twilioToken, base+"a1a2", nil)),
			secrets: []string{twilioToken},
		},
		{
			name:    "parameter names sort case-sensitively",
			req:     twilioRequest("POST", base, formType, "b=1&B=2&a=3", "X-Twilio-Signature", signTwilio(twilioToken, base+"B2a3b1", nil)),
			secrets: []string{twilioToken},
		},
		{
			name:    "signed with :443, received without",
			req:     twilioRequest("POST", base, formType, form, "X-Twilio-Signature", signTwilio(twilioToken, "https://hooks.example.com:443/v1/service_integrations/abc", params)),
			secrets: []string{twilioToken},
		},
		{
			name:    "signed without port, received with :443",
			req:     twilioRequest("POST", "https://hooks.example.com:443/v1/service_integrations/abc", formType, form, "X-Twilio-Signature", sig),
			secrets: []string{twilioToken},
		},
		{
			name:    "http with :80",
			req:     twilioRequest("POST", "http://hooks.example.com/x?y=1", formType, form, "X-Twilio-Signature", signTwilio(twilioToken, "http://hooks.example.com:80/x?y=1", params)),
			secrets: []string{twilioToken},
		},
		{
			name:       "https signed with :80 is not a variant",
			req:        twilioRequest("POST", base, formType, form, "X-Twilio-Signature", signTwilio(twilioToken, "https://hooks.example.com:80/v1/service_integrations/abc", params)),
			secrets:    []string{twilioToken},
			wantReason: "signature does not match any active secret",
		},
		{
			name:       "non-default port is kept",
			req:        twilioRequest("POST", "https://hooks.example.com:8443/x", formType, form, "X-Twilio-Signature", signTwilio(twilioToken, "https://hooks.example.com/x", params)),
			secrets:    []string{twilioToken},
			wantReason: "signature does not match any active secret",
		},
		{
			name:    "non-default port, signed with it",
			req:     twilioRequest("POST", "https://hooks.example.com:8443/x", formType, form, "X-Twilio-Signature", signTwilio(twilioToken, "https://hooks.example.com:8443/x", params)),
			secrets: []string{twilioToken},
		},
		{name: "json with bodySHA256", req: twilioRequest("POST", jsonURL, "application/json", jsonBody, "X-Twilio-Signature", jsonSig), secrets: []string{twilioToken}},
		{
			name:    "json with bodySHA256 and :443",
			req:     twilioRequest("POST", strings.Replace(jsonURL, ".com/", ".com:443/", 1), "application/json", jsonBody, "X-Twilio-Signature", jsonSig),
			secrets: []string{twilioToken},
		},
		{
			name:    "upper-case bodySHA256 hex",
			req:     twilioRequest("POST", base+"?bodySHA256="+strings.ToUpper(hex.EncodeToString(bodyHash[:])), "application/json", jsonBody, "X-Twilio-Signature", signTwilio(twilioToken, base+"?bodySHA256="+strings.ToUpper(hex.EncodeToString(bodyHash[:])), nil)),
			secrets: []string{twilioToken},
		},
		{
			name:       "json body tampered",
			req:        twilioRequest("POST", jsonURL, "application/json", strings.Replace(jsonBody, "delivered", "failed", 1), "X-Twilio-Signature", jsonSig),
			secrets:    []string{twilioToken},
			wantReason: "body does not match the bodySHA256 query parameter",
		},
		{
			name:       "json bodySHA256 not hex",
			req:        twilioRequest("POST", base+"?bodySHA256=nothex", "application/json", jsonBody, "X-Twilio-Signature", jsonSig),
			secrets:    []string{twilioToken},
			wantReason: "body does not match the bodySHA256 query parameter",
		},
		{
			name:       "json bodySHA256 altered in URL",
			req:        twilioRequest("POST", base+"?bodySHA256="+hex.EncodeToString(bodyHash[:])+"&x=1", "application/json", jsonBody, "X-Twilio-Signature", jsonSig),
			secrets:    []string{twilioToken},
			wantReason: "signature does not match any active secret",
		},
		{
			name:       "json without bodySHA256",
			req:        twilioRequest("POST", base, "application/json", jsonBody, "X-Twilio-Signature", signTwilio(twilioToken, base, nil)),
			secrets:    []string{twilioToken},
			wantReason: "body is neither form-encoded nor covered by a bodySHA256 query parameter",
		},
		{
			name:    "get with query, no body",
			req:     twilioRequest("GET", base+"?CallSid=CA1&From=%2B1", "", "", "X-Twilio-Signature", signTwilio(twilioToken, base+"?CallSid=CA1&From=%2B1", nil)),
			secrets: []string{twilioToken},
		},
		{
			name:       "form body on GET is not signed",
			req:        twilioRequest("GET", base, formType, form, "X-Twilio-Signature", sig),
			secrets:    []string{twilioToken},
			wantReason: "body is neither form-encoded nor covered",
		},
		{name: "rotation: previous token", req: twilioRequest("POST", base, formType, form, "X-Twilio-Signature", signTwilio(twilioOldToken, base, params)), secrets: []string{twilioToken, twilioOldToken}},
		{
			name:       "rotation: token not in the list",
			req:        twilioRequest("POST", base, formType, form, "X-Twilio-Signature", signTwilio(twilioOtherToken, base, params)),
			secrets:    []string{twilioToken, twilioOldToken},
			wantReason: "signature does not match any active secret",
		},
		{name: "wrong token", req: twilioRequest("POST", base, formType, form, "X-Twilio-Signature", sig), secrets: []string{twilioOtherToken}, wantReason: "signature does not match any active secret"},
		{
			name:       "tampered parameter",
			req:        twilioRequest("POST", base, formType, strings.Replace(form, "SM123", "SM124", 1), "X-Twilio-Signature", sig),
			secrets:    []string{twilioToken},
			wantReason: "signature does not match any active secret",
		},
		{
			name:       "extra parameter",
			req:        twilioRequest("POST", base, formType, form+"&Extra=1", "X-Twilio-Signature", sig),
			secrets:    []string{twilioToken},
			wantReason: "signature does not match any active secret",
		},
		{
			name:       "different URL",
			req:        twilioRequest("POST", base+"/other", formType, form, "X-Twilio-Signature", sig),
			secrets:    []string{twilioToken},
			wantReason: "signature does not match any active secret",
		},
		{
			name:       "malformed form body",
			req:        twilioRequest("POST", base, formType, "a=%zz", "X-Twilio-Signature", sig),
			secrets:    []string{twilioToken},
			wantReason: "malformed form body",
		},
		{name: "missing header", req: twilioRequest("POST", base, formType, form), secrets: []string{twilioToken}, wantReason: "missing X-Twilio-Signature header"},
		{
			name:       "header not base64",
			req:        twilioRequest("POST", base, formType, form, "X-Twilio-Signature", "sha1=abc"),
			secrets:    []string{twilioToken},
			wantReason: "malformed X-Twilio-Signature header",
		},
		{
			name:       "header is a SHA-256 sized value",
			req:        twilioRequest("POST", base, formType, form, "X-Twilio-Signature", signShopify(twilioToken, form)),
			secrets:    []string{twilioToken},
			wantReason: "malformed X-Twilio-Signature header",
		},
		{
			name:       "no public URL",
			req:        twilioRequest("POST", "", formType, form, "X-Twilio-Signature", sig),
			secrets:    []string{twilioToken},
			wantReason: "public URL unknown",
		},
		{name: "no secrets", req: twilioRequest("POST", base, formType, form, "X-Twilio-Signature", sig), wantReason: "integration has no secret configured"},
	}
}

func TestTwilio(t *testing.T) {
	t.Parallel()
	runVerifyCases(t, Config{Scheme: SchemeTwilio}, twilioCases())
}

func TestTwilioURLVariants(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want []string
	}{
		{"https://a.example/x?y=1", []string{"https://a.example/x?y=1", "https://a.example:443/x?y=1"}},
		{"https://a.example:443/x?y=1", []string{"https://a.example:443/x?y=1", "https://a.example/x?y=1"}},
		{"http://a.example", []string{"http://a.example", "http://a.example:80"}},
		{"http://a.example:80", []string{"http://a.example:80", "http://a.example"}},
		{"HTTPS://a.example?q", []string{"HTTPS://a.example?q", "HTTPS://a.example:443?q"}},
		{"https://u:p@a.example/x", []string{"https://u:p@a.example/x", "https://u:p@a.example:443/x"}},
		{"https://[::1]/x", []string{"https://[::1]/x", "https://[::1]:443/x"}},
		{"https://[::1]:443/x", []string{"https://[::1]:443/x", "https://[::1]/x"}},
		{"https://a.example:8443/x", []string{"https://a.example:8443/x"}},
		{"https://a.example:80/x", []string{"https://a.example:80/x"}},
		{"https://a.example/x:443", []string{"https://a.example/x:443", "https://a.example:443/x:443"}},
		{"https:///x", []string{"https:///x"}},
		{"https://:443/x", []string{"https://:443/x"}},
		{"https://::1/x", []string{"https://::1/x"}},
		{"https://[]:443/x", []string{"https://[]:443/x"}},
		{"ftp://a.example/x", []string{"ftp://a.example/x"}},
		{"/relative?x=1", []string{"/relative?x=1"}},
		{"", []string{""}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			if got := twilioURLVariants(tt.in); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestTwilioFormParams(t *testing.T) {
	t.Parallel()
	tests := []struct {
		body, want string
	}{
		{"", ""},
		{"b=2&a=1", "a1b2"},
		{"a=2&a=1&a=2", "a1a2a2"},
		{"x=%2B1&y=a+b", "x+1ya b"},
		{"flag", "flag"},
		{"Z=1&a=1", "Z1a1"},
	}
	for _, tt := range tests {
		t.Run(tt.body, func(t *testing.T) {
			t.Parallel()
			form, err := url.ParseQuery(tt.body)
			if err != nil {
				t.Fatal(err)
			}
			if got := twilioFormParams(form); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}
