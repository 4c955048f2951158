package replicator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

func benchCharge(i int) []byte {
	return fmt.Appendf(nil, `{"id":"evt_%024d","object":"event","created":%d,"type":"charge.updated","data":{"object":{"id":"ch_%024d","object":"charge","amount":%d,"amount_captured":1000,"amount_refunded":0,"balance_transaction":"txn_3PabcdEFGH1234567890","billing_details":{"address":{"city":"Berlin","country":"DE","line1":"Main St 1","line2":null,"postal_code":"10115","state":null},"email":"jenny@example.com","name":"Jenny Rosen","phone":null},"captured":true,"created":%d,"currency":"eur","customer":"cus_QabcdEFGH12345","description":"Order %d","disputed":false,"failure_code":null,"fraud_details":{},"invoice":null,"metadata":{"order_id":"%d"},"outcome":{"network_status":"approved_by_network","reason":null,"risk_level":"normal","risk_score":32,"seller_message":"Payment complete.","type":"authorized"},"paid":true,"payment_intent":"pi_3PabcdEFGH1234567890","payment_method_details":{"card":{"brand":"visa","checks":{"cvc_check":"pass"},"country":"DE","exp_month":8,"exp_year":2030,"last4":"4242"},"type":"card"},"receipt_email":"jenny@example.com","refunded":false,"status":"succeeded"}}}`,
		i, 1719000000+i, i, 1000+i, 1719000000+i, i, i)
}

// BenchmarkExtractStripeCharge is the fanout's per-event extraction cost for a typical Stripe payload.
func BenchmarkExtractStripeCharge(b *testing.B) {
	svc, _ := Lookup("stripe_charge_v1")
	bodies := make([][]byte, 64)
	for i := range bodies {
		bodies[i] = benchCharge(i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := svc.Extract(Webhook{Body: bodies[i%len(bodies)], ReceivedAt: time.Now()}); err != nil {
			b.Fatal(err)
		}
	}
}

// appendJSON writes what encoding/json (HTML escaping off, keys sorted) writes.
func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	strs := []string{"", "plain", "quote \" here", `back\slash`, "tab\there", "nl\n", "\x01ctl", "héllo wörld", "emoji 😀",
		"sep \u2028 line", "para \u2029", "bad \xff utf8", "<html>&amp;", "\u007f del", "mixed é \"q\""}
	for _, s := range strs {
		doc := map[string]any{s: []any{s, json.Number("12.50"), true, nil, map[string]any{"z": s, "a": json.Number("-1e3")}}}
		want, err := func() ([]byte, error) {
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			err := enc.Encode(doc)
			return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), err
		}()
		if err != nil {
			t.Fatal(err)
		}
		got, err := marshalJSON(doc)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%q:\n got %s (%v)\nwant %s", s, got, err, want)
		}
	}
	if _, err := marshalJSON(json.Number("1x")); err == nil {
		t.Error("an invalid number encoded")
	}
}

// A NUL reaches Postgres from neither a JSON nor a form body, whichever way it is written.
func TestNULStrippedOnlyWhereItCanBe(t *testing.T) {
	svc, err := Resolve("json_v1", json.RawMessage(`{"remote_key_path":"id"}`))
	if err != nil {
		t.Fatal(err)
	}
	rows, err := svc.Extract(Webhook{Body: []byte(`{"id":"a\u0000b","v":"x\u0000y"}`)})
	if err != nil || len(rows) != 1 || rows[0].Key != "ab" || bytes.Contains(rows[0].Data, []byte(`\u0000`)) {
		t.Fatalf("rows %+v, %v", rows, err)
	}
	if mayHoldNUL([]byte(`{"a":"b"}`), FormatJSON) || !mayHoldNUL([]byte("a=%00"), FormatForm) {
		t.Fatal("mayHoldNUL")
	}
}
