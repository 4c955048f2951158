package outgoing_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/webhookdb-go/webhookdb/internal/outgoing"
)

// counting is a receiver that counts the requests it got.
func counting(t *testing.T, status int) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func TestForbidden(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		ip   string
		want bool
	}{
		{"127.0.0.1", true}, {"127.9.9.9", true}, {"::1", true}, {"10.1.2.3", true}, {"172.16.0.1", true}, {"192.168.1.1", true},
		{"169.254.169.254", true}, {"fd00:ec2::254", true}, {"fe80::1", true}, {"100.64.0.1", true}, {"0.0.0.0", true},
		{"::", true}, {"::ffff:127.0.0.1", true}, {"::ffff:10.0.0.1", true}, {"64:ff9b::a9fe:a9fe", true}, {"2002:7f00:1::", true},
		{"224.0.0.1", true}, {"255.255.255.255", true}, {"198.18.0.1", true},
		{"8.8.8.8", false}, {"1.1.1.1", false}, {"2606:4700:4700::1111", false}, {"64:ff9b::808:808", false},
	} {
		if got := outgoing.Forbidden(netip.MustParseAddr(tc.ip)); got != tc.want {
			t.Errorf("Forbidden(%s) = %v, want %v", tc.ip, got, tc.want)
		}
	}
}

func TestCheckURL(t *testing.T) {
	t.Parallel()
	c := outgoing.NewClient(outgoing.Config{})
	for _, u := range []string{"https://10.0.0.1/hook", "https://[::1]/", "https://169.254.169.254/latest/meta-data", "https://localhost/x", "http://example.com/", "https://user:pw@example.com/", "ftp://example.com/", "https:///nohost"} {
		if err := c.CheckURL(u); err == nil {
			t.Errorf("CheckURL(%s) accepted", u)
		}
	}
	if err := c.CheckURL("https://10.0.0.1/hook"); !errors.Is(err, outgoing.ErrForbiddenAddress) {
		t.Errorf("a private address: %v, want ErrForbiddenAddress", err)
	}
	if err := c.CheckURL("https://hooks.example.com/webhookdb?x=1"); err != nil {
		t.Errorf("a public https URL: %v", err)
	}
	dev := outgoing.NewClient(outgoing.Config{AllowPrivate: true})
	if err := dev.CheckURL("http://127.0.0.1:9999/hook"); err != nil {
		t.Errorf("with private targets allowed: %v", err)
	}
}

// A URL on a private (loopback) address is refused when dialed, even though the URL itself was never checked.
func TestPostRefusesAPrivateAddress(t *testing.T) {
	t.Parallel()
	srv, hits := counting(t, http.StatusOK)
	c := outgoing.NewClient(outgoing.Config{})
	_, err := c.Post(context.Background(), srv.URL+"/hook", nil, []byte(`{}`))
	if !errors.Is(err, outgoing.ErrForbiddenAddress) {
		t.Fatalf("Post to %s: %v, want ErrForbiddenAddress", srv.URL, err)
	}
	if hits.Load() != 0 {
		t.Fatalf("the receiver got %d requests", hits.Load())
	}
	// the same client with private targets allowed reaches it: the refusal above was the address check
	resp, err := outgoing.NewClient(outgoing.Config{AllowPrivate: true}).Post(context.Background(), srv.URL, nil, []byte(`{}`))
	if err != nil || resp.Status != http.StatusOK || hits.Load() != 1 {
		t.Fatalf("allowed: %v %+v hits %d", err, resp, hits.Load())
	}
}

// fakeDNS resolves every name to one address: a public-looking name pointing at loopback.
type fakeDNS struct{ addr netip.Addr }

func (f fakeDNS) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	return []netip.Addr{f.addr}, nil
}

func TestPostRefusesANameResolvingToLoopback(t *testing.T) {
	t.Parallel()
	srv, hits := counting(t, http.StatusOK)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	c := outgoing.NewClient(outgoing.Config{Resolver: fakeDNS{netip.MustParseAddr("127.0.0.1")}})
	url := "http://hooks.example.com:" + port + "/hook"
	if err := c.CheckURL("https://hooks.example.com/hook"); err != nil {
		t.Fatalf("the name itself looks fine: %v", err)
	}
	_, err := c.Post(context.Background(), url, nil, []byte(`{}`))
	if !errors.Is(err, outgoing.ErrForbiddenAddress) {
		t.Fatalf("Post to %s resolving to 127.0.0.1: %v, want ErrForbiddenAddress", url, err)
	}
	if hits.Load() != 0 {
		t.Fatalf("the receiver got %d requests", hits.Load())
	}
	// IPv4-mapped IPv6 loopback too
	c = outgoing.NewClient(outgoing.Config{Resolver: fakeDNS{netip.MustParseAddr("::ffff:127.0.0.1")}})
	if _, err := c.Post(context.Background(), url, nil, []byte(`{}`)); !errors.Is(err, outgoing.ErrForbiddenAddress) {
		t.Fatalf("resolving to ::ffff:127.0.0.1: %v", err)
	}
}

// A redirect is an answer: the client never follows it, so a receiver cannot point it at loopback.
func TestPostDoesNotFollowARedirectToLoopback(t *testing.T) {
	t.Parallel()
	target, hits := counting(t, http.StatusOK)
	redirector := httptest.NewServer(http.RedirectHandler(target.URL+"/internal", http.StatusTemporaryRedirect))
	t.Cleanup(redirector.Close)
	// Private targets allowed so the redirector itself is reachable; the target is refused all the same.
	c := outgoing.NewClient(outgoing.Config{AllowPrivate: true})
	resp, err := c.Post(context.Background(), redirector.URL, nil, []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != http.StatusTemporaryRedirect || hits.Load() != 0 {
		t.Fatalf("status %d, target hit %d times: the redirect was followed", resp.Status, hits.Load())
	}
}

func TestPostCapsTheResponseAndTimesOut(t *testing.T) {
	t.Parallel()
	big := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(strings.Repeat("x", 1<<20)))
	}))
	t.Cleanup(big.Close)
	c := outgoing.NewClient(outgoing.Config{AllowPrivate: true, MaxResponseBytes: 100})
	resp, err := c.Post(context.Background(), big.URL, nil, nil)
	if err != nil || len(resp.Body) != 100 {
		t.Fatalf("%v, body %d bytes, want 100", err, len(resp.Body))
	}
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	t.Cleanup(func() { close(release); slow.Close() })
	start := time.Now()
	_, err = outgoing.NewClient(outgoing.Config{AllowPrivate: true, Timeout: 300 * time.Millisecond}).Post(context.Background(), slow.URL, nil, nil)
	if err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("a receiver that never answers: %v after %s", err, time.Since(start))
	}
}

// Signatures verify with the Standard Webhooks library, with either secret during a rotation.
func TestSignedHeaderVerifiesWithTheStandardLibrary(t *testing.T) {
	t.Parallel()
	current, previous := outgoing.NewSecret(), outgoing.NewSecret()
	ck, _ := outgoing.SecretKey(current)
	pk, _ := outgoing.SecretKey(previous)
	body := []byte(`{"type":"row.insert","data":{"x":1}}`)
	h := outgoing.SignedHeader("msg_1", time.Now(), body, ck, pk)
	for _, secret := range []string{current, previous} {
		wh, err := standardwebhooks.NewWebhook(secret)
		if err != nil {
			t.Fatal(err)
		}
		if err := wh.Verify(body, h); err != nil {
			t.Errorf("verify with %s: %v", secret[:10], err)
		}
	}
	other, _ := standardwebhooks.NewWebhook(outgoing.NewSecret())
	if err := other.Verify(body, h); err == nil {
		t.Error("another secret verified")
	}
	if _, err := outgoing.SecretKey("whsec_short"); err == nil {
		t.Error("a short secret was accepted")
	}
}
