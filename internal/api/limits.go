package api

import (
	"fmt"
	"math"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// keyedLimiter is a token bucket per key (an org, a client address). Buckets idle long enough to be full again
// are forgotten, so the map stays as small as the set of recently active keys.
type keyedLimiter struct {
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

func newKeyedLimiter(every time.Duration, burst int) *keyedLimiter {
	return &keyedLimiter{every: every, burst: burst, buckets: map[string]*bucket{}}
}

// allow takes a token for key, or says how long until one is there.
func (l *keyedLimiter) allow(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
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
	r := b.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// blocked reports whether key's bucket is empty now (without taking a token), and how long until it is not.
func (l *keyedLimiter) blocked(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil || b.lim.TokensAt(now) >= 1 {
		return false, 0
	}
	return true, time.Duration((1 - b.lim.TokensAt(now)) * float64(l.every))
}

// clientKey is who a request comes from for rate limits: the address of the peer.
func clientKey(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

// errRateLimited answers 429 with the wait in Retry-After.
func errRateLimited(what string, wait time.Duration) *Error {
	secs := int(math.Ceil(wait.Seconds()))
	return &Error{Status: http.StatusTooManyRequests, Code: "rate_limited", RetryAfter: wait,
		Message: fmt.Sprintf("%s: try again in %d s", what, secs)}
}
