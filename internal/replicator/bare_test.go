package replicator

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

// A Stripe object listed from the API lands in the same row as its webhook, versioned by its fetch time; an
// event listed from /v1/events is read as the webhook it is.
func TestStripeBareObject(t *testing.T) {
	t.Parallel()
	s := mustLookup(t, "stripe_charge_v1")
	fetched := time.Date(2024, 3, 15, 12, 0, 0, 0, time.UTC)
	w := Webhook{Body: []byte(`{"id":"ch_1","object":"charge","amount":500,"created":1700000000,"customer":"cus_9"}`), ReceivedAt: fetched, Bare: true}
	rows, err := s.Extract(w)
	if err != nil || len(rows) != 1 {
		t.Fatalf("bare charge: %v, %d rows", err, len(rows))
	}
	if rows[0].Key != "ch_1" || value(t, s, rows[0], "amount") != int64(500) || value(t, s, rows[0], "customer") != "cus_9" {
		t.Fatalf("bare charge row: %+v", rows[0])
	}
	if got := value(t, s, rows[0], "updated"); got != fetched {
		t.Fatalf("bare charge version: %v, want the fetch time %v", got, fetched)
	}
	// Another object type is not this table's.
	if rows, err := s.Extract(Webhook{Body: []byte(`{"id":"cus_1","object":"customer"}`), ReceivedAt: fetched, Bare: true}); err != nil || len(rows) != 0 {
		t.Fatalf("a customer fed to charges: %v, %d rows", err, len(rows))
	}
	// An event from /v1/events: the event's created is the version, as for the webhook.
	ev := `{"id":"evt_1","object":"event","created":1710000000,"type":"charge.updated","data":{"object":{"id":"ch_1","object":"charge","amount":700}}}`
	rows, err = s.Extract(Webhook{Body: []byte(ev), ReceivedAt: fetched, Bare: true})
	if err != nil || len(rows) != 1 || value(t, s, rows[0], "amount") != int64(700) {
		t.Fatalf("listed event: %v, %+v", err, rows)
	}
	if got := value(t, s, rows[0], "updated"); got != time.Unix(1710000000, 0).UTC() {
		t.Fatalf("listed event version: %v", got)
	}
	// A subscription's items, each its own row, versioned by the fetch.
	items := mustLookup(t, "stripe_subscription_item_v1")
	sub := `{"id":"sub_1","object":"subscription","items":{"object":"list","data":[{"id":"si_1","object":"subscription_item","quantity":2,"subscription":"sub_1"},{"id":"si_2","object":"subscription_item","quantity":1,"subscription":"sub_1"}]}}`
	rows, err = items.Extract(Webhook{Body: []byte(sub), ReceivedAt: fetched, Bare: true})
	if err != nil || len(rows) != 2 || rows[1].Key != "si_2" || value(t, items, rows[0], "updated") != fetched {
		t.Fatalf("subscription items: %v, %+v", err, rows)
	}
}

func TestBareObjectWithoutMapping(t *testing.T) {
	t.Parallel()
	s := mustLookup(t, "postmark_inbound_message_v1")
	if s.ReadsBareObjects() {
		t.Fatal("postmark gained a bare mapping: this test needs a service without one")
	}
	_, err := s.Extract(Webhook{Body: []byte(`{}`), Bare: true})
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("a bare object for a service without a mapping: %v, want ErrMalformed", err)
	}
}

// GitHub's REST objects are the webhook's resources; a listed release comes with its repository beside it.
func TestGitHubBareObject(t *testing.T) {
	t.Parallel()
	issues := mustLookup(t, "github_issue_v1")
	rows, err := issues.Extract(Webhook{Body: []byte(`{"id":7,"number":3,"title":"t","state":"open","updated_at":"2024-05-01T10:00:00Z","user":{"login":"u"}}`), Bare: true})
	if err != nil || len(rows) != 1 || rows[0].Key != "7" || value(t, issues, rows[0], "updated_at") != time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC) {
		t.Fatalf("bare issue: %v, %+v", err, rows)
	}
	releases := mustLookup(t, "github_release_v1")
	rows, err = releases.Extract(Webhook{Body: []byte(`{"release":{"id":9,"tag_name":"v1"},"repository":{"full_name":"o/r"}}`), Bare: true})
	if err != nil || len(rows) != 1 || rows[0].Key != "9" || value(t, releases, rows[0], "repository_full_name") != "o/r" || string(rows[0].Data) != `{"id":9,"tag_name":"v1"}` {
		t.Fatalf("bare release: %v, %+v", err, rows)
	}
}

// Twilio's JSON Message from the REST API and the form-encoded status callback land in the same row.
func TestTwilioBareMessage(t *testing.T) {
	t.Parallel()
	s := mustLookup(t, "twilio_sms_v1")
	callback, err := s.Extract(Webhook{Body: []byte("MessageSid=SM123&AccountSid=AC1&MessageStatus=sent&To=%2B15551230000&From=%2B15559870000&NumSegments=1"),
		ReceivedAt: time.Date(2024, 3, 15, 12, 0, 0, 0, time.UTC)})
	if err != nil || len(callback) != 1 {
		t.Fatalf("callback: %v, %+v", err, callback)
	}
	api, err := s.Extract(Webhook{Body: []byte(`{"sid":"SM123","account_sid":"AC1","status":"delivered","to":"+15551230000","from":"+15559870000","num_segments":"1","num_media":"0","error_code":null,"date_updated":"Fri, 15 Mar 2024 12:00:05 +0000"}`), Bare: true})
	if err != nil || len(api) != 1 {
		t.Fatalf("API message: %v, %+v", err, api)
	}
	if api[0].Key != callback[0].Key {
		t.Fatalf("keys differ: API %q, callback %q", api[0].Key, callback[0].Key)
	}
	for _, c := range []string{"account_sid", "to", "from", "num_segments"} {
		if a, b := value(t, s, api[0], c), value(t, s, callback[0], c); a != b {
			t.Fatalf("column %s: API %v, callback %v", c, a, b)
		}
	}
	if got := value(t, s, api[0], "date_updated"); got != time.Date(2024, 3, 15, 12, 0, 5, 0, time.UTC) {
		t.Fatalf("API message version: %v, want Twilio's date_updated", got)
	}
	if value(t, s, api[0], "status") != "delivered" {
		t.Fatalf("status: %v", value(t, s, api[0], "status"))
	}
}

// Intercom's REST object is the notification's item.
func TestIntercomBareObject(t *testing.T) {
	t.Parallel()
	s := mustLookup(t, "intercom_contact_v1")
	rows, err := s.Extract(Webhook{Body: []byte(`{"type":"contact","id":"c1","email":"a@example.com","updated_at":1710000000}`), Bare: true})
	if err != nil || len(rows) != 1 || rows[0].Key != "c1" || value(t, s, rows[0], "updated_at") != time.Unix(1710000000, 0).UTC() {
		t.Fatalf("bare contact: %v, %+v", err, rows)
	}
	if rows, err := s.Extract(Webhook{Body: []byte(`{"type":"conversation","id":"v1"}`), Bare: true}); err != nil || len(rows) != 0 {
		t.Fatalf("a conversation fed to contacts: %v, %d rows", err, len(rows))
	}
}

// A Shopify GraphQL node lands in the REST webhook's row: keyed by legacyResourceId, enums lower-cased, tags
// joined as REST sends them.
func TestShopifyBareNode(t *testing.T) {
	t.Parallel()
	s := mustLookup(t, "shopify_product_v1")
	hook, err := s.Extract(jsonHook(`{"id":788032119674292922,"title":"Hat","handle":"hat","status":"active","tags":"summer, wool","vendor":"Acme","product_type":"Hats","created_at":"2024-01-02T10:00:00-05:00","updated_at":"2024-03-01T10:00:00-05:00"}`,
		"X-Shopify-Topic", "products/update"))
	if err != nil || len(hook) != 1 {
		t.Fatalf("webhook: %v, %+v", err, hook)
	}
	node, err := s.Extract(Webhook{Body: []byte(`{"id":"gid://shopify/Product/788032119674292922","legacyResourceId":"788032119674292922","title":"Hat","handle":"hat","status":"ACTIVE","tags":["summer","wool"],"vendor":"Acme","productType":"Hats","createdAt":"2024-01-02T15:00:00Z","updatedAt":"2024-03-01T15:00:00Z","publishedAt":null}`), Bare: true})
	if err != nil || len(node) != 1 {
		t.Fatalf("GraphQL node: %v, %+v", err, node)
	}
	if node[0].Key != hook[0].Key {
		t.Fatalf("keys: node %q, webhook %q", node[0].Key, hook[0].Key)
	}
	for i, c := range s.Columns {
		if c.Name == "published_at" {
			continue
		}
		if a, b := node[0].Values[i], hook[0].Values[i]; !reflect.DeepEqual(a, b) {
			t.Errorf("column %s: node %#v, webhook %#v", c.Name, a, b)
		}
	}
}

// A Shopify order node: money, customer and statuses from their GraphQL places.
func TestShopifyBareOrder(t *testing.T) {
	t.Parallel()
	s := mustLookup(t, "shopify_order_v1")
	rows, err := s.Extract(Webhook{Body: []byte(`{"id":"gid://shopify/Order/450789469","legacyResourceId":"450789469","name":"#1001","email":"bob@example.com","createdAt":"2024-01-02T15:00:00Z","updatedAt":"2024-03-01T15:00:00Z","currencyCode":"USD","displayFinancialStatus":"PARTIALLY_REFUNDED","displayFulfillmentStatus":"FULFILLED","totalPriceSet":{"shopMoney":{"amount":"10.50","currencyCode":"USD"}},"customer":{"legacyResourceId":"207119551"}}`), Bare: true})
	if err != nil || len(rows) != 1 || rows[0].Key != "450789469" {
		t.Fatalf("order node: %v, %+v", err, rows)
	}
	for col, want := range map[string]any{"customer_id": int64(207119551), "financial_status": "partially_refunded", "fulfillment_status": "fulfilled", "currency": "USD", "name": "#1001", "order_number": nil} {
		if got := value(t, s, rows[0], col); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %#v, want %#v", col, got, want)
		}
	}
	if total := value(t, s, rows[0], "total_price"); total == nil {
		t.Error("total_price from totalPriceSet.shopMoney.amount is NULL")
	}
}
