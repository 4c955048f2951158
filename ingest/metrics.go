package ingest

import "github.com/prometheus/client_golang/prometheus"

// Metrics of the ingest path.
type Metrics struct {
	requests        *prometheus.CounterVec
	requestSeconds  *prometheus.HistogramVec
	batchRows       prometheus.Histogram
	commitSeconds   prometheus.Histogram
	rejectedDropped *prometheus.CounterVec
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
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.requestSeconds, m.batchRows, m.commitSeconds, m.rejectedDropped)
	}
	return m
}
