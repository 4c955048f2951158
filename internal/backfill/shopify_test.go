package backfill_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/webhookdb-go/webhookdb/internal/backfill"
	"github.com/webhookdb-go/webhookdb/internal/backfill/backfilltest"
)

// Shopify products through the GraphQL Admin API: cursor paging, the cost throttle waited out, a refused token
// with Shopify's reason, the shop's host only for org admins; then incremental with updated_at:>.
func TestShopifyProducts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, backfill.Config{})
	fake := backfilltest.NewShopify(backfilltest.ShopifyConfig{Bucket: 250, RestoreRate: 200, FailOnce: true})
	defer fake.Close()
	fake.AddProducts(450, time.Now().Add(-72*time.Hour))
	orgID := e.org()
	in := e.integration(orgID, "shopify_product_v1")
	_, err := e.svc.SetCredentials(ctx, in, backfill.CredentialParams{Key: ptr("shpat_wrong"), BaseURL: ptr(fake.URL), ServerAdmin: true})
	var ve *backfill.VendorError
	if !errors.As(err, &ve) || ve.Status != 401 || !strings.Contains(ve.Message, "Invalid API key or access token") {
		t.Fatalf("a wrong token: %v", err)
	}
	for _, opts := range []string{`{}`, `{"shop":"acme","api_version":"2025-02"}`, `{"shop":"acme.evil.com"}`} {
		if _, err := e.svc.SetCredentials(ctx, in, backfill.CredentialParams{Key: ptr("x"), Options: json.RawMessage(opts)}); !errors.Is(err, backfill.ErrCredentials) {
			t.Fatalf("options %s: %v, want ErrCredentials", opts, err)
		}
	}
	if _, err := e.svc.SetCredentials(ctx, in, backfill.CredentialParams{Key: ptr("x"), BaseURL: ptr("https://evil.example/x.myshopify.com")}); !errors.Is(err, backfill.ErrBaseURL) {
		t.Fatalf("another host: %v, want ErrBaseURL", err)
	}
	e.setCredentials(in, backfill.CredentialParams{Key: ptr(fake.Token()), BaseURL: ptr(fake.URL), Options: json.RawMessage(`{"api_version":"2024-10"}`)})
	e.run()
	job := e.backfillOnce(in, false, backfill.KindFull, 450)
	if job.PagesDone != 5 {
		t.Fatalf("%d pages, want 5", job.PagesDone)
	}
	if fake.Throttled() == 0 {
		t.Fatal("the cost bucket never throttled: the test does not exercise the wait")
	}
	fake.AddProducts(3, time.Now())
	e.backfillOnce(in, false, backfill.KindIncremental, 3)
}

// Shopify orders: the orders connection, the same paging.
func TestShopifyOrders(t *testing.T) {
	t.Parallel()
	e := newEnv(t, backfill.Config{})
	fake := backfilltest.NewShopify(backfilltest.ShopifyConfig{})
	defer fake.Close()
	fake.AddOrders(130, time.Now().Add(-72*time.Hour))
	in := e.integration(e.org(), "shopify_order_v1")
	e.setCredentials(in, backfill.CredentialParams{Key: ptr(fake.Token()), BaseURL: ptr(fake.URL)})
	e.run()
	if job := e.backfillOnce(in, false, backfill.KindFull, 130); job.PagesDone != 2 {
		t.Fatalf("%d pages, want 2", job.PagesDone)
	}
}
