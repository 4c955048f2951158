package cli

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/webhookdb-go/webhookdb/ingest/verify"
)

// The headers `webhookdb sign` prints must pass the server's own verifiers.
func TestSignOutputVerifies(t *testing.T) {
	t.Parallel()
	body := `{"id":"evt_1","object":"event"}`
	for _, c := range []struct{ scheme, secret string }{
		{"stripe", "whsec_abc"}, {"github", "s3cret"}, {"shopify", "s3cret"}, {"intercom", "s3cret"},
		{"standard", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, {"secret_header", "s3cret"},
	} {
		cmd := newSignCommand()
		out := &bytes.Buffer{}
		cmd.SetOut(out)
		cmd.SetArgs([]string{c.scheme, "--secret", c.secret, "--body", body})
		if err := cmd.Execute(); err != nil {
			t.Fatalf("%s: %v", c.scheme, err)
		}
		h := http.Header{}
		for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			k, v, _ := strings.Cut(line, ": ")
			h.Add(k, v)
		}
		v, err := verify.New(verify.Config{Scheme: c.scheme})
		if err != nil {
			t.Fatal(err)
		}
		req := &verify.Request{Method: "POST", PublicURL: "http://x/", Header: h, Body: []byte(body)}
		if err := v.Verify(req, []string{c.secret}, time.Now()); err != nil {
			t.Errorf("%s: signed output rejected: %v", c.scheme, err)
		}
		if err := v.Verify(req, []string{c.secret + "x"}, time.Now()); err == nil {
			t.Errorf("%s: verifies with the wrong secret too", c.scheme)
		}
	}
}
