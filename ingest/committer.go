package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

var (
	// ErrOverloaded means the commit queue stayed full until the request gave up.
	ErrOverloaded = errors.New("ingest queue is full")
	// ErrStopped means the committer is shutting down.
	ErrStopped = errors.New("ingest committer stopped")
)

// Row is one request as stored in staging.webhooks.
type Row struct {
	ReceivedAt     time.Time
	OrgID          int64
	IntegrationID  int64
	DeliveryID     string
	Method         string
	Path           string
	Query          string
	ContentType    string
	Headers        []byte // JSON object
	Body           []byte
	BodyTruncated  bool
	Accepted       bool
	RejectedReason string
}

type pending struct {
	row  *Row
	done chan error
}

// CommitterConfig tunes group commit.
type CommitterConfig struct {
	// MaxRows bounds one transaction; default 500.
	MaxRows int
	// MaxWait is how long a batch waits for company while another commit is in flight; default 1ms.
	// A request that arrives while nothing is committing goes at once.
	MaxWait time.Duration
	// Workers is how many transactions may be in flight at once; default 4.
	Workers int
	// QueueSize bounds requests waiting for a worker; default 10,000.
	QueueSize int
	Logger    *slog.Logger
	Metrics   *Metrics
}

func (c CommitterConfig) withDefaults() CommitterConfig {
	if c.MaxRows == 0 {
		c.MaxRows = 500
	}
	if c.MaxWait == 0 {
		c.MaxWait = time.Millisecond
	}
	if c.Workers == 0 {
		c.Workers = 4
	}
	if c.QueueSize == 0 {
		c.QueueSize = 10_000
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Committer group-commits rows into staging.webhooks: concurrent requests share one multi-row INSERT, and
// each learns the outcome of the transaction that carried its row. Synchronous commit stays on, so a nil
// result means the row is durable.
type Committer struct {
	pool     *pgxpool.Pool
	cfg      CommitterConfig
	queue    chan *pending
	inflight atomic.Int32
	stopped  chan struct{}
}

// NewCommitter returns a committer; Run starts its workers.
func NewCommitter(pool *pgxpool.Pool, cfg CommitterConfig) *Committer {
	cfg = cfg.withDefaults()
	return &Committer{pool: pool, cfg: cfg, queue: make(chan *pending, cfg.QueueSize), stopped: make(chan struct{})}
}

// Submit queues a row and waits until its transaction commits (nil) or fails.
func (c *Committer) Submit(ctx context.Context, row *Row) error {
	p := &pending{row: row, done: make(chan error, 1)}
	select {
	case c.queue <- p:
	case <-c.stopped:
		return ErrStopped
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrOverloaded, ctx.Err())
	}
	// Once queued the row will be written: wait for the verdict even if the sender hangs up, so the
	// answer we would have given is the truth.
	select {
	case err := <-p.done:
		return err
	case <-c.stopped:
		return ErrStopped
	}
}

// Run commits batches until ctx ends, then commits what is still queued and returns.
func (c *Committer) Run(ctx context.Context) error {
	done := make(chan struct{})
	for i := 0; i < c.cfg.Workers; i++ {
		go func() {
			defer func() { done <- struct{}{} }()
			c.work(ctx)
		}()
	}
	for i := 0; i < c.cfg.Workers; i++ {
		<-done
	}
	// Drain: anything queued before shutdown still gets its answer.
	drainCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	for {
		batch := c.collect(nil, false)
		if len(batch) == 0 {
			break
		}
		c.commit(drainCtx, batch)
	}
	close(c.stopped)
	return nil
}

func (c *Committer) work(ctx context.Context) {
	batch := make([]*pending, 0, c.cfg.MaxRows)
	for {
		select {
		case p := <-c.queue:
			batch = append(batch[:0], p)
		case <-ctx.Done():
			return
		}
		batch = c.collect(batch, c.inflight.Load() > 0)
		c.commit(context.WithoutCancel(ctx), batch)
	}
}

// collect adds what is already queued to batch; when wait is set it also lingers up to MaxWait for more.
func (c *Committer) collect(batch []*pending, wait bool) []*pending {
	var timer <-chan time.Time
	if wait {
		t := time.NewTimer(c.cfg.MaxWait)
		defer t.Stop()
		timer = t.C
	}
	for len(batch) < c.cfg.MaxRows {
		select {
		case p := <-c.queue:
			batch = append(batch, p)
			continue
		default:
		}
		if timer == nil {
			return batch
		}
		select {
		case p := <-c.queue:
			batch = append(batch, p)
		case <-timer:
			return batch
		}
	}
	return batch
}

func (c *Committer) commit(ctx context.Context, batch []*pending) {
	c.inflight.Add(1)
	start := time.Now()
	err := c.insert(ctx, batch)
	if isMissingPartition(err) {
		// Partitions are made days ahead; if one is missing anyway (clock jump, upkeep not run), make it now
		// rather than fail the webhook.
		if perr := ensurePartitionsFor(ctx, c.pool, batch); perr == nil {
			err = c.insert(ctx, batch)
		} else {
			c.cfg.Logger.ErrorContext(ctx, "error creating missing partition", slog.String("error", perr.Error()))
		}
	}
	c.inflight.Add(-1)
	if m := c.cfg.Metrics; m != nil {
		m.batchRows.Observe(float64(len(batch)))
		m.commitSeconds.Observe(time.Since(start).Seconds())
	}
	if err != nil {
		c.cfg.Logger.ErrorContext(ctx, "error committing webhooks", slog.Int("rows", len(batch)), slog.String("error", err.Error()))
	}
	for _, p := range batch {
		p.done <- err
	}
}

const insertSQL = `
INSERT INTO staging.webhooks (received_at, org_id, integration_id, delivery_id, method, path, query, content_type,
	headers, body, body_truncated, accepted, rejected_reason)
SELECT * FROM unnest($1::timestamptz[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[],
	$8::text[], $9::jsonb[], $10::bytea[], $11::boolean[], $12::boolean[], $13::text[])`

func (c *Committer) insert(ctx context.Context, batch []*pending) error {
	n := len(batch)
	var (
		receivedAt    = make([]time.Time, n)
		orgID         = make([]int64, n)
		integrationID = make([]int64, n)
		deliveryID    = make([]*string, n)
		method        = make([]string, n)
		path          = make([]string, n)
		query         = make([]string, n)
		contentType   = make([]string, n)
		headers       = make([]string, n)
		body          = make([][]byte, n)
		truncated     = make([]bool, n)
		accepted      = make([]bool, n)
		reason        = make([]*string, n)
	)
	for i, p := range batch {
		r := p.row
		receivedAt[i], orgID[i], integrationID[i] = r.ReceivedAt, r.OrgID, r.IntegrationID
		if r.DeliveryID != "" {
			deliveryID[i] = &r.DeliveryID
		}
		method[i], path[i], query[i], contentType[i] = r.Method, r.Path, r.Query, r.ContentType
		headers[i], body[i], truncated[i], accepted[i] = string(r.Headers), r.Body, r.BodyTruncated, r.Accepted
		if !r.Accepted {
			reason[i] = &r.RejectedReason
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := c.pool.Exec(ctx, insertSQL, receivedAt, orgID, integrationID, deliveryID, method, path, query, contentType,
		headers, body, truncated, accepted, reason)
	if err != nil {
		return fmt.Errorf("error inserting %d webhooks: %w", n, err)
	}
	return nil
}

func isMissingPartition(err error) bool {
	var pgErr *pgconn.PgError
	// A partitioned table with no partition for the row raises check_violation with this message.
	return errors.As(err, &pgErr) && pgErr.Code == "23514" && strings.Contains(pgErr.Message, "no partition of relation")
}

func ensurePartitionsFor(ctx context.Context, pool *pgxpool.Pool, batch []*pending) error {
	days := map[string]bool{}
	for _, p := range batch {
		days[p.row.ReceivedAt.UTC().Format(time.DateOnly)] = true
	}
	for day := range days {
		if _, err := pool.Exec(ctx, `SELECT staging.ensure_partitions($1::date, 1)`, day); err != nil {
			return fmt.Errorf("error creating partition for %s: %w", day, err)
		}
	}
	return nil
}
