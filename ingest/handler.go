package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/webhookdb-go/webhookdb/ingest/verify"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
	"github.com/webhookdb-go/webhookdb/internal/staging"
)

// RejectedReasonHeader carries the reason a request was refused.
const RejectedReasonHeader = "Whdb-Rejected-Reason"

// rejectedBodyLimit is how much of a rejected request's body is kept: enough to debug, too little to fill a disk.
const rejectedBodyLimit = 4 << 10

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
	Committer     CommitterConfig
	Cache         CacheConfig
	Logger        *slog.Logger
	Now           func() time.Time
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
}

// New builds the ingest service; Run starts its background work, Register its routes.
func New(pool *pgxpool.Pool, box secrets.Box, metrics *Metrics, cfg Config) *Service {
	cfg = cfg.withDefaults()
	cfg.Committer.Metrics = metrics
	return &Service{
		cfg:       cfg,
		cache:     NewCache(pool, box, cfg.Cache),
		committer: NewCommitter(pool, cfg.Committer),
		metrics:   metrics,
		logger:    cfg.Logger,
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
)

func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ctx := r.Context()
	opaqueID := mux.Vars(r)["opaque_id"]
	service := "unknown"
	var result outcome
	defer func() {
		if s.metrics != nil {
			s.metrics.requests.WithLabelValues(service, string(result)).Inc()
			s.metrics.requestSeconds.WithLabelValues(service).Observe(time.Since(start).Seconds())
		}
	}()

	t, err := s.cache.lookup(ctx, opaqueID)
	if err != nil {
		s.logger.ErrorContext(ctx, "integration lookup failed", slog.String("error", err.Error()))
		result = outcomeUnavailable
		s.unavailable(w, "webhookdb cannot reach its database; retry later")
		return
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
		Path:          r.URL.EscapedPath(),
		Query:         r.URL.RawQuery,
		ContentType:   r.Header.Get("Content-Type"),
		Headers:       storedHeaders(r.Header, t.sensitive),
	}

	body, tooLarge, err := readBody(r.Body, r.ContentLength, t.bodyLimit)
	if err != nil {
		result = outcomeRejected
		refuse(w, http.StatusBadRequest, "error reading request body: "+err.Error())
		return
	}
	if tooLarge {
		result = outcomeTooLarge
		reason := fmt.Sprintf("body exceeds this integration's limit of %d bytes", t.bodyLimit)
		s.storeRejected(ctx, t, row, body, reason)
		refuse(w, http.StatusRequestEntityTooLarge, reason)
		return
	}

	if t.broken != "" {
		result = outcomeMisconfigued
		s.storeRejected(ctx, t, row, body, t.broken)
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
		s.storeRejected(ctx, t, row, body, reason)
		refuse(w, http.StatusUnauthorized, reason)
		return
	}

	row.Accepted = true
	row.Body = body
	row.DeliveryID = verify.DeliveryID(t.scheme, r.Header, body)
	submitCtx, cancel := context.WithTimeout(ctx, s.cfg.SubmitTimeout)
	defer cancel()
	if err := s.committer.Submit(submitCtx, row); err != nil {
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

// storeRejected keeps a refused request for the operator, capped per integration so garbage cannot fill the disk.
// The sender's answer does not depend on it.
func (s *Service) storeRejected(ctx context.Context, t *target, row *staging.Row, body []byte, reason string) {
	if !t.rejectedLimit.Allow() {
		if s.metrics != nil {
			s.metrics.rejectedDropped.WithLabelValues(t.service).Inc()
		}
		return
	}
	row.Accepted = false
	row.RejectedReason = reason
	if len(body) > rejectedBodyLimit {
		body, row.BodyTruncated = body[:rejectedBodyLimit], true
	}
	row.Body = body
	submitCtx, cancel := context.WithTimeout(ctx, s.cfg.SubmitTimeout)
	defer cancel()
	if err := s.committer.Submit(submitCtx, row); err != nil {
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

// readBody reads up to limit bytes; tooLarge reports a body longer than that (its first limit bytes are returned).
func readBody(r io.Reader, contentLength, limit int64) (body []byte, tooLarge bool, err error) {
	if contentLength >= 0 && contentLength <= limit {
		// The common case: size known and allowed, so read it into one exact allocation.
		body = make([]byte, contentLength)
		if _, err := io.ReadFull(r, body); err != nil {
			return nil, false, err
		}
		return body, false, nil
	}
	body, err = io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, false, err
	}
	if int64(len(body)) > limit {
		return body[:limit], true, nil
	}
	return body, false, nil
}

// storedHeaders is the request's headers as a JSON object, minus credentials and signatures.
func storedHeaders(h http.Header, sensitive map[string]bool) []byte {
	out := make(map[string]string, len(h))
	for k, vs := range h {
		ck := http.CanonicalHeaderKey(k)
		if sensitive[ck] || ck == "Authorization" || ck == "Cookie" || ck == "Proxy-Authorization" {
			continue
		}
		out[ck] = strings.Join(vs, ", ")
	}
	b, _ := json.Marshal(out)
	return b
}
