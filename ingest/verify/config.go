package verify

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Config is an integration's verification settings, stored as JSON.
type Config struct {
	// Scheme is one of the Scheme* constants. There is no default: accepting
	// unsigned webhooks must be chosen explicitly with "none".
	Scheme string `json:"scheme"`

	// Tolerance bounds how far a signed timestamp may be from now, in either
	// direction, for stripe, standard and hmac with TimestampHeader. Zero means
	// the scheme's default. In JSON it is a number of nanoseconds.
	Tolerance time.Duration `json:"tolerance,omitempty"`

	// The remaining fields configure the generic "hmac" scheme only.

	// Header carries the signature.
	Header string `json:"header,omitempty"`
	// Algorithm is sha1, sha256 or sha512.
	Algorithm string `json:"algorithm,omitempty"`
	// Encoding of the signature: hex or base64.
	Encoding string `json:"encoding,omitempty"`
	// Prefix precedes the encoded signature in the header, e.g. "sha256=".
	Prefix string `json:"prefix,omitempty"`
	// TimestampHeader, when set, carries a Unix timestamp in seconds; the
	// signed payload is then timestamp + "." + body and Tolerance applies.
	TimestampHeader string `json:"timestamp_header,omitempty"`
}

// Validate reports every problem with the config, each naming its JSON
// field. The error wraps [ErrInvalidConfig].
func (c Config) Validate() error {
	var problems []error
	add := func(field, format string, args ...any) {
		problems = append(problems, fmt.Errorf("%w: %s: %s", ErrInvalidConfig, field, fmt.Sprintf(format, args...)))
	}

	switch c.Scheme {
	case "":
		add("scheme", "required (one of %s)", strings.Join(schemeNames, ", "))
	case SchemeStripe, SchemeGitHub, SchemeShopify, SchemeTwilio, SchemeStandard,
		SchemeIntercom, SchemeHMAC, SchemeSecretHeader, SchemeBasicAuth, SchemeNone:
	default:
		add("scheme", "unknown scheme %q (one of %s)", c.Scheme, strings.Join(schemeNames, ", "))
	}

	usesTolerance := c.Scheme == SchemeStripe || c.Scheme == SchemeStandard ||
		(c.Scheme == SchemeHMAC && c.TimestampHeader != "")
	switch {
	case c.Tolerance < 0:
		add("tolerance", "must not be negative")
	case c.Tolerance > 0 && c.Tolerance < time.Second:
		// A JSON "tolerance": 300 is 300ns, which would reject everything.
		add("tolerance", "%s is less than a second; the JSON value is in nanoseconds (300s is 300000000000)", c.Tolerance)
	case c.Tolerance > 0 && !usesTolerance:
		if c.Scheme == SchemeHMAC {
			add("tolerance", "needs timestamp_header: without a signed timestamp there is nothing to check")
		} else if c.Scheme != "" {
			add("tolerance", "not used by scheme %q", c.Scheme)
		}
	}

	if c.Scheme != SchemeHMAC {
		for _, f := range []struct{ name, value string }{
			{"header", c.Header},
			{"algorithm", c.Algorithm},
			{"encoding", c.Encoding},
			{"prefix", c.Prefix},
			{"timestamp_header", c.TimestampHeader},
		} {
			if f.value != "" && c.Scheme != "" {
				add(f.name, "only used by scheme %q, not %q", SchemeHMAC, c.Scheme)
			}
		}
		return errors.Join(problems...)
	}

	switch {
	case c.Header == "":
		add("header", "required for scheme %q", SchemeHMAC)
	case !isHeaderName(c.Header):
		add("header", "%q is not a valid header name", c.Header)
	}
	switch c.Algorithm {
	case "":
		add("algorithm", "required for scheme %q (sha1, sha256 or sha512)", SchemeHMAC)
	case "sha1", "sha256", "sha512":
	default:
		add("algorithm", "unknown algorithm %q (sha1, sha256 or sha512)", c.Algorithm)
	}
	switch c.Encoding {
	case "":
		add("encoding", "required for scheme %q (hex or base64)", SchemeHMAC)
	case "hex", "base64":
	default:
		add("encoding", "unknown encoding %q (hex or base64)", c.Encoding)
	}
	if c.TimestampHeader != "" {
		switch {
		case !isHeaderName(c.TimestampHeader):
			add("timestamp_header", "%q is not a valid header name", c.TimestampHeader)
		case strings.EqualFold(c.TimestampHeader, c.Header):
			add("timestamp_header", "must differ from header")
		}
	}
	return errors.Join(problems...)
}

var schemeNames = []string{
	SchemeStripe, SchemeGitHub, SchemeShopify, SchemeTwilio, SchemeStandard,
	SchemeIntercom, SchemeHMAC, SchemeSecretHeader, SchemeBasicAuth, SchemeNone,
}

// isHeaderName reports whether s is an RFC 9110 token, the syntax of a field name.
func isHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// ValidateSecret checks a secret before it is saved for an integration with
// cfg, so mistakes surface when the secret is entered rather than as
// rejected deliveries. The error wraps [ErrInvalidSecret] and never
// contains the secret.
func ValidateSecret(cfg Config, secret string) error {
	if cfg.Scheme == SchemeNone {
		return nil
	}
	if secret == "" {
		return fmt.Errorf("%w: must not be empty", ErrInvalidSecret)
	}
	switch cfg.Scheme {
	case SchemeStandard:
		if _, ok := standardKey(secret); !ok {
			return fmt.Errorf("%w: a Standard Webhooks secret is whsec_ followed by non-empty base64", ErrInvalidSecret)
		}
	case SchemeBasicAuth:
		user, _, ok := strings.Cut(secret, ":")
		if !ok || user == "" {
			return fmt.Errorf("%w: a basic_auth secret is user:password", ErrInvalidSecret)
		}
	case SchemeSecretHeader:
		if strings.ContainsAny(secret, "\r\n\x00") || strings.TrimSpace(secret) != secret {
			// Such a value cannot arrive intact in an HTTP header.
			return fmt.Errorf("%w: must not contain line breaks, NUL, or leading or trailing spaces", ErrInvalidSecret)
		}
	}
	return nil
}
