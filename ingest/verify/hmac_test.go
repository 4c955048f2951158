package verify

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
)

const (
	githubVectorSecret = "It's a Secret to Everybody"
	githubVectorBody   = "Hello, World!"
	githubVectorSig    = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

	hookSecret      = "current-secret-0123456789"
	hookOldSecret   = "previous-secret-9876543210"
	hookOtherSecret = "unrelated-secret-aaaaaaaaaa"
	hookBody        = `{"action":"opened","number":7}`
)

func TestGitHubPublishedVector(t *testing.T) {
	t.Parallel()
	// Guards the test signer itself against the provider's published value.
	if got := signGitHub(githubVectorSecret, githubVectorBody); got != githubVectorSig {
		t.Fatalf("signGitHub = %s, want %s", got, githubVectorSig)
	}
}

func githubCases() []verifyCase {
	sig := signGitHub(hookSecret, hookBody)
	req := func(pairs ...string) *Request { return post(hookBody, pairs...) }
	return []verifyCase{
		{
			name:    "published vector",
			req:     post(githubVectorBody, "X-Hub-Signature-256", githubVectorSig),
			secrets: []string{githubVectorSecret},
		},
		{name: "valid", req: req("X-Hub-Signature-256", sig), secrets: []string{hookSecret}},
		{name: "upper-case hex and prefix", req: req("X-Hub-Signature-256", strings.ToUpper(sig)), secrets: []string{hookSecret}},
		{name: "surrounding spaces", req: req("X-Hub-Signature-256", " "+sig+" "), secrets: []string{hookSecret}},
		{name: "rotation: previous secret", req: req("X-Hub-Signature-256", signGitHub(hookOldSecret, hookBody)), secrets: []string{hookSecret, hookOldSecret}},
		{
			name:       "rotation: secret not in the list",
			req:        req("X-Hub-Signature-256", signGitHub(hookOtherSecret, hookBody)),
			secrets:    []string{hookSecret, hookOldSecret},
			wantReason: "signature does not match any active secret",
		},
		{name: "wrong secret", req: req("X-Hub-Signature-256", sig), secrets: []string{hookOtherSecret}, wantReason: "signature does not match any active secret"},
		{name: "tampered body", req: post(hookBody+" ", "X-Hub-Signature-256", sig), secrets: []string{hookSecret}, wantReason: "signature does not match any active secret"},
		{name: "missing header", req: req(), secrets: []string{hookSecret}, wantReason: "missing X-Hub-Signature-256 header"},
		{
			name:       "only the legacy SHA-1 header",
			req:        req("X-Hub-Signature", signIntercom(hookSecret, hookBody)),
			secrets:    []string{hookSecret},
			wantReason: "missing X-Hub-Signature-256 header",
		},
		{
			name:       "no prefix",
			req:        req("X-Hub-Signature-256", strings.TrimPrefix(sig, "sha256=")),
			secrets:    []string{hookSecret},
			wantReason: `malformed X-Hub-Signature-256 header: expected it to start with "sha256="`,
		},
		{name: "sha1 prefix", req: req("X-Hub-Signature-256", "sha1=abcd"), secrets: []string{hookSecret}, wantReason: "expected it to start with"},
		{name: "not hex", req: req("X-Hub-Signature-256", "sha256=xyz"), secrets: []string{hookSecret}, wantReason: "signature is not hex"},
		{name: "prefix only", req: req("X-Hub-Signature-256", "sha256="), secrets: []string{hookSecret}, wantReason: "empty signature"},
		{name: "truncated", req: req("X-Hub-Signature-256", sig[:len(sig)-2]), secrets: []string{hookSecret}, wantReason: "signature does not match any active secret"},
		{name: "no secrets", req: req("X-Hub-Signature-256", sig), wantReason: "integration has no secret configured"},
	}
}

func TestGitHub(t *testing.T) {
	t.Parallel()
	runVerifyCases(t, Config{Scheme: SchemeGitHub}, githubCases())
}

func shopifyCases() []verifyCase {
	sig := signShopify(hookSecret, hookBody)
	req := func(pairs ...string) *Request { return post(hookBody, pairs...) }
	return []verifyCase{
		{name: "valid", req: req("X-Shopify-Hmac-Sha256", sig), secrets: []string{hookSecret}},
		{name: "lower-case header name", req: req("x-shopify-hmac-sha256", sig), secrets: []string{hookSecret}},
		{name: "unpadded base64", req: req("X-Shopify-Hmac-Sha256", strings.TrimRight(sig, "=")), secrets: []string{hookSecret}},
		{name: "rotation: previous secret", req: req("X-Shopify-Hmac-Sha256", signShopify(hookOldSecret, hookBody)), secrets: []string{hookSecret, hookOldSecret}},
		{
			name:       "rotation: secret not in the list",
			req:        req("X-Shopify-Hmac-Sha256", signShopify(hookOtherSecret, hookBody)),
			secrets:    []string{hookSecret, hookOldSecret},
			wantReason: "signature does not match any active secret",
		},
		{name: "wrong secret", req: req("X-Shopify-Hmac-Sha256", sig), secrets: []string{hookOldSecret}, wantReason: "signature does not match any active secret"},
		{name: "tampered body", req: post(`{"action":"closed","number":7}`, "X-Shopify-Hmac-Sha256", sig), secrets: []string{hookSecret}, wantReason: "signature does not match any active secret"},
		{
			name:       "hex instead of base64",
			req:        req("X-Shopify-Hmac-Sha256", hex.EncodeToString(make([]byte, 32))+"!"),
			secrets:    []string{hookSecret},
			wantReason: "malformed X-Shopify-Hmac-Sha256 header: signature is not base64",
		},
		{name: "missing header", req: req(), secrets: []string{hookSecret}, wantReason: "missing X-Shopify-Hmac-Sha256 header"},
		{name: "no secrets", req: req("X-Shopify-Hmac-Sha256", sig), secrets: []string{}, wantReason: "integration has no secret configured"},
	}
}

func TestShopify(t *testing.T) {
	t.Parallel()
	runVerifyCases(t, Config{Scheme: SchemeShopify}, shopifyCases())
}

func intercomCases() []verifyCase {
	sig := signIntercom(hookSecret, hookBody)
	req := func(pairs ...string) *Request { return post(hookBody, pairs...) }
	return []verifyCase{
		{name: "valid", req: req("X-Hub-Signature", sig), secrets: []string{hookSecret}},
		{name: "rotation: previous secret", req: req("X-Hub-Signature", signIntercom(hookOldSecret, hookBody)), secrets: []string{hookSecret, hookOldSecret}},
		{name: "wrong secret", req: req("X-Hub-Signature", sig), secrets: []string{hookOtherSecret}, wantReason: "signature does not match any active secret"},
		{name: "tampered body", req: post("{}", "X-Hub-Signature", sig), secrets: []string{hookSecret}, wantReason: "signature does not match any active secret"},
		{
			name:       "sha256 signature",
			req:        req("X-Hub-Signature", signGitHub(hookSecret, hookBody)),
			secrets:    []string{hookSecret},
			wantReason: `expected it to start with "sha1="`,
		},
		{name: "missing header", req: req("X-Hub-Signature-256", signGitHub(hookSecret, hookBody)), secrets: []string{hookSecret}, wantReason: "missing X-Hub-Signature header"},
		{name: "no secrets", req: req("X-Hub-Signature", sig), wantReason: "integration has no secret configured"},
	}
}

func TestIntercom(t *testing.T) {
	t.Parallel()
	runVerifyCases(t, Config{Scheme: SchemeIntercom}, intercomCases())
}

func hmacCases() []verifyCase {
	ts := testNow.Unix()
	sha512b64 := base64.StdEncoding.EncodeToString(testMAC("sha512", []byte(hookSecret), hookBody))
	sha1hex := hex.EncodeToString(testMAC("sha1", []byte(hookSecret), hookBody))
	timed := func(secret string, ts int64) string {
		return hex.EncodeToString(testMAC("sha256", []byte(secret), fmt.Sprint(ts)+"."+hookBody))
	}
	withTimestamp := &Config{Scheme: SchemeHMAC, Header: "X-Signature", Algorithm: "sha256", Encoding: "hex", TimestampHeader: "X-Timestamp"}
	sha1Hex := &Config{Scheme: SchemeHMAC, Header: "x-signature", Algorithm: "sha1", Encoding: "hex"}
	req := func(pairs ...string) *Request { return post(hookBody, pairs...) }
	return []verifyCase{
		{name: "sha512 base64 with prefix", req: req("X-Signature", "v1:"+sha512b64), secrets: []string{hookSecret}},
		{name: "prefix is case-insensitive", req: req("X-Signature", "V1:"+sha512b64), secrets: []string{hookSecret}},
		{name: "missing prefix", req: req("X-Signature", sha512b64), secrets: []string{hookSecret}, wantReason: `malformed X-Signature header: expected it to start with "v1:"`},
		{name: "wrong algorithm", req: req("X-Signature", "v1:"+signShopify(hookSecret, hookBody)), secrets: []string{hookSecret}, wantReason: "signature does not match any active secret"},
		{name: "sha1 hex, lower-case header name in config", cfg: sha1Hex, req: req("X-Signature", sha1hex), secrets: []string{hookSecret}},
		{name: "sha1 hex, wrong secret", cfg: sha1Hex, req: req("X-Signature", sha1hex), secrets: []string{hookOtherSecret}, wantReason: "signature does not match any active secret"},
		{name: "sha1 hex, tampered", cfg: sha1Hex, req: post("x", "X-Signature", sha1hex), secrets: []string{hookSecret}, wantReason: "signature does not match any active secret"},
		{name: "rotation", cfg: sha1Hex, req: req("X-Signature", sha1hex), secrets: []string{hookOtherSecret, hookSecret}},
		{name: "missing header", req: req(), secrets: []string{hookSecret}, wantReason: "missing X-Signature header"},
		{name: "timestamped", cfg: withTimestamp, req: req("X-Signature", timed(hookSecret, ts), "X-Timestamp", fmt.Sprint(ts)), secrets: []string{hookSecret}},
		{
			name:       "timestamped, timestamp changed",
			cfg:        withTimestamp,
			req:        req("X-Signature", timed(hookSecret, ts), "X-Timestamp", fmt.Sprint(ts+1)),
			secrets:    []string{hookSecret},
			wantReason: "signature does not match any active secret",
		},
		{
			name:       "timestamped, body-only signature",
			cfg:        withTimestamp,
			req:        req("X-Signature", hex.EncodeToString(testMAC("sha256", []byte(hookSecret), hookBody)), "X-Timestamp", fmt.Sprint(ts)),
			secrets:    []string{hookSecret},
			wantReason: "signature does not match any active secret",
		},
		{
			name:       "timestamped, stale",
			cfg:        withTimestamp,
			req:        req("X-Signature", timed(hookSecret, ts-301), "X-Timestamp", fmt.Sprint(ts-301)),
			secrets:    []string{hookSecret},
			wantReason: "timestamp outside tolerance (301s old, tolerance 300s)",
		},
		{
			name:       "timestamped, future",
			cfg:        withTimestamp,
			req:        req("X-Signature", timed(hookSecret, ts+3600), "X-Timestamp", fmt.Sprint(ts+3600)),
			secrets:    []string{hookSecret},
			wantReason: "timestamp outside tolerance (3600s in the future, tolerance 300s)",
		},
		{
			name:       "timestamped, missing timestamp",
			cfg:        withTimestamp,
			req:        req("X-Signature", timed(hookSecret, ts)),
			secrets:    []string{hookSecret},
			wantReason: "missing X-Timestamp header",
		},
		{
			name:       "timestamped, milliseconds",
			cfg:        withTimestamp,
			req:        req("X-Signature", timed(hookSecret, ts*1000), "X-Timestamp", fmt.Sprint(ts*1000)),
			secrets:    []string{hookSecret},
			wantReason: "in the future",
		},
		{
			name:       "timestamped, malformed timestamp",
			cfg:        withTimestamp,
			req:        req("X-Signature", timed(hookSecret, ts), "X-Timestamp", "2023-11-14T22:13:20Z"),
			secrets:    []string{hookSecret},
			wantReason: "malformed X-Timestamp header: expected a Unix timestamp in seconds",
		},
		{name: "no secrets", req: req("X-Signature", "v1:"+sha512b64), wantReason: "integration has no secret configured"},
	}
}

func TestHMAC(t *testing.T) {
	t.Parallel()
	runVerifyCases(t, Config{Scheme: SchemeHMAC, Header: "X-Signature", Algorithm: "sha512", Encoding: "base64", Prefix: "v1:"}, hmacCases())
}

func TestParsePrefixedSignature(t *testing.T) {
	t.Parallel()
	tests := []struct {
		value, prefix, encoding string
		want                    string // hex of the decoded signature
		wantErr                 error
	}{
		{value: "sha256=00ff", prefix: "sha256=", encoding: "hex", want: "00ff"},
		{value: "SHA256=00FF", prefix: "sha256=", encoding: "hex", want: "00ff"},
		{value: "  00ff\t", encoding: "hex", want: "00ff"},
		{value: "AP8=", encoding: "base64", want: "00ff"},
		{value: "AP8", encoding: "base64", want: "00ff"},
		{value: "-_8=", encoding: "base64", want: "fbff"},
		{value: "+/8=", encoding: "base64", want: "fbff"},
		{value: "sha1=00ff", prefix: "sha256=", encoding: "hex", wantErr: errMissingPrefix},
		{value: "sha", prefix: "sha256=", encoding: "hex", wantErr: errMissingPrefix},
		{value: "sha256=", prefix: "sha256=", encoding: "hex", wantErr: errEmptySig},
		{value: "", encoding: "base64", wantErr: errEmptySig},
		{value: "0f0", encoding: "hex", wantErr: errNotHex},
		{value: "AP8=AP8=", encoding: "base64", wantErr: errNotBase64},
		{value: "A", encoding: "base64", wantErr: errNotBase64},
	}
	for _, tt := range tests {
		t.Run(tt.encoding+"/"+tt.value, func(t *testing.T) {
			t.Parallel()
			got, err := parsePrefixedSignature(tt.value, tt.prefix, tt.encoding)
			if err != tt.wantErr {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if hex.EncodeToString(got) != tt.want {
				t.Fatalf("got %x, want %s", got, tt.want)
			}
		})
	}
}
