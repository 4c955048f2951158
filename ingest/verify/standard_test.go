package verify

import (
	"encoding/base64"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The Standard Webhooks reference vector.
const (
	standardVectorSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	standardVectorID     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	standardVectorTS     = 1614265330
	standardVectorBody   = `{"test": 2432232314}`
	standardVectorSig    = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

var (
	standardSecret      = "whsec_" + base64.StdEncoding.EncodeToString([]byte("current-standard-key-0123456789"))
	standardOldSecret   = "whsec_" + base64.StdEncoding.EncodeToString([]byte("previous-standard-key-98765432"))
	standardOtherSecret = "whsec_" + base64.StdEncoding.EncodeToString([]byte("unrelated-standard-key-aaaaaaa"))
)

func TestStandardPublishedVector(t *testing.T) {
	t.Parallel()
	if got := signStandard(standardVectorSecret, standardVectorID, standardVectorTS, standardVectorBody); got != standardVectorSig {
		t.Fatalf("signStandard = %s, want %s", got, standardVectorSig)
	}
}

func standardCases() []verifyCase {
	ts := testNow.Unix()
	const id = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
	const body = `{"type":"invoice.paid","data":{"id":"inv_1"}}`
	sig := signStandard(standardSecret, id, ts, body)
	req := func(id, ts, sig string) *Request {
		return post(body, "webhook-id", id, "webhook-timestamp", ts, "webhook-signature", sig)
	}
	now := fmt.Sprint(ts)
	return []verifyCase{
		{
			name:    "reference vector",
			req:     post(standardVectorBody, "webhook-id", standardVectorID, "webhook-timestamp", fmt.Sprint(standardVectorTS), "webhook-signature", standardVectorSig),
			secrets: []string{standardVectorSecret},
			now:     time.Unix(standardVectorTS, 0),
		},
		{
			name:    "reference vector with svix headers",
			req:     post(standardVectorBody, "svix-id", standardVectorID, "svix-timestamp", fmt.Sprint(standardVectorTS), "svix-signature", standardVectorSig),
			secrets: []string{standardVectorSecret},
			now:     time.Unix(standardVectorTS+10, 0),
		},
		{
			name:    "secret without whsec_ prefix",
			req:     post(standardVectorBody, "webhook-id", standardVectorID, "webhook-timestamp", fmt.Sprint(standardVectorTS), "webhook-signature", standardVectorSig),
			secrets: []string{strings.TrimPrefix(standardVectorSecret, "whsec_")},
			now:     time.Unix(standardVectorTS, 0),
		},
		{name: "valid", req: req(id, now, sig), secrets: []string{standardSecret}},
		{
			name:    "several entries, v1a and unknown versions ignored",
			req:     req(id, now, "v1a,bm90LWVkMjU1MTk= v2,abc "+signStandard(standardOtherSecret, id, ts, body)+" "+sig),
			secrets: []string{standardSecret},
		},
		{name: "undecodable entry does not hide a valid one", req: req(id, now, "v1,!!! "+sig), secrets: []string{standardSecret}},
		{name: "rotation: previous secret", req: req(id, now, signStandard(standardOldSecret, id, ts, body)), secrets: []string{standardSecret, standardOldSecret}},
		{
			name:       "rotation: secret not in the list",
			req:        req(id, now, signStandard(standardOtherSecret, id, ts, body)),
			secrets:    []string{standardSecret, standardOldSecret},
			wantReason: "signature does not match any active secret",
		},
		{name: "wrong secret", req: req(id, now, sig), secrets: []string{standardOtherSecret}, wantReason: "signature does not match any active secret"},
		{name: "tampered body", req: post(body+"\n", "webhook-id", id, "webhook-timestamp", now, "webhook-signature", sig), secrets: []string{standardSecret}, wantReason: "signature does not match any active secret"},
		{name: "id changed", req: req("msg_other", now, sig), secrets: []string{standardSecret}, wantReason: "signature does not match any active secret"},
		{
			name:       "stale",
			req:        req(id, fmt.Sprint(ts-301), signStandard(standardSecret, id, ts-301, body)),
			secrets:    []string{standardSecret},
			wantReason: "timestamp outside tolerance (301s old, tolerance 300s)",
		},
		{
			name:       "future",
			req:        req(id, fmt.Sprint(ts+301), signStandard(standardSecret, id, ts+301, body)),
			secrets:    []string{standardSecret},
			wantReason: "timestamp outside tolerance (301s in the future, tolerance 300s)",
		},
		{
			name:    "custom tolerance",
			cfg:     &Config{Scheme: SchemeStandard, Tolerance: time.Hour},
			req:     req(id, fmt.Sprint(ts-301), signStandard(standardSecret, id, ts-301, body)),
			secrets: []string{standardSecret},
		},
		{name: "missing id", req: post(body, "webhook-timestamp", now, "webhook-signature", sig), secrets: []string{standardSecret}, wantReason: "missing webhook-id header"},
		{name: "missing timestamp", req: post(body, "webhook-id", id, "webhook-signature", sig), secrets: []string{standardSecret}, wantReason: "missing webhook-timestamp header"},
		{name: "missing signature", req: post(body, "webhook-id", id, "webhook-timestamp", now), secrets: []string{standardSecret}, wantReason: "missing webhook-signature header"},
		{name: "missing everything", req: post(body), secrets: []string{standardSecret}, wantReason: "missing webhook-id header"},
		{
			name:       "header families are not mixed",
			req:        post(body, "webhook-id", id, "svix-timestamp", now, "svix-signature", sig),
			secrets:    []string{standardSecret},
			wantReason: "missing webhook-timestamp header",
		},
		{name: "svix missing signature", req: post(body, "svix-id", id, "svix-timestamp", now), secrets: []string{standardSecret}, wantReason: "missing svix-signature header"},
		{name: "malformed timestamp", req: req(id, "soon", sig), secrets: []string{standardSecret}, wantReason: "malformed webhook-timestamp header"},
		{name: "millisecond timestamp", req: req(id, now+"000", sig), secrets: []string{standardSecret}, wantReason: "in the future"},
		{name: "only v1a", req: req(id, now, "v1a,"+strings.TrimPrefix(sig, "v1,")), secrets: []string{standardSecret}, wantReason: "malformed webhook-signature header: no valid v1 signature"},
		{name: "no comma", req: req(id, now, strings.TrimPrefix(sig, "v1,")), secrets: []string{standardSecret}, wantReason: "no valid v1 signature"},
		{
			name:       "invalid secret",
			req:        req(id, now, sig),
			secrets:    []string{"whsec_not base64!"},
			wantReason: "integration secret is not valid base64",
		},
		{name: "invalid secret skipped, valid one used", req: req(id, now, sig), secrets: []string{"whsec_not base64!", standardSecret}},
		{
			name:       "invalid and non-matching secrets",
			req:        req(id, now, sig),
			secrets:    []string{"whsec_not base64!", standardOtherSecret},
			wantReason: "signature does not match any active secret",
		},
		{name: "no secrets", req: req(id, now, sig), wantReason: "integration has no secret configured"},
	}
}

func TestStandard(t *testing.T) {
	t.Parallel()
	runVerifyCases(t, Config{Scheme: SchemeStandard}, standardCases())
}

func TestParseStandardSignatures(t *testing.T) {
	t.Parallel()
	a := base64.StdEncoding.EncodeToString(make([]byte, 32))
	tests := []struct {
		header  string
		want    int
		wantErr error
	}{
		{header: "v1," + a, want: 1},
		{header: "v1," + a + " v1," + a, want: 2},
		{header: "  v1," + a + "  ", want: 1},
		{header: "v1a," + a + " v1," + a, want: 1},
		{header: "v1," + a + ",extra", wantErr: errStandardNoV1},
		{header: "v1,AAAA", wantErr: errStandardNoV1},
		{header: "V1," + a, wantErr: errStandardNoV1},
		{header: "", wantErr: errStandardNoV1},
	}
	for _, tt := range tests {
		t.Run(tt.header, func(t *testing.T) {
			t.Parallel()
			got, err := parseStandardSignatures(tt.header)
			if err != tt.wantErr || len(got) != tt.want {
				t.Fatalf("got %d signatures, err %v; want %d, err %v", len(got), err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestStandardKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		secret string
		want   []byte
		ok     bool
	}{
		{"whsec_AAEC", []byte{0, 1, 2}, true},
		{"AAEC", []byte{0, 1, 2}, true},
		{"whsec_AAE", []byte{0, 1}, true},
		{"whsec_AAE=", []byte{0, 1}, true},
		{"whsec_", nil, false},
		{"whsec_!!", nil, false},
		{"", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.secret, func(t *testing.T) {
			t.Parallel()
			got, ok := standardKey(tt.secret)
			if ok != tt.ok || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %v, %v; want %v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}
