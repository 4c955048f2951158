package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/webhookdb-go/webhookdb/internal/staging"
)

var (
	// ErrOverloaded means the commit queue stayed full until the request gave up.
	ErrOverloaded = errors.New("ingest queue is full")
	// ErrStopped means the committer is shutting down.
	ErrStopped = errors.New("ingest committer stopped")
)

type pending struct {
	row  *staging.Row
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
func (c *Committer) Submit(ctx context.Context, row *staging.Row) error {
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

func (c *Committer) insert(ctx context.Context, batch []*pending) error {
	rows := make([]staging.Row, len(batch))
	for i, p := range batch {
		rows[i] = *p.row
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return staging.Insert(ctx, c.pool, rows)
}
