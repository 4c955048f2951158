package backfill

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

// Twilio lists an account's Messages with PageSize and next_page_uri; an incremental job lists those sent since
// the high-water mark's day (DateSent>, a date: the overlap is harmless).

const twilioPageSize = 1000

var twilioAccountSID = regexp.MustCompile(`^AC[0-9a-fA-F]{32}$`)

var twilioVendor = vendorDef{
	name:        "Twilio",
	serves:      func(s string) bool { return s == "twilio_sms_v1" },
	needsSecret: true,
	hostAllowed: func(h string) bool { return h == "api.twilio.com" },
	newClient: func(t Target) (Vendor, error) {
		if !twilioAccountSID.MatchString(t.Credentials.Key) {
			return nil, fmt.Errorf("%w: the key is the account SID (AC and 32 hex digits)", ErrCredentials)
		}
		if t.Credentials.Secret == "" {
			return nil, fmt.Errorf("%w: Twilio needs the auth token as the secret", ErrCredentials)
		}
		if err := decodeOptions(t.Options, &struct{}{}); err != nil {
			return nil, err
		}
		base := t.BaseURL
		if base == "" {
			base = "https://api.twilio.com"
		}
		return &twilioClient{base: base, creds: t.Credentials, f: newFetcher("Twilio", t.HTTP, twilioDecision)}, nil
	},
}

type twilioClient struct {
	base  string
	creds Credentials
	f     *fetcher
}

// twilioDecision reads Twilio's error object ({"code", "message", "more_info", "status"}).
func twilioDecision(resp *http.Response, body []byte) decision {
	d := defaultDecision(resp, body)
	var e struct {
		Code     int    `json:"code"`
		Message  string `json:"message"`
		MoreInfo string `json:"more_info"`
	}
	if json.Unmarshal(body, &e) == nil && e.Message != "" {
		d.message = fmt.Sprintf("%s (error %d, %s)", e.Message, e.Code, e.MoreInfo)
	}
	return d
}

func (c *twilioClient) messagesPath() string {
	return "/2010-04-01/Accounts/" + c.creds.Key + "/Messages.json"
}

func (c *twilioClient) list(ctx context.Context, uri, page string) (*Page, error) {
	resp, body, err := c.f.get(ctx, c.base+uri, page, func(r *http.Request) { r.SetBasicAuth(c.creds.Key, c.creds.Secret) })
	if err != nil {
		return nil, err
	}
	var l struct {
		Messages    []json.RawMessage `json:"messages"`
		NextPageURI *string           `json:"next_page_uri"`
	}
	if err := json.Unmarshal(body, &l); err != nil || l.Messages == nil {
		return nil, &BadAnswerError{Vendor: "Twilio", Page: page, Status: resp.StatusCode, Reason: `want {"messages":[...],"next_page_uri":...}`, Body: body}
	}
	p := &Page{Objects: l.Messages, Done: l.NextPageURI == nil || *l.NextPageURI == ""}
	if !p.Done {
		if !strings.HasPrefix(*l.NextPageURI, c.messagesPath()+"?") {
			return nil, &BadAnswerError{Vendor: "Twilio", Page: page, Status: resp.StatusCode, Reason: "next_page_uri is not this account's messages: " + *l.NextPageURI, Body: body}
		}
		p.Next = *l.NextPageURI
	}
	if u, err := url.Parse(uri); err == nil {
		p.Path, p.Query = u.Path, u.RawQuery
	}
	return p, nil
}

func (c *twilioClient) Verify(ctx context.Context) error {
	_, err := c.list(ctx, c.messagesPath()+"?PageSize=1", c.messagesPath()+" (first)")
	return err
}

func (c *twilioClient) Page(ctx context.Context, req PageRequest) (*Page, error) {
	uri := req.Cursor
	if uri == "" {
		q := url.Values{"PageSize": {strconv.Itoa(twilioPageSize)}}
		if !req.Since.IsZero() {
			q.Set("DateSent>", req.Since.UTC().Format("2006-01-02"))
		}
		uri = c.messagesPath() + "?" + q.Encode()
	}
	return c.list(ctx, uri, c.messagesPath()+" "+pageRef(req.Cursor))
}
