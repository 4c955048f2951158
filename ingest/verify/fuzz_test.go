package verify

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Seeds come from the table cases, so every shape the tables cover is a
// starting point for the fuzzer.

func headerSeeds(name string, cases ...[]verifyCase) []string {
	var seeds []string
	for _, cs := range cases {
		for _, c := range cs {
			seeds = append(seeds, c.req.Header.Values(name)...)
		}
	}
	return seeds
}

func FuzzParseStripeSignature(f *testing.F) {
	for _, s := range headerSeeds("Stripe-Signature", stripeCases()) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		sig, err := parseStripeSignature(header)
		if err != nil {
			if sig.timestamp != "" || sig.v1 != nil {
				t.Fatalf("partial result %+v with error %v", sig, err)
			}
			return
		}
		if n := strings.Count(header, ",") + 1; len(sig.v1) > n {
			t.Fatalf("%d v1 signatures from %d items", len(sig.v1), n)
		}
		if len(sig.v1) == 0 {
			t.Fatal("no v1 signature without an error")
		}
		for _, v := range sig.v1 {
			if len(v) != sha256.Size {
				t.Fatalf("v1 of %d bytes", len(v))
			}
			if !strings.Contains(strings.ToLower(header), "v1="+hex.EncodeToString(v)) {
				t.Fatalf("v1 %x does not come from the header", v)
			}
		}
		if unix, err := strconv.ParseInt(sig.timestamp, 10, 64); err != nil || unix != sig.unix || !strings.Contains(header, "t="+sig.timestamp) {
			t.Fatalf("timestamp %q (%d) does not come from the header", sig.timestamp, sig.unix)
		}
	})
}

func FuzzParseStandardSignatures(f *testing.F) {
	for _, s := range headerSeeds("Webhook-Signature", standardCases()) {
		f.Add(s)
	}
	for _, s := range headerSeeds("Svix-Signature", standardCases()) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		sigs, err := parseStandardSignatures(header)
		if (err != nil) != (len(sigs) == 0) {
			t.Fatalf("%d signatures with error %v", len(sigs), err)
		}
		if n := strings.Count(header, " ") + 1; len(sigs) > n {
			t.Fatalf("%d signatures from %d entries", len(sigs), n)
		}
		for _, sig := range sigs {
			if len(sig) != sha256.Size {
				t.Fatalf("signature of %d bytes", len(sig))
			}
			found := false
			for entry := range strings.SplitSeq(header, " ") {
				encoded, ok := strings.CutPrefix(entry, "v1,")
				decoded, err := base64.StdEncoding.DecodeString(encoded)
				found = found || (ok && err == nil && bytes.Equal(decoded, sig))
			}
			if !found {
				t.Fatalf("signature %x does not come from a v1 entry", sig)
			}
		}
	})
}

func FuzzParsePrefixedSignature(f *testing.F) {
	for _, s := range headerSeeds("X-Hub-Signature-256", githubCases()) {
		f.Add(s, "sha256=", true)
	}
	for _, s := range headerSeeds("X-Hub-Signature", intercomCases()) {
		f.Add(s, "sha1=", true)
	}
	for _, s := range headerSeeds("X-Shopify-Hmac-Sha256", shopifyCases()) {
		f.Add(s, "", false)
	}
	for _, s := range headerSeeds("X-Signature", hmacCases()) {
		f.Add(s, "v1:", false)
	}
	f.Fuzz(func(t *testing.T, value, prefix string, isHex bool) {
		encoding := "base64"
		if isHex {
			encoding = "hex"
		}
		sig, err := parsePrefixedSignature(value, prefix, encoding)
		if err != nil {
			if sig != nil {
				t.Fatalf("signature %x with error %v", sig, err)
			}
			return
		}
		if len(sig) == 0 {
			t.Fatal("empty signature without an error")
		}
		if len(sig) > len(value) {
			t.Fatalf("%d bytes decoded from %d characters", len(sig), len(value))
		}
		if isHex && !strings.Contains(strings.ToLower(value), hex.EncodeToString(sig)) {
			t.Fatalf("hex %x not in %q", sig, value)
		}
	})
}

func FuzzParseBasicAuth(f *testing.F) {
	for _, s := range headerSeeds("Authorization", basicAuthCases()) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, value string) {
		credentials, err := parseBasicAuth(value)
		if err != nil {
			if credentials != "" {
				t.Fatalf("credentials %q with error %v", credentials, err)
			}
			return
		}
		if !strings.Contains(credentials, ":") {
			t.Fatalf("credentials %q without a colon", credentials)
		}
		// The canonical encoding of what was parsed parses to the same credentials.
		again, err := parseBasicAuth(basicAuth(credentials))
		if err != nil || again != credentials {
			t.Fatalf("round trip of %q gives %q, %v", credentials, again, err)
		}
	})
}

func FuzzTwilioURLVariants(f *testing.F) {
	for _, c := range twilioCases() {
		f.Add(c.req.PublicURL)
	}
	f.Add("https://[::1]:443/x")
	f.Add("http://u@h:80?q#f")
	f.Fuzz(func(t *testing.T, rawURL string) {
		variants := twilioURLVariants(rawURL)
		if len(variants) == 0 || len(variants) > 2 || variants[0] != rawURL {
			t.Fatalf("variants %q of %q", variants, rawURL)
		}
		if len(variants) == 2 {
			other := variants[1]
			if other == rawURL {
				t.Fatalf("duplicate variant %q", other)
			}
			// Only a default port is ever added or removed, nothing else changes.
			longer, shorter := other, rawURL
			if len(other) < len(rawURL) {
				longer, shorter = rawURL, other
			}
			diff := len(longer) - len(shorter)
			if diff != len(":443") && diff != len(":80") {
				t.Fatalf("variant %q differs from %q by %d bytes", other, rawURL, diff)
			}
			if again := twilioURLVariants(other); len(again) != 2 || again[1] != rawURL {
				t.Fatalf("variants of %q are %q, want them to lead back to %q", other, again, rawURL)
			}
		}
	})
}

func FuzzTwilioFormParams(f *testing.F) {
	for _, c := range twilioCases() {
		f.Add(string(c.req.Body))
	}
	f.Fuzz(func(t *testing.T, body string) {
		form, err := url.ParseQuery(body)
		if err != nil {
			return
		}
		got := twilioFormParams(form)
		want := 0
		for name, values := range form {
			want += len(values) * len(name)
			for _, v := range values {
				want += len(v)
			}
		}
		if len(got) != want {
			t.Fatalf("payload %q is %d bytes, want %d", got, len(got), want)
		}
		// The order the sender wrote parameters in must not matter.
		pairs := strings.Split(body, "&")
		slices.Reverse(pairs)
		reversed, err := url.ParseQuery(strings.Join(pairs, "&"))
		if err != nil {
			t.Fatalf("reversed body does not parse: %v", err)
		}
		if again := twilioFormParams(reversed); again != got {
			t.Fatalf("reversed order gives %q, want %q", again, got)
		}
	})
}

// FuzzVerifyRejectsForgeries feeds each scheme an arbitrary signature value
// with otherwise well-formed headers. Secrets are random per process, so no
// stored corpus entry can carry a valid signature: every input must be
// rejected, with a *Rejection whose reason is safe to send.
func FuzzVerifyRejectsForgeries(f *testing.F) {
	schemes := []string{SchemeStripe, SchemeGitHub, SchemeShopify, SchemeTwilio, SchemeStandard, SchemeIntercom, SchemeHMAC, SchemeSecretHeader, SchemeBasicAuth}
	seedsFor := map[string][]verifyCase{
		SchemeStripe: stripeCases(), SchemeGitHub: githubCases(), SchemeShopify: shopifyCases(), SchemeTwilio: twilioCases(),
		SchemeStandard: standardCases(), SchemeIntercom: intercomCases(), SchemeHMAC: hmacCases(),
		SchemeSecretHeader: secretHeaderCases(), SchemeBasicAuth: basicAuthCases(),
	}
	for i, scheme := range schemes {
		name := forgeryHeader(scheme)
		for _, c := range seedsFor[scheme] {
			for _, v := range c.req.Header.Values(name) {
				f.Add(uint8(i), v, c.req.Body, c.req.PublicURL)
			}
		}
	}

	key := make([]byte, 24)
	rand.Read(key)

	f.Fuzz(func(t *testing.T, schemeIndex uint8, signature string, body []byte, publicURL string) {
		scheme := schemes[int(schemeIndex)%len(schemes)]
		v, err := New(forgeryConfig(scheme))
		if err != nil {
			t.Fatal(err)
		}
		secret := forgerySecret(scheme, key)
		err = v.Verify(forgeryRequest(scheme, signature, body, publicURL), []string{secret}, testNow)
		if err == nil {
			t.Fatalf("%s accepted a forged signature %q", scheme, signature)
		}
		rej, ok := IsRejection(err)
		if !ok {
			t.Fatalf("%s returned %T %v, want *Rejection", scheme, err, err)
		}
		if strings.Contains(rej.Reason, secret) {
			t.Fatalf("reason %q contains the secret", rej.Reason)
		}
		if len(signature) >= 8 && strings.Contains(rej.Reason, signature) {
			t.Fatalf("reason %q echoes the signature header", rej.Reason)
		}
		if bytes.ContainsAny([]byte(rej.Reason), "\r\n\x00") {
			t.Fatalf("reason %q cannot go in a header", rej.Reason)
		}
	})
}

func forgeryConfig(scheme string) Config {
	if scheme == SchemeHMAC {
		return Config{Scheme: SchemeHMAC, Header: "X-Signature", Algorithm: "sha256", Encoding: "base64", TimestampHeader: "X-Timestamp"}
	}
	return Config{Scheme: scheme}
}

// forgerySecret makes a secret valid for scheme out of key bytes.
func forgerySecret(scheme string, key []byte) string {
	encoded := base64.StdEncoding.EncodeToString(key)
	switch scheme {
	case SchemeStandard:
		return "whsec_" + encoded
	case SchemeBasicAuth:
		return "webhooks:" + encoded
	}
	return "secret-" + encoded
}

// forgeryRequest carries signature in scheme's signature header, with every
// other header a verifier needs present and current.
func forgeryRequest(scheme, signature string, body []byte, publicURL string) *Request {
	ts := fmt.Sprint(testNow.Unix())
	return &Request{Method: "POST", PublicURL: publicURL, Header: headers(
		forgeryHeader(scheme), signature,
		"Webhook-Id", "msg_1", "Webhook-Timestamp", ts, "X-Timestamp", ts,
		"Content-Type", "application/x-www-form-urlencoded",
	), Body: body}
}

func forgeryHeader(scheme string) string {
	switch scheme {
	case SchemeStripe:
		return "Stripe-Signature"
	case SchemeGitHub:
		return "X-Hub-Signature-256"
	case SchemeShopify:
		return "X-Shopify-Hmac-Sha256"
	case SchemeTwilio:
		return "X-Twilio-Signature"
	case SchemeStandard:
		return "Webhook-Signature"
	case SchemeIntercom:
		return "X-Hub-Signature"
	case SchemeHMAC:
		return "X-Signature"
	case SchemeSecretHeader:
		return "Whdb-Webhook-Secret"
	case SchemeBasicAuth:
		return "Authorization"
	}
	panic("no header for " + scheme)
}

// Sanity check for the forgery fuzzer's setup: with a properly computed
// signature the same request is accepted, so the fuzzer's rejections are not
// an artifact of a broken request.
func TestForgerySetupAcceptsRealSignature(t *testing.T) {
	t.Parallel()
	key := []byte("0123456789abcdef01234567")
	const body, publicURL = "a=1&b=2", "https://h.example/x"
	ts := testNow.Unix()
	sign := map[string]func(secret string) string{
		SchemeStripe:   func(s string) string { return signStripe(s, ts, body) },
		SchemeGitHub:   func(s string) string { return signGitHub(s, body) },
		SchemeShopify:  func(s string) string { return signShopify(s, body) },
		SchemeTwilio:   func(s string) string { return signTwilio(s, publicURL, url.Values{"a": {"1"}, "b": {"2"}}) },
		SchemeStandard: func(s string) string { return signStandard(s, "msg_1", ts, body) },
		SchemeIntercom: func(s string) string { return signIntercom(s, body) },
		SchemeHMAC: func(s string) string {
			return base64.StdEncoding.EncodeToString(testMAC("sha256", []byte(s), fmt.Sprint(ts)+"."+body))
		},
		SchemeSecretHeader: func(s string) string { return s },
		SchemeBasicAuth:    basicAuth,
	}
	for scheme, signer := range sign {
		v, err := New(forgeryConfig(scheme))
		if err != nil {
			t.Fatal(err)
		}
		secret := forgerySecret(scheme, key)
		if err := v.Verify(forgeryRequest(scheme, signer(secret), []byte(body), publicURL), []string{secret}, testNow); err != nil {
			t.Errorf("%s: %v", scheme, err)
		}
	}
}
