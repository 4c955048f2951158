package ingest

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics of the ingest path.
type Metrics struct {
	requests        *prometheus.CounterVec
	requestSeconds  *prometheus.HistogramVec
	batchRows       prometheus.Histogram
	commitSeconds   prometheus.Histogram
	rejectedDropped *prometheus.CounterVec
	batchSplits     prometheus.Counter
	rowsRefused     prometheus.Counter
	bodyBytes       prometheus.Gauge
	overBudget      *prometheus.CounterVec
	unknownLimited  prometheus.Counter

	// Children by service and outcome, looked up once: WithLabelValues hashes the labels and takes the vector's
	// lock on every call.
	childrenMu sync.RWMutex
	children   map[requestLabels]requestChildren
}

type requestLabels struct {
	service string
	result  outcome
}

type requestChildren struct {
	requests prometheus.Counter
	seconds  prometheus.Observer
}

// observe counts a request of service answered with result after d.
func (m *Metrics) observe(service string, result outcome, d time.Duration) {
	key := requestLabels{service, result}
	m.childrenMu.RLock()
	c, ok := m.children[key]
	m.childrenMu.RUnlock()
	if !ok {
		c = requestChildren{m.requests.WithLabelValues(service, string(result)), m.requestSeconds.WithLabelValues(service)}
		m.childrenMu.Lock()
		if m.children == nil {
			m.children = map[requestLabels]requestChildren{}
		}
		m.children[key] = c
		m.childrenMu.Unlock()
	}
	c.requests.Inc()
	c.seconds.Observe(d.Seconds())
}

// NewMetrics registers the ingest metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "webhookdb_ingest_requests_total", Help: "Webhook requests by service and outcome.",
		}, []string{"service", "outcome"}),
		requestSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "webhookdb_ingest_request_seconds", Help: "Time from request to answer, by service.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"service"}),
		batchRows: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "webhookdb_ingest_batch_rows", Help: "Rows per group-commit transaction.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "webhookdb_ingest_commit_seconds", Help: "Duration of group-commit transactions.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16),
		}),
		rejectedDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "webhookdb_ingest_rejected_not_stored_total", Help: "Rejected requests not stored because the integration's rate cap was reached.",
		}, []string{"service"}),
		batchSplits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "webhookdb_ingest_batch_splits_total", Help: "Group-commit batches split because the database refused a row in them.",
		}),
		rowsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "webhookdb_ingest_rows_refused_total", Help: "Rows the database refused for good (answered 422), their batch committed without them.",
		}),
		bodyBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "webhookdb_ingest_body_bytes_in_flight", Help: "Request body bytes reserved by requests being read or committed.",
		}),
		overBudget: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "webhookdb_ingest_over_budget_total", Help: "Requests answered 503 because their org's (org) or the process's (process) body budget was used up.",
		}, []string{"budget"}),
		unknownLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "webhookdb_ingest_unknown_rate_limited_total", Help: "Requests for integrations not in the cache answered 429 (per-client rate limit).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.requestSeconds, m.batchRows, m.commitSeconds, m.rejectedDropped,
			m.batchSplits, m.rowsRefused, m.bodyBytes, m.overBudget, m.unknownLimited)
	}
	return m
}
