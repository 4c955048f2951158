package verify

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	generic := Config{Scheme: SchemeHMAC, Header: "X-Signature", Algorithm: "sha256", Encoding: "hex"}
	with := func(f func(*Config)) Config {
		c := generic
		f(&c)
		return c
	}
	tests := []struct {
		name string
		cfg  Config
		// wantErrs are substrings the error must contain; none means valid.
		wantErrs []string
	}{
		{name: "stripe", cfg: Config{Scheme: SchemeStripe}},
		{name: "stripe with tolerance", cfg: Config{Scheme: SchemeStripe, Tolerance: time.Minute}},
		{name: "github", cfg: Config{Scheme: SchemeGitHub}},
		{name: "shopify", cfg: Config{Scheme: SchemeShopify}},
		{name: "twilio", cfg: Config{Scheme: SchemeTwilio}},
		{name: "standard", cfg: Config{Scheme: SchemeStandard, Tolerance: 10 * time.Minute}},
		{name: "intercom", cfg: Config{Scheme: SchemeIntercom}},
		{name: "secret_header", cfg: Config{Scheme: SchemeSecretHeader}},
		{name: "basic_auth", cfg: Config{Scheme: SchemeBasicAuth}},
		{name: "none", cfg: Config{Scheme: SchemeNone}},
		{name: "hmac", cfg: generic},
		{name: "hmac everything", cfg: with(func(c *Config) {
			c.Algorithm, c.Encoding, c.Prefix, c.TimestampHeader, c.Tolerance = "sha512", "base64", "v1=", "X-Timestamp", time.Minute
		})},
		{name: "empty scheme", cfg: Config{}, wantErrs: []string{"scheme: required (one of stripe, github"}},
		{name: "unknown scheme", cfg: Config{Scheme: "Stripe"}, wantErrs: []string{`scheme: unknown scheme "Stripe"`}},
		{name: "negative tolerance", cfg: Config{Scheme: SchemeStripe, Tolerance: -time.Second}, wantErrs: []string{"tolerance: must not be negative"}},
		{name: "tolerance in seconds by mistake", cfg: Config{Scheme: SchemeStripe, Tolerance: 300}, wantErrs: []string{"tolerance: 300ns is less than a second"}},
		{name: "tolerance on github", cfg: Config{Scheme: SchemeGitHub, Tolerance: time.Minute}, wantErrs: []string{`tolerance: not used by scheme "github"`}},
		{name: "tolerance on hmac without timestamp", cfg: with(func(c *Config) { c.Tolerance = time.Minute }), wantErrs: []string{"tolerance: needs timestamp_header"}},
		{
			name:     "hmac fields on another scheme",
			cfg:      Config{Scheme: SchemeGitHub, Header: "X-Sig", Algorithm: "sha1", Encoding: "hex", Prefix: "p", TimestampHeader: "X-T"},
			wantErrs: []string{"header: only used by scheme \"hmac\"", "algorithm:", "encoding:", "prefix:", "timestamp_header:"},
		},
		{name: "hmac missing everything", cfg: Config{Scheme: SchemeHMAC}, wantErrs: []string{"header: required", "algorithm: required", "encoding: required"}},
		{name: "hmac bad header", cfg: with(func(c *Config) { c.Header = "X Signature" }), wantErrs: []string{`header: "X Signature" is not a valid header name`}},
		{name: "hmac bad algorithm", cfg: with(func(c *Config) { c.Algorithm = "md5" }), wantErrs: []string{`algorithm: unknown algorithm "md5"`}},
		{name: "hmac algorithm case", cfg: with(func(c *Config) { c.Algorithm = "SHA256" }), wantErrs: []string{`algorithm: unknown algorithm "SHA256"`}},
		{name: "hmac bad encoding", cfg: with(func(c *Config) { c.Encoding = "base32" }), wantErrs: []string{`encoding: unknown encoding "base32"`}},
		{name: "hmac bad timestamp header", cfg: with(func(c *Config) { c.TimestampHeader = "X-Time:" }), wantErrs: []string{"timestamp_header: \"X-Time:\" is not a valid header name"}},
		{name: "hmac timestamp header same as header", cfg: with(func(c *Config) { c.TimestampHeader = "x-signature" }), wantErrs: []string{"timestamp_header: must differ from header"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.cfg.Validate()
			_, newErr := New(tt.cfg)
			if len(tt.wantErrs) == 0 {
				if err != nil || newErr != nil {
					t.Fatalf("Validate = %v, New = %v; want both nil", err, newErr)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) || !errors.Is(newErr, ErrInvalidConfig) {
				t.Fatalf("Validate = %v, New = %v; want both to wrap ErrInvalidConfig", err, newErr)
			}
			for _, want := range tt.wantErrs {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}

func TestValidateSecret(t *testing.T) {
	t.Parallel()
	tests := []struct {
		scheme, secret string
		wantErr        bool
	}{
		{SchemeNone, "", false},
		{SchemeStripe, "whsec_anything", false},
		{SchemeStripe, "", true},
		{SchemeGitHub, "x", false},
		{SchemeStandard, standardVectorSecret, false},
		{SchemeStandard, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", false},
		{SchemeStandard, "whsec_not base64!", true},
		{SchemeStandard, "whsec_", true},
		{SchemeBasicAuth, "user:pass", false},
		{SchemeBasicAuth, "user:", false},
		{SchemeBasicAuth, "userpass", true},
		{SchemeBasicAuth, ":hunter2", true},
		{SchemeSecretHeader, "s3cr3t value", false},
		{SchemeSecretHeader, "s3cr3t\r\nX-Evil: 1", true},
		{SchemeSecretHeader, " padded", true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%q", tt.scheme, tt.secret), func(t *testing.T) {
			t.Parallel()
			err := ValidateSecret(Config{Scheme: tt.scheme}, tt.secret)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ValidateSecret = %v, want error: %v", err, tt.wantErr)
			}
			if err != nil {
				if !errors.Is(err, ErrInvalidSecret) {
					t.Errorf("%v does not wrap ErrInvalidSecret", err)
				}
				if len(tt.secret) > 6 && strings.Contains(err.Error(), tt.secret) {
					t.Errorf("%v contains the secret", err)
				}
			}
		})
	}
}

func TestIsRejection(t *testing.T) {
	t.Parallel()
	rej := &Rejection{Reason: "nope"}
	if got, ok := IsRejection(fmt.Errorf("verify: %w", rej)); !ok || got != rej {
		t.Fatalf("IsRejection(wrapped) = %v, %v", got, ok)
	}
	if got, ok := IsRejection(errors.New("nope")); ok || got != nil {
		t.Fatalf("IsRejection(plain error) = %v, %v", got, ok)
	}
	if _, ok := IsRejection(nil); ok {
		t.Fatal("IsRejection(nil) = true")
	}
	if rej.Error() != "webhook rejected: nope" {
		t.Fatalf("Error() = %q", rej.Error())
	}
}

func TestCheckTimestampExtremes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		ts   int64
		want string
	}{
		{-1 << 63, "old"},
		{1<<63 - 1, "in the future"},
		{0, "old"},
		{testNow.Unix(), ""},
	}
	for _, tt := range tests {
		rej := checkTimestamp(tt.ts, testNow, time.Minute)
		switch {
		case tt.want == "" && rej != nil:
			t.Errorf("checkTimestamp(%d) = %q, want nil", tt.ts, rej.Reason)
		case tt.want != "" && (rej == nil || !strings.Contains(rej.Reason, tt.want)):
			t.Errorf("checkTimestamp(%d) = %v, want a reason containing %q", tt.ts, rej, tt.want)
		}
	}
}
