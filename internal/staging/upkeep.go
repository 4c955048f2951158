package staging

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// UpkeepConfig tunes partition upkeep.
type UpkeepConfig struct {
	// DaysAhead is how many future days have partitions; default 7.
	DaysAhead int
	// Retention is how long rows are kept; default 7 days. Partitions wholly older are dropped once the
	// fanout has applied (or parked elsewhere) every row in them.
	Retention time.Duration
	// Interval between runs; default 10 minutes.
	Interval time.Duration
	// Slot is the fanout's replication slot; default DefaultSlot.
	Slot string
	// CloseMargin is how long after a day ends its partition is closed; default 1 minute.
	CloseMargin time.Duration
	// Holders keep a partition that rows still needed point into (the fanout's parked changes).
	Holders []Holder
	// Registerer, when set, receives the upkeep's metrics.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	Now        func() time.Time
}

// Holder answers whether rows received in [from, to) are still needed by someone other than the slot: the
// fanout while it holds parked changes that point at them. Upkeep never drops a partition a holder counts in.
type Holder interface {
	RowsHeld(ctx context.Context, from, to time.Time) (int64, error)
}

func (c UpkeepConfig) withDefaults() UpkeepConfig {
	if c.DaysAhead == 0 {
		c.DaysAhead = 7
	}
	if c.Retention == 0 {
		c.Retention = 7 * 24 * time.Hour
	}
	if c.Interval == 0 {
		c.Interval = 10 * time.Minute
	}
	if c.Slot == "" {
		c.Slot = DefaultSlot
	}
	if c.CloseMargin == 0 {
		c.CloseMargin = time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Upkeep creates staging partitions ahead of time and drops expired ones.
type Upkeep struct {
	pool       *pgxpool.Pool
	cfg        UpkeepConfig
	partitions *prometheus.CounterVec
}

// NewUpkeep returns partition upkeep; Run runs it periodically.
func NewUpkeep(pool *pgxpool.Pool, cfg UpkeepConfig) *Upkeep {
	u := &Upkeep{pool: pool, cfg: cfg.withDefaults(), partitions: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "webhookdb_staging_partitions_total", Help: "Staging partitions created and dropped by upkeep.",
	}, []string{"action"})}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(u.partitions)
	}
	return u
}

// Run runs upkeep now and then every Interval until ctx ends.
func (u *Upkeep) Run(ctx context.Context) error {
	t := time.NewTicker(u.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := u.RunOnce(ctx); err != nil && ctx.Err() == nil {
			u.cfg.Logger.ErrorContext(ctx, "partition upkeep failed", slog.String("error", err.Error()))
		}
		if err := RunPendingResyncs(ctx, u.pool, u.cfg.Logger); err != nil && ctx.Err() == nil {
			u.cfg.Logger.ErrorContext(ctx, "resync failed", slog.String("error", err.Error()))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// UpkeepResult says what one run did.
type UpkeepResult struct {
	Created int
	Dropped []string
	Kept    []string // expired but still needed by the fanout
}

// RunOnce creates missing partitions, closes finished days, and drops expired partitions that are safe to drop.
func (u *Upkeep) RunOnce(ctx context.Context) (*UpkeepResult, error) {
	res := &UpkeepResult{}
	now := u.cfg.Now().UTC()
	today := now.Truncate(24 * time.Hour)
	if err := u.pool.QueryRow(ctx, `SELECT staging.ensure_partitions($1::date, $2)`, today.AddDate(0, 0, -1), u.cfg.DaysAhead+2).Scan(&res.Created); err != nil {
		return nil, fmt.Errorf("error creating partitions: %w", err)
	}
	u.partitions.WithLabelValues("created").Add(float64(res.Created))

	parts, err := u.list(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range parts {
		dayEnd := p.day.AddDate(0, 0, 1)
		if !p.closed && now.After(dayEnd.Add(u.cfg.CloseMargin)) {
			if _, err := u.pool.Exec(ctx, `
				INSERT INTO staging.partitions (name, day, closed_lsn, closed_at) VALUES ($1, $2, pg_current_wal_lsn(), now())
				ON CONFLICT (name) DO UPDATE SET closed_lsn = EXCLUDED.closed_lsn, closed_at = EXCLUDED.closed_at
				WHERE staging.partitions.closed_lsn IS NULL`, p.name, p.day); err != nil {
				return nil, fmt.Errorf("error closing partition %s: %w", p.name, err)
			}
			p.closed = true
		}
		if !now.After(dayEnd.Add(u.cfg.Retention)) {
			continue
		}
		safe, why, err := u.safeToDrop(ctx, p)
		if err != nil {
			return nil, err
		}
		if !safe {
			res.Kept = append(res.Kept, p.name)
			u.cfg.Logger.WarnContext(ctx, "keeping expired staging partition", slog.String("partition", p.name), slog.String("reason", why))
			continue
		}
		if _, err := u.pool.Exec(ctx, `DROP TABLE `+pgx.Identifier{"staging", p.name}.Sanitize()); err != nil {
			return nil, fmt.Errorf("error dropping partition %s: %w", p.name, err)
		}
		if _, err := u.pool.Exec(ctx, `DELETE FROM staging.partitions WHERE name = $1`, p.name); err != nil {
			return nil, fmt.Errorf("error forgetting partition %s: %w", p.name, err)
		}
		res.Dropped = append(res.Dropped, p.name)
		u.partitions.WithLabelValues("dropped").Inc()
		u.cfg.Logger.InfoContext(ctx, "dropped expired staging partition", slog.String("partition", p.name))
	}
	return res, nil
}

type partition struct {
	name   string
	day    time.Time
	closed bool
}

func (u *Upkeep) list(ctx context.Context) ([]*partition, error) {
	rows, err := u.pool.Query(ctx, `
		SELECT c.relname, p.closed_lsn IS NOT NULL
		FROM pg_inherits i
		JOIN pg_class c ON c.oid = i.inhrelid
		LEFT JOIN staging.partitions p ON p.name = c.relname
		WHERE i.inhparent = 'staging.webhooks'::regclass
		ORDER BY c.relname`)
	if err != nil {
		return nil, fmt.Errorf("error listing partitions: %w", err)
	}
	defer rows.Close()
	var out []*partition
	for rows.Next() {
		p := &partition{}
		if err := rows.Scan(&p.name, &p.closed); err != nil {
			return nil, fmt.Errorf("error reading partition: %w", err)
		}
		day, err := time.Parse("20060102", strings.TrimPrefix(p.name, "webhooks_"))
		if err != nil {
			continue // not one of ours
		}
		p.day = day
		out = append(out, p)
	}
	return out, rows.Err()
}

// safeToDrop: the partition was closed, the fanout's slot has confirmed a position past its closing, and no
// holder still needs a row of it.
func (u *Upkeep) safeToDrop(ctx context.Context, p *partition) (bool, string, error) {
	name := p.name
	var closed, confirmed *string
	var caughtUp *bool
	err := u.pool.QueryRow(ctx, `
		SELECT p.closed_lsn::text, s.confirmed_flush_lsn::text, s.confirmed_flush_lsn >= p.closed_lsn
		FROM staging.partitions p
		LEFT JOIN pg_replication_slots s ON s.slot_name = $2
		WHERE p.name = $1`, name, u.cfg.Slot).Scan(&closed, &confirmed, &caughtUp)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && closed == nil) {
		return false, "partition was never closed", nil
	}
	if err != nil {
		return false, "", fmt.Errorf("error checking partition %s: %w", name, err)
	}
	if confirmed == nil {
		return false, "the fanout's replication slot does not exist yet", nil
	}
	if caughtUp == nil || !*caughtUp {
		return false, fmt.Sprintf("the fanout has confirmed %s, before the partition closed at %s", *confirmed, *closed), nil
	}
	// A resync re-reads partitions after the slot was lost or re-created: the slot's position says nothing
	// about them until it is done.
	if needed, err := pendingResyncNeeds(ctx, u.pool, p.day.AddDate(0, 0, 1)); err != nil {
		return false, "", err
	} else if needed {
		return false, "a pending resync still has to read it", nil
	}
	for _, h := range u.cfg.Holders {
		n, err := h.RowsHeld(ctx, p.day, p.day.AddDate(0, 0, 1))
		if err != nil {
			return false, "", fmt.Errorf("error checking what still needs partition %s: %w", name, err)
		}
		if n > 0 {
			return false, fmt.Sprintf("%d parked change(s) still point into it", n), nil
		}
	}
	return true, "", nil
}
