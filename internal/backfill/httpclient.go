package backfill

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// HTTPConfig tunes the vendors' HTTP clients.
type HTTPConfig struct {
	// Client makes the requests; default one with a 60 s timeout per request that follows no redirect.
	Client *http.Client
	// Attempts bounds the tries of one request (429, 5xx, timeouts); default 8.
	Attempts int
	// BaseDelay is the first backoff, doubled per attempt with full jitter up to MaxDelay; defaults 500 ms, 30 s.
	BaseDelay, MaxDelay time.Duration
	// MaxRetryAfter caps a vendor's Retry-After (or rate-limit reset) wait; default 5 minutes.
	MaxRetryAfter time.Duration
	// MaxBody bounds a page's body; default 32 MiB.
	MaxBody int64
}

// WithDefaults fills the zero fields.
func (c HTTPConfig) WithDefaults() HTTPConfig {
	if c.Client == nil {
		// Redirects are not followed: a vendor's API answers where it is asked, and following one could take the
		// server to a host no one allowed (SSRF).
		c.Client = &http.Client{Timeout: 60 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if c.Attempts <= 0 {
		c.Attempts = 8
	}
	if c.BaseDelay <= 0 {
		c.BaseDelay = 500 * time.Millisecond
	}
	if c.MaxDelay <= 0 {
		c.MaxDelay = 30 * time.Second
	}
	if c.MaxRetryAfter <= 0 {
		c.MaxRetryAfter = 5 * time.Minute
	}
	if c.MaxBody <= 0 {
		c.MaxBody = 32 << 20
	}
	return c
}

// VendorError is the vendor refusing the credentials (401, 403 that is not a rate limit) or the request (another
// 4xx): retrying cannot help, so the job stops with the vendor's message.
type VendorError struct {
	Vendor  string
	Status  int
	Message string
}

func (e *VendorError) Error() string {
	return fmt.Sprintf("%s refused the request (HTTP %d): %s", e.Vendor, e.Status, e.Message)
}

// BadAnswerError is an answer that is not what the vendor's API documents: the job fails naming the page, the
// status and the first bytes of the body.
type BadAnswerError struct {
	Vendor, Page string
	Status       int
	Reason       string
	Body         []byte
}

// bodyPrefix is how much of a bad answer's body an error shows.
const bodyPrefix = 200

func (e *BadAnswerError) Error() string {
	b := e.Body
	if len(b) > bodyPrefix {
		b = b[:bodyPrefix]
	}
	for len(b) > 0 && !utf8.Valid(b) {
		b = b[:len(b)-1]
	}
	return fmt.Sprintf("unexpected answer from %s for page %s (HTTP %d): %s; body starts %q", e.Vendor, e.Page, e.Status, e.Reason, string(b))
}

// TransientError is a request that kept failing in a way retrying could fix (5xx, 429, timeouts) until the
// attempts ran out: the job waits and tries again later.
type TransientError struct{ Err error }

func (e *TransientError) Error() string { return e.Err.Error() }
func (e *TransientError) Unwrap() error { return e.Err }

// decision is what a vendor's classifier says about an answer that is not a 2xx.
type decision struct {
	// retry: wait and try again (after wait when set, else the backoff).
	retry bool
	wait  time.Duration
	// message is the vendor's reason, for a refusal.
	message string
}

// fetcher does a vendor's GET requests with retries.
type fetcher struct {
	vendor string
	cfg    HTTPConfig
	// classify reads a non-2xx answer; nil: the default rules.
	classify func(resp *http.Response, body []byte) decision
	// sleep waits (tests may shorten it); default a timer.
	sleep func(ctx context.Context, d time.Duration) error
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// retryAfter reads Retry-After (seconds, or an HTTP date).
func retryAfter(h http.Header) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil && s >= 0 {
		return time.Duration(s * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// defaultDecision: 429 and 5xx are retried (429 after its Retry-After), anything else is a refusal.
func defaultDecision(resp *http.Response, body []byte) decision {
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
		return decision{retry: true, wait: retryAfter(resp.Header)}
	}
	return decision{message: strings.TrimSpace(string(body))}
}

// get fetches url with the headers set by prepare; page names the page in errors. A 2xx answer's body is
// returned; others are retried or refused as the classifier says.
func (f *fetcher) get(ctx context.Context, url, page string, prepare func(*http.Request)) (*http.Response, []byte, error) {
	return f.send(ctx, http.MethodGet, url, nil, page, prepare)
}

// send is get with a method and a JSON body (search endpoints that list by POST).
func (f *fetcher) send(ctx context.Context, method, url string, reqBody []byte, page string, prepare func(*http.Request)) (*http.Response, []byte, error) {
	var lastErr error
	for attempt := 0; attempt < f.cfg.Attempts; attempt++ {
		if attempt > 0 {
			wait := f.backoff(attempt)
			var w *waitError
			if errors.As(lastErr, &w) && w.wait > 0 {
				wait = min(w.wait, f.cfg.MaxRetryAfter)
			}
			if err := f.sleep(ctx, wait); err != nil {
				return nil, nil, err
			}
		}
		var rd io.Reader
		if reqBody != nil {
			rd = bytes.NewReader(reqBody)
		}
		req, err := http.NewRequestWithContext(ctx, method, url, rd)
		if err != nil {
			return nil, nil, fmt.Errorf("error building the request for %s: %w", page, err)
		}
		if reqBody != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		req.Header.Set("Accept", "application/json")
		req.Header.Set("User-Agent", "webhookdb-backfill")
		prepare(req)
		resp, err := f.cfg.Client.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil, ctx.Err()
			}
			lastErr = &waitError{err: fmt.Errorf("error requesting %s page %s: %w", f.vendor, page, err)}
			continue
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, f.cfg.MaxBody+1))
		_ = resp.Body.Close()
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil, ctx.Err()
			}
			lastErr = &waitError{err: fmt.Errorf("error reading %s page %s: %w", f.vendor, page, err)}
			continue
		}
		if int64(len(body)) > f.cfg.MaxBody {
			return nil, nil, &BadAnswerError{Vendor: f.vendor, Page: page, Status: resp.StatusCode, Reason: fmt.Sprintf("body longer than %d bytes", f.cfg.MaxBody), Body: body}
		}
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			return resp, body, nil
		}
		classify := f.classify
		if classify == nil {
			classify = defaultDecision
		}
		d := classify(resp, body)
		if !d.retry {
			return nil, nil, &VendorError{Vendor: f.vendor, Status: resp.StatusCode, Message: d.message}
		}
		lastErr = &waitError{wait: d.wait, err: fmt.Errorf("%s answered HTTP %d for page %s", f.vendor, resp.StatusCode, page)}
	}
	return nil, nil, &TransientError{Err: fmt.Errorf("giving up after %d attempts: %w", f.cfg.Attempts, lastErr)}
}

// waitError is a failed attempt, with the wait the vendor asked for (0: the backoff's).
type waitError struct {
	wait time.Duration
	err  error
}

func (e *waitError) Error() string { return e.err.Error() }
func (e *waitError) Unwrap() error { return e.err }

// backoff is the full-jitter exponential backoff before attempt (1-based retries).
func (f *fetcher) backoff(attempt int) time.Duration {
	d := f.cfg.BaseDelay << min(attempt-1, 20)
	if d <= 0 || d > f.cfg.MaxDelay {
		d = f.cfg.MaxDelay
	}
	return d/2 + rand.N(d/2+1)
}

func newFetcher(vendor string, cfg HTTPConfig, classify func(*http.Response, []byte) decision) *fetcher {
	return &fetcher{vendor: vendor, cfg: cfg.WithDefaults(), classify: classify, sleep: sleepCtx}
}
