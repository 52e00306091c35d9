package replicas

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the process sets' metric families, shared by every pool:
//
//	sluice_replica_restarts_total{pool,reason}  counter; reason is crash,
//	                                            start_timeout or unhealthy
//	sluice_replicas_crash_looping{pool}         replicas failing in a row
//
// Create it once with NewMetrics and pass it in Options.
type Metrics struct {
	restarts *prometheus.CounterVec
	looping  *prometheus.Desc

	mu   sync.Mutex
	sets map[string]*ProcessSet // by pool
}

// NewMetrics creates the families and registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_replica_restarts_total", Help: "Restarts of a pool's process replicas, by why the previous process ended (crash, start_timeout, unhealthy).",
		}, []string{"pool", "reason"}),
		looping: prometheus.NewDesc("sluice_replicas_crash_looping",
			"A pool's process replicas that failed 3 or more times in a row without serving for a minute.", []string{"pool"}, nil),
		sets: map[string]*ProcessSet{},
	}
	reg.MustRegister(m.restarts, m)
	return m
}

// Describe implements prometheus.Collector for the crash-loop gauge.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) { ch <- m.looping }

// Collect implements prometheus.Collector: each set's crash-looping count,
// read at scrape time.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	sets := make(map[string]*ProcessSet, len(m.sets))
	for k, v := range m.sets {
		sets[k] = v
	}
	m.mu.Unlock()
	for pool, s := range sets {
		ch <- prometheus.MustNewConstMetric(m.looping, prometheus.GaugeValue, float64(s.Status().CrashLooping), pool)
	}
}

func (m *Metrics) restarted(pool, reason string) {
	if m != nil {
		m.restarts.WithLabelValues(pool, reason).Inc()
	}
}

func (m *Metrics) add(s *ProcessSet) {
	if m != nil {
		m.mu.Lock()
		m.sets[s.name] = s
		m.mu.Unlock()
	}
}

// remove drops s's series once it has stopped, unless a newer set of the
// same pool took its place.
func (m *Metrics) remove(s *ProcessSet) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sets[s.name] == s {
		delete(m.sets, s.name)
		m.restarts.DeletePartialMatch(prometheus.Labels{"pool": s.name})
	}
}
