package outgoing

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// SecretPrefix starts every signing secret, as Standard Webhooks libraries expect.
const SecretPrefix = "whsec_"

// ErrInvalidSecret means a signing secret is not whsec_ and base64 of 24 to 64 bytes.
var ErrInvalidSecret = errors.New("invalid signing secret")

// NewSecret returns a new signing secret: whsec_ and 32 random bytes in base64.
func NewSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand panics instead)
	return SecretPrefix + base64.StdEncoding.EncodeToString(b)
}

// SecretKey returns the HMAC key of a whsec_ secret.
func SecretKey(secret string) ([]byte, error) {
	s, ok := strings.CutPrefix(secret, SecretPrefix)
	if !ok {
		return nil, fmt.Errorf("%w: no %s prefix", ErrInvalidSecret, SecretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(key) < 24 || len(key) > 64 {
		return nil, fmt.Errorf("%w: not base64 of 24 to 64 bytes", ErrInvalidSecret)
	}
	return key, nil
}

// SignedHeader returns the Standard Webhooks headers of a message: webhook-id, webhook-timestamp (at, in Unix
// seconds) and webhook-signature with one v1 signature per key (during a rotation's grace period both the
// new and the previous secret sign, so a receiver holding either verifies).
func SignedHeader(msgID string, at time.Time, body []byte, keys ...[]byte) http.Header {
	ts := strconv.FormatInt(at.Unix(), 10)
	sigs := make([]string, 0, len(keys))
	for _, k := range keys {
		mac := hmac.New(sha256.New, k)
		mac.Write([]byte(msgID))
		mac.Write([]byte{'.'})
		mac.Write([]byte(ts))
		mac.Write([]byte{'.'})
		mac.Write(body)
		sigs = append(sigs, "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	}
	h := http.Header{}
	h.Set("Webhook-Id", msgID)
	h.Set("Webhook-Timestamp", ts)
	h.Set("Webhook-Signature", strings.Join(sigs, " "))
	h.Set("Content-Type", "application/json")
	return h
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// NewOpaqueID returns prefix and 160 random bits in lower-case base32 (the ids of subscriptions and alert
// handlers, shaped like integrations').
func NewOpaqueID(prefix string) string {
	b := make([]byte, 20)
	_, _ = rand.Read(b)
	return prefix + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
}
