package jobs

import (
	"fmt"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the job system's Prometheus collectors.
type metrics struct {
	jobs      *prometheus.GaugeVec
	pending   *prometheus.GaugeVec
	inFlight  prometheus.Gauge
	queueWait prometheus.Histogram
	runTime   prometheus.Histogram
	attempts  *prometheus.CounterVec
	webhooks  *prometheus.CounterVec
	// admissionDeferred counts attempts put off because the job's tenant
	// was at its limits.
	admissionDeferred prometheus.Counter
	collectors        []prometheus.Collector
}

// Attempt outcomes, the values of sluice_job_attempts_total{result}.
const (
	attemptSucceeded   = "succeeded"
	attemptFailed      = "failed"
	attemptRetried     = "retried"
	attemptCanceled    = "canceled"
	attemptInterrupted = "interrupted"
)

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	buckets := prometheus.ExponentialBuckets(0.005, 4, 10) // 5ms … ~22m
	m := &metrics{
		jobs: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_jobs",
			Help: "Jobs retained in the job store, by state.",
		}, []string{"state"}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_jobs_pending",
			Help: "Jobs waiting to run, by pool (demand for the autoscaler).",
		}, []string{"pool"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_job_dispatch_in_flight",
			Help: "Jobs this gateway's dispatcher is running.",
		}),
		queueWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sluice_job_queue_wait_seconds",
			Help:    "Time from submission to the start of a job's first attempt.",
			Buckets: buckets,
		}),
		runTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sluice_job_run_seconds",
			Help:    "Duration of job attempts.",
			Buckets: buckets,
		}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_job_attempts_total",
			Help: "Job attempts by outcome: succeeded, failed, retried, canceled, interrupted.",
		}, []string{"result"}),
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_webhook_deliveries_total",
			Help: "Job callback deliveries by outcome: delivered, retried, failed (given up).",
		}, []string{"result"}),
		admissionDeferred: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_job_admission_deferred_total",
			Help: "Job attempts put off (requeued without spending an attempt) because the tenant was at its concurrency or rate limits.",
		}),
	}
	for _, r := range []string{attemptSucceeded, attemptFailed, attemptRetried, attemptCanceled, attemptInterrupted} {
		m.attempts.WithLabelValues(r)
	}
	for _, r := range []string{"delivered", "retried", "failed"} {
		m.webhooks.WithLabelValues(r)
	}
	for _, st := range Statuses {
		m.jobs.WithLabelValues(string(st))
	}
	m.collectors = []prometheus.Collector{m.jobs, m.pending, m.inFlight, m.queueWait, m.runTime, m.attempts, m.webhooks, m.admissionDeferred}
	if reg == nil {
		return m, nil
	}
	for i, c := range m.collectors {
		if err := reg.Register(c); err != nil {
			for _, r := range m.collectors[:i] {
				reg.Unregister(r)
			}
			return nil, fmt.Errorf("register job metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) unregister(reg prometheus.Registerer) {
	if reg == nil {
		return
	}
	for _, c := range m.collectors {
		reg.Unregister(c)
	}
}

// setCounts publishes a store snapshot on the gauges.
func (m *metrics) setCounts(c Counts) {
	for _, st := range Statuses {
		m.jobs.WithLabelValues(string(st)).Set(float64(c.ByStatus[st]))
	}
	m.pending.Reset()
	for pool, n := range c.QueuedByPool {
		m.pending.WithLabelValues(pool).Set(float64(n))
	}
}

// Percentiles summarise recent observations, in seconds.
type Percentiles struct {
	// Count is how many observations the figures cover (at most the last
	// 1024).
	Count int     `json:"count"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
}

// window keeps the last len(v) observations for Stats.
type window struct {
	mu sync.Mutex
	v  [1024]float64
	n  int // observations kept, ≤ len(v)
	i  int // next slot
}

func (w *window) add(x float64) {
	w.mu.Lock()
	w.v[w.i] = x
	w.i = (w.i + 1) % len(w.v)
	w.n = min(w.n+1, len(w.v))
	w.mu.Unlock()
}

func (w *window) percentiles() Percentiles {
	w.mu.Lock()
	s := slices.Clone(w.v[:w.n])
	w.mu.Unlock()
	if len(s) == 0 {
		return Percentiles{}
	}
	slices.Sort(s)
	at := func(q float64) float64 { return s[int(q*float64(len(s)-1))] }
	return Percentiles{Count: len(s), P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: s[len(s)-1]}
}
