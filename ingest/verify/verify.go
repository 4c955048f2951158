package verify

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Scheme names accepted in [Config.Scheme].
const (
	SchemeStripe       = "stripe"
	SchemeGitHub       = "github"
	SchemeShopify      = "shopify"
	SchemeTwilio       = "twilio"
	SchemeStandard     = "standard"
	SchemeIntercom     = "intercom"
	SchemeHMAC         = "hmac"
	SchemeSecretHeader = "secret_header"
	SchemeBasicAuth    = "basic_auth"
	SchemeNone         = "none"
)

// Default tolerances for schemes whose signatures cover a timestamp.
const (
	DefaultStripeTolerance   = 300 * time.Second
	DefaultStandardTolerance = 5 * time.Minute
	DefaultHMACTolerance     = 5 * time.Minute
)

// HeaderWebhookSecret carries the shared secret for the secret_header scheme.
const HeaderWebhookSecret = "Whdb-Webhook-Secret"

var (
	// ErrInvalidConfig is wrapped by every error from [Config.Validate] and [New].
	ErrInvalidConfig = errors.New("invalid verification config")

	// ErrInvalidSecret is wrapped by every error from [ValidateSecret].
	ErrInvalidSecret = errors.New("invalid integration secret")
)

// Request is what a verifier sees: the request exactly as received.
type Request struct {
	Method string
	// PublicURL is the full URL the sender used, including the query (Twilio
	// signs it). The caller builds it from the configured public base URL plus
	// the request's path and query, because behind a proxy the URL the server
	// sees is not the one the sender signed.
	PublicURL string
	Header    http.Header
	// Body is the raw body; it must never be re-encoded before verification.
	Body []byte
}

// Verifier checks one request against an integration's active secrets,
// current first, then previous ones. It returns nil or a [*Rejection].
type Verifier interface {
	Verify(req *Request, secrets []string, now time.Time) error
}

// New returns the verifier for cfg, or an error wrapping [ErrInvalidConfig].
func New(cfg Config) (Verifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	switch cfg.Scheme {
	case SchemeStripe:
		return &stripeVerifier{tolerance: toleranceOr(cfg.Tolerance, DefaultStripeTolerance)}, nil
	case SchemeGitHub:
		return &bodyHMACVerifier{header: "X-Hub-Signature-256", algorithm: "sha256", encoding: "hex", prefix: "sha256="}, nil
	case SchemeShopify:
		return &bodyHMACVerifier{header: "X-Shopify-Hmac-Sha256", algorithm: "sha256", encoding: "base64"}, nil
	case SchemeIntercom:
		return &bodyHMACVerifier{header: "X-Hub-Signature", algorithm: "sha1", encoding: "hex", prefix: "sha1="}, nil
	case SchemeHMAC:
		v := &bodyHMACVerifier{
			header:          http.CanonicalHeaderKey(cfg.Header),
			algorithm:       cfg.Algorithm,
			encoding:        cfg.Encoding,
			prefix:          cfg.Prefix,
			timestampHeader: http.CanonicalHeaderKey(cfg.TimestampHeader),
		}
		if cfg.TimestampHeader != "" {
			v.tolerance = toleranceOr(cfg.Tolerance, DefaultHMACTolerance)
		}
		return v, nil
	case SchemeTwilio:
		return &twilioVerifier{}, nil
	case SchemeStandard:
		return &standardVerifier{tolerance: toleranceOr(cfg.Tolerance, DefaultStandardTolerance)}, nil
	case SchemeSecretHeader:
		return &secretHeaderVerifier{}, nil
	case SchemeBasicAuth:
		return &basicAuthVerifier{}, nil
	case SchemeNone:
		return noneVerifier{}, nil
	}
	// Validate rejects unknown schemes; this only guards against the two lists drifting apart.
	return nil, fmt.Errorf("%w: scheme: unknown scheme %q", ErrInvalidConfig, cfg.Scheme)
}

// Rejection says why a request was not accepted, in words the integration's
// operator can act on. Reason is safe to return to the sender and to store.
type Rejection struct {
	Reason string
}

func (r *Rejection) Error() string { return "webhook rejected: " + r.Reason }

// IsRejection reports whether err is or wraps a [*Rejection], and returns it.
func IsRejection(err error) (*Rejection, bool) {
	var r *Rejection
	if errors.As(err, &r) {
		return r, true
	}
	return nil, false
}

func reject(format string, args ...any) *Rejection {
	return &Rejection{Reason: fmt.Sprintf(format, args...)}
}

var (
	rejectNoSecret = &Rejection{Reason: "integration has no secret configured"}
	rejectMismatch = &Rejection{Reason: "signature does not match any active secret"}
)

// usableSecrets drops empty secrets: an empty key would let anyone sign.
func usableSecrets(secrets []string) []string {
	usable := make([]string, 0, len(secrets))
	for _, s := range secrets {
		if s != "" {
			usable = append(usable, s)
		}
	}
	return usable
}

// singleHeader returns the one value of a header. Missing, empty and
// repeated headers are rejected, so there is never a question of which copy
// was verified.
func singleHeader(h http.Header, name string) (string, *Rejection) {
	values := h.Values(name)
	switch {
	case len(values) == 0 || (len(values) == 1 && values[0] == ""):
		return "", reject("missing %s header", name)
	case len(values) > 1:
		return "", reject("more than one %s header", name)
	}
	return values[0], nil
}

func toleranceOr(configured, schemeDefault time.Duration) time.Duration {
	if configured > 0 {
		return configured
	}
	return schemeDefault
}

// parseUnixSeconds parses a decimal Unix timestamp in seconds.
func parseUnixSeconds(s string) (int64, bool) {
	if s == "" || s[0] == '+' || s[0] == '-' {
		// Signs are legal for ParseInt but no provider sends them.
		return 0, false
	}
	ts, err := strconv.ParseInt(s, 10, 64)
	return ts, err == nil
}

// checkTimestamp rejects timestamps older or further in the future than
// tolerance: stale ones could be replays, future ones could be pre-signed
// for replay later. It works in whole seconds, as providers sign them.
func checkTimestamp(ts int64, now time.Time, tolerance time.Duration) *Rejection {
	nowUnix := now.Unix()
	limit := uint64(tolerance / time.Second)
	// Unsigned differences cannot overflow, whatever timestamp was sent.
	if ts > nowUnix {
		if ahead := uint64(ts) - uint64(nowUnix); ahead > limit {
			return reject("timestamp outside tolerance (%ds in the future, tolerance %ds)", ahead, limit)
		}
		return nil
	}
	if age := uint64(nowUnix) - uint64(ts); age > limit {
		return reject("timestamp outside tolerance (%ds old, tolerance %ds)", age, limit)
	}
	return nil
}
