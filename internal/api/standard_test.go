package api_test

import (
	"strings"
	"testing"
)

// standard_event_v1 needs no config (its rows are keyed by the delivery's webhook-id); json_v1 still needs its
// key path, and the error says how to pass it.
func TestGenericServicesConfigAtCreation(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	alice := f.user("alice@std.example", false)
	f.must(alice, "POST", "/v1/orgs", map[string]any{"key": "std"}, 201)

	out := f.must(alice, "POST", "/v1/orgs/std/integrations", map[string]any{"service": "standard_event_v1", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, 201)
	in := out["integration"].(map[string]any)
	if in["table_name"] != "standard_event_v1" {
		t.Fatalf("created: %v", out)
	}
	// Clearing the config of an existing integration is accepted too.
	f.must(alice, "PATCH", "/v1/orgs/std/integrations/"+in["opaque_id"].(string), map[string]any{"config": map[string]any{}}, 200)

	const hint = `webhookdb integrations create json_v1 --config '{"remote_key_path":"id"}'`
	for _, body := range []map[string]any{
		{"service": "json_v1"},
		{"service": "json_v1", "config": map[string]any{}},
	} {
		status, out := f.call(alice, "POST", "/v1/orgs/std/integrations", body)
		e, _ := out["error"].(map[string]any)
		msg, _ := e["message"].(string)
		if status != 422 || e["field"] != "config" || !strings.Contains(msg, hint) {
			t.Errorf("%v: %d %v; want 422 on config with %s", body, status, out, hint)
		}
	}
	f.must(alice, "POST", "/v1/orgs/std/integrations", map[string]any{"service": "json_v1", "config": map[string]any{"remote_key_path": "id"}}, 201)

	// Another verifier records no webhook-id: keyed by it, every delivery would fail. Refused, with the way out.
	status, out := f.call(alice, "POST", "/v1/orgs/std/integrations", map[string]any{"service": "standard_event_v1", "secret": "s3cret-header-value-long-enough",
		"verifier": map[string]any{"scheme": "secret_header"}})
	e, _ := out["error"].(map[string]any)
	if msg, _ := e["message"].(string); status != 422 || e["field"] != "config" || !strings.Contains(msg, "remote_key_path") {
		t.Fatalf("standard_event_v1 with another verifier and no key path: %d %v", status, out)
	}
	f.must(alice, "POST", "/v1/orgs/std/integrations", map[string]any{"service": "standard_event_v1", "secret": "s3cret-header-value-long-enough",
		"verifier": map[string]any{"scheme": "secret_header"}, "config": map[string]any{"remote_key_path": "data.id"}}, 201)
}
