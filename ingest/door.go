package ingest

import (
	"math"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/webhookdb-go/webhookdb/internal/integrations"
)

// Opaque ids are "svi_" and lower-case base32 (integrations.NewOpaqueID); the table's CHECK allows [a-z0-9]{26,}
// after the prefix. Anything else is 404 without a lookup.
const (
	minOpaqueIDLen = len(integrations.OpaquePrefix) + 26
	maxOpaqueIDLen = len(integrations.OpaquePrefix) + 64
)

func wellFormedOpaqueID(id string) bool {
	if len(id) < minOpaqueIDLen || len(id) > maxOpaqueIDLen || !strings.HasPrefix(id, integrations.OpaquePrefix) {
		return false
	}
	for i := len(integrations.OpaquePrefix); i < len(id); i++ {
		if c := id[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// clientKey tells clients apart: the remote address, or, when that is a trusted proxy, the rightmost address of
// X-Forwarded-For that is not one.
func clientKey(r *http.Request, trusted []netip.Prefix) string {
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
			return storableText(hop)
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

// clientLimiter rate-limits requests per client.
type clientLimiter struct {
	limit rate.Limit
	burst int

	mu sync.Mutex
	m  map[string]*rate.Limiter
}

func newClientLimiter(limit rate.Limit, burst int) *clientLimiter {
	return &clientLimiter{limit: limit, burst: burst, m: map[string]*rate.Limiter{}}
}

func (l *clientLimiter) get(key string) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.m[key]
	if !ok {
		if len(l.m) >= 100_000 {
			// Many clients: forget them all rather than grow without bound (each starts with a full bucket again).
			clear(l.m)
		}
		lim = rate.NewLimiter(l.limit, l.burst)
		l.m[key] = lim
	}
	return lim
}

// allowed says whether key has a token left, without taking it; when not, how long until it has one.
func (l *clientLimiter) allowed(key string, now time.Time) (bool, time.Duration) {
	if l.get(key).TokensAt(now) >= 1 {
		return true, 0
	}
	return false, time.Duration(math.Ceil(float64(time.Second) / float64(l.limit)))
}

// take spends one of key's tokens (the bucket may go negative under concurrency: that client waits longer).
func (l *clientLimiter) take(key string, now time.Time) {
	l.get(key).ReserveN(now, 1)
}
