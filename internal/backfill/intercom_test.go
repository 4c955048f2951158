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

// Intercom contacts with cursor paging and a 429 waited out until X-RateLimit-Reset; then incremental through
// the search endpoint by updated_at. An org admin may pick a region, not a host.
func TestIntercomContacts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, backfill.Config{})
	fake := backfilltest.NewIntercom(backfilltest.IntercomConfig{RateLimitEvery: 3, FailOnce: true})
	defer fake.Close()
	fake.AddContacts("a", 400, time.Now().Add(-72*time.Hour))
	orgID := e.org()
	in := e.integration(orgID, "intercom_contact_v1")
	_, err := e.svc.SetCredentials(ctx, in, backfill.CredentialParams{Key: ptr("wrong"), BaseURL: ptr(fake.URL), ServerAdmin: true})
	var ve *backfill.VendorError
	if !errors.As(err, &ve) || !strings.Contains(ve.Message, "Access Token Invalid") {
		t.Fatalf("a wrong token: %v", err)
	}
	if _, err := e.svc.SetCredentials(ctx, in, backfill.CredentialParams{Key: ptr("x"), Options: json.RawMessage(`{"region":"mars"}`)}); !errors.Is(err, backfill.ErrCredentials) {
		t.Fatalf("an unknown region: %v", err)
	}
	if _, err := e.svc.SetCredentials(ctx, in, backfill.CredentialParams{Key: ptr("x"), BaseURL: ptr("https://api.eu.intercom.io.evil.example")}); !errors.Is(err, backfill.ErrBaseURL) {
		t.Fatalf("a look-alike host: %v", err)
	}
	e.setCredentials(in, backfill.CredentialParams{Key: ptr(fake.Token()), BaseURL: ptr(fake.URL)})
	e.run()
	job := e.backfillOnce(in, false, backfill.KindFull, 400)
	if job.PagesDone != 3 {
		t.Fatalf("%d pages, want 3", job.PagesDone)
	}
	fake.AddContacts("b", 4, time.Now())
	e.backfillOnce(in, false, backfill.KindIncremental, 4)
}

// Intercom conversations: their list holds them under "conversations", with the same cursor paging.
func TestIntercomConversations(t *testing.T) {
	t.Parallel()
	e := newEnv(t, backfill.Config{})
	fake := backfilltest.NewIntercom(backfilltest.IntercomConfig{})
	defer fake.Close()
	fake.AddConversations("c", 200, time.Now().Add(-72*time.Hour))
	in := e.integration(e.org(), "intercom_conversation_v1")
	e.setCredentials(in, backfill.CredentialParams{Key: ptr(fake.Token()), BaseURL: ptr(fake.URL), Options: json.RawMessage(`{"region":"eu"}`)})
	e.run()
	if job := e.backfillOnce(in, false, backfill.KindFull, 200); job.PagesDone != 2 {
		t.Fatalf("%d pages, want 2", job.PagesDone)
	}
	fake.AddConversations("d", 2, time.Now())
	e.backfillOnce(in, false, backfill.KindIncremental, 2)
}
