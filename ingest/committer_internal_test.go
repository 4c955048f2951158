package ingest

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/webhookdb-go/webhookdb/internal/pgtest"
	"github.com/webhookdb-go/webhookdb/internal/staging"
)

// A batch holding a row Postgres refuses (bytes that are not UTF-8 in a text column, a NUL in jsonb) commits
// every other row: only the offending ones fail, each with a permanent answer of its own.
func TestCommitterIsolatesRowsPostgresRefuses(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewDB(t)
	c := NewCommitter(pool, CommitterConfig{})
	row := func(i int) *staging.Row {
		return &staging.Row{ReceivedAt: time.Now(), OrgID: 1, IntegrationID: int64(i), Method: "POST", Path: "/p",
			Headers: []byte(`{}`), Body: []byte(`{}`), Accepted: true}
	}
	var batch []*pending
	bad := map[int]bool{3: true, 11: true}
	for i := 0; i < 16; i++ {
		r := row(i)
		switch i {
		case 3:
			r.Query = "a=\xff"
		case 11:
			r.Headers = []byte(`{"X":"\u0000"}`)
		}
		batch = append(batch, &pending{row: r, done: make(chan error, 1)})
	}
	c.commit(context.Background(), batch)
	for i, p := range batch {
		err := <-p.done
		var refused *RefusedError
		switch {
		case bad[i] && !errors.As(err, &refused):
			t.Errorf("row %d: %v, want a RefusedError", i, err)
		case bad[i] && (refused.Status != http.StatusUnprocessableEntity || refused.Reason == ""):
			t.Errorf("row %d: refused with %d %q", i, refused.Status, refused.Reason)
		case !bad[i] && err != nil:
			t.Errorf("row %d: %v, want committed", i, err)
		}
	}
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM staging.webhooks`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != len(batch)-len(bad) {
		t.Fatalf("%d rows committed, want %d", n, len(batch)-len(bad))
	}
}
