package backfill

import "github.com/prometheus/client_golang/prometheus"

// metrics are the workers' counters; registered when Config.Registerer is set.
type metrics struct {
	objects  *prometheus.CounterVec
	pages    *prometheus.CounterVec
	finished *prometheus.CounterVec
	retries  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		objects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "webhookdb_backfill_objects_total",
			Help: "Objects backfills stored into staging, by vendor."}, []string{"vendor"}),
		pages: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "webhookdb_backfill_pages_total",
			Help: "Pages backfills stored (each with its checkpoint), by vendor."}, []string{"vendor"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "webhookdb_backfill_jobs_finished_total",
			Help: "Backfill jobs the workers finished, by vendor and state (succeeded, failed)."}, []string{"vendor", "state"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "webhookdb_backfill_job_retries_total",
			Help: "Backfill jobs sent back to the queue after their vendor kept failing transiently, by vendor."}, []string{"vendor"}),
	}
	if reg != nil {
		reg.MustRegister(m.objects, m.pages, m.finished, m.retries)
	}
	return m
}
