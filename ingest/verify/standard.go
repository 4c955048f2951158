package verify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"time"
)

// standardVerifier implements Standard Webhooks (https://www.standardwebhooks.com),
// which Svix sends with svix- instead of webhook- header prefixes.
type standardVerifier struct {
	tolerance time.Duration
	macs      keyedMACs
}

func (v *standardVerifier) Verify(req *Request, secrets []string, now time.Time) error {
	secrets = usableSecrets(secrets)
	if len(secrets) == 0 {
		return rejectNoSecret
	}

	// Use one family of headers; never mix an id from one with a signature from the other.
	prefix := "webhook-"
	if !hasAnyHeader(req.Header, "Webhook-Id", "Webhook-Timestamp", "Webhook-Signature") &&
		hasAnyHeader(req.Header, "Svix-Id", "Svix-Timestamp", "Svix-Signature") {
		prefix = "svix-"
	}
	id, rej := singleHeader(req.Header, prefix+"id")
	if rej != nil {
		return rej
	}
	timestamp, rej := singleHeader(req.Header, prefix+"timestamp")
	if rej != nil {
		return rej
	}
	signatures, rej := singleHeader(req.Header, prefix+"signature")
	if rej != nil {
		return rej
	}

	ts, ok := parseUnixSeconds(timestamp)
	if !ok {
		return reject("malformed %stimestamp header: expected a Unix timestamp in seconds", prefix)
	}
	sigs, err := parseStandardSignatures(signatures)
	if err != nil {
		return reject("malformed %ssignature header: %v", prefix, err)
	}
	if rej := checkTimestamp(ts, now, v.tolerance); rej != nil {
		return rej
	}

	usable := 0
	for _, secret := range secrets {
		keyed, mac, ok := v.macs.acquire(secret, sha256.New, standardKey)
		if !ok {
			// ValidateSecret stops these at save time; skip any that got through
			// so a valid previous or next secret still works.
			continue
		}
		usable++
		mac.Write([]byte(id))
		mac.Write([]byte("."))
		mac.Write([]byte(timestamp))
		mac.Write([]byte("."))
		mac.Write(req.Body)
		var sum [sha256.Size]byte
		want := mac.Sum(sum[:0])
		keyed.release(mac)
		for _, got := range sigs {
			if hmac.Equal(want, got) {
				return nil
			}
		}
	}
	if usable == 0 {
		return reject("integration secret is not valid base64 (a Standard Webhooks secret is whsec_ followed by base64)")
	}
	return rejectMismatch
}

func hasAnyHeader(h http.Header, names ...string) bool {
	for _, name := range names {
		if len(h.Values(name)) > 0 {
			return true
		}
	}
	return false
}

// standardKey returns the HMAC key of a Standard Webhooks secret: the
// base64 after the optional whsec_ prefix.
func standardKey(secret string) ([]byte, bool) {
	encoded := strings.TrimPrefix(secret, "whsec_")
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding} {
		if key, err := enc.DecodeString(encoded); err == nil && len(key) > 0 {
			return key, true
		}
	}
	return nil, false
}

var errStandardNoV1 = errors.New("no valid v1 signature")

// parseStandardSignatures parses space-separated "<version>,<base64>"
// entries and returns the decoded v1 ones. Other versions (v1a is ed25519)
// and undecodable entries are skipped so that one does not hide another.
func parseStandardSignatures(header string) ([][]byte, error) {
	var sigs [][]byte
	for entry := range strings.SplitSeq(header, " ") {
		version, encoded, ok := strings.Cut(entry, ",")
		if !ok || version != "v1" {
			continue
		}
		if sig, err := base64.StdEncoding.Strict().DecodeString(encoded); err == nil && len(sig) == sha256.Size {
			sigs = append(sigs, sig)
		}
	}
	if len(sigs) == 0 {
		return nil, errStandardNoV1
	}
	return sigs, nil
}
