package replicator

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

func mustLookup(t testing.TB, name string) *Service {
	t.Helper()
	s, ok := Lookup(name)
	if !ok {
		t.Fatalf("no service %s", name)
	}
	return s
}

func mustResolve(t testing.TB, name, config string) *Service {
	t.Helper()
	s, err := Resolve(name, json.RawMessage(config))
	if err != nil {
		t.Fatalf("Resolve(%s, %s): %v", name, config, err)
	}
	return s
}

func jsonHook(body string, header ...string) Webhook {
	h := http.Header{}
	for i := 0; i+1 < len(header); i += 2 {
		h.Set(header[i], header[i+1])
	}
	return Webhook{Header: h, ContentType: "application/json", Body: []byte(body), ReceivedAt: time.Date(2024, 3, 15, 12, 0, 0, 0, time.UTC)}
}

func value(t testing.TB, s *Service, r Row, column string) any {
	t.Helper()
	for i, c := range s.Columns {
		if c.Name == column {
			return r.Values[i]
		}
	}
	t.Fatalf("%s has no column %s", s.Name, column)
	return nil
}

// Every vendor's fixtures cross-fed to its other services give no rows: the filters tell resources apart.
func TestEventFilterAcrossFixtures(t *testing.T) {
	t.Parallel()
	sameEvent := map[[2]string]bool{
		{"stripe_subscription_v1", "stripe_subscription_item_v1"}: true,
		{"stripe_subscription_item_v1", "stripe_subscription_v1"}: true,
	}
	for _, s := range All() {
		if s.Configurable() {
			continue
		}
		vendor, _, _ := strings.Cut(s.Name, "_")
		for _, other := range All() {
			if other == s || !strings.HasPrefix(other.Name, vendor+"_") || sameEvent[[2]string{s.Name, other.Name}] {
				continue
			}
			if s.Name == "postmark_inbound_message_v1" {
				continue // inbound has no event type to filter on; see TestPostmarkInboundTakesAnyMessage
			}
			_, w := fixtureService(t, other.Name)
			rows, err := s.Extract(w)
			if err != nil || len(rows) != 0 {
				t.Errorf("%s.Extract(%s fixture) = %d rows, %v; want none", s.Name, other.Name, len(rows), err)
			}
		}
	}
}

func TestPostmarkInboundTakesAnyMessage(t *testing.T) {
	t.Parallel()
	s := mustLookup(t, "postmark_inbound_message_v1")
	rows, err := s.Extract(jsonHook(`{"MessageID":"m-1","From":"a@example.com"}`))
	if err != nil || len(rows) != 1 || rows[0].Key != "m-1" {
		t.Fatalf("Extract = %v, %v", rows, err)
	}
}

func TestEventFilterNonMatching(t *testing.T) {
	t.Parallel()
	cases := []struct {
		service, fixture string
		change           func(*Webhook)
	}{
		{"github_issue_v1", "github_issue_v1", func(w *Webhook) { w.Header.Set("X-GitHub-Event", "ping") }},
		{"github_issue_v1", "github_issue_v1", func(w *Webhook) { w.Header.Del("X-GitHub-Event") }},
		{"shopify_order_v1", "shopify_order_v1", func(w *Webhook) { w.Header.Set("X-Shopify-Topic", "orders/delete") }},
		{"shopify_order_v1", "shopify_order_v1", func(w *Webhook) { w.Header.Set("X-Shopify-Topic", "orders/edited") }},
		{"stripe_charge_v1", "stripe_dispute_v1", nil},
		{"stripe_customer_v1", "stripe_charge_v1", nil},
		{"postmark_outbound_message_event_v1", "postmark_inbound_message_v1", nil},
		{"intercom_conversation_v1", "intercom_contact_v1", nil},
		{"json_v1", "json_v1", func(w *Webhook) {
			w.Body = bytes.Replace(w.Body, []byte(`"shipment.status_changed"`), []byte(`"shipment.created"`), 1)
		}},
		{"standard_event_v1", "standard_event_v1", func(w *Webhook) {
			w.Body = bytes.Replace(w.Body, []byte(`"invoice.finalized"`), []byte(`"invoice.voided"`), 1)
		}},
	}
	for _, c := range cases {
		f := loadFixture(t, c.fixture)
		w := f.webhook()
		if c.change != nil {
			c.change(&w)
		}
		cfg := loadFixture(t, c.service).Config
		s, err := Resolve(c.service, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if c.service == "json_v1" {
			s = mustResolve(t, "json_v1", `{"remote_key_path":"shipment.tracking_code","event_type_path":"event","event_types":["shipment.status_changed"]}`)
		}
		rows, err := s.Extract(w)
		if err != nil || len(rows) != 0 {
			t.Errorf("%s.Extract(changed %s fixture) = %d rows, %v; want none", c.service, c.fixture, len(rows), err)
		}
	}
}

func TestListResource(t *testing.T) {
	t.Parallel()
	s, rows := fixtureRows(t, "stripe_subscription_item_v1")
	if len(rows) != 2 || rows[0].Key == rows[1].Key {
		t.Fatalf("subscription items: got %d rows %v", len(rows), rows)
	}
	if got := value(t, s, rows[1], "quantity"); got != int64(3) {
		t.Errorf("second item quantity = %v", got)
	}

	s = mustResolve(t, "json_v1", `{"remote_key_path":"sku"}`)
	rows, err := s.Extract(jsonHook(`[{"sku":"a"},{"sku":"b","qty":2},{"sku":"c"}]`))
	if err != nil || len(rows) != 3 || rows[2].Key != "c" || normJSON(t, rows[1].Data) != `{"qty":2,"sku":"b"}` {
		t.Fatalf("array body: %v, %v", rows, err)
	}
	rows, err = s.Extract(jsonHook(`[]`))
	if err != nil || len(rows) != 0 {
		t.Fatalf("empty array body: %v, %v", rows, err)
	}
}

func TestMalformed(t *testing.T) {
	t.Parallel()
	stripe := mustLookup(t, "stripe_charge_v1")
	github := mustLookup(t, "github_issue_v1")
	twilio := mustLookup(t, "twilio_sms_v1")
	generic := mustResolve(t, "json_v1", `{"remote_key_path":"id"}`)
	postmark := mustLookup(t, "postmark_outbound_message_event_v1")
	cases := []struct {
		name string
		s    *Service
		w    Webhook
	}{
		{"empty body", stripe, jsonHook(``)},
		{"bad JSON", stripe, jsonHook(`{"type":"charge.succeeded",`)},
		{"trailing data", generic, jsonHook(`{"id":"a"} {"id":"b"}`)},
		{"missing key", stripe, jsonHook(`{"created":1,"data":{"object":{"object":"charge","amount":5}}}`)},
		{"empty key", generic, jsonHook(`{"id":""}`)},
		{"object key", generic, jsonHook(`{"id":{"nested":1}}`)},
		{"null key", generic, jsonHook(`{"id":null}`)},
		{"key missing in one element", generic, jsonHook(`[{"id":"a"},{"name":"b"}]`)},
		{"missing resource", github, jsonHook(`{"action":"opened"}`, "X-GitHub-Event", "issues")},
		{"null resource", github, jsonHook(`{"action":"opened","issue":null}`, "X-GitHub-Event", "issues")},
		{"bad form", twilio, Webhook{Body: []byte("MessageSid=SM1&To=%zz")}},
		{"form without sid", twilio, Webhook{Body: []byte("MessageStatus=sent&To=%2B15035550142")}},
		{"composite key half missing", postmark, jsonHook(`{"RecordType":"Open","ReceivedAt":"2024-03-15T12:00:00Z"}`)},
	}
	for _, c := range cases {
		rows, err := c.s.Extract(c.w)
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Extract = %v, %v; want ErrMalformed", c.name, rows, err)
		}
	}

	base := mustLookup(t, "json_v1")
	if _, err := base.Extract(jsonHook(`{"id":"a"}`)); !errors.Is(err, ErrNotConfigured) {
		t.Errorf("unconfigured json_v1: %v, want ErrNotConfigured", err)
	}
}

func TestFormBody(t *testing.T) {
	t.Parallel()
	s := mustLookup(t, "twilio_sms_v1")
	rows, err := s.Extract(Webhook{Body: []byte("SmsSid=SM9&SmsStatus=received&Body=hi+there&MediaUrl=a&MediaUrl=b&NumMedia=2")})
	if err != nil || len(rows) != 1 {
		t.Fatalf("Extract = %v, %v", rows, err)
	}
	r := rows[0]
	if r.Key != "SM9" || value(t, s, r, "status") != "received" || value(t, s, r, "num_media") != int32(2) ||
		value(t, s, r, "date_updated") != nil {
		t.Errorf("row = %+v", r)
	}
	want := `{"Body":"hi there","MediaUrl":["a","b"],"NumMedia":"2","SmsSid":"SM9","SmsStatus":"received"}`
	if string(r.Data) != want {
		t.Errorf("data = %s, want %s", r.Data, want)
	}
}

func TestNULRemoved(t *testing.T) {
	t.Parallel()
	s := mustResolve(t, "json_v1", `{"remote_key_path":"id"}`)
	body := `{"id":"a\u0000b","note":"x\u0000\u0000y","k\u0000ey":["\u0000"],"escaped":"\\u0000 stays","nul\u0000":1,"nul":2}`
	rows, err := s.Extract(jsonHook(body))
	if err != nil || len(rows) != 1 {
		t.Fatalf("Extract = %v, %v", rows, err)
	}
	if rows[0].Key != "ab" {
		t.Errorf("key = %q", rows[0].Key)
	}
	data := string(rows[0].Data)
	if strings.Contains(data, `\u0000"`) || strings.Contains(data, "\x00") {
		t.Errorf("data still has NUL: %s", data)
	}
	var got map[string]any
	if err := json.Unmarshal(rows[0].Data, &got); err != nil {
		t.Fatal(err)
	}
	if got["note"] != "xy" || !reflect.DeepEqual(got["key"], []any{""}) || got["escaped"] != `\u0000 stays` {
		t.Errorf("data = %s", data)
	}
	if _, ok := got["nul"]; !ok || len(got) != 5 {
		t.Errorf("keys after NUL removal: %s", data)
	}
}

func TestDataKeepsNumbersAndMarkup(t *testing.T) {
	t.Parallel()
	s := mustResolve(t, "json_v1", `{"remote_key_path":"id"}`)
	rows, err := s.Extract(jsonHook(`{"id":12345678901234567890,"amount":1.10,"html":"<b>&</b>"}`))
	if err != nil {
		t.Fatal(err)
	}
	if rows[0].Key != "12345678901234567890" || normJSON(t, rows[0].Data) != `{"amount":1.10,"html":"<b>&</b>","id":12345678901234567890}` {
		t.Errorf("row = %s %s", rows[0].Key, rows[0].Data)
	}
}

func mustNumeric(t testing.TB, s string) pgtype.Numeric {
	t.Helper()
	var n pgtype.Numeric
	if err := n.ScanScientific(s); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestConvert(t *testing.T) {
	t.Parallel()
	utc := func(s string) time.Time {
		ts, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return ts.UTC()
	}
	cases := []struct {
		json string
		typ  string
		conv Converter
		want any
	}{
		{`"abc"`, TypeText, 0, "abc"},
		{`12.50`, TypeText, 0, "12.50"},
		{`true`, TypeText, 0, "true"},
		{`{"a":1}`, TypeText, 0, nil},
		{`[1]`, TypeText, 0, nil},
		{`null`, TypeText, 0, nil},
		{`42`, TypeBigint, 0, int64(42)},
		{`"-42"`, TypeBigint, 0, int64(-42)},
		{`9223372036854775807`, TypeBigint, 0, int64(9223372036854775807)},
		{`9223372036854775808`, TypeBigint, 0, nil},
		{`1.5`, TypeBigint, 0, nil},
		{`"12abc"`, TypeBigint, 0, nil},
		{`true`, TypeBigint, 0, nil},
		{`2147483647`, TypeInteger, 0, int32(2147483647)},
		{`2147483648`, TypeInteger, 0, nil},
		{`"199.00"`, TypeNumeric, 0, mustNumeric(t, "199.00")},
		{`1e3`, TypeNumeric, 0, mustNumeric(t, "1e3")},
		{`"NaN"`, TypeNumeric, 0, nil},
		{`true`, TypeBoolean, 0, true},
		{`"false"`, TypeBoolean, 0, false},
		{`1`, TypeBoolean, 0, nil},
		{`{"a":[1,"x"]}`, TypeJSONB, 0, json.RawMessage(`{"a":[1,"x"]}`)},
		{`null`, TypeJSONB, 0, nil},
		{`["a",1,null,{"b":2},true]`, TypeTextArray, 0, []string{"a", "1", "true"}},
		{`[]`, TypeTextArray, 0, []string{}},
		{`"a"`, TypeTextArray, 0, nil},
		{`"2024-03-15T07:59:40-04:00"`, TypeTimestamptz, 0, utc("2024-03-15T11:59:40Z")},
		{`"2024-03-15 07:59:40+0530"`, TypeTimestamptz, 0, utc("2024-03-15T02:29:40Z")},
		{`"2024-03-15T07:59:40+05"`, TypeTimestamptz, 0, utc("2024-03-15T02:59:40Z")},
		{`"2019-11-05T16:33:54.9070259Z"`, TypeTimestamptz, 0, utc("2019-11-05T16:33:54.907026Z")},
		{`"2024-03-15T07:59:40"`, TypeTimestamptz, 0, utc("2024-03-15T07:59:40Z")},
		{`"2024-03-15"`, TypeTimestamptz, 0, utc("2024-03-15T00:00:00Z")},
		{`"2024-13-15T07:59:40Z"`, TypeTimestamptz, 0, nil},
		{`"yesterday"`, TypeTimestamptz, 0, nil},
		{`1710504000`, TypeTimestamptz, 0, nil},
		{`1710504000`, TypeTimestamptz, ConvertUnixSeconds, utc("2024-03-15T12:00:00Z")},
		{`"1710504000"`, TypeTimestamptz, ConvertUnixSeconds, utc("2024-03-15T12:00:00Z")},
		{`1710504000.5`, TypeTimestamptz, ConvertUnixSeconds, nil},
		{`1710504000123`, TypeTimestamptz, ConvertUnixSeconds, nil},
		{`1710504000123`, TypeTimestamptz, ConvertUnixMillis, utc("2024-03-15T12:00:00.123Z")},
		{`"Mon, 16 Aug 2010 03:45:01 +0000"`, TypeTimestamptz, ConvertRFC1123, utc("2010-08-16T03:45:01Z")},
		{`"Fri, 1 Mar 2024 07:45:01 -0500"`, TypeTimestamptz, ConvertRFC1123, utc("2024-03-01T12:45:01Z")},
		{`"2010-08-16T03:45:01Z"`, TypeTimestamptz, ConvertRFC1123, nil},
		{`1710504000`, TypeTimestamptz, ConvertAutoTime, utc("2024-03-15T12:00:00Z")},
		{`1710504000123`, TypeTimestamptz, ConvertAutoTime, utc("2024-03-15T12:00:00.123Z")},
		{`"2024-03-15T12:00:00Z"`, TypeTimestamptz, ConvertAutoTime, utc("2024-03-15T12:00:00Z")},
	}
	for _, c := range cases {
		v, err := parseJSON([]byte(c.json))
		if err != nil {
			t.Fatal(err)
		}
		got := convert(v, c.typ, c.conv)
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("convert(%s, %s, %d) = %#v, want %#v", c.json, c.typ, c.conv, got, c.want)
		}
	}
}

func TestFallbacksAndHeaders(t *testing.T) {
	t.Parallel()
	s := mustLookup(t, "postmark_outbound_message_event_v1")
	rows, err := s.Extract(jsonHook(`{"RecordType":"Open","MessageID":"m1","Recipient":"a@example.com","ReceivedAt":"2024-03-15T12:00:00Z","DeliveredAt":null}`))
	if err != nil || len(rows) != 1 {
		t.Fatalf("Extract = %v, %v", rows, err)
	}
	if rows[0].Key != "m1:Open" || value(t, s, rows[0], "occurred_at") != time.Date(2024, 3, 15, 12, 0, 0, 0, time.UTC) {
		t.Errorf("row = %+v", rows[0])
	}

	hs := &Service{
		Name: "test_header_v1", RemoteKey: Column{Name: "id", Type: TypeText, From: FromHeader, Header: "X-Id"},
		Columns: []Column{{Name: "n", Type: TypeBigint, From: FromHeader, Header: "X-N"}}, Policy: DataChanged,
	}
	if err := hs.validate(); err != nil {
		t.Fatal(err)
	}
	rows, err = hs.Extract(jsonHook(`{}`, "X-Id", "abc", "X-N", "17"))
	if err != nil || rows[0].Key != "abc" || rows[0].Values[0] != int64(17) {
		t.Errorf("header columns: %+v, %v", rows, err)
	}
}

func TestDedupe(t *testing.T) {
	t.Parallel()
	at := func(sec int) any { return time.Unix(int64(sec), 0).UTC() }
	row := func(key string, ts any, tag string) Row {
		return Row{Key: key, Values: []any{ts}, Data: []byte(`"` + tag + `"`)}
	}
	svc := func(p ConflictPolicy) *Service {
		return &Service{Name: "test_dedupe_v1", Columns: []Column{{Name: "ts", Type: TypeTimestamptz}}, TimestampColumn: "ts", Policy: p}
	}
	tags := func(rows []Row) string {
		var out []string
		for _, r := range rows {
			out = append(out, r.Key+"="+strings.Trim(string(r.Data), `"`))
		}
		return strings.Join(out, " ")
	}
	in := []Row{
		row("a", at(5), "a1"),
		row("b", at(1), "b1"),
		row("a", at(9), "a2"),
		row("c", nil, "c1"),
		row("a", at(7), "a3"),
		row("b", at(1), "b2"),
		row("c", at(2), "c2"),
		row("d", at(3), "d1"),
		row("c", nil, "c3"),
		row("d", nil, "d2"),
	}
	cases := map[ConflictPolicy]string{
		NewerWins:   "a=a2 b=b2 c=c2 d=d1",
		DataChanged: "a=a3 b=b2 c=c3 d=d2",
		Immutable:   "a=a1 b=b1 c=c1 d=d1",
	}
	for p, want := range cases {
		if got := tags(svc(p).Dedupe(in)); got != want {
			t.Errorf("%s: Dedupe = %s, want %s", p, got, want)
		}
	}
	unique := in[:2]
	if got := svc(NewerWins).Dedupe(unique); &got[0] != &unique[0] || len(got) != 2 {
		t.Error("Dedupe copied a batch without duplicates")
	}
}

func TestResolve(t *testing.T) {
	t.Parallel()
	for _, cfg := range []string{``, `null`, `{}`, ` { } `} {
		s, err := Resolve("stripe_charge_v1", json.RawMessage(cfg))
		if err != nil || s != mustLookup(t, "stripe_charge_v1") {
			t.Errorf("Resolve(stripe_charge_v1, %q) = %v, %v", cfg, s, err)
		}
	}
	if _, err := Resolve("nope_v1", nil); !errors.Is(err, ErrUnknownService) {
		t.Errorf("unknown service: %v", err)
	}
	bad := []struct{ name, config string }{
		{"stripe_charge_v1", `{"remote_key_path":"id"}`},
		{"stripe_charge_v1", `[]`},
		{"stripe_charge_v1", `{} {}`},
		{"json_v1", ``},
		{"json_v1", `{}`},
		{"json_v1", `{"timestamp_path":"ts"}`},
		{"json_v1", `{"remote_key_path":"id","extra":1}`},
		{"json_v1", `{"remote_key_path":"a..b"}`},
		{"json_v1", `{"remote_key_path":".a"}`},
		{"json_v1", `{"remote_key_path":"id","timestamp_path":"a."}`},
		{"json_v1", `{"remote_key_path":"id","event_types":["x"]}`},
		{"json_v1", `{"remote_key_path":"id","event_type_path":"type","event_types":[""]}`},
		{"json_v1", `{"remote_key_path":7}`},
		{"json_v1", `{"remote_key_path":"id"} x`},
		{"json_v1", `"id"`},
	}
	for _, c := range bad {
		if s, err := Resolve(c.name, json.RawMessage(c.config)); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("Resolve(%s, %s) = %v, %v; want ErrInvalidConfig", c.name, c.config, s, err)
		}
	}

	s := mustResolve(t, "json_v1", `{"remote_key_path":"id"}`)
	if s.Policy != DataChanged || s.Events.Path != "" {
		t.Errorf("json_v1 without timestamp: policy %s, filter %+v", s.Policy, s.Events)
	}
	s = mustResolve(t, "json_v1", `{"remote_key_path":"id","timestamp_path":"at","event_type_path":"kind","event_types":["a","b"]}`)
	if s.Policy != NewerWins || s.Events.Path != "kind" || len(s.Events.Equals) != 2 {
		t.Errorf("json_v1 configured: policy %s, filter %+v", s.Policy, s.Events)
	}
	s = mustResolve(t, "standard_event_v1", `{"remote_key_path":"data.id"}`)
	if s.Policy != NewerWins || s.Events.Path != "type" {
		t.Errorf("standard_event_v1 defaults: policy %s, filter %+v", s.Policy, s.Events)
	}
	base := mustLookup(t, "json_v1")
	if base.RemoteKey.Path != "" || base.Columns[0].Path != "" {
		t.Error("Resolve modified the catalog entry")
	}
}

func TestUpsertShape(t *testing.T) {
	t.Parallel()
	s, rows := fixtureRows(t, "stripe_subscription_item_v1")
	sql1, args1 := s.Upsert("org", "items", rows[:1])
	sql2, args2 := s.Upsert("org", "items", append(rows, rows...))
	if sql1 != sql2 {
		t.Error("Upsert SQL depends on the batch")
	}
	if len(args1) != len(s.Columns)+2 || len(args2) != len(args1) {
		t.Fatalf("got %d args for %d columns", len(args1), len(s.Columns))
	}
	if keys := args2[0].(EncodedArray); keys.Elem != pgtype.TextOID || binary.BigEndian.Uint32(keys.Bytes[12:]) != 2 {
		t.Errorf("duplicates not collapsed: keys %+v", keys)
	}
	if !strings.Contains(sql1, `INSERT INTO "org"."items" AS cur`) || !strings.Contains(sql1, "unnest($1::text[]") {
		t.Errorf("unexpected SQL:\n%s", sql1)
	}
	if sql, _ := mustLookup(t, "postmark_inbound_message_v1").Upsert("", "t", nil); !strings.HasSuffix(sql, "DO NOTHING") {
		t.Errorf("immutable upsert:\n%s", sql)
	}
}

func TestIndexName(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 60)
	a, b := indexName(long, "column_a"), indexName(long, "column_b")
	if len(a) > maxIdentifierLen || a == b {
		t.Errorf("index names %q, %q", a, b)
	}
	if got := indexName("stripe_charge_v1", "customer"); got != "stripe_charge_v1_customer_idx" {
		t.Errorf("indexName = %q", got)
	}
}

// A remote key too long for the key column's btree index is refused at extraction, with its length; one at
// the limit is fine.
func TestKeyTooLongToIndex(t *testing.T) {
	t.Parallel()
	generic := mustResolve(t, "json_v1", `{"remote_key_path":"id"}`)
	long := strings.Repeat("x", 3200)
	rows, err := generic.Extract(jsonHook(`{"id":"` + long + `"}`))
	if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "remote key is 3200 bytes, longer than 2000") {
		t.Fatalf("3,200-byte key: Extract = %v, %v; want ErrMalformed naming its length", rows, err)
	}
	rows, err = generic.Extract(jsonHook(`{"id":"` + strings.Repeat("y", MaxKeyBytes) + `"}`))
	if err != nil || len(rows) != 1 {
		t.Fatalf("key at the limit: %v, %v", rows, err)
	}
}

// normJSON is data as jsonb keeps it, for comparing: keys sorted, no spacing, numbers as written.
func normJSON(t testing.TB, data []byte) string {
	t.Helper()
	v, err := parseJSON(data)
	if err != nil {
		t.Fatalf("data is not JSON: %v: %s", err, data)
	}
	b, err := marshalJSON(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The Go matchers of the digit-only patterns accept exactly what the patterns (the SQL side's) accept.
func TestSignedDigitsMatchPatterns(t *testing.T) {
	pairs := []struct {
		pattern string
		m       signedDigits
	}{{bigintPattern, bigintRE}, {integerPattern, integerRE}, {unixSecPattern, unixSecRE}, {unixMilliPattern, unixMilliRE}, {autoMilliPattern, autoMilliRE}}
	inputs := []string{"", "-", "--1", "0", "-0", "1", "+1", " 1", "1 ", "1.0", "1e3", "12a", "٣", "１",
		"1234567890", "-1234567890", "12345678901", "123456789012", "1234567890123", "12345678901234", "123456789012345",
		"1234567890123456789", "-1234567890123456789", "12345678901234567890", "1719000000", "1719000000123"}
	for _, p := range pairs {
		re := regexp.MustCompile(p.pattern)
		for _, in := range inputs {
			if got, want := p.m.MatchString(in), re.MatchString(in); got != want {
				t.Errorf("%s: %q matched %v, the pattern says %v", p.pattern, in, got, want)
			}
		}
	}
}

func FuzzSignedDigits(f *testing.F) {
	for _, s := range []string{"", "-", "-12", "1719000000123", "12345678901234567890", "1.5"} {
		f.Add(s)
	}
	pairs := []struct {
		re *regexp.Regexp
		m  signedDigits
	}{{regexp.MustCompile(bigintPattern), bigintRE}, {regexp.MustCompile(integerPattern), integerRE},
		{regexp.MustCompile(unixSecPattern), unixSecRE}, {regexp.MustCompile(unixMilliPattern), unixMilliRE},
		{regexp.MustCompile(autoMilliPattern), autoMilliRE}}
	f.Fuzz(func(t *testing.T, in string) {
		for _, p := range pairs {
			if got, want := p.m.MatchString(in), p.re.MatchString(in); got != want {
				t.Errorf("%s: %q matched %v, the pattern says %v", p.re, in, got, want)
			}
		}
	})
}
