package cache

import (
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	reqs        *prometheus.CounterVec
	redisErrors *prometheus.CounterVec
	mcErrors    *prometheus.CounterVec

	// pools holds each pool's request counters in a map that is replaced,
	// never changed, so the hit path reads it without a lock or an
	// allocation.
	pools  atomic.Pointer[map[string]*poolCounters]
	poolMu sync.Mutex // serializes replacing pools
}

type poolCounters struct {
	hit, miss, bypass prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		reqs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_cache_requests_total",
			Help: "Requests to pools with caching, by result: hit (answered from the cache), miss (sent upstream), bypass (Cache-Control skipped the lookup).",
		}, []string{"pool", "result"}),
		redisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_cache_redis_errors_total",
			Help: "Failed Redis operations of the response cache, by operation; each is served as a miss.",
		}, []string{"op"}),
		mcErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_cache_memcached_errors_total",
			Help: "Failed Memcached operations of the response cache, by operation; each is served as a miss. too_large counts entries kept in memory only because they exceed the item limit.",
		}, []string{"op"}),
	}
	var err error
	if m.reqs, err = register(reg, m.reqs); err != nil {
		return nil, err
	}
	if m.redisErrors, err = register(reg, m.redisErrors); err != nil {
		return nil, err
	}
	if m.mcErrors, err = register(reg, m.mcErrors); err != nil {
		return nil, err
	}
	return m, nil
}

// requests returns the request counters of pool.
func (m *metrics) requests(pool string) *poolCounters {
	if p := m.pools.Load(); p != nil {
		if pc, ok := (*p)[pool]; ok {
			return pc
		}
	}
	m.poolMu.Lock()
	defer m.poolMu.Unlock()
	old := map[string]*poolCounters{}
	if p := m.pools.Load(); p != nil {
		if pc, ok := (*p)[pool]; ok {
			return pc
		}
		old = *p
	}
	pc := &poolCounters{
		hit:    m.reqs.WithLabelValues(pool, resultHit),
		miss:   m.reqs.WithLabelValues(pool, resultMiss),
		bypass: m.reqs.WithLabelValues(pool, resultBypass),
	}
	next := make(map[string]*poolCounters, len(old)+1)
	maps.Copy(next, old)
	next[pool] = pc
	m.pools.Store(&next)
	return pc
}

// register registers c, or returns the collector already registered under
// its name, so a Cache built again on reload shares the series.
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
	return c, fmt.Errorf("cache: register metrics: %w", err)
}
