package ratelimit

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
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
	if m.limited, err = register(reg, m.limited); err != nil {
		return nil, err
	}
	if m.redisErrors, err = register(reg, m.redisErrors); err != nil {
		return nil, err
	}
	if m.degraded, err = register(reg, m.degraded); err != nil {
		return nil, err
	}
	if m.settlementsDropped, err = register(reg, m.settlementsDropped); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or returns the collector already registered under
// its name, so a Limiter built again on reload shares the series.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if reg == nil {
		return c, nil
	}
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, fmt.Errorf("ratelimit: register metrics: %w", err)
}
