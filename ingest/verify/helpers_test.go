package verify

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"hash"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The signers below build signatures the way each provider documents it,
// independently of the code under test.

func testMAC(algorithm string, key []byte, parts ...string) []byte {
	var h func() hash.Hash
	switch algorithm {
	case "sha1":
		h = sha1.New
	case "sha256":
		h = sha256.New
	case "sha512":
		h = sha512.New
	default:
		panic("unknown algorithm " + algorithm)
	}
	mac := hmac.New(h, key)
	for _, p := range parts {
		mac.Write([]byte(p))
	}
	return mac.Sum(nil)
}

func signStripe(secret string, ts int64, body string) string {
	t := strconv.FormatInt(ts, 10)
	return "t=" + t + ",v1=" + hex.EncodeToString(testMAC("sha256", []byte(secret), t+"."+body))
}

func stripeV1(secret string, ts int64, body string) string {
	return hex.EncodeToString(testMAC("sha256", []byte(secret), strconv.FormatInt(ts, 10)+"."+body))
}

func signGitHub(secret, body string) string {
	return "sha256=" + hex.EncodeToString(testMAC("sha256", []byte(secret), body))
}

func signShopify(secret, body string) string {
	return base64.StdEncoding.EncodeToString(testMAC("sha256", []byte(secret), body))
}

func signIntercom(secret, body string) string {
	return "sha1=" + hex.EncodeToString(testMAC("sha1", []byte(secret), body))
}

func signStandard(secret, id string, ts int64, body string) string {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		panic(err)
	}
	return "v1," + base64.StdEncoding.EncodeToString(testMAC("sha256", key, id+"."+strconv.FormatInt(ts, 10)+"."+body))
}

// signTwilio follows Twilio's documented algorithm: the URL, then each POST
// parameter sorted by name as name+value.
func signTwilio(token, rawURL string, params url.Values) string {
	var b strings.Builder
	b.WriteString(rawURL)
	names := make([]string, 0, len(params))
	for name := range params {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		values := append([]string(nil), params[name]...)
		sort.Strings(values)
		for _, v := range values {
			b.WriteString(name + v)
		}
	}
	return base64.StdEncoding.EncodeToString(testMAC("sha1", []byte(token), b.String()))
}

func basicAuth(credentials string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(credentials))
}

// headers builds an http.Header from name, value pairs, canonicalising names.
func headers(pairs ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(pairs); i += 2 {
		h.Add(pairs[i], pairs[i+1])
	}
	return h
}

func post(body string, pairs ...string) *Request {
	return &Request{Method: "POST", PublicURL: "https://hooks.example.com/v1/service_integrations/abc", Header: headers(pairs...), Body: []byte(body)}
}

// testNow is the clock for every case that does not set its own.
var testNow = time.Unix(1_700_000_000, 0)

type verifyCase struct {
	name    string
	cfg     *Config // overrides the table's config
	req     *Request
	secrets []string
	now     time.Time // zero means testNow
	// wantReason is "" when the request must be accepted; otherwise the
	// rejection reason must contain it.
	wantReason string
}

func runVerifyCases(t *testing.T, cfg Config, cases []verifyCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := cfg
			if tc.cfg != nil {
				c = *tc.cfg
			}
			v, err := New(c)
			if err != nil {
				t.Fatalf("New(%+v): %v", c, err)
			}
			now := tc.now
			if now.IsZero() {
				now = testNow
			}
			err = v.Verify(tc.req, tc.secrets, now)
			if tc.wantReason == "" {
				if err != nil {
					t.Fatalf("Verify: want accepted, got %v", err)
				}
				return
			}
			rej, ok := IsRejection(err)
			if !ok {
				t.Fatalf("Verify: want rejection containing %q, got %v", tc.wantReason, err)
			}
			if !strings.Contains(rej.Reason, tc.wantReason) {
				t.Fatalf("reason = %q, want it to contain %q", rej.Reason, tc.wantReason)
			}
			checkReasonIsSafe(t, rej.Reason, tc.req, tc.secrets)
		})
	}
}

// checkReasonIsSafe asserts a reason leaks no secret, echoes no request
// header value, and can be sent as a header value.
func checkReasonIsSafe(t *testing.T, reason string, req *Request, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		if len(s) >= 8 && strings.Contains(reason, s) {
			t.Errorf("reason %q contains a secret", reason)
		}
	}
	for name, values := range req.Header {
		if name == "Content-Type" {
			continue
		}
		for _, v := range values {
			if len(v) >= 8 && strings.Contains(reason, v) {
				t.Errorf("reason %q echoes the %s header", reason, name)
			}
		}
	}
	for _, r := range reason {
		if r < 0x20 || r > 0x7e {
			t.Errorf("reason %q has a character that cannot go in a header", reason)
		}
	}
}
