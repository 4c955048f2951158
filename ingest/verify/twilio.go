package verify

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"mime"
	"net/url"
	"sort"
	"strings"
	"time"
)

const twilioSignatureHeader = "X-Twilio-Signature"

// twilioVerifier implements Twilio's request validation: HMAC-SHA1 with the
// account auth token over the public URL plus, for form posts, the sorted
// form parameters.
type twilioVerifier struct{}

func (v *twilioVerifier) Verify(req *Request, secrets []string, now time.Time) error {
	secrets = usableSecrets(secrets)
	if len(secrets) == 0 {
		return rejectNoSecret
	}
	value, rej := singleHeader(req.Header, twilioSignatureHeader)
	if rej != nil {
		return rej
	}
	got, err := parsePrefixedSignature(value, "", "base64")
	if err != nil || len(got) != sha1.Size {
		return reject("malformed %s header: expected base64 HMAC-SHA1", twilioSignatureHeader)
	}
	if req.PublicURL == "" {
		return reject("public URL unknown: cannot check %s", twilioSignatureHeader)
	}

	// What follows the URL in the signed payload.
	var params string
	if bodyHash, ok := twilioBodyHash(req.PublicURL); ok {
		// JSON (or any non-form) body: Twilio signs only the URL and puts the
		// body's hash in it, so the hash is what ties the body to the signature.
		sum := sha256.Sum256(req.Body)
		want, err := hex.DecodeString(bodyHash)
		if err != nil || !hmac.Equal(sum[:], want) {
			return reject("body does not match the bodySHA256 query parameter")
		}
	} else if isFormPost(req) {
		form, err := url.ParseQuery(string(req.Body))
		if err != nil {
			// The parse error quotes the body; reasons never echo request content.
			return reject("malformed form body: not valid application/x-www-form-urlencoded")
		}
		params = twilioFormParams(form)
	} else if len(req.Body) > 0 {
		// Accepting this would let anyone replay a signature with a different body.
		return reject("body is neither form-encoded nor covered by a bodySHA256 query parameter")
	}

	urls := twilioURLVariants(req.PublicURL)
	for _, secret := range secrets {
		for _, u := range urls {
			mac := hmac.New(sha1.New, []byte(secret))
			mac.Write([]byte(u))
			mac.Write([]byte(params))
			if hmac.Equal(mac.Sum(nil), got) {
				return nil
			}
		}
	}
	return rejectMismatch
}

func isFormPost(req *Request) bool {
	if !strings.EqualFold(req.Method, "POST") {
		return false
	}
	mediaType, _, err := mime.ParseMediaType(req.Header.Get("Content-Type"))
	return err == nil && mediaType == "application/x-www-form-urlencoded"
}

// twilioBodyHash returns the bodySHA256 query parameter of rawURL, if any.
func twilioBodyHash(rawURL string) (string, bool) {
	_, query, ok := strings.Cut(rawURL, "?")
	if !ok {
		return "", false
	}
	query, _, _ = strings.Cut(query, "#")
	// A malformed pair elsewhere in the query does not matter here.
	values, _ := url.ParseQuery(query)
	hash, ok := values["bodySHA256"]
	if !ok || len(hash) == 0 {
		return "", false
	}
	return hash[0], true
}

// twilioFormParams concatenates form parameters as Twilio signs them: sorted
// by name (byte order), each as name+value with no separator; a repeated
// name contributes each of its values, in sorted order.
func twilioFormParams(form url.Values) string {
	names := make([]string, 0, len(form))
	for name := range form {
		names = append(names, name)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, name := range names {
		values := append([]string(nil), form[name]...)
		sort.Strings(values)
		for _, value := range values {
			b.WriteString(name)
			b.WriteString(value)
		}
	}
	return b.String()
}

// twilioURLVariants returns rawURL first, then the same URL with the default
// port added when it has none or removed when it is there: depending on the
// account's setup, Twilio signs either form. The host is edited as text so
// the rest of the URL keeps the exact bytes that were signed.
func twilioURLVariants(rawURL string) []string {
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		return []string{rawURL}
	}
	var defaultPort string
	switch strings.ToLower(scheme) {
	case "https":
		defaultPort = "443"
	case "http":
		defaultPort = "80"
	default:
		return []string{rawURL}
	}
	authorityEnd := strings.IndexAny(rest, "/?#")
	if authorityEnd < 0 {
		authorityEnd = len(rest)
	}
	authority, path := rest[:authorityEnd], rest[authorityEnd:]
	hostStart := strings.LastIndexByte(authority, '@') + 1
	host := authority[hostStart:]
	prefix := scheme + "://" + authority[:hostStart]

	// A colon after any IPv6 literal's closing bracket starts the port.
	hostname, port, hasPort := host, "", false
	if colon := strings.LastIndexByte(host, ':'); colon > strings.LastIndexByte(host, ']') {
		hostname, port, hasPort = host[:colon], host[colon+1:], true
	}
	if !plausibleHostname(hostname) {
		return []string{rawURL}
	}
	if !hasPort {
		return []string{rawURL, prefix + host + ":" + defaultPort + path}
	}
	if port == defaultPort {
		return []string{rawURL, prefix + hostname + path}
	}
	return []string{rawURL}
}

// plausibleHostname rejects hosts that make "where does the port start"
// ambiguous, such as an unbracketed IPv6 address; their URL is used as is.
func plausibleHostname(hostname string) bool {
	if strings.HasPrefix(hostname, "[") && strings.HasSuffix(hostname, "]") {
		return len(hostname) > 2
	}
	return hostname != "" && !strings.ContainsAny(hostname, ":[]")
}
