package verify

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

const (
	stripeSecret      = "whsec_test_current_0123456789abcdef"
	stripeOldSecret   = "whsec_test_previous_fedcba9876543210"
	stripeOtherSecret = "whsec_test_unrelated_aaaaaaaaaaaaaaa"
	stripeBody        = `{"id":"evt_1NQ2xXLkdIwHu7ix","object":"event","type":"customer.updated"}`
)

func stripeCases() []verifyCase {
	ts := testNow.Unix()
	sig := signStripe(stripeSecret, ts, stripeBody)
	req := func(pairs ...string) *Request { return post(stripeBody, pairs...) }
	return []verifyCase{
		{name: "valid", req: req("Stripe-Signature", sig), secrets: []string{stripeSecret}},
		{
			name:    "v0 and unknown keys ignored",
			req:     req("Stripe-Signature", "t="+fmt.Sprint(ts)+",v0=deadbeef,foo=bar,v1="+stripeV1(stripeSecret, ts, stripeBody)+",zz"),
			secrets: []string{stripeSecret},
		},
		{
			name:    "several v1, the second matches",
			req:     req("Stripe-Signature", "t="+fmt.Sprint(ts)+",v1="+stripeV1(stripeOtherSecret, ts, stripeBody)+",v1="+stripeV1(stripeSecret, ts, stripeBody)),
			secrets: []string{stripeSecret},
		},
		{
			name:    "a non-hex v1 does not hide a valid one",
			req:     req("Stripe-Signature", "t="+fmt.Sprint(ts)+",v1=zz,v1="+stripeV1(stripeSecret, ts, stripeBody)),
			secrets: []string{stripeSecret},
		},
		{
			name:    "spaces around items",
			req:     req("Stripe-Signature", "t="+fmt.Sprint(ts)+", v1="+stripeV1(stripeSecret, ts, stripeBody)),
			secrets: []string{stripeSecret},
		},
		{
			name:    "rotation: previous secret still verifies",
			req:     req("Stripe-Signature", signStripe(stripeOldSecret, ts, stripeBody)),
			secrets: []string{stripeSecret, stripeOldSecret},
		},
		{
			name:       "rotation: a secret not in the list fails",
			req:        req("Stripe-Signature", signStripe(stripeOtherSecret, ts, stripeBody)),
			secrets:    []string{stripeSecret, stripeOldSecret},
			wantReason: "signature does not match any active secret",
		},
		{name: "wrong secret", req: req("Stripe-Signature", sig), secrets: []string{stripeOldSecret}, wantReason: "signature does not match any active secret"},
		{
			name:       "tampered body",
			req:        post(strings.Replace(stripeBody, "updated", "deleted", 1), "Stripe-Signature", sig),
			secrets:    []string{stripeSecret},
			wantReason: "signature does not match any active secret",
		},
		{
			name:       "re-encoded body",
			req:        post(strings.ReplaceAll(stripeBody, ",", ", "), "Stripe-Signature", sig),
			secrets:    []string{stripeSecret},
			wantReason: "signature does not match any active secret",
		},
		{
			name:       "timestamp changed",
			req:        req("Stripe-Signature", "t="+fmt.Sprint(ts+1)+",v1="+stripeV1(stripeSecret, ts, stripeBody)),
			secrets:    []string{stripeSecret},
			wantReason: "signature does not match any active secret",
		},
		{
			name:       "stale",
			req:        req("Stripe-Signature", signStripe(stripeSecret, ts-412, stripeBody)),
			secrets:    []string{stripeSecret},
			wantReason: "timestamp outside tolerance (412s old, tolerance 300s)",
		},
		{
			name:       "too far in the future",
			req:        req("Stripe-Signature", signStripe(stripeSecret, ts+400, stripeBody)),
			secrets:    []string{stripeSecret},
			wantReason: "timestamp outside tolerance (400s in the future, tolerance 300s)",
		},
		{name: "exactly at tolerance", req: req("Stripe-Signature", signStripe(stripeSecret, ts-300, stripeBody)), secrets: []string{stripeSecret}},
		{name: "future within tolerance", req: req("Stripe-Signature", signStripe(stripeSecret, ts+299, stripeBody)), secrets: []string{stripeSecret}},
		{
			name:    "custom tolerance accepts older",
			cfg:     &Config{Scheme: SchemeStripe, Tolerance: 10 * time.Minute},
			req:     req("Stripe-Signature", signStripe(stripeSecret, ts-412, stripeBody)),
			secrets: []string{stripeSecret},
		},
		{
			name:       "custom tolerance rejects",
			cfg:        &Config{Scheme: SchemeStripe, Tolerance: 10 * time.Second},
			req:        req("Stripe-Signature", signStripe(stripeSecret, ts-11, stripeBody)),
			secrets:    []string{stripeSecret},
			wantReason: "timestamp outside tolerance (11s old, tolerance 10s)",
		},
		{name: "missing header", req: req(), secrets: []string{stripeSecret}, wantReason: "missing Stripe-Signature header"},
		{name: "empty header", req: req("Stripe-Signature", ""), secrets: []string{stripeSecret}, wantReason: "missing Stripe-Signature header"},
		{
			name:       "two headers",
			req:        req("Stripe-Signature", sig, "Stripe-Signature", sig),
			secrets:    []string{stripeSecret},
			wantReason: "more than one Stripe-Signature header",
		},
		{
			name:       "no timestamp",
			req:        req("Stripe-Signature", "v1="+stripeV1(stripeSecret, ts, stripeBody)),
			secrets:    []string{stripeSecret},
			wantReason: "malformed Stripe-Signature header: no t= timestamp",
		},
		{
			name:       "two timestamps",
			req:        req("Stripe-Signature", "t=1,"+sig),
			secrets:    []string{stripeSecret},
			wantReason: "more than one t= timestamp",
		},
		{
			name:       "timestamp not a number",
			req:        req("Stripe-Signature", "t=yesterday,v1="+stripeV1(stripeSecret, ts, stripeBody)),
			secrets:    []string{stripeSecret},
			wantReason: "t= is not a Unix timestamp",
		},
		{
			name:       "signed timestamp",
			req:        req("Stripe-Signature", "t=+"+fmt.Sprint(ts)+",v1="+stripeV1(stripeSecret, ts, stripeBody)),
			secrets:    []string{stripeSecret},
			wantReason: "t= is not a Unix timestamp",
		},
		{
			name:       "only v0",
			req:        req("Stripe-Signature", "t="+fmt.Sprint(ts)+",v0="+stripeV1(stripeSecret, ts, stripeBody)),
			secrets:    []string{stripeSecret},
			wantReason: "no valid v1= signature",
		},
		{
			name:       "v1 not hex",
			req:        req("Stripe-Signature", "t="+fmt.Sprint(ts)+",v1=not-hex"),
			secrets:    []string{stripeSecret},
			wantReason: "no valid v1= signature",
		},
		{
			name:       "v1 truncated",
			req:        req("Stripe-Signature", "t="+fmt.Sprint(ts)+",v1="+stripeV1(stripeSecret, ts, stripeBody)[:32]),
			secrets:    []string{stripeSecret},
			wantReason: "no valid v1= signature",
		},
		{name: "garbage header", req: req("Stripe-Signature", "garbage"), secrets: []string{stripeSecret}, wantReason: "malformed Stripe-Signature header"},
		{name: "no secrets", req: req("Stripe-Signature", sig), wantReason: "integration has no secret configured"},
		{name: "only empty secrets", req: req("Stripe-Signature", sig), secrets: []string{"", ""}, wantReason: "integration has no secret configured"},
		{
			name:       "empty secret is never a key",
			req:        req("Stripe-Signature", signStripe("", ts, stripeBody)),
			secrets:    []string{"", stripeSecret},
			wantReason: "signature does not match any active secret",
		},
	}
}

func TestStripe(t *testing.T) {
	t.Parallel()
	runVerifyCases(t, Config{Scheme: SchemeStripe}, stripeCases())
}

func TestParseStripeSignature(t *testing.T) {
	t.Parallel()
	a, b := strings.Repeat("ab", 32), strings.Repeat("01", 32)
	tests := []struct {
		header  string
		wantTS  string
		wantV1  int
		wantErr error
	}{
		{header: "t=12,v1=" + a, wantTS: "12", wantV1: 1},
		{header: "t=12,v1=" + a + ",v1=" + b + ",v0=" + a, wantTS: "12", wantV1: 2},
		{header: "v1=" + a + ",t=0012", wantTS: "0012", wantV1: 1},
		{header: "", wantErr: errStripeNoTimestamp},
		{header: ",,,", wantErr: errStripeNoTimestamp},
		{header: "t=12", wantErr: errStripeNoV1},
		{header: "t=12,t=12,v1=" + a, wantErr: errStripeTwoTimestamp},
		{header: "t=-12,v1=" + a, wantErr: errStripeBadTimestamp},
		{header: "t=99999999999999999999,v1=" + a, wantErr: errStripeBadTimestamp},
		{header: "T=12,V1=" + a, wantErr: errStripeNoTimestamp},
	}
	for _, tt := range tests {
		t.Run(tt.header, func(t *testing.T) {
			t.Parallel()
			got, err := parseStripeSignature(tt.header)
			if err != tt.wantErr {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				if !reflect.DeepEqual(got, stripeSignature{}) {
					t.Fatalf("got %+v alongside an error", got)
				}
				return
			}
			if got.timestamp != tt.wantTS || len(got.v1) != tt.wantV1 {
				t.Fatalf("got timestamp %q with %d v1, want %q with %d", got.timestamp, len(got.v1), tt.wantTS, tt.wantV1)
			}
		})
	}
}
