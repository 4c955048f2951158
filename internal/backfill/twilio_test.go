package backfill_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/webhookdb-go/webhookdb/internal/backfill"
	"github.com/webhookdb-go/webhookdb/internal/backfill/backfilltest"
)

// Twilio messages through next_page_uri and a 429: each once; an account SID without its token is refused,
// a wrong token too, with Twilio's message; then incremental by DateSent>.
func TestTwilioMessages(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, backfill.Config{})
	fake := backfilltest.NewTwilio(backfilltest.TwilioConfig{RateLimitEvery: 3, FailOnce: true})
	defer fake.Close()
	fake.AddMessages("a", 2500, time.Now().Add(-72*time.Hour))
	orgID := e.org()
	in := e.integration(orgID, "twilio_sms_v1")
	sid, token := fake.Credentials()
	if _, err := e.svc.SetCredentials(ctx, in, backfill.CredentialParams{Key: &sid, BaseURL: ptr(fake.URL), ServerAdmin: true}); !errors.Is(err, backfill.ErrCredentials) {
		t.Fatalf("an account SID without its token: %v, want ErrCredentials", err)
	}
	_, err := e.svc.SetCredentials(ctx, in, backfill.CredentialParams{Key: &sid, Secret: ptr("wrong"), BaseURL: ptr(fake.URL), ServerAdmin: true})
	var ve *backfill.VendorError
	if !errors.As(err, &ve) || ve.Status != 401 || !strings.Contains(ve.Message, "Authenticate (error 20003") {
		t.Fatalf("a wrong token: %v", err)
	}
	e.setCredentials(in, backfill.CredentialParams{Key: &sid, Secret: &token, BaseURL: ptr(fake.URL)})
	e.run()
	job := e.backfillOnce(in, false, backfill.KindFull, 2500)
	if job.PagesDone != 3 {
		t.Fatalf("%d pages, want 3", job.PagesDone)
	}
	fake.AddMessages("b", 5, time.Now())
	e.backfillOnce(in, false, backfill.KindIncremental, 5)
}
