package outgoing

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"syscall"
	"time"
)

// ErrForbiddenAddress means a URL's host is, or resolves to, an address webhookdb does not call.
var ErrForbiddenAddress = errors.New("address not allowed")

// ErrInvalidURL means a URL cannot be registered.
var ErrInvalidURL = errors.New("invalid URL")

// Resolver looks host names up; net.DefaultResolver is one. Tests inject their own.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Config tunes a Client. Zero values take the defaults of WithDefaults.
type Config struct {
	// AllowPrivate lets the client call loopback and private addresses (and plain http): dev and tests only.
	AllowPrivate bool
	// Resolver; default net.DefaultResolver.
	Resolver Resolver
	// Timeout bounds a whole call, connecting and reading the answer included; default 15s.
	Timeout time.Duration
	// DialTimeout bounds connecting; default 5s.
	DialTimeout time.Duration
	// MaxResponseBytes is how much of an answer is read; default 64 KiB. The rest is discarded unread.
	MaxResponseBytes int64
	// UserAgent; default "webhookdb".
	UserAgent string
}

// WithDefaults returns a copy with defaults filled in.
func (c Config) WithDefaults() Config {
	if c.Resolver == nil {
		c.Resolver = net.DefaultResolver
	}
	if c.Timeout == 0 {
		c.Timeout = 15 * time.Second
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.MaxResponseBytes == 0 {
		c.MaxResponseBytes = 64 << 10
	}
	if c.UserAgent == "" {
		c.UserAgent = "webhookdb"
	}
	return c
}

// Client calls registered URLs.
type Client struct {
	cfg  Config
	http *http.Client
}

// NewClient returns a client for cfg.
func NewClient(cfg Config) *Client {
	cfg = cfg.WithDefaults()
	dialer := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	if !cfg.AllowPrivate {
		// The check on the socket's own address: whatever resolved the name, and whatever it resolved to.
		dialer.Control = func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("%w: %s", ErrForbiddenAddress, address)
			}
			if Forbidden(ap.Addr()) {
				return fmt.Errorf("%w: %s", ErrForbiddenAddress, ap.Addr())
			}
			return nil
		}
	}
	transport := &http.Transport{
		Proxy: nil, // a proxy would connect on our behalf, past the address check
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			ips, err := cfg.Resolver.LookupNetIP(ctx, "ip", host)
			if err != nil {
				return nil, err
			}
			var errs []error
			for _, ip := range ips {
				conn, err := dialer.DialContext(ctx, network, net.JoinHostPort(ip.Unmap().String(), port))
				if err == nil {
					return conn, nil
				}
				errs = append(errs, err)
			}
			if len(errs) == 0 {
				return nil, fmt.Errorf("no address for %s", host)
			}
			return nil, errors.Join(errs...)
		},
		TLSHandshakeTimeout:   cfg.DialTimeout,
		ResponseHeaderTimeout: cfg.Timeout,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	return &Client{cfg: cfg, http: &http.Client{
		Transport: transport,
		Timeout:   cfg.Timeout,
		// A redirect is an answer, not an instruction: it could point anywhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// CheckURL says whether rawURL can be registered: https (http too when private targets are allowed), a host,
// no credentials, and, when the host is an address literal, an allowed one. Names are checked when dialed.
func (c *Client) CheckURL(rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidURL, err)
	}
	switch {
	case u.Scheme != "https" && !(c.cfg.AllowPrivate && u.Scheme == "http"):
		return fmt.Errorf("%w: use an https:// URL", ErrInvalidURL)
	case u.Host == "" || u.Hostname() == "":
		return fmt.Errorf("%w: no host", ErrInvalidURL)
	case u.User != nil:
		return fmt.Errorf("%w: no user or password in the URL", ErrInvalidURL)
	case u.Fragment != "":
		return fmt.Errorf("%w: no fragment", ErrInvalidURL)
	case len(rawURL) > 2048:
		return fmt.Errorf("%w: longer than 2048 bytes", ErrInvalidURL)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%w: bad port", ErrInvalidURL)
		}
	}
	if ip, err := netip.ParseAddr(u.Hostname()); err == nil && !c.cfg.AllowPrivate && Forbidden(ip) {
		return fmt.Errorf("%w: %s", ErrForbiddenAddress, ip)
	}
	if h := u.Hostname(); !c.cfg.AllowPrivate && (h == "localhost" || len(h) > 10 && h[len(h)-10:] == ".localhost") {
		return fmt.Errorf("%w: %s", ErrForbiddenAddress, h)
	}
	return nil
}

// Response is what a call got back.
type Response struct {
	Status int
	// Body is the first MaxResponseBytes of the answer.
	Body []byte
}

// Post sends body to rawURL with headers; an error means no answer (refused address, timeout, connection).
// Any status is a Response; the caller decides what counts as success.
func (c *Client) Post(ctx context.Context, rawURL string, header http.Header, body []byte) (*Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rawURL, bytesReader(body))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidURL, err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("User-Agent", c.cfg.UserAgent)
	if req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, c.cfg.MaxResponseBytes))
	if err != nil {
		return &Response{Status: resp.StatusCode, Body: b}, nil // the status is the answer; a cut body is fine
	}
	return &Response{Status: resp.StatusCode, Body: b}, nil
}

// Forbidden reports whether ip is an address webhookdb never calls: loopback, private (RFC 1918, unique
// local), link-local (cloud metadata services live there), shared (CGNAT), unspecified, multicast,
// broadcast, benchmarking, documentation and other reserved ranges, and IPv6 forms embedding IPv4 ones.
func Forbidden(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsValid() || ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() {
		return true
	}
	for _, p := range forbiddenPrefixes {
		if p.Contains(ip) {
			return true
		}
	}
	if ip.Is6() {
		b := ip.As16()
		// NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 address: judge that one.
		if nat64.Contains(ip) {
			return Forbidden(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}))
		}
		if sixToFour.Contains(ip) {
			return Forbidden(netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}))
		}
	}
	return false
}

var (
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour = netip.MustParsePrefix("2002::/16")
)

var forbiddenPrefixes = func() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8",         // this network
		"100.64.0.0/10",     // shared address space (CGNAT)
		"169.254.0.0/16",    // link-local, cloud metadata (169.254.169.254)
		"192.0.0.0/24",      // IETF protocol assignments
		"192.0.2.0/24",      // documentation
		"198.18.0.0/15",     // benchmarking
		"198.51.100.0/24",   // documentation
		"203.0.113.0/24",    // documentation
		"240.0.0.0/4",       // reserved, broadcast
		"100::/64",          // discard
		"2001::/23",         // IETF protocol assignments (Teredo and others)
		"2001:db8::/32",     // documentation
		"fc00::/7",          // unique local (AWS's metadata fd00:ec2::254 is here)
		"fec0::/10",         // site-local, deprecated
		"::/128", "::1/128", // unspecified, loopback
	} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}()
