package replicator

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/tidwall/gjson"
)

// agree fails t unless reading body in place (the single pass and the gjson path) and decoding it give the
// same rows, or the same kind of error.
func agree(t *testing.T, s *Service, w Webhook) {
	t.Helper()
	if rawClean(w.Body) && s.plans().scan != nil {
		plans := s.plans()
		if event, resource, found, ok := plans.scan.scan(string(w.Body), plans); ok {
			if !json.Valid(w.Body) {
				t.Fatalf("%s: the single pass accepted invalid JSON %q", s.Name, w.Body)
			}
			rows, err := s.extractDocs(w, event, resource, found)
			agreeWithTree(t, s, w, "single pass", rows, err)
		} else if json.Valid(w.Body) && !bytes.ContainsRune(w.Body, '\\') && len(w.Body) < maxScanDepth {
			t.Fatalf("%s: the single pass declined valid JSON %q", s.Name, w.Body)
		}
	}
	if !rawReadable(w.Body) {
		return
	}
	raw, rawErr := s.extractRaw(w)
	agreeWithTree(t, s, w, "in place", raw, rawErr)
}

func agreeWithTree(t *testing.T, s *Service, w Webhook, path string, raw []Row, rawErr error) {
	t.Helper()
	tree, treeErr := s.extractTree(w)
	if (rawErr == nil) != (treeErr == nil) || errors.Is(rawErr, ErrMalformed) != errors.Is(treeErr, ErrMalformed) {
		t.Fatalf("%s: %s: %v; decoded: %v\nbody %q", s.Name, path, rawErr, treeErr, w.Body)
	}
	if rawErr != nil {
		if rawErr.Error() != treeErr.Error() {
			t.Fatalf("%s: errors differ:\n %s %v\n decoded  %v", s.Name, path, rawErr, treeErr)
		}
		return
	}
	if len(raw) != len(tree) {
		t.Fatalf("%s: %d rows %s, %d decoded\nbody %q", s.Name, len(raw), path, len(tree), w.Body)
	}
	for i := range raw {
		if raw[i].Key != tree[i].Key || !reflect.DeepEqual(raw[i].Values, tree[i].Values) {
			t.Fatalf("%s row %d:\n %s %q %#v\n decoded  %q %#v\nbody %q", s.Name, i, path, raw[i].Key, raw[i].Values, tree[i].Key, tree[i].Values, w.Body)
		}
		if normJSON(t, raw[i].Data) != normJSON(t, tree[i].Data) {
			t.Fatalf("%s row %d data:\n %s %s\n decoded  %s", s.Name, i, path, raw[i].Data, tree[i].Data)
		}
	}
}

// Every service's fixture reads the same in place as decoded.
func TestRawAndTreeExtractAgree(t *testing.T) {
	t.Parallel()
	for _, s := range All() {
		s, w := fixtureService(t, s.Name)
		if s.Format != FormatJSON {
			continue
		}
		if !rawReadable(w.Body) {
			t.Errorf("%s: the fixture is not read in place", s.Name)
			continue
		}
		if plans := s.plans(); plans.scan != nil {
			if _, _, _, ok := plans.scan.scan(string(w.Body), plans); !ok {
				t.Errorf("%s: the single pass declined the fixture", s.Name)
			}
		}
		agree(t, s, w)
	}
	s := mustResolve(t, "json_v1", `{"remote_key_path":"a.b.1","timestamp_path":"t","event_type_path":"k.0","event_types":["x"]}`)
	for _, body := range []string{
		`{"a":{"b":["p","q"]},"t":"2024-01-01T00:00:00Z","k":["x"]}`,
		`{"a":{"b":["p","q"]},"a":{"b":["r","s"]},"t":1700000000,"k":["x"]}`, // duplicate keys: the last wins
		`{"a":{"b":["p",{"x":1}]},"k":["x"]}`,
		`{"a":{"b":["p",12.50]},"k":["x"]}`,
		`{"a":{"b":["p",true]},"k":["y"]}`,
		`{"a":{"b":["p"]},"k":["x"]}`,
		`{"a":{"b":["p","\"quoted\" \u00e9 \n"]},"k":["x"]}`,
		`{"a":null,"k":["x"]}`,
		`[{"a":{"b":[1,2]}}]`,
		` {"a" : {"b" : [ "p" , "q" ] } , "k" : [ "x" ] } `,
	} {
		agree(t, s, jsonHook(body))
	}
	list := mustResolve(t, "json_v1", `{"remote_key_path":"sku"}`)
	for _, body := range []string{`[{"sku":"a"},{"sku":"b","qty":2}]`, `[]`, `[{"sku":"a"},{"qty":1}]`, `"text"`, `12`, `null`} {
		agree(t, list, jsonHook(body))
	}
}

// Bodies the decoder would change are not read in place.
func TestRawReadable(t *testing.T) {
	t.Parallel()
	for body, want := range map[string]bool{
		`{"a":1}`:              true,
		`{"a":"\u00e9"}`:       true,
		`{"a":"\u0000"}`:       false,
		`{"a":"\ud83d\ude00"}`: false,
		`{"a":"\uDC00"}`:       false,
		"{\"a\":\"\xff\"}":     false,
		`{"a":1}x`:             false,
		`{"a":}`:               false,
		``:                     false,
	} {
		if got := rawReadable([]byte(body)); got != want {
			t.Errorf("rawReadable(%q) = %v, want %v", body, got, want)
		}
	}
}

// FuzzRawAndTree: whatever the body, reading it in place gives what decoding it gives.
func FuzzRawAndTree(f *testing.F) {
	for _, s := range All() {
		if _, w := fixtureService(f, s.Name); s.Format == FormatJSON {
			f.Add(string(w.Body))
		}
	}
	f.Add(`{"id":"x","id":"y","data":{"object":{"id":"ch_1","amount":"12"}}}`)
	f.Add(`{"id":1e3,"created":-0,"data":{"object":[{"id":"a"},{"id":"b"}]}}`)
	// the filter's path read through the resource: duplicates, a missing or null resource, an array
	f.Add(`{"data":{"object":{"object":"charge","id":"a"},"object":{"object":"refund","id":"b","object":"charge"}}}`)
	f.Add(`{"data":{"object":null}}`)
	f.Add(`{"data":{},"created":1}`)
	f.Add(`{"data":{"object":[{"object":"charge","id":"a"}]}}`)
	// strings the scanner's IndexByte path must hand back to its byte-by-byte one: an escaped quote, an
	// escaped backslash before the closing quote, a raw control character, an unterminated string
	f.Add(`{"id":"a\"b","data":{"object":{"id":"c\\"}}}`)
	f.Add("{\"id\":\"a\x01b\"}")
	f.Add(`{"id":"a\u0001b","type":"x`)
	services := []*Service{}
	for _, name := range []string{"stripe_charge_v1", "github_issue_v1", "shopify_order_v1", "stripe_subscription_item_v1"} {
		if s, ok := Lookup(name); ok {
			services = append(services, s)
		}
	}
	configured, err := Resolve("json_v1", json.RawMessage(`{"remote_key_path":"id","timestamp_path":"data.object.created","event_type_path":"type"}`))
	if err != nil {
		f.Fatal(err)
	}
	services = append(services, configured)
	f.Fuzz(func(t *testing.T, body string) {
		for _, s := range services {
			agree(t, s, jsonHook(body))
		}
	})
}

// rawReadable is what the gjson path requires of a body.
func rawReadable(body []byte) bool {
	return rawClean(body) && gjson.ValidBytes(body)
}
