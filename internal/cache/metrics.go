package cache

import (
	"maps"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	smetrics "github.com/sluice-ai/sluice/internal/metrics"
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
	if m.reqs, err = smetrics.Register(reg, m.reqs); err != nil {
		return nil, err
	}
	if m.redisErrors, err = smetrics.Register(reg, m.redisErrors); err != nil {
		return nil, err
	}
	if m.mcErrors, err = smetrics.Register(reg, m.mcErrors); err != nil {
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
