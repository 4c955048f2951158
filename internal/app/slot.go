package app

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/webhookdb-go/webhookdb/fanout"
)

// slotStates are the values of pg_replication_slots.wal_status, plus missing.
var slotStates = []string{"reserved", "extended", "unreserved", "lost", "missing"}

// slotWatch reports the fanout slot's health: a gauge per state, a log line when it is at risk, and the
// answer /healthz gives. Nothing is applied while the slot is lost or missing, whatever else is healthy.
type slotWatch struct {
	pool   *pgxpool.Pool
	slot   string
	logger *slog.Logger
	state  *prometheus.GaugeVec
}

func newSlotWatch(pool *pgxpool.Pool, slot string, logger *slog.Logger, reg prometheus.Registerer) *slotWatch {
	w := &slotWatch{pool: pool, slot: slot, logger: logger, state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "webhookdb_fanout_slot_state", Help: "1 for the fanout slot's current wal_status (reserved, extended, unreserved, lost) or missing.",
	}, []string{"state"})}
	reg.MustRegister(w.state)
	return w
}

// check reads the slot's state now.
func (w *slotWatch) check(ctx context.Context) (string, error) {
	st, err := fanout.ReadStatus(ctx, w.pool, w.slot)
	if err != nil {
		return "", err
	}
	state := "missing"
	if st.Exists && st.WALStatus != nil {
		state = *st.WALStatus
	}
	for _, s := range slotStates {
		v := 0.0
		if s == state {
			v = 1
		}
		w.state.WithLabelValues(s).Set(v)
	}
	return state, nil
}

// healthy says whether the fanout can go on applying from the slot.
func slotHealthy(state string) bool { return state != "lost" && state != "missing" }

// run checks the slot every interval and warns while it is at risk or gone.
func (w *slotWatch) run(ctx context.Context) error {
	t := time.NewTicker(15 * time.Second)
	defer t.Stop()
	for {
		state, err := w.check(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			w.logger.WarnContext(ctx, "cannot read the fanout slot", slog.String("slot", w.slot), slog.String("error", err.Error()))
		case state == "unreserved":
			w.logger.WarnContext(ctx, "the fanout slot is past max_slot_wal_keep_size: Postgres will invalidate it unless the fanout catches up",
				slog.String("slot", w.slot))
		case !slotHealthy(state):
			w.logger.ErrorContext(ctx, "the fanout slot is "+state+": nothing is applied; recover with `webhookdb fanout resync --since T --recreate-slot`",
				slog.String("slot", w.slot), slog.String("state", state))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
