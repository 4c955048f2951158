package replicator

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

const standardBody = `{"type":"invoice.paid","timestamp":"2024-03-15T12:00:01.5Z","data":{"id":"inv_1","total":"9.90"}}`

func standardHook(deliveryID, body string) Webhook {
	w := jsonHook(body, "Webhook-Id", deliveryID)
	w.DeliveryID = deliveryID
	return w
}

// Without configuration every delivery is its own row, keyed by its delivery id, with type and timestamp read
// from the Standard Webhooks envelope.
func TestStandardEventWithoutConfig(t *testing.T) {
	t.Parallel()
	for _, cfg := range []string{``, `null`, `{}`} {
		s, err := Resolve("standard_event_v1", json.RawMessage(cfg))
		if err != nil {
			t.Fatalf("Resolve(standard_event_v1, %q): %v", cfg, err)
		}
		if s.RemoteKey.From != FromDeliveryID || s.RemoteKey.Name != genericKeyColumn || s.Policy != NewerWins {
			t.Errorf("config %q: remote key %+v, policy %s", cfg, s.RemoteKey, s.Policy)
		}
		rows, err := s.Extract(standardHook("msg_1", standardBody))
		if err != nil || len(rows) != 1 {
			t.Fatalf("config %q: Extract = %v, %v", cfg, rows, err)
		}
		r := rows[0]
		if r.Key != "msg_1" {
			t.Errorf("config %q: key %q, want the delivery id msg_1", cfg, r.Key)
		}
		if got := value(t, s, r, genericEventTypeColumn); got != "invoice.paid" {
			t.Errorf("config %q: event_type %v", cfg, got)
		}
		if got := value(t, s, r, genericTimeColumn); got != time.Date(2024, 3, 15, 12, 0, 1, 500e6, time.UTC) {
			t.Errorf("config %q: event_timestamp %v", cfg, got)
		}
		if normJSON(t, r.Data) != `{"data":{"id":"inv_1","total":"9.90"},"timestamp":"2024-03-15T12:00:01.5Z","type":"invoice.paid"}` {
			t.Errorf("config %q: data %s", cfg, r.Data)
		}
	}

	s := mustResolve(t, "standard_event_v1", `{}`)
	// The same event in two deliveries is two rows.
	a, errA := s.Extract(standardHook("msg_a", standardBody))
	b, errB := s.Extract(standardHook("msg_b", standardBody))
	if errA != nil || errB != nil || len(a) != 1 || len(b) != 1 || a[0].Key == b[0].Key {
		t.Errorf("two deliveries: %v %v, %v %v", a, errA, b, errB)
	}
	// Without a delivery id there is nothing to key by: permanent, and the error says what is missing.
	_, err := s.Extract(jsonHook(standardBody))
	if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "webhook-id") {
		t.Errorf("no delivery id: %v, want ErrMalformed naming webhook-id", err)
	}
	// event_types alone filters on the default type path.
	s = mustResolve(t, "standard_event_v1", `{"event_types":["invoice.created"]}`)
	if rows, err := s.Extract(standardHook("msg_2", standardBody)); err != nil || len(rows) != 0 {
		t.Errorf("filtered out type: %v, %v", rows, err)
	}
	// A Unix timestamp works too (senders that do not follow the spec's RFC 3339).
	s = mustResolve(t, "standard_event_v1", ``)
	rows, err := s.Extract(standardHook("msg_3", `{"type":"x","timestamp":1710504001,"data":{}}`))
	if err != nil || len(rows) != 1 || value(t, s, rows[0], genericTimeColumn) != time.Unix(1710504001, 0).UTC() {
		t.Errorf("unix timestamp: %v, %v", rows, err)
	}

	base := mustLookup(t, "standard_event_v1")
	if base.RemoteKey.From != FromResource || base.RemoteKey.Path != "" || base.Columns[0].Path != "" {
		t.Error("Resolve modified the catalog entry")
	}
	if _, err := base.Extract(standardHook("msg_4", standardBody)); !errors.Is(err, ErrNotConfigured) {
		t.Errorf("catalog entry without Resolve: %v, want ErrNotConfigured", err)
	}
}

// The table has the same shape whatever the configuration, so switching between the delivery id and a
// configured key needs no DDL.
func TestStandardEventTableShapeIndependentOfKey(t *testing.T) {
	t.Parallel()
	byDelivery := mustResolve(t, "standard_event_v1", `{}`)
	byPath := mustResolve(t, "standard_event_v1", `{"remote_key_path":"data.id"}`)
	if !slices.Equal(byDelivery.EnsureTableSQL("public", "t"), byPath.EnsureTableSQL("public", "t")) {
		t.Errorf("DDL differs:\n%v\n%v", byDelivery.EnsureTableSQL("public", "t"), byPath.EnsureTableSQL("public", "t"))
	}
}

func TestStandardEventConfigWins(t *testing.T) {
	t.Parallel()
	s := mustResolve(t, "standard_event_v1", `{"remote_key_path":"data.id"}`)
	rows, err := s.Extract(standardHook("msg_1", standardBody))
	if err != nil || len(rows) != 1 || rows[0].Key != "inv_1" {
		t.Fatalf("configured key: %v, %v", rows, err)
	}
	if got := value(t, s, rows[0], genericEventTypeColumn); got != "invoice.paid" {
		t.Errorf("event_type %v", got)
	}
	// A configured key does not need a delivery id.
	if rows, err := s.Extract(jsonHook(standardBody)); err != nil || len(rows) != 1 || rows[0].Key != "inv_1" {
		t.Errorf("configured key, no delivery id: %v, %v", rows, err)
	}
	// Explicit paths replace the Standard Webhooks defaults.
	s = mustResolve(t, "standard_event_v1", `{"event_type_path":"data.kind","timestamp_path":"data.at"}`)
	rows, err = s.Extract(standardHook("msg_5", `{"type":"t","timestamp":"2020-01-01T00:00:00Z","data":{"kind":"k","at":"2024-01-02T03:04:05Z"}}`))
	if err != nil || len(rows) != 1 || rows[0].Key != "msg_5" || value(t, s, rows[0], genericEventTypeColumn) != "k" ||
		value(t, s, rows[0], genericTimeColumn) != time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC) {
		t.Errorf("explicit paths: %v, %v", rows, err)
	}
}

// json_v1 has no envelope to fall back on: the key path stays required, and the error shows how to pass it.
func TestJSONRequiresKeyPathWithUsableHint(t *testing.T) {
	t.Parallel()
	const hint = `webhookdb integrations create json_v1 --config '{"remote_key_path":"id"}'`
	for _, cfg := range []string{``, `null`, `{}`, `{"timestamp_path":"ts"}`} {
		_, err := Resolve("json_v1", json.RawMessage(cfg))
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "remote_key_path is required") || !strings.Contains(err.Error(), hint) {
			t.Errorf("Resolve(json_v1, %q) = %v; want ErrInvalidConfig with %s", cfg, err, hint)
		}
	}
	// The suggested config is itself accepted.
	suggested := hint[strings.Index(hint, "'")+1 : strings.LastIndex(hint, "'")]
	if _, err := Resolve("json_v1", json.RawMessage(suggested)); err != nil {
		t.Errorf("the suggested config %s: %v", suggested, err)
	}
}

func TestDeliveryIDColumnValidation(t *testing.T) {
	t.Parallel()
	ok := Column{Name: "k", Type: TypeText, From: FromDeliveryID}
	if err := ok.validate(); err != nil {
		t.Errorf("plain delivery-id column: %v", err)
	}
	for name, c := range map[string]Column{
		"path":   {Name: "k", Type: TypeText, From: FromDeliveryID, Path: "id"},
		"header": {Name: "k", Type: TypeText, From: FromDeliveryID, Header: "Webhook-Id"},
		"type":   {Name: "k", Type: TypeBigint, From: FromDeliveryID},
	} {
		if err := c.validate(); err == nil {
			t.Errorf("delivery-id column with %s: accepted", name)
		}
	}
}
