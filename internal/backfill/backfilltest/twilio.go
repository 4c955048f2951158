package backfilltest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"
)

// TwilioConfig sets a fake Twilio's account and faults.
type TwilioConfig struct {
	// FailOnce answers the first request after the first 500 (once).
	FailOnce bool
	// AccountSID and AuthToken are the credentials it accepts; defaults AC and 32 hex digits, "fake_token".
	AccountSID, AuthToken string
	// RateLimitEvery answers every Nth request 429 (Twilio error 20429) with Retry-After: 1.
	RateLimitEvery int
}

// Twilio is a fake of Twilio's Messages list: PageSize (default 50, at most 1000), Page and PageToken in
// next_page_uri, DateSent> filtering, newest first, Twilio's error objects.
type Twilio struct {
	URL string
	cfg TwilioConfig
	srv *httptest.Server

	mu       sync.Mutex
	requests int
	failed   bool
	messages []map[string]any // newest first
}

// NewTwilio starts a fake Twilio.
func NewTwilio(cfg TwilioConfig) *Twilio {
	if cfg.AccountSID == "" {
		cfg.AccountSID = "AC0123456789abcdef0123456789abcdef"
	}
	if cfg.AuthToken == "" {
		cfg.AuthToken = "fake_token"
	}
	f := &Twilio{cfg: cfg}
	f.srv = httptest.NewServer(http.HandlerFunc(f.handle))
	f.URL = f.srv.URL
	return f
}

// Close stops the server.
func (f *Twilio) Close() { f.srv.Close() }

// Credentials are the account SID and auth token it accepts.
func (f *Twilio) Credentials() (sid, token string) { return f.cfg.AccountSID, f.cfg.AuthToken }

const twilioDate = "Mon, 02 Jan 2006 15:04:05 -0700"

// AddMessages adds n delivered messages sent a second apart from sent, and returns their sids.
func (f *Twilio) AddMessages(prefix string, n int, sent time.Time) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	sids := make([]string, n)
	for i := range n {
		at := sent.Add(time.Duration(i) * time.Second).UTC()
		sids[i] = fmt.Sprintf("SM%s%0*d", prefix, 32-len(prefix), i)
		f.messages = slices.Insert(f.messages, 0, map[string]any{
			"sid": sids[i], "account_sid": f.cfg.AccountSID, "api_version": "2010-04-01", "body": "hello " + strconv.Itoa(i),
			"date_created": at.Format(twilioDate), "date_sent": at.Format(twilioDate), "date_updated": at.Add(2 * time.Second).Format(twilioDate),
			"direction": "outbound-api", "error_code": nil, "error_message": nil, "from": "+15017122661", "to": "+15558675310",
			"messaging_service_sid": nil, "num_media": "0", "num_segments": "1", "price": "-0.00750", "price_unit": "USD",
			"status": "delivered", "uri": "/2010-04-01/Accounts/" + f.cfg.AccountSID + "/Messages/" + sids[i] + ".json",
		})
	}
	return sids
}

func twilioError(w http.ResponseWriter, status, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"code": code, "message": msg, "more_info": fmt.Sprintf("https://www.twilio.com/docs/errors/%d", code), "status": status})
}

func (f *Twilio) handle(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests++
	sid, token, ok := r.BasicAuth()
	if !ok || sid != f.cfg.AccountSID || token != f.cfg.AuthToken {
		twilioError(w, http.StatusUnauthorized, 20003, "Authenticate")
		return
	}
	path := "/2010-04-01/Accounts/" + f.cfg.AccountSID + "/Messages.json"
	if r.URL.Path != path {
		twilioError(w, http.StatusNotFound, 20404, "The requested resource "+r.URL.Path+" was not found")
		return
	}
	if f.cfg.RateLimitEvery > 0 && f.requests%f.cfg.RateLimitEvery == 0 {
		w.Header().Set("Retry-After", "1")
		twilioError(w, http.StatusTooManyRequests, 20429, "Too Many Requests")
		return
	}
	if f.cfg.FailOnce && !f.failed && f.requests > 1 {
		f.failed = true
		twilioError(w, http.StatusInternalServerError, 20500, "Internal Server Error")
		return
	}
	q := r.URL.Query()
	all := f.messages
	if d := q.Get("DateSent>"); d != "" {
		day, err := time.Parse("2006-01-02", d)
		if err != nil {
			twilioError(w, http.StatusBadRequest, 20001, "Invalid DateSent")
			return
		}
		all = slices.DeleteFunc(slices.Clone(all), func(m map[string]any) bool {
			t, _ := time.Parse(twilioDate, m["date_sent"].(string))
			return t.Before(day)
		})
	}
	size := 50
	if v, err := strconv.Atoi(q.Get("PageSize")); err == nil && v > 0 {
		size = min(v, 1000)
	}
	start := 0
	if tok := q.Get("PageToken"); tok != "" {
		i := slices.IndexFunc(all, func(m map[string]any) bool { return "PA"+m["sid"].(string) == tok })
		if i < 0 {
			twilioError(w, http.StatusBadRequest, 20001, "Invalid PageToken")
			return
		}
		start = i + 1
	}
	page, _ := strconv.Atoi(q.Get("Page"))
	end := min(start+size, len(all))
	out := map[string]any{"messages": append([]map[string]any{}, all[start:end]...), "page": page, "page_size": size,
		"start": start, "end": max(end-1, start), "uri": r.URL.RequestURI(), "first_page_uri": path + "?PageSize=" + strconv.Itoa(size) + "&Page=0",
		"previous_page_uri": nil, "next_page_uri": nil}
	if end < len(all) {
		nq := url.Values{}
		for k, v := range q {
			nq[k] = v
		}
		nq.Set("Page", strconv.Itoa(page+1))
		nq.Set("PageToken", "PA"+all[end-1]["sid"].(string))
		out["next_page_uri"] = path + "?" + nq.Encode()
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}
