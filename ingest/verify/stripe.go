package verify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"time"
)

const stripeSignatureHeader = "Stripe-Signature"

type stripeVerifier struct {
	tolerance time.Duration
	macs      keyedMACs
}

func (v *stripeVerifier) Verify(req *Request, secrets []string, now time.Time) error {
	secrets = usableSecrets(secrets)
	if len(secrets) == 0 {
		return rejectNoSecret
	}
	value, rej := singleHeader(req.Header, stripeSignatureHeader)
	if rej != nil {
		return rej
	}
	sig, err := parseStripeSignature(value)
	if err != nil {
		return reject("malformed %s header: %v", stripeSignatureHeader, err)
	}
	if rej := checkTimestamp(sig.unix, now, v.tolerance); rej != nil {
		return rej
	}
	for _, secret := range secrets {
		// Stripe uses the whole whsec_ string as the key, undecoded.
		keyed, mac, _ := v.macs.acquire(secret, sha256.New, rawKey)
		mac.Write([]byte(sig.timestamp))
		mac.Write([]byte("."))
		mac.Write(req.Body)
		var sum [sha256.Size]byte
		want := mac.Sum(sum[:0])
		keyed.release(mac)
		for _, got := range sig.v1 {
			if hmac.Equal(want, got) {
				return nil
			}
		}
	}
	return rejectMismatch
}

// stripeSignature is a parsed Stripe-Signature header.
type stripeSignature struct {
	timestamp string // as sent: the signed payload uses these exact bytes
	unix      int64
	v1        [][]byte
}

var (
	errStripeNoTimestamp  = errors.New("no t= timestamp")
	errStripeTwoTimestamp = errors.New("more than one t= timestamp")
	errStripeBadTimestamp = errors.New("t= is not a Unix timestamp")
	errStripeNoV1         = errors.New("no valid v1= signature")
)

// parseStripeSignature parses "t=<unix>,v1=<hex>[,v1=<hex>...]". Several v1
// entries appear while a Stripe endpoint secret is being rolled. v0 (test
// mode's legacy scheme) and unknown keys are ignored, as are v1 values that
// are not hex, so that one bad entry does not hide a good one.
func parseStripeSignature(header string) (stripeSignature, error) {
	var sig stripeSignature
	haveTimestamp := false
	for item := range strings.SplitSeq(header, ",") {
		key, value, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok {
			continue
		}
		switch key {
		case "t":
			if haveTimestamp {
				return stripeSignature{}, errStripeTwoTimestamp
			}
			haveTimestamp = true
			unix, ok := parseUnixSeconds(value)
			if !ok {
				return stripeSignature{}, errStripeBadTimestamp
			}
			sig.timestamp, sig.unix = value, unix
		case "v1":
			if b, err := hex.DecodeString(value); err == nil && len(b) == sha256.Size {
				sig.v1 = append(sig.v1, b)
			}
		}
	}
	if !haveTimestamp {
		return stripeSignature{}, errStripeNoTimestamp
	}
	if len(sig.v1) == 0 {
		return stripeSignature{}, errStripeNoV1
	}
	return sig, nil
}
