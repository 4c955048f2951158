package verify

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"hash"
	"strings"
	"time"
)

// bodyHMACVerifier covers schemes that put one encoded HMAC of the body,
// optionally behind a prefix, in one header: github, shopify, intercom and
// the configurable hmac scheme.
type bodyHMACVerifier struct {
	header    string
	algorithm string // sha1, sha256 or sha512
	encoding  string // hex or base64
	prefix    string
	// timestampHeader, when set, means the signed payload is timestamp + "." + body.
	timestampHeader string
	tolerance       time.Duration
	macs            keyedMACs
}

func (v *bodyHMACVerifier) Verify(req *Request, secrets []string, now time.Time) error {
	secrets = usableSecrets(secrets)
	if len(secrets) == 0 {
		return rejectNoSecret
	}
	value, rej := singleHeader(req.Header, v.header)
	if rej != nil {
		return rej
	}
	got, err := parsePrefixedSignature(value, v.prefix, v.encoding)
	switch {
	case errors.Is(err, errMissingPrefix):
		return reject("malformed %s header: expected it to start with %q", v.header, v.prefix)
	case err != nil:
		return reject("malformed %s header: %v", v.header, err)
	}

	var timestamp string
	if v.timestampHeader != "" {
		if timestamp, rej = singleHeader(req.Header, v.timestampHeader); rej != nil {
			return rej
		}
		ts, ok := parseUnixSeconds(timestamp)
		if !ok {
			return reject("malformed %s header: expected a Unix timestamp in seconds", v.timestampHeader)
		}
		if rej := checkTimestamp(ts, now, v.tolerance); rej != nil {
			return rej
		}
	}

	for _, secret := range secrets {
		keyed, mac, _ := v.macs.acquire(secret, hashFunc(v.algorithm), rawKey)
		if v.timestampHeader != "" {
			mac.Write([]byte(timestamp))
			mac.Write([]byte("."))
		}
		mac.Write(req.Body)
		var sum [sha512.Size]byte
		ok := hmac.Equal(mac.Sum(sum[:0]), got)
		keyed.release(mac)
		if ok {
			return nil
		}
	}
	return rejectMismatch
}

func hashFunc(algorithm string) func() hash.Hash {
	switch algorithm {
	case "sha1":
		return sha1.New
	case "sha512":
		return sha512.New
	}
	return sha256.New
}

var (
	errMissingPrefix = errors.New("missing expected prefix")
	errEmptySig      = errors.New("empty signature")
	errNotHex        = errors.New("signature is not hex")
	errNotBase64     = errors.New("signature is not base64")
)

// parsePrefixedSignature strips surrounding spaces and prefix (matched
// case-insensitively, as "SHA256=" means the same thing) from a signature
// header value and decodes the rest as hex or base64.
func parsePrefixedSignature(value, prefix, encoding string) ([]byte, error) {
	value = strings.TrimSpace(value)
	if prefix != "" {
		if len(value) < len(prefix) || !strings.EqualFold(value[:len(prefix)], prefix) {
			return nil, errMissingPrefix
		}
		value = value[len(prefix):]
	}
	if value == "" {
		return nil, errEmptySig
	}
	if encoding == "hex" {
		sig, err := hex.DecodeString(value)
		if err != nil {
			return nil, errNotHex
		}
		return sig, nil
	}
	sig, ok := decodeBase64(value)
	if !ok {
		return nil, errNotBase64
	}
	return sig, nil
}

// decodeBase64 accepts standard and URL-safe base64, padded or not. Being
// lenient here costs nothing: the decoded bytes are what gets compared.
func decodeBase64(s string) ([]byte, bool) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.Strict().DecodeString(s); err == nil && len(b) > 0 {
			return b, true
		}
	}
	return nil, false
}
