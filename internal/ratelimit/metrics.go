package ratelimit

import (
	"github.com/prometheus/client_golang/prometheus"

	smetrics "github.com/sluice-ai/sluice/internal/metrics"
)

type metrics struct {
	limited            *prometheus.CounterVec
	redisErrors        prometheus.Counter
	degraded           prometheus.Gauge
	settlementsDropped prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_ratelimited_total",
			Help: "Requests refused by a tenant's rate limit, by the limit that refused them (rpm, tpm, concurrency).",
		}, []string{"tenant", "limit"}),
		redisErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_ratelimit_redis_errors_total",
			Help: "Redis calls of the rate limiter that failed or timed out.",
		}),
		degraded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_ratelimit_degraded",
			Help: "1 while Redis is unreachable and rate limits are enforced per process.",
		}),
		settlementsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_ratelimit_settlements_dropped_total",
			Help: "Token settlements and slot releases not sent to Redis (unreachable or queue full); the slots expire with their lease.",
		}),
	}
	var err error
	if m.limited, err = smetrics.Register(reg, m.limited); err != nil {
		return nil, err
	}
	if m.redisErrors, err = smetrics.Register(reg, m.redisErrors); err != nil {
		return nil, err
	}
	if m.degraded, err = smetrics.Register(reg, m.degraded); err != nil {
		return nil, err
	}
	if m.settlementsDropped, err = smetrics.Register(reg, m.settlementsDropped); err != nil {
		return nil, err
	}
	return m, nil
}
