package replicator

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"
	"unsafe"

	"github.com/tidwall/gjson"
)

// A JSON body is read in place when it can be (rawClean, then valid JSON): values are found by scanning its bytes (gjson),
// the resource's data is its own bytes, and nothing else is decoded. Decoding the whole body into maps and
// encoding the resource again was most of the fanout's CPU per row. The decoded tree (treeDoc) remains for
// what reading in place would get wrong: bodies with escaped NULs, lone surrogates or invalid UTF-8, which
// the decoder normalises, and forms. Both give the same rows (TestRawAndTreeExtractAgree, FuzzRawAndTree).

// doc is an event or a resource that columns are read from.
type doc interface {
	// lookup follows a dot-separated path as Postgres' #> does: integer segments index arrays. A JSON null
	// found is (nil, true).
	lookup(path string) (any, bool)
	// data is the document as JSON for the data column.
	data() ([]byte, error)
}

// treeDoc is a document decoded by encoding/json (json.Number for numbers).
type treeDoc struct{ v any }

func (d treeDoc) lookup(path string) (any, bool) { return lookup(d.v, path) }
func (d treeDoc) data() ([]byte, error)          { return marshalJSON(d.v) }

// rawPlan lists the first path segments a service reads at a document's root, so the root object is
// scanned once for all of them instead of once per column.
type rawPlan struct {
	slots map[string]int
}

func newRawPlan() *rawPlan { return &rawPlan{slots: map[string]int{}} }

func (p *rawPlan) add(paths ...string) {
	for _, path := range paths {
		if path == "" {
			continue
		}
		seg, _, _ := strings.Cut(path, ".")
		if _, ok := p.slots[seg]; !ok {
			p.slots[seg] = len(p.slots)
		}
	}
}

// rawPlans are a service's plans for the event's root and the resource's root (the same plan when the
// resource is the event).
type rawPlans struct {
	event, resource *rawPlan
	scan            *scanPlan // nil: the gjson path
}

func (s *Service) buildRawPlans() *rawPlans {
	event, resource := newRawPlan(), newRawPlan()
	if s.Resource == "" {
		resource = event
	}
	event.add(s.Resource, s.Events.Path)
	if rest, under := strings.CutPrefix(s.Events.Path, s.Resource+"."); under && s.Resource != "" {
		resource.add(rest) // the filter reads it from the resource (scopedDoc)
	}
	add := func(c Column) {
		paths := append(append([]string{c.Path}, c.Fallbacks...), c.Concat...)
		switch c.From {
		case FromResource:
			resource.add(paths...)
		case FromEvent:
			event.add(paths...)
		}
	}
	add(s.RemoteKey)
	for _, c := range s.Columns {
		add(c)
	}
	plans := &rawPlans{event: event, resource: resource}
	plans.scan = buildScanPlan(s, plans)
	return plans
}

// plans returns the plans built when the service was finished, or builds them (a service made in place).
// A plan that misses a segment costs a scan, never a wrong value: lookups fall back to scanning.
func (s *Service) plans() *rawPlans {
	if s.raw != nil {
		return s.raw
	}
	return s.buildRawPlans()
}

// rawDoc is a document read in place.
type rawDoc struct {
	v    gjson.Result
	plan *rawPlan
	top  []gjson.Result // by plan slot: the root object's value for the segment (the last, as a decoder keeps)
}

func newRawDoc(v gjson.Result, plan *rawPlan) rawDoc {
	d := rawDoc{v: v, plan: plan}
	if v.IsObject() && len(plan.slots) > 0 {
		d.top = make([]gjson.Result, len(plan.slots))
		v.ForEach(func(k, val gjson.Result) bool {
			if i, ok := plan.slots[k.Str]; ok {
				d.top[i] = val
			}
			return true
		})
	}
	return d
}

func (d rawDoc) result(path string) (gjson.Result, bool) {
	if path == "" {
		return d.v, true
	}
	seg, rest, more := strings.Cut(path, ".")
	var (
		r  gjson.Result
		ok bool
	)
	if i, planned := d.plan.slots[seg]; planned && d.top != nil {
		r = d.top[i]
		ok = r.Exists()
	} else {
		r, ok = child(d.v, seg)
	}
	for ok && more {
		seg, rest, more = strings.Cut(rest, ".")
		r, ok = child(r, seg)
	}
	return r, ok
}

func (d rawDoc) lookup(path string) (any, bool) {
	r, ok := d.result(path)
	if !ok {
		return nil, false
	}
	return rawValue(r), true
}

// data is the resource's own bytes, shared with the string the body was parsed from rather than copied: a
// string is never written, and neither is a Row's Data.
func (d rawDoc) data() ([]byte, error) {
	return unsafe.Slice(unsafe.StringData(d.v.Raw), len(d.v.Raw)), nil
}

// scopedDoc is an event whose paths under prefix are read from inner, the document found at prefix.
type scopedDoc struct {
	rawDoc
	prefix string
	inner  rawDoc
}

func (d scopedDoc) lookup(path string) (any, bool) {
	if rest, ok := strings.CutPrefix(path, d.prefix); ok {
		return d.inner.lookup(rest)
	}
	return d.rawDoc.lookup(path)
}

// child is an object's member (the last of duplicates) or an array's element.
func child(r gjson.Result, seg string) (gjson.Result, bool) {
	var (
		out   gjson.Result
		found bool
	)
	switch {
	case r.IsObject():
		r.ForEach(func(k, v gjson.Result) bool {
			if k.Str == seg {
				out, found = v, true
			}
			return true
		})
	case r.IsArray():
		i, err := strconv.Atoi(seg)
		if err != nil || i < 0 {
			return out, false
		}
		n := 0
		r.ForEach(func(_, v gjson.Result) bool {
			if n == i {
				out, found = v, true
				return false
			}
			n++
			return true
		})
	}
	return out, found
}

// rawValue is what the decoder would have made of r: scalars directly, objects and arrays decoded (a column
// of type jsonb or text[]; rare).
func rawValue(r gjson.Result) any {
	switch r.Type {
	case gjson.String:
		return r.Str
	case gjson.Number:
		return json.Number(r.Raw)
	case gjson.True:
		return true
	case gjson.False:
		return false
	case gjson.JSON:
		v, err := parseJSON([]byte(r.Raw))
		if err != nil {
			return nil
		}
		return v
	}
	return nil
}

// rawClean reports whether a body reads the same in place as decoded, JSON validity aside (the single pass,
// rawscan.go, checks that itself; the gjson path asks gjson.ValidBytes): valid UTF-8, and no escape the decoder
// would change (\u0000, which is stripped, and surrogate escapes, which may be lone and become U+FFFD; a false
// alarm only costs the slower path).
func rawClean(body []byte) bool {
	return utf8.Valid(body) && !hasChangingEscape(body)
}

// hasChangingEscape finds \u0000 or a surrogate escape \uD800-\uDFFF (a false alarm, such as an escaped
// backslash followed by "u0000", only costs the slower path).
func hasChangingEscape(body []byte) bool {
	for i := 0; ; {
		j := bytes.Index(body[i:], []byte(`\u`))
		if j < 0 {
			return false
		}
		i += j + 2
		if i+1 < len(body) && (body[i] == 'd' || body[i] == 'D') && strings.IndexByte("89abcdefABCDEF", body[i+1]) >= 0 {
			return true
		}
		if i+3 < len(body) && string(body[i:i+4]) == "0000" {
			return true
		}
	}
}
