package fanout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/webhookdb-go/webhookdb/internal/pgerr"
	"github.com/webhookdb-go/webhookdb/internal/secrets"
)

var (
	// ErrNoPublication means the publication to consume does not exist (the migrations create it).
	ErrNoPublication = errors.New("publication does not exist")
	// ErrSlotMismatch means a slot of the configured name exists but cannot serve the fanout.
	ErrSlotMismatch = errors.New("replication slot exists with another plugin or database")
)

// Consumer is the fanout: a logical replication consumer of the staging publication that applies each
// accepted webhook to its org's database.
type Consumer struct {
	pool     *pgxpool.Pool
	replCfg  *pgconn.Config
	cfg      Config
	metrics  *metrics
	resolver *resolver
	conns    *connPool

	schemaMu sync.Mutex
	schema   map[schemaKey]bool

	// source keys this consumer's rows in org meta tables; set by each session before its workers start
	source string

	notify notifyState // issue 14: the outbox relay's wake-ups (notify.go)
}

// New returns a consumer of the application database at appDBURL (the replication connection is opened
// from it; appPool serves everything else). It does not connect; Run does.
func New(appDBURL string, appPool *pgxpool.Pool, box secrets.Box, cfg Config, reg prometheus.Registerer) (*Consumer, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("invalid fanout configuration: %w", err)
	}
	if appPool == nil || box == nil {
		return nil, errors.New("fanout needs the application database pool and the secrets box")
	}
	replCfg, err := pgconn.ParseConfig(appDBURL)
	if err != nil {
		return nil, fmt.Errorf("error parsing the database URL: %w", err)
	}
	replCfg.RuntimeParams["replication"] = "database"
	replCfg.RuntimeParams["application_name"] = "webhookdb-fanout"
	// decode.go parses the text output of these types under exactly these settings
	replCfg.RuntimeParams["timezone"] = "UTC"
	replCfg.RuntimeParams["datestyle"] = "ISO, MDY"
	replCfg.RuntimeParams["bytea_output"] = "hex"
	cfg.Logger = cfg.Logger.With(slog.String("slot", cfg.Slot))
	m := newMetrics(reg)
	return &Consumer{
		pool:     appPool,
		replCfg:  replCfg,
		cfg:      cfg,
		metrics:  m,
		resolver: newResolver(appPool, box, cfg.CacheTTL, cfg.Writers),
		conns:    newConnPool(cfg.MaxOrgConns, cfg.Workers, cfg.OrgConnIdleTimeout, m, cfg.Logger),
		schema:   map[schemaKey]bool{},
	}, nil
}

// EnsureSlot creates the replication slot when it does not exist, and returns once the slot is consistent
// (creating one waits for transactions running anywhere on the server to end). Changes committed before that
// never reach the fanout, so a deployment calls this before it accepts webhooks (Run calls it too).
func (c *Consumer) EnsureSlot(ctx context.Context) error {
	var plugin, database, current string
	err := c.pool.QueryRow(ctx, `
		SELECT s.plugin, s.database, current_database() FROM pg_replication_slots s WHERE s.slot_name = $1`,
		c.cfg.Slot).Scan(&plugin, &database, &current)
	if err == nil {
		if plugin != "pgoutput" || database != current {
			return fmt.Errorf("%w: slot %s uses plugin %s on database %s", ErrSlotMismatch, c.cfg.Slot, plugin, database)
		}
		return nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("error reading replication slot %s: %w", c.cfg.Slot, err)
	}
	var pub bool
	if err := c.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, c.cfg.Publication).Scan(&pub); err != nil {
		return fmt.Errorf("error reading publication %s: %w", c.cfg.Publication, err)
	}
	if !pub {
		return fmt.Errorf("%w: %s", ErrNoPublication, c.cfg.Publication)
	}
	_, err = c.pool.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, c.cfg.Slot)
	if err != nil && !pgerr.Is(err, pgerrcode.DuplicateObject) { // created concurrently
		return fmt.Errorf("error creating replication slot %s: %w", c.cfg.Slot, err)
	}
	c.cfg.Logger.InfoContext(ctx, "created replication slot")
	return nil
}

// Run consumes the stream until ctx ends. A failed session (the application database restarted, the slot
// was busy...) is retried with backoff; everything not acknowledged is replayed by the next session.
func (c *Consumer) Run(ctx context.Context) error {
	defer c.conns.closeIdle(true)
	wait := c.cfg.ReconnectMin
	for {
		start := time.Now()
		err := c.runSession(ctx)
		if ctx.Err() != nil {
			c.metrics.sessions.WithLabelValues("ok").Inc()
			return nil
		}
		c.metrics.sessions.WithLabelValues("error").Inc()
		if time.Since(start) > time.Minute {
			wait = c.cfg.ReconnectMin
		}
		c.cfg.Logger.ErrorContext(ctx, "fanout session ended; reconnecting", slog.String("error", errString(err)), slog.Duration("retry_in", wait))
		t := time.NewTimer(time.Duration(float64(wait) * (0.8 + 0.4*rand.Float64())))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		wait = min(wait*2, c.cfg.ReconnectMax)
	}
}

func errString(err error) string {
	if err == nil {
		return "session ended"
	}
	return err.Error()
}

// observe counts a committed org transaction.
func (c *Consumer) observe(applied int, changes []*change, start time.Time) {
	now := time.Now()
	c.metrics.rowsApplied.Add(float64(applied))
	c.metrics.applySeconds.Observe(now.Sub(start).Seconds())
	if c.cfg.OnApplied == nil || changes == nil {
		return
	}
	times := make([]time.Time, 0, len(changes))
	received := make([]time.Time, 0, len(changes))
	for _, ch := range changes {
		if ch.txn != nil {
			times = append(times, ch.txn.commitTime)
			received = append(received, ch.receivedAt)
		}
	}
	c.cfg.OnApplied(Applied{OrgID: changes[0].orgID, CommitTimes: times, ReceivedAts: received, At: now})
}
