package ingest

import (
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/webhookdb-go/webhookdb/ingest/verify"
)

// What comes from a request is made storable before it reaches Postgres, whose text columns refuse bytes that
// are not UTF-8 and NUL (SQLSTATE 22021) and whose jsonb refuses \u0000 (22P05): one sender's odd bytes must
// not fail a group commit that carries other senders' rows.
//
//   - Path and query are stored percent-escaped: a byte that is not part of valid UTF-8, or a control byte
//     (NUL included), becomes %XX, which is what a URL means by that byte anyway, so nothing is lost.
//   - Header values (Content-Type included) are text: bytes that are not UTF-8 and control bytes other than
//     tab become U+FFFD, the replacement character.
//   - The rejection reason, which may quote the request, gets the same treatment.

// escapeURLPart percent-escapes the bytes of s that Postgres text cannot hold or that are not valid UTF-8.
func escapeURLPart(s string) string {
	if urlPartStorable(s) {
		return s
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f {
				b.WriteByte('%')
				b.WriteByte(hex[c>>4])
				b.WriteByte(hex[c&15])
			} else {
				b.WriteByte(c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

func urlPartStorable(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f || c >= utf8.RuneSelf {
			return utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
		}
	}
	return true
}

// storableText replaces bytes that are not UTF-8 and control characters other than tab with U+FFFD.
func storableText(s string) string {
	ok := utf8.ValidString(s)
	for i := 0; ok && i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			ok = false
		}
	}
	if ok {
		return s
	}
	return strings.Map(func(r rune) rune {
		if (r < 0x20 && r != '\t') || r == 0x7f {
			return utf8.RuneError
		}
		return r
	}, strings.ToValidUTF8(s, string(utf8.RuneError)))
}

// Caps of what is kept of a rejected request besides its body (rejectedBodyLimit): enough to debug, too little
// to fill a disk. Accepted requests keep everything (the server's header limit bounds them).
const (
	rejectedQueryLimit       = 4 << 10
	rejectedHeaderValueLimit = 1 << 10
	rejectedHeadersLimit     = 16 << 10
)

// alwaysSensitive are headers never stored, whatever the integration's scheme: credentials, WebhookDB's own
// secret header and every scheme's signature headers. An integration whose verifier cannot be built still gets
// these stripped.
var alwaysSensitive = func() map[string]bool {
	m := map[string]bool{}
	for _, scheme := range []string{verify.SchemeStripe, verify.SchemeGitHub, verify.SchemeShopify, verify.SchemeTwilio,
		verify.SchemeStandard, verify.SchemeIntercom, verify.SchemeHMAC, verify.SchemeSecretHeader, verify.SchemeBasicAuth, verify.SchemeNone} {
		for _, h := range verify.SensitiveHeaders(verify.Config{Scheme: scheme}) {
			m[http.CanonicalHeaderKey(h)] = true
		}
	}
	return m
}()

// looksSecret guesses at a header carrying a credential when the integration's configuration, which would name
// its signature header, cannot be read.
func looksSecret(canonical string) bool {
	k := strings.ToLower(canonical)
	for _, w := range []string{"signature", "secret", "token", "auth", "hmac", "password", "api-key", "apikey"} {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

// storedHeaders is the request's headers as a JSON object, minus credentials and signatures, made storable.
// sensitive is the integration's own list; nil means its configuration is unknown, and any header that looks
// like a credential is dropped too. capped applies the caps of rejected requests. The object is written
// directly, in the header map's order (jsonb orders keys itself): a map and json.Marshal cost every accepted
// request about 3 µs and a dozen allocations.
func storedHeaders(h http.Header, sensitive map[string]bool, capped bool) []byte {
	size := 2
	for k, vs := range h {
		size += len(k) + 6
		for _, v := range vs {
			size += len(v) + 2
		}
	}
	out := make([]byte, 0, size)
	out = append(out, '{')
	total := 0
	for k, vs := range h {
		ck := http.CanonicalHeaderKey(k)
		if alwaysSensitive[ck] || sensitive[ck] || (sensitive == nil && looksSecret(ck)) {
			continue
		}
		v := storableText(strings.Join(vs, ", "))
		ck = storableText(ck)
		if capped {
			if len(v) > rejectedHeaderValueLimit {
				v = strings.ToValidUTF8(v[:rejectedHeaderValueLimit], "") + "…"
			}
			if total+len(ck)+len(v) > rejectedHeadersLimit {
				continue
			}
			total += len(ck) + len(v)
		}
		if len(out) > 1 {
			out = append(out, ',')
		}
		out = appendJSONString(out, ck)
		out = append(out, ':')
		out = appendJSONString(out, v)
	}
	return append(out, '}')
}

// appendJSONString appends s, valid UTF-8 (storableText), as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// cappedQuery cuts a rejected request's stored query.
func cappedQuery(q string) string {
	if len(q) <= rejectedQueryLimit {
		return q
	}
	return strings.ToValidUTF8(q[:rejectedQueryLimit], "")
}
