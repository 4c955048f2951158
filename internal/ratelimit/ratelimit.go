// Package ratelimit holds the per-key token buckets that keep one client or org from costing others (unknown
// webhook ids, bad API tokens, replays), and the one rule for telling clients apart behind trusted proxies.
package ratelimit

import (
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Keyed is a token bucket per key (a client address, an org). Buckets idle long enough to be full again are
// forgotten, so the map holds only recently active keys.
type Keyed struct {
	every time.Duration
	burst int

	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

// New returns buckets of burst tokens, refilled one per every.
func New(every time.Duration, burst int) *Keyed {
	return &Keyed{every: every, burst: burst, buckets: map[string]*bucket{}}
}

func (l *Keyed) get(key string, now time.Time) *rate.Limiter {
	full := l.every * time.Duration(l.burst)
	if now.Sub(l.swept) > full {
		for k, b := range l.buckets {
			if now.Sub(b.seen) > full {
				delete(l.buckets, k)
			}
		}
		l.swept = now
	}
	b := l.buckets[key]
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(rate.Every(l.every), l.burst)}
		l.buckets[key] = b
	}
	b.seen = now
	return b.lim
}

// Allow takes a token of key's bucket, or says how long until one is there.
func (l *Keyed) Allow(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.get(key, now).ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// Blocked reports, without taking a token, whether key's bucket is empty, and how long until it is not.
func (l *Keyed) Blocked(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		return false, 0
	}
	if tokens := b.lim.TokensAt(now); tokens < 1 {
		return true, time.Duration((1 - tokens) * float64(l.every))
	}
	return false, 0
}

// Take spends one of key's tokens whatever is left (the bucket may go negative: that key waits longer).
func (l *Keyed) Take(key string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.get(key, now).ReserveN(now, 1)
}

// RetryAfter is a wait as the Retry-After header wants it: whole seconds, at least 1.
func RetryAfter(wait time.Duration) string {
	return strconv.Itoa(max(1, int((wait+time.Second-1)/time.Second)))
}

// ClientKey tells clients apart: the peer's address or, when that is a trusted proxy, the rightmost address of
// X-Forwarded-For that is not one.
func ClientKey(r *http.Request, trusted []netip.Prefix) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	addr, err := netip.ParseAddr(host)
	if err != nil || len(trusted) == 0 || !isTrusted(addr.Unmap(), trusted) {
		return host
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop := strings.TrimSpace(hops[i])
		a, err := netip.ParseAddr(hop)
		if err != nil {
			// Garbage where an address should be: whoever wrote it is the client as far as we can tell.
			return strconv.QuoteToASCII(hop[:min(len(hop), 64)])
		}
		if !isTrusted(a.Unmap(), trusted) {
			return a.Unmap().String()
		}
		host = a.Unmap().String()
	}
	return host
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
