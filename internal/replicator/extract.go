package replicator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/gjson"
)

// Webhook is one received request, as the fanout reads it back from staging.
type Webhook struct {
	Header http.Header
	// ContentType is informational: the service's Format decides how Body is parsed.
	ContentType string
	Body        []byte
	// ReceivedAt is when webhookdb first received the request (kept across replays).
	ReceivedAt time.Time
	// DeliveryID is the sender's id of this delivery as ingest stored it (staging's delivery_id: webhook-id
	// or svix-id for Standard Webhooks senders), or "" when the request had none.
	DeliveryID string
	// Bare marks a vendor's API object stored by a backfill rather than a webhook (see [BareObject]).
	Bare bool
}

// MaxKeyBytes bounds a remote key. The key column has a btree index (the upsert's conflict target), whose
// entries cannot exceed about a third of a page (~2,700 bytes after compression, which random text defeats):
// a longer key would be refused by the org database on every attempt, so it is refused here, with a reason.
const MaxKeyBytes = 2000

// Row is one upsertable row of a service's table.
type Row struct {
	Key string
	// Values has one entry per Service.Columns entry: the Go type of the column's Type, or nil for NULL.
	Values []any
	// Data is the resource as JSON, without NUL characters (jsonb rejects \u0000). It is read-only: it may
	// share memory with an immutable string.
	Data []byte
}

// Extract turns one webhook into rows: none when the event does not carry the service's resource, one per
// element when the resource is an array. Errors wrap ErrMalformed, or ErrNotConfigured.
func (s *Service) Extract(w Webhook) ([]Row, error) {
	if w.Bare {
		return s.extractBare(w)
	}
	if s.configurable && s.RemoteKey.Path == "" && s.RemoteKey.From != FromDeliveryID {
		return nil, fmt.Errorf("error extracting %s: %w", s.Name, ErrNotConfigured)
	}
	if s.Format == FormatJSON && rawClean(w.Body) {
		plans := s.plans()
		if plans.scan != nil {
			// One copy: the results are substrings of it, and the caller's body may be reused.
			if event, resource, found, ok := plans.scan.scan(string(w.Body), plans); ok {
				return s.extractDocs(w, event, resource, found)
			}
		}
		if gjson.ValidBytes(w.Body) {
			return s.extractRaw(w)
		}
	}
	return s.extractTree(w)
}

// extractTree is Extract over the decoded body.
func (s *Service) extractTree(w Webhook) ([]Row, error) {
	event, err := s.parseBody(w.Body)
	if err != nil {
		return nil, fmt.Errorf("error parsing %s webhook: %w: %w", s.Name, ErrMalformed, err)
	}
	if mayHoldNUL(w.Body, s.Format) {
		event = stripNUL(event)
	}
	ev := treeDoc{event}
	if !s.Events.matches(w.Header, ev) {
		return nil, nil
	}
	resource := event
	if s.Resource != "" {
		var ok bool
		if resource, ok = lookup(event, s.Resource); !ok || resource == nil {
			return nil, fmt.Errorf("error extracting %s: %w: no resource at %q", s.Name, ErrMalformed, s.Resource)
		}
	}
	items, isList := resource.([]any)
	if !isList {
		items = []any{resource}
	}
	rows := make([]Row, 0, len(items))
	for i, item := range items {
		row, err := s.row(w, ev, treeDoc{item})
		if err != nil {
			return nil, s.rowError(isList, i, err)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// extractRaw is Extract over a body read in place (see rawjson.go).
func (s *Service) extractRaw(w Webhook) ([]Row, error) {
	plans := s.plans()
	// One copy: the results are substrings of it, and the caller's body may be reused.
	event := newRawDoc(gjson.Parse(string(w.Body)), plans.event)
	resource, found := event, true
	if s.Resource != "" {
		r, ok := event.result(s.Resource)
		if found = ok && r.Type != gjson.Null; found {
			resource = newRawDoc(r, plans.resource)
		}
	}
	return s.extractDocs(w, event, resource, found)
}

// extractDocs is Extract over an event and its resource read in place.
func (s *Service) extractDocs(w Webhook, event, resource rawDoc, found bool) ([]Row, error) {
	plans := s.plans()
	// The filter's path usually lies in the resource (Stripe's data.object.object): read it there rather than
	// scanning the resource's parents and members again.
	var filterDoc doc = event
	if found && s.Resource != "" {
		filterDoc = scopedDoc{rawDoc: event, prefix: s.Resource + ".", inner: resource}
	}
	if !s.Events.matches(w.Header, filterDoc) {
		return nil, nil
	}
	if !found {
		return nil, fmt.Errorf("error extracting %s: %w: no resource at %q", s.Name, ErrMalformed, s.Resource)
	}
	if !resource.v.IsArray() {
		row, err := s.row(w, event, resource)
		if err != nil {
			return nil, s.rowError(false, 0, err)
		}
		return []Row{row}, nil
	}
	var (
		rows []Row
		err  error
	)
	resource.v.ForEach(func(_, item gjson.Result) bool {
		var row Row
		if row, err = s.row(w, event, newRawDoc(item, plans.resource)); err != nil {
			err = s.rowError(true, len(rows), err)
			return false
		}
		rows = append(rows, row)
		return true
	})
	if err != nil {
		return nil, err
	}
	if rows == nil {
		rows = []Row{}
	}
	return rows, nil
}

func (s *Service) rowError(isList bool, i int, err error) error {
	if isList {
		return fmt.Errorf("error extracting %s element %d: %w", s.Name, i, err)
	}
	return fmt.Errorf("error extracting %s: %w", s.Name, err)
}

func (s *Service) row(w Webhook, event, resource doc) (Row, error) {
	key, ok := keyText(s.RemoteKey, w, event, resource)
	if !ok {
		if s.RemoteKey.From == FromDeliveryID {
			return Row{}, fmt.Errorf("%w: no delivery id (webhook-id or svix-id header) to key the row by", ErrMalformed)
		}
		return Row{}, fmt.Errorf("%w: no remote key at %q", ErrMalformed, s.RemoteKey.Path)
	}
	if len(key) > MaxKeyBytes {
		return Row{}, fmt.Errorf("%w: remote key is %d bytes, longer than %d", ErrMalformed, len(key), MaxKeyBytes)
	}
	data, err := resource.data()
	if err != nil {
		return Row{}, fmt.Errorf("error encoding data: %w", err)
	}
	values := make([]any, len(s.Columns))
	for i, c := range s.Columns {
		values[i] = columnValue(c, w, event, resource)
	}
	return Row{Key: key, Values: values, Data: data}, nil
}

// keyText is the remote key: the scalar text at the key column's paths, joined when composite. Empty is missing.
func keyText(c Column, w Webhook, event, resource doc) (string, bool) {
	switch c.From {
	case FromHeader:
		v := w.Header.Get(c.Header)
		return v, v != ""
	case FromDeliveryID:
		return w.DeliveryID, w.DeliveryID != ""
	}
	root := resource
	if c.From == FromEvent {
		root = event
	}
	first, ok := firstText(root, append([]string{c.Path}, c.Fallbacks...))
	if !ok {
		return "", false
	}
	parts := []string{first}
	for _, p := range c.Concat {
		t, ok := firstText(root, []string{p})
		if !ok {
			return "", false
		}
		parts = append(parts, t)
	}
	return strings.Join(parts, ":"), true
}

func firstText(root doc, paths []string) (string, bool) {
	for _, p := range paths {
		if v, ok := root.lookup(p); ok {
			if t, ok := scalarText(v); ok && t != "" {
				return t, true
			}
		}
	}
	return "", false
}

func columnValue(c Column, w Webhook, event, resource doc) any {
	switch c.From {
	case FromHeader:
		if v := w.Header.Get(c.Header); v != "" {
			return convertText(v, c.Type, c.Convert)
		}
		return nil
	case FromReceivedAt:
		if w.ReceivedAt.IsZero() {
			return nil
		}
		return normTime(w.ReceivedAt)
	case FromDeliveryID:
		if w.DeliveryID == "" {
			return nil
		}
		return w.DeliveryID
	}
	root := resource
	if c.From == FromEvent {
		root = event
	}
	if c.Path == "" {
		return nil // a configurable column left unset
	}
	// First path with a value after conversion, as the SQL side's COALESCE.
	for i := -1; i < len(c.Fallbacks); i++ {
		p := c.Path
		if i >= 0 {
			p = c.Fallbacks[i]
		}
		if v, ok := root.lookup(p); ok {
			if out := convert(v, c.Type, c.Convert); out != nil {
				return out
			}
		}
	}
	return nil
}

func (f EventFilter) matches(h http.Header, event doc) bool {
	if len(f.Equals) == 0 && len(f.Prefix) == 0 {
		return true
	}
	var value string
	switch {
	case f.Header != "":
		value = h.Get(f.Header)
	case f.Path != "":
		v, _ := event.lookup(f.Path)
		value, _ = scalarText(v)
	}
	if value == "" {
		return false
	}
	if slices.Contains(f.Equals, value) {
		return true
	}
	return slices.ContainsFunc(f.Prefix, func(p string) bool { return strings.HasPrefix(value, p) })
}

// lookup follows a dot-separated path; integer segments index arrays, like Postgres' #> operator.
func lookup(v any, path string) (any, bool) {
	if path == "" {
		return v, true
	}
	for seg := range strings.SplitSeq(path, ".") {
		switch node := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = node[seg]; !ok {
				return nil, false
			}
		case []any:
			i, err := strconv.Atoi(seg)
			if err != nil || i < 0 || i >= len(node) {
				return nil, false
			}
			v = node[i]
		default:
			return nil, false
		}
	}
	return v, true
}

func (s *Service) parseBody(body []byte) (any, error) {
	if s.Format == FormatForm {
		return parseForm(body)
	}
	return parseJSON(body)
}

// parseJSON keeps numbers as json.Number, so ids and amounts survive beyond float64 precision.
func parseJSON(body []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("error decoding JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("error decoding JSON: trailing data after the document")
	}
	return v, nil
}

func parseForm(body []byte) (any, error) {
	values, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, fmt.Errorf("error decoding form: %w", err)
	}
	out := make(map[string]any, len(values))
	for k, vs := range values {
		if len(vs) == 1 {
			out[k] = vs[0]
			continue
		}
		list := make([]any, len(vs))
		for i, v := range vs {
			list[i] = v
		}
		out[k] = list
	}
	return out, nil
}

// mayHoldNUL reports whether a body can decode to a string or key with a NUL character: JSON cannot carry
// one raw (control characters must be escaped), so only as \u0000; a form only percent-encoded. Walking every
// decoded payload for it would cost a map write per key.
func mayHoldNUL(body []byte, format BodyFormat) bool {
	if format == FormatForm {
		return bytes.Contains(body, []byte("%00")) || bytes.IndexByte(body, 0) >= 0
	}
	return bytes.Contains(body, []byte(`\u0000`))
}

// stripNUL removes NUL characters from every string and key: Postgres text and jsonb cannot hold them.
func stripNUL(v any) any {
	switch v := v.(type) {
	case string:
		if strings.IndexByte(v, 0) >= 0 {
			return strings.ReplaceAll(v, "\x00", "")
		}
		return v
	case []any:
		for i, e := range v {
			v[i] = stripNUL(e)
		}
		return v
	case map[string]any:
		var renamed []string
		for k, e := range v {
			v[k] = stripNUL(e)
			if strings.IndexByte(k, 0) >= 0 {
				renamed = append(renamed, k)
			}
		}
		// Renamed after the loop: keys added while ranging may or may not be visited.
		for _, k := range renamed {
			e := v[k]
			delete(v, k)
			v[strings.ReplaceAll(k, "\x00", "")] = e
		}
		return v
	}
	return v
}
