package ingest_test

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/internal/secrets"
)

// flakyBox is a box whose key service can go away: Decrypt fails (not ErrDecrypt: unreachable) while down.
type flakyBox struct {
	secrets.Box
	down     atomic.Bool
	decrypts atomic.Int64
}

func (f *flakyBox) Decrypt(ctx context.Context, b secrets.Binding, ct string) ([]byte, error) {
	f.decrypts.Add(1)
	if f.down.Load() {
		return nil, errors.New("dial tcp 127.0.0.1:8200: connect: connection refused")
	}
	return f.Box.Decrypt(ctx, b, ct)
}

// While the key service (Vault) is unreachable, an integration whose secret was never decrypted answers 503
// with Retry-After, never 401, so senders retry; once Vault is back it verifies without being touched. One whose
// secret is already in memory keeps verifying through an outage, even when its row changes meanwhile.
func TestUndecryptableSecretAnswers503AndRecovers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	box := &flakyBox{Box: newKeyring(t)}
	box.down.Store(true)
	e := newEnvBox(t, box, nil, nil, nil, nil)
	in := e.integration("stripe_charge_v1", "whsec_a")
	// Its row changed long ago and a newer one exists: the cache's polls no longer return it, so only its own
	// retry can decrypt it once Vault is back.
	// (Past the trigger that stamps updated_at.)
	if err := pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL session_replication_role = replica`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE service_integrations SET updated_at = now() - interval '1 hour' WHERE id = $1`, in.ID)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	e.integration("stripe_charge_v1", "whsec_other")
	body := stripeEvent("evt_vault")
	send := func() *http.Response { return post(t, e.url(in), body, stripeHeaders("whsec_a", body, time.Now())) }

	// Through several polls while Vault is down: 503 with Retry-After every time.
	for n := box.decrypts.Load(); box.decrypts.Load() < n+3; {
		resp := send()
		readAll(t, resp)
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("secret not decryptable yet: %d (Retry-After %q), want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Vault back: the cache decrypts again by itself.
	box.down.Store(false)
	eventuallyStatus(t, 5*time.Second, http.StatusAccepted, send)

	// Vault down again, and the row changes (polls rebuild it: seen by its body limit): the secret in memory
	// keeps verifying.
	box.down.Store(true)
	if _, err := e.pool.Exec(ctx, `UPDATE service_integrations SET body_limit_bytes = 10, updated_at = now() WHERE id = $1`, in.ID); err != nil {
		t.Fatal(err)
	}
	eventuallyStatus(t, 5*time.Second, http.StatusRequestEntityTooLarge, send)
	if _, err := e.pool.Exec(ctx, `UPDATE service_integrations SET body_limit_bytes = NULL, updated_at = now() WHERE id = $1`, in.ID); err != nil {
		t.Fatal(err)
	}
	eventuallyStatus(t, 5*time.Second, http.StatusAccepted, send)
}
