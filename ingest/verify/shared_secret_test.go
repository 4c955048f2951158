package verify

import (
	"encoding/base64"
	"testing"
)

const (
	sharedSecret      = "shared-secret-current-0123456789"
	sharedOldSecret   = "shared-secret-previous-98765432"
	sharedOtherSecret = "shared-secret-unrelated-aaaaaaa"
)

func secretHeaderCases() []verifyCase {
	req := func(pairs ...string) *Request { return post("{}", pairs...) }
	return []verifyCase{
		{name: "valid", req: req("Whdb-Webhook-Secret", sharedSecret), secrets: []string{sharedSecret}},
		{name: "lower-case header name", req: req("whdb-webhook-secret", sharedSecret), secrets: []string{sharedSecret}},
		{name: "rotation: previous secret", req: req("Whdb-Webhook-Secret", sharedOldSecret), secrets: []string{sharedSecret, sharedOldSecret}},
		{name: "rotation: secret not in the list", req: req("Whdb-Webhook-Secret", sharedOtherSecret), secrets: []string{sharedSecret, sharedOldSecret}, wantReason: "Whdb-Webhook-Secret header does not match any active secret"},
		{name: "prefix of the secret", req: req("Whdb-Webhook-Secret", sharedSecret[:10]), secrets: []string{sharedSecret}, wantReason: "does not match any active secret"},
		{name: "secret plus more", req: req("Whdb-Webhook-Secret", sharedSecret+"x"), secrets: []string{sharedSecret}, wantReason: "does not match any active secret"},
		{name: "missing header", req: req(), secrets: []string{sharedSecret}, wantReason: "missing Whdb-Webhook-Secret header"},
		{name: "empty header never matches an empty secret", req: req("Whdb-Webhook-Secret", ""), secrets: []string{""}, wantReason: "integration has no secret configured"},
		{name: "two headers", req: req("Whdb-Webhook-Secret", sharedOtherSecret, "Whdb-Webhook-Secret", sharedSecret), secrets: []string{sharedSecret}, wantReason: "more than one Whdb-Webhook-Secret header"},
		{name: "no secrets", req: req("Whdb-Webhook-Secret", sharedSecret), wantReason: "integration has no secret configured"},
	}
}

func TestSecretHeader(t *testing.T) {
	t.Parallel()
	runVerifyCases(t, Config{Scheme: SchemeSecretHeader}, secretHeaderCases())
}

func basicAuthCases() []verifyCase {
	const creds = "webhooks:pa:ss-word-0123456789"
	const oldCreds = "webhooks:old-password-98765432"
	req := func(pairs ...string) *Request { return post("{}", pairs...) }
	return []verifyCase{
		{name: "valid", req: req("Authorization", basicAuth(creds)), secrets: []string{creds}},
		{name: "lower-case scheme", req: req("Authorization", "basic "+base64.StdEncoding.EncodeToString([]byte(creds))), secrets: []string{creds}},
		{name: "rotation: previous password", req: req("Authorization", basicAuth(oldCreds)), secrets: []string{creds, oldCreds}},
		{name: "rotation: not in the list", req: req("Authorization", basicAuth("webhooks:guess-000000000")), secrets: []string{creds, oldCreds}, wantReason: "Basic credentials do not match any active secret"},
		{name: "wrong user", req: req("Authorization", basicAuth("admin:pa:ss-word-0123456789")), secrets: []string{creds}, wantReason: "do not match"},
		{name: "password split differently", req: req("Authorization", basicAuth("webhooks:pa")), secrets: []string{creds}, wantReason: "do not match"},
		{name: "bearer", req: req("Authorization", "Bearer "+creds), secrets: []string{creds}, wantReason: "malformed Authorization header: not Basic credentials"},
		{name: "not base64", req: req("Authorization", "Basic ***"), secrets: []string{creds}, wantReason: "Basic credentials are not base64"},
		{name: "no colon", req: req("Authorization", basicAuth("webhooks")), secrets: []string{creds}, wantReason: "Basic credentials are not user:password"},
		{name: "missing header", req: req(), secrets: []string{creds}, wantReason: "missing Authorization header"},
		{name: "no secrets", req: req("Authorization", basicAuth(creds)), wantReason: "integration has no secret configured"},
	}
}

func TestBasicAuth(t *testing.T) {
	t.Parallel()
	runVerifyCases(t, Config{Scheme: SchemeBasicAuth}, basicAuthCases())
}

func TestParseBasicAuth(t *testing.T) {
	t.Parallel()
	tests := []struct {
		value   string
		want    string
		wantErr error
	}{
		{value: basicAuth("u:p"), want: "u:p"},
		{value: basicAuth(":"), want: ":"},
		{value: "  BASIC   " + base64.StdEncoding.EncodeToString([]byte("u:p:q")) + " ", want: "u:p:q"},
		{value: "Basic", wantErr: errNotBasic},
		{value: "Digest abc", wantErr: errNotBasic},
		{value: "Basic dTpw=", wantErr: errBasicNotBase64},
		{value: "Basic " + base64.StdEncoding.EncodeToString([]byte("up")), wantErr: errBasicNoColon},
		{value: "", wantErr: errNotBasic},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			t.Parallel()
			got, err := parseBasicAuth(tt.value)
			if got != tt.want || err != tt.wantErr {
				t.Fatalf("got %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestNoneAcceptsEverything(t *testing.T) {
	t.Parallel()
	v, err := New(Config{Scheme: SchemeNone})
	if err != nil {
		t.Fatal(err)
	}
	for _, req := range []*Request{post(""), post("anything", "Stripe-Signature", "t=1,v1=00")} {
		if err := v.Verify(req, nil, testNow); err != nil {
			t.Fatalf("Verify = %v, want nil", err)
		}
	}
}
