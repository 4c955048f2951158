package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/webhookdb-go/webhookdb/ingest/verify"
	"github.com/webhookdb-go/webhookdb/internal/ratelimit"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
	"github.com/webhookdb-go/webhookdb/internal/staging"
)

// RejectedReasonHeader carries the reason a request was refused.
const RejectedReasonHeader = "Whdb-Rejected-Reason"

// rejectedBodyLimit is how much of a rejected request's body is kept: enough to debug, too little to fill a disk.
const rejectedBodyLimit = 4 << 10

// Default body budgets (Config.Memory, Config.MemoryPerOrg).
const (
	DefaultMemory       = 128 << 20
	DefaultMemoryPerOrg = 32 << 20
)

// Config of the ingest service.
type Config struct {
	// PublicURL is the base URL senders use (Twilio signs the full URL); no trailing slash.
	PublicURL string
	// DefaultBodyLimit applies to integrations without their own; default 1 MiB.
	DefaultBodyLimit int64
	// RetryAfter is sent with 503 answers; default 5s.
	RetryAfter time.Duration
	// SubmitTimeout bounds how long a request waits for a place in the commit queue; default 10s.
	SubmitTimeout time.Duration
	// Memory bounds the request body bytes held in flight by the whole process; default 256 MiB. A request that
	// would go past it gets 503 with Retry-After.
	Memory int64
	// MemoryPerOrg bounds the body bytes in flight of one org (all its integrations); default 64 MiB. A request
	// of an org over it gets 503 with Retry-After, whatever room the process has left; an org with nothing else
	// in flight may always go past it (up to Memory), so a body the integration allows is never refused forever.
	MemoryPerOrg int64
	// IdleTimeout cuts a sender whose body stops arriving for this long (408); it is extended as bytes arrive, so
	// a large body sent slowly but steadily is not cut. Default 10s.
	IdleTimeout time.Duration
	// MinBodyRate, bytes a second, cuts a sender whose body arrives slower than this on average, once
	// IdleTimeout has passed since the first byte (a trickle of a byte now and then defeats an idle deadline
	// alone); default 1024. Negative disables it.
	MinBodyRate int64
	// LookupPool runs the integration cache's queries (lookups of ids not in the cache, the poll), so requests
	// with unknown ids never use the committer's connections; nil: the main pool, bounded by the cache's
	// LookupConcurrency all the same.
	LookupPool *pgxpool.Pool
	// TrustedProxies are the networks whose X-Forwarded-For is believed when telling clients apart; empty: the
	// remote address alone.
	TrustedProxies []netip.Prefix
	// UnknownRate and UnknownBurst rate-limit, per client, requests for integrations not in the cache (each is
	// a lookup); over the limit: 429 with Retry-After. Defaults 5/s, burst 20.
	UnknownRate  rate.Limit
	UnknownBurst int
	Committer    CommitterConfig
	Cache        CacheConfig
	Logger       *slog.Logger
	Now          func() time.Time
}

func (c Config) withDefaults() Config {
	if c.DefaultBodyLimit == 0 {
		c.DefaultBodyLimit = 1 << 20
	}
	if c.RetryAfter == 0 {
		c.RetryAfter = 5 * time.Second
	}
	if c.SubmitTimeout == 0 {
		c.SubmitTimeout = 10 * time.Second
	}
	if c.Memory == 0 {
		c.Memory = DefaultMemory
	}
	if c.MemoryPerOrg == 0 {
		c.MemoryPerOrg = DefaultMemoryPerOrg
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 10 * time.Second
	}
	if c.MinBodyRate == 0 {
		c.MinBodyRate = 1024
	}
	if c.UnknownRate == 0 {
		c.UnknownRate = 5
	}
	if c.UnknownBurst == 0 {
		c.UnknownBurst = 20
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	c.Cache.DefaultBodyLimit = c.DefaultBodyLimit
	c.Cache.Logger = c.Logger
	c.Committer.Logger = c.Logger
	c.PublicURL = strings.TrimRight(c.PublicURL, "/")
	return c
}

// Service receives webhooks: it verifies them, stores them durably, then answers.
type Service struct {
	cfg       Config
	cache     *Cache
	committer *Committer
	metrics   *Metrics
	logger    *slog.Logger
	budget    *budget
	unknown   *ratelimit.Keyed
}

// New builds the ingest service; Run starts its background work, Register its routes.
func New(pool *pgxpool.Pool, box secrets.Box, metrics *Metrics, cfg Config) *Service {
	cfg = cfg.withDefaults()
	cfg.Committer.Metrics = metrics
	lookupPool := cfg.LookupPool
	if lookupPool == nil {
		lookupPool = pool
	}
	var gauge prometheus.Gauge
	if metrics != nil {
		gauge = metrics.bodyBytes
	}
	return &Service{
		cfg:       cfg,
		cache:     NewCache(lookupPool, box, cfg.Cache),
		committer: NewCommitter(pool, cfg.Committer),
		metrics:   metrics,
		logger:    cfg.Logger,
		budget:    newBudget(cfg.Memory, cfg.MemoryPerOrg, gauge),
		unknown:   ratelimit.New(time.Duration(float64(time.Second)/float64(cfg.UnknownRate)), cfg.UnknownBurst),
	}
}

// Register adds the webhook routes: any method on /v1/webhooks/{opaque_id} and on any path below it, and the
// same under /v1/service_integrations/ for senders configured against WebhookDB.
func (s *Service) Register(r *mux.Router) {
	for _, prefix := range []string{"/v1/webhooks/", "/v1/service_integrations/"} {
		r.Handle(prefix+"{opaque_id}", s)
		r.PathPrefix(prefix + "{opaque_id}/").Handler(s)
	}
}

// Front returns a handler that serves the webhook routes Register adds without going through next, and passes
// every other request to next (the router). Matching each delivery against a gorilla/mux router's routes by
// regular expression and copying the request to carry the id in its context cost ingest about 6 µs of CPU per
// request. A path that is not clean goes to next, whose redirect to the clean path is kept.
func (s *Service) Front(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id, ok := webhookPathID(r.URL.Path); ok {
			s.serve(w, r, id)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// webhookPathID returns the {opaque_id} of a clean path that Register's routes match: a prefix, then the id,
// then nothing or a sub-path.
func webhookPathID(p string) (string, bool) {
	var rest string
	switch {
	case strings.HasPrefix(p, "/v1/webhooks/"):
		rest = p[len("/v1/webhooks/"):]
	case strings.HasPrefix(p, "/v1/service_integrations/"):
		rest = p[len("/v1/service_integrations/"):]
	default:
		return "", false
	}
	id, _, _ := strings.Cut(rest, "/")
	if id == "" {
		return "", false
	}
	// As mux cleans it: path.Clean, a trailing slash kept.
	clean := strings.HasSuffix(p, "/") && path.Clean(p) == p[:len(p)-1] || path.Clean(p) == p
	return id, clean
}

// Run runs the integration cache and the committer until ctx ends; queued requests are committed first.
func (s *Service) Run(ctx context.Context) error {
	errc := make(chan error, 2)
	go func() { errc <- s.cache.Run(ctx) }()
	go func() { errc <- s.committer.Run(ctx) }()
	return errors.Join(<-errc, <-errc)
}

type outcome string

const (
	outcomeAccepted     outcome = "accepted"
	outcomeRejected     outcome = "rejected"
	outcomeTooLarge     outcome = "too_large"
	outcomeUnknown      outcome = "unknown_integration"
	outcomeDeleted      outcome = "deleted_integration"
	outcomeUnavailable  outcome = "unavailable"
	outcomeMisconfigued outcome = "misconfigured"
	outcomeRateLimited  outcome = "rate_limited"
	outcomeOverBudget   outcome = "over_budget"
	outcomeTimeout      outcome = "timeout"
	outcomeRefused      outcome = "refused"
)

func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.serve(w, r, mux.Vars(r)["opaque_id"])
}

func (s *Service) serve(w http.ResponseWriter, r *http.Request, opaqueID string) {
	start := time.Now()
	ctx := r.Context()
	service := "unknown"
	var result outcome
	defer func() {
		if s.metrics != nil {
			s.metrics.observe(service, result, time.Since(start))
		}
	}()

	// At the door: a malformed id is never looked up, and ids the cache does not hold (each a query) are
	// rate-limited per client.
	if !wellFormedOpaqueID(opaqueID) {
		result = outcomeUnknown
		refuse(w, http.StatusNotFound, "no integration with this URL")
		return
	}
	t := s.cache.cached(opaqueID)
	if t == nil {
		// Not cached: a query, unless the id is remembered as unknown. A client whose recent requests were for
		// unknown ids is refused before any query; a known integration never costs its sender a token.
		client := ratelimit.ClientKey(r, s.cfg.TrustedProxies)
		if blocked, wait := s.unknown.Blocked(client, time.Now()); blocked {
			result = outcomeRateLimited
			if s.metrics != nil {
				s.metrics.unknownLimited.Inc()
			}
			w.Header().Set("Retry-After", ratelimit.RetryAfter(wait))
			refuse(w, http.StatusTooManyRequests, "too many requests for unknown integrations from this client; retry later")
			return
		}
		var err error
		if t, err = s.cache.lookup(ctx, opaqueID); err != nil {
			s.logger.ErrorContext(ctx, "integration lookup failed", slog.String("error", err.Error()))
			result = outcomeUnavailable
			s.unavailable(w, "webhookdb cannot reach its database; retry later")
			return
		}
		if t == nil {
			s.unknown.Take(client, time.Now())
		}
	}
	if t == nil {
		result = outcomeUnknown
		refuse(w, http.StatusNotFound, "no integration with this URL")
		return
	}
	service = t.service
	if t.deleted {
		result = outcomeDeleted
		refuse(w, http.StatusGone, "this integration was deleted")
		return
	}

	now := s.cfg.Now()
	row := &staging.Row{
		ReceivedAt:    now,
		OrgID:         t.orgID,
		IntegrationID: t.id,
		Method:        r.Method,
		Path:          escapeURLPart(r.URL.EscapedPath()),
		Query:         escapeURLPart(r.URL.RawQuery),
		ContentType:   storableText(r.Header.Get("Content-Type")),
	}

	rb := s.readBody(w, r, t)
	defer s.budget.release(t.orgID, rb.held)
	body := rb.body
	switch {
	case rb.err == errOrgBudget || rb.err == errProcessBudget:
		result = outcomeOverBudget
		if s.metrics != nil {
			label := "org"
			if rb.err == errProcessBudget {
				label = "process"
			}
			s.metrics.overBudget.WithLabelValues(label).Inc()
		}
		w.Header().Set("Connection", "close")
		s.unavailable(w, rb.err.Error())
		return
	case rb.err == errBodyTimeout:
		result = outcomeTimeout
		w.Header().Set("Connection", "close")
		refuse(w, http.StatusRequestTimeout, rb.err.Error())
		return
	case rb.err != nil:
		result = outcomeRejected
		refuse(w, http.StatusBadRequest, "error reading request body: "+rb.err.Error())
		return
	case rb.tooLarge:
		result = outcomeTooLarge
		reason := fmt.Sprintf("body exceeds this integration's limit of %d bytes", t.bodyLimit)
		row.BodyTruncated = true
		s.storeRejected(ctx, t, row, r.Header, body, reason)
		w.Header().Set("Connection", "close")
		refuse(w, http.StatusRequestEntityTooLarge, reason)
		return
	}

	if t.broken != "" {
		result = outcomeMisconfigued
		s.storeRejected(ctx, t, row, r.Header, body, t.broken)
		// The sender did nothing wrong: ask it to retry while the operator fixes the integration.
		w.Header().Set(RejectedReasonHeader, t.broken)
		s.unavailable(w, t.broken)
		return
	}
	vreq := &verify.Request{Method: r.Method, PublicURL: s.cfg.PublicURL + r.URL.RequestURI(), Header: r.Header, Body: body}
	if err := t.verifier.Verify(vreq, t.activeSecrets(now), now); err != nil {
		result = outcomeRejected
		reason := err.Error()
		if rej, ok := verify.IsRejection(err); ok {
			reason = rej.Reason
		}
		s.storeRejected(ctx, t, row, r.Header, body, reason)
		refuse(w, http.StatusUnauthorized, reason)
		return
	}

	row.Accepted = true
	row.Body = body
	row.Headers = storedHeaders(r.Header, t.sensitive, false)
	row.DeliveryID = verify.DeliveryID(t.scheme, r.Header, body)
	if err := s.committer.submit(ctx, row, s.cfg.SubmitTimeout); err != nil {
		var ref *RefusedError
		if errors.As(err, &ref) {
			// This row, and only it, cannot be stored: retrying would not help.
			result = outcomeRefused
			refuse(w, ref.Status, ref.Reason)
			return
		}
		result = outcomeUnavailable
		s.unavailable(w, "webhookdb could not store this webhook; retry later")
		return
	}
	result = outcomeAccepted
	if t.scheme == verify.SchemeTwilio {
		// Twilio reads the answer as TwiML; an empty Response means "do nothing".
		w.Header().Set("Content-Type", "text/xml")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "<Response></Response>")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_, _ = io.WriteString(w, `{"ok":true}`)
}

// storeRejected keeps a refused request for the operator, capped per integration so garbage cannot fill the disk:
// body, query and headers are cut, and credentials and signatures are never kept.
// The sender's answer does not depend on it.
func (s *Service) storeRejected(ctx context.Context, t *target, row *staging.Row, h http.Header, body []byte, reason string) {
	if !t.rejectedLimit.Allow() {
		if s.metrics != nil {
			s.metrics.rejectedDropped.WithLabelValues(t.service).Inc()
		}
		return
	}
	row.Accepted = false
	row.RejectedReason = storableText(reason)
	row.Query = cappedQuery(row.Query)
	if len(row.Path) > rejectedQueryLimit {
		row.Path = row.Path[:rejectedQueryLimit]
	}
	row.ContentType = cappedQuery(row.ContentType)
	row.Headers = storedHeaders(h, t.sensitive, true)
	if len(body) > rejectedBodyLimit {
		body, row.BodyTruncated = body[:rejectedBodyLimit], true
	}
	row.Body = body
	if err := s.committer.submit(ctx, row, s.cfg.SubmitTimeout); err != nil {
		s.logger.WarnContext(ctx, "could not store rejected webhook", slog.String("opaque_id", t.opaqueID), slog.String("error", err.Error()))
	}
}

func (s *Service) unavailable(w http.ResponseWriter, reason string) {
	w.Header().Set("Retry-After", strconv.Itoa(int(s.cfg.RetryAfter.Seconds())))
	refuse(w, http.StatusServiceUnavailable, reason)
}

func refuse(w http.ResponseWriter, status int, reason string) {
	w.Header().Set(RejectedReasonHeader, sanitizeHeader(reason))
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	b, _ := json.Marshal(map[string]any{"ok": false, "error": reason})
	_, _ = w.Write(b)
}

func sanitizeHeader(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

var errBodyTimeout = errors.New("request body stopped arriving (idle or too slow); send it again")

// Body buffer growth: the first allocation is at most firstChunk (less when Content-Length says so), then the
// buffer doubles, by at most maxGrowth at a time; every growth is reserved in the budget first.
const (
	firstChunk = 64 << 10
	maxGrowth  = 8 << 20
)

type readResult struct {
	body     []byte
	held     int64 // bytes reserved in the budget, released when the request is answered
	tooLarge bool
	err      error // errOrgBudget, errProcessBudget, errBodyTimeout, or a read error
}

// readBody reads the body as it arrives: the buffer grows with the bytes received, never from the announced
// Content-Length, and each growth is reserved against the org's and the process's budgets first. A
// Content-Length above the integration's limit is refused at once (its first rejectedBodyLimit bytes are read for
// the stored rejection); a body that turns out longer is tooLarge. The read deadline is an idle one: it moves
// forward as bytes arrive, and it never lets the average rate since the first read fall below MinBodyRate once
// IdleTimeout has passed, so a stalled or trickling sender is cut while a large body sent steadily is not.
func (s *Service) readBody(w http.ResponseWriter, r *http.Request, t *target) (rr readResult) {
	rc := http.NewResponseController(w)
	limit, cl := t.bodyLimit, r.ContentLength
	start := time.Now()
	var received int64
	deadline := func() time.Time {
		now := time.Now()
		d := now.Add(s.cfg.IdleTimeout)
		if s.cfg.MinBodyRate > 0 {
			allowed := s.cfg.IdleTimeout + time.Duration(float64(received)/float64(s.cfg.MinBodyRate)*float64(time.Second))
			if rd := start.Add(allowed); rd.Before(d) {
				d = rd
			}
		}
		return d
	}
	readLimit := limit
	if cl > limit {
		// Refused up front; keep a little for the stored rejection.
		rr.tooLarge = true
		readLimit = min(limit, rejectedBodyLimit) - 1
	}
	// Bytes go into chunks that grow with what has arrived (64 KiB, then the size so far, at most 8 MiB each), and
	// are copied once into a body of the exact size at the end: about twice the body is ever allocated, where
	// growing one buffer step by step allocates several times it.
	var chunks [][]byte
	var cur []byte
	var total int64
	for {
		if len(cur) == cap(cur) {
			if len(cur) > 0 {
				chunks = append(chunks, cur)
			}
			if (cl >= 0 && total == cl) || total > readLimit {
				cur = nil
				break
			}
			size := min(max(total, firstChunk), maxGrowth, readLimit+1-total)
			if cl >= 0 {
				size = min(size, cl-total)
			}
			if err := s.budget.reserve(t.orgID, rr.held, size); err != nil {
				rr.err = err
				return rr
			}
			rr.held += size
			cur = make([]byte, 0, size)
		}
		_ = rc.SetReadDeadline(deadline())
		n, err := r.Body.Read(cur[len(cur):cap(cur)])
		cur = cur[:len(cur)+n]
		total += int64(n)
		received += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			var ne net.Error
			if errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
				rr.err = errBodyTimeout
			} else {
				rr.err = err
			}
			return rr
		}
	}
	if len(cur) > 0 {
		chunks = append(chunks, cur)
	}
	var buf []byte
	switch len(chunks) {
	case 0:
	case 1:
		buf = chunks[0]
	default:
		// The copy is reserved too; the chunks are released once copied.
		if err := s.budget.reserve(t.orgID, rr.held, total); err != nil {
			rr.err = err
			return rr
		}
		buf = make([]byte, 0, total)
		var chunkBytes int64
		for _, c := range chunks {
			buf = append(buf, c...)
			chunkBytes += int64(cap(c))
		}
		s.budget.release(t.orgID, chunkBytes)
		rr.held += total - chunkBytes
	}
	// The body is in: the answer may come after the server's whole-request write timeout has passed for a body
	// sent slowly, so give the commit and the answer their own deadline.
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.SubmitTimeout + 30*time.Second))
	if int64(len(buf)) > limit {
		rr.tooLarge = true
		buf = buf[:limit]
	}
	if rr.tooLarge && len(buf) > rejectedBodyLimit {
		buf = buf[:rejectedBodyLimit]
	}
	rr.body = buf
	return rr
}
