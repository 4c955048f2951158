package replicator

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/webhookdb-go/webhookdb/ingest/verify"
)

var update = flag.Bool("update", false, "rewrite the golden files from the current Extract output")

const (
	fixtureDir = "../../testdata/webhooks"
	goldenDir  = "testdata/golden"
)

type fixture struct {
	Headers     map[string]string `json:"headers"`
	ContentType string            `json:"content_type"`
	ReceivedAt  time.Time         `json:"received_at"`
	Config      json.RawMessage   `json:"config"`
	Body        string            `json:"body"`
}

func (f fixture) webhook() Webhook {
	h := http.Header{}
	for k, v := range f.Headers {
		h.Set(k, v)
	}
	return Webhook{Header: h, ContentType: f.ContentType, Body: []byte(f.Body), ReceivedAt: f.ReceivedAt}
}

func loadFixture(t testing.TB, name string) fixture {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtureDir, name+".json"))
	if err != nil {
		t.Fatalf("service %s has no fixture: %v", name, err)
	}
	var f fixture
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("bad fixture %s: %v", name, err)
	}
	return f
}

// fixtureService resolves the service with its fixture's config, and the fixture's webhook with the delivery
// id ingest would store for it under the service's default verifier.
func fixtureService(t testing.TB, name string) (*Service, Webhook) {
	t.Helper()
	f := loadFixture(t, name)
	s, err := Resolve(name, f.Config)
	if err != nil {
		t.Fatalf("Resolve(%s): %v", name, err)
	}
	w := f.webhook()
	w.DeliveryID = verify.DeliveryID(s.Verifier, w.Header, w.Body)
	return s, w
}

// fixtureRows extracts the fixture of name, which must give at least one row.
func fixtureRows(t testing.TB, name string) (*Service, []Row) {
	t.Helper()
	s, w := fixtureService(t, name)
	rows, err := s.Extract(w)
	if err != nil {
		t.Fatalf("Extract(%s fixture): %v", name, err)
	}
	if len(rows) == 0 {
		t.Fatalf("Extract(%s fixture) gave no rows", name)
	}
	return s, rows
}

// goldenJSON renders rows with named columns in column order, so diffs of golden files read well.
func goldenJSON(t testing.TB, s *Service, rows []Row) []byte {
	t.Helper()
	var b bytes.Buffer
	b.WriteString(`{"service":`)
	b.Write(mustJSON(t, s.Name))
	b.WriteString(`,"rows":[`)
	for i, r := range rows {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"key":`)
		b.Write(mustJSON(t, r.Key))
		b.WriteString(`,"columns":{`)
		for ci, c := range s.Columns {
			if ci > 0 {
				b.WriteByte(',')
			}
			b.Write(mustJSON(t, c.Name))
			b.WriteByte(':')
			b.Write(mustJSON(t, r.Values[ci]))
		}
		b.WriteString(`},"data":`)
		// Data goes to a jsonb column, where key order and spacing are not kept: compare it normalised.
		data, err := parseJSON(r.Data)
		if err != nil {
			t.Fatalf("%s row %d: data is not JSON: %v", s.Name, i, err)
		}
		b.Write(mustJSON(t, data))
		b.WriteString(`}`)
	}
	b.WriteString("]}")
	var out bytes.Buffer
	if err := json.Indent(&out, b.Bytes(), "", "  "); err != nil {
		t.Fatalf("golden JSON for %s: %v", s.Name, err)
	}
	out.WriteByte('\n')
	return out.Bytes()
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := marshalJSON(v)
	if err != nil {
		t.Fatalf("encoding %T: %v", v, err)
	}
	return b
}

func TestGolden(t *testing.T) {
	t.Parallel()
	for _, s := range All() {
		t.Run(s.Name, func(t *testing.T) {
			t.Parallel()
			s, rows := fixtureRows(t, s.Name)
			got := goldenJSON(t, s, rows)
			path := filepath.Join(goldenDir, s.Name+".json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("service %s has no golden row (run with -update): %v", s.Name, err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Extract output differs from %s (run with -update and review the diff):\n%s", path, got)
			}
		})
	}
}

// TestNoStrayFiles keeps fixtures and goldens from outliving a renamed service.
func TestNoStrayFiles(t *testing.T) {
	t.Parallel()
	for _, dir := range []string{fixtureDir, goldenDir} {
		paths, err := filepath.Glob(filepath.Join(dir, "*.json"))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range paths {
			name := strings.TrimSuffix(filepath.Base(p), ".json")
			if _, ok := Lookup(name); !ok {
				t.Errorf("%s belongs to no service", p)
			}
		}
	}
}

func TestCatalog(t *testing.T) {
	t.Parallel()
	all := All()
	if len(all) < 25 {
		t.Errorf("catalog has %d services, want at least 25", len(all))
	}
	if !slices.IsSortedFunc(all, func(a, b *Service) int { return strings.Compare(a.Name, b.Name) }) {
		t.Error("All() is not sorted by name")
	}
	verifiers := []string{VerifierStripe, VerifierGitHub, VerifierShopify, VerifierTwilio, VerifierStandard,
		VerifierIntercom, VerifierHMAC, VerifierSecretHeader, VerifierBasicAuth, VerifierNone}
	for _, s := range all {
		if !namePattern.MatchString(s.Name) {
			t.Errorf("name %q does not match %s", s.Name, namePattern)
		}
		if err := s.validate(); err != nil {
			t.Error(err)
		}
		if got, ok := Lookup(s.Name); !ok || got != s {
			t.Errorf("Lookup(%q) = %v, %v", s.Name, got, ok)
		}
		if s.Description == "" {
			t.Errorf("%s has no description", s.Name)
		}
		if !slices.Contains(verifiers, s.Verifier) {
			t.Errorf("%s has unknown verifier %q", s.Name, s.Verifier)
		}
	}
	all[0] = nil // All returns a copy
	if All()[0] == nil {
		t.Error("All() exposes the catalog slice")
	}
	if _, ok := Lookup("stripe_charge_v2"); ok {
		t.Error("Lookup found a service that does not exist")
	}
}
