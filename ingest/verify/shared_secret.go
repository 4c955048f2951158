package verify

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"strings"
	"time"
)

// equalSecret compares in constant time. Hashing first makes the time
// independent of the lengths too, which a plain byte compare would leak.
func equalSecret(got, want string) bool {
	g, w := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

// secretHeaderVerifier accepts requests whose Whdb-Webhook-Secret header
// equals a secret.
type secretHeaderVerifier struct{}

func (v *secretHeaderVerifier) Verify(req *Request, secrets []string, now time.Time) error {
	secrets = usableSecrets(secrets)
	if len(secrets) == 0 {
		return rejectNoSecret
	}
	got, rej := singleHeader(req.Header, HeaderWebhookSecret)
	if rej != nil {
		return rej
	}
	for _, secret := range secrets {
		if equalSecret(got, secret) {
			return nil
		}
	}
	return reject("%s header does not match any active secret", HeaderWebhookSecret)
}

// basicAuthVerifier accepts requests whose Basic credentials equal a
// "user:password" secret.
type basicAuthVerifier struct{}

func (v *basicAuthVerifier) Verify(req *Request, secrets []string, now time.Time) error {
	secrets = usableSecrets(secrets)
	if len(secrets) == 0 {
		return rejectNoSecret
	}
	value, rej := singleHeader(req.Header, "Authorization")
	if rej != nil {
		return rej
	}
	credentials, err := parseBasicAuth(value)
	if err != nil {
		return reject("malformed Authorization header: %v", err)
	}
	for _, secret := range secrets {
		if equalSecret(credentials, secret) {
			return nil
		}
	}
	return reject("Basic credentials do not match any active secret")
}

var (
	errNotBasic       = errors.New("not Basic credentials")
	errBasicNotBase64 = errors.New("Basic credentials are not base64")
	errBasicNoColon   = errors.New("Basic credentials are not user:password")
)

// parseBasicAuth decodes "Basic <base64(user:password)>" (RFC 7617) and
// returns "user:password".
func parseBasicAuth(value string) (string, error) {
	scheme, encoded, ok := strings.Cut(strings.TrimSpace(value), " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return "", errNotBasic
	}
	decoded, err := base64.StdEncoding.DecodeString(strings.TrimSpace(encoded))
	if err != nil {
		return "", errBasicNotBase64
	}
	credentials := string(decoded)
	if !strings.Contains(credentials, ":") {
		return "", errBasicNoColon
	}
	return credentials, nil
}

// noneVerifier accepts everything. It exists only for integrations whose
// operator explicitly chose scheme "none".
type noneVerifier struct{}

func (noneVerifier) Verify(*Request, []string, time.Time) error { return nil }
