package ratelimit

import (
	"net/http"
	"net/netip"
	"testing"
	"time"
)

func TestKeyedBucketsPerKey(t *testing.T) {
	t.Parallel()
	l := New(time.Second, 2)
	now := time.Unix(1000, 0)
	for i := range 2 {
		if ok, _ := l.Allow("a", now); !ok {
			t.Fatalf("token %d of the burst refused", i)
		}
	}
	if ok, wait := l.Allow("a", now); ok || wait <= 0 || wait > time.Second {
		t.Fatalf("past the burst: ok %v, wait %s", ok, wait)
	}
	if ok, _ := l.Allow("b", now); !ok {
		t.Fatal("another key shares the first one's bucket")
	}
	if blocked, _ := l.Blocked("a", now.Add(time.Second)); blocked {
		t.Fatal("a token is back after a second")
	}
	if blocked, _ := l.Blocked("c", now); blocked {
		t.Fatal("an unseen key is blocked")
	}
	l.Take("c", now)
	l.Take("c", now)
	if blocked, wait := l.Blocked("c", now); !blocked || wait != time.Second {
		t.Fatalf("after taking the burst: blocked %v, wait %s", blocked, wait)
	}
	// Buckets idle long enough to be full again are forgotten.
	l.Allow("d", now.Add(time.Hour))
	if len(l.buckets) != 1 {
		t.Fatalf("%d buckets kept after an hour", len(l.buckets))
	}
	if RetryAfter(1500*time.Millisecond) != "2" || RetryAfter(0) != "1" {
		t.Fatal("RetryAfter rounds up to whole seconds, at least 1")
	}
}

func TestClientKeyBehindTrustedProxies(t *testing.T) {
	t.Parallel()
	proxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	req := func(remote string, xff ...string) *http.Request {
		r := &http.Request{RemoteAddr: remote, Header: http.Header{}}
		for _, v := range xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		return r
	}
	for _, tt := range []struct {
		name string
		r    *http.Request
		want string
	}{
		{"no proxy", req("203.0.113.5:4000"), "203.0.113.5"},
		{"untrusted peer's header is ignored", req("203.0.113.5:4000", "198.51.100.1"), "203.0.113.5"},
		{"trusted proxy", req("10.1.2.3:4000", "198.51.100.1"), "198.51.100.1"},
		{"rightmost untrusted hop", req("10.1.2.3:4000", "198.51.100.9, 198.51.100.1, 10.0.0.7"), "198.51.100.1"},
		{"several headers", req("10.1.2.3:4000", "198.51.100.9", "10.0.0.7"), "198.51.100.9"},
		{"only proxies", req("10.1.2.3:4000", "10.0.0.7"), "10.0.0.7"},
		{"garbage hop", req("10.1.2.3:4000", "not-an-ip\xff"), `"not-an-ip\xff"`},
	} {
		if got := ClientKey(tt.r, proxies); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
	if got := ClientKey(req("10.1.2.3:4000", "198.51.100.1"), nil); got != "10.1.2.3" {
		t.Errorf("without trusted proxies the peer is the client: %q", got)
	}
}
