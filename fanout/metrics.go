package fanout

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of the fanout. Per-org series are labelled by org_id: the id is known even when the org's row
// cannot be read, and it does not change when an org is renamed.
type metrics struct {
	slotLagBytes   prometheus.Gauge
	slotLagSeconds prometheus.Gauge
	heartbeatAge   prometheus.Gauge
	inFlightBytes  prometheus.Gauge
	orgConns       prometheus.Gauge
	orgConnects    prometheus.Counter
	orgEvictions   prometheus.Counter
	payloadsShed   prometheus.Counter
	rowsApplied    prometheus.Counter
	rowsSkipped    *prometheus.CounterVec
	batchRows      prometheus.Histogram
	batchBytes     prometheus.Histogram
	applySeconds   prometheus.Histogram
	parked         *prometheus.GaugeVec
	parkedTotal    *prometheus.CounterVec
	failedTotal    *prometheus.CounterVec
	sessions       *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		slotLagBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "webhookdb_fanout_slot_lag_bytes", Help: "WAL bytes between the server's current position and the slot's confirmed position.",
		}),
		slotLagSeconds: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "webhookdb_fanout_slot_lag_seconds", Help: "Age of the oldest received staging transaction not yet acknowledged (0 when caught up).",
		}),
		heartbeatAge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "webhookdb_fanout_heartbeat_age_seconds", Help: "Seconds since the last heartbeat message came back through the slot; alert when it grows.",
		}),
		inFlightBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "webhookdb_fanout_in_flight_bytes", Help: "Bytes of staging rows received and not yet applied, parked or failed.",
		}),
		orgConns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "webhookdb_fanout_org_connections", Help: "Open connections to org databases.",
		}),
		orgConnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "webhookdb_fanout_org_connects_total", Help: "Connections opened to org databases.",
		}),
		orgEvictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "webhookdb_fanout_org_connection_evictions_total",
			Help: "Idle org connections closed to make room under their server's cap. A steady rate means the cap holds fewer connections than the server has orgs with steady traffic, each of which then pays a new backend a visit.",
		}),
		payloadsShed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "webhookdb_fanout_payloads_shed_total",
			Help: "Queued changes whose payload was dropped at the in-flight cap, to be read back from staging when their org's turn comes (orgs without an open connection), so a backlog over many orgs drains in fewer, larger org transactions.",
		}),
		rowsApplied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "webhookdb_fanout_rows_applied_total", Help: "Staging rows applied to org databases (live and drained).",
		}),
		rowsSkipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "webhookdb_fanout_rows_skipped_total", Help: "Staging rows not applied, by reason (replayed, integration_deleted, org_deleted).",
		}, []string{"reason"}),
		batchRows: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "webhookdb_fanout_batch_rows", Help: "Staging rows per org transaction.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 13),
		}),
		batchBytes: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "webhookdb_fanout_batch_bytes", Help: "Staging bytes per org transaction.",
			Buckets: prometheus.ExponentialBuckets(1024, 2, 14),
		}),
		applySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "webhookdb_fanout_apply_seconds", Help: "Duration of org transactions.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		parked: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "webhookdb_fanout_parked_changes", Help: "Changes parked per org, waiting to be drained.",
		}, []string{"org_id"}),
		parkedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "webhookdb_fanout_parked_total", Help: "Changes parked per org.",
		}, []string{"org_id"}),
		failedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "webhookdb_fanout_failed_total", Help: "Changes that can never be applied, per org.",
		}, []string{"org_id"}),
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "webhookdb_fanout_sessions_total", Help: "Replication sessions started, by how they ended (ok, error).",
		}, []string{"outcome"}),
	}
	if reg != nil {
		reg.MustRegister(m.slotLagBytes, m.slotLagSeconds, m.heartbeatAge, m.inFlightBytes, m.orgConns, m.orgConnects, m.orgEvictions, m.payloadsShed, m.rowsApplied,
			m.rowsSkipped, m.batchRows, m.batchBytes, m.applySeconds, m.parked, m.parkedTotal, m.failedTotal, m.sessions)
	}
	return m
}

func orgLabel(id int64) string { return strconv.FormatInt(id, 10) }
