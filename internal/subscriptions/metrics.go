package subscriptions

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	// attempts counts delivery attempts by outcome: delivered, retry (failed, another attempt scheduled),
	// failed (the last attempt failed, or the endpoint was disabled meanwhile).
	attempts *prometheus.CounterVec
	// recorded counts deliveries stored for notifications, by status: pending, or failed (endpoint disabled or
	// over its pending cap).
	recorded *prometheus.CounterVec
	disabled prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "webhookdb_subscription_attempts_total", Help: "Delivery attempts to subscription endpoints, by outcome (delivered, retry, failed).",
		}, []string{"outcome"}),
		recorded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "webhookdb_subscription_deliveries_recorded_total", Help: "Deliveries stored for row-change notifications, by status (pending; failed: endpoint disabled or over its pending cap).",
		}, []string{"status"}),
		disabled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "webhookdb_subscription_endpoints_disabled_total", Help: "Subscription endpoints disabled after failing for DisableAfter.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.attempts, m.recorded, m.disabled)
	}
	return m
}
