// Package metrics defines the gateway's Prometheus metric families (names
// and labels are part of sluice's user contract) and cheap per-label handles
// for the request path.
package metrics

import (
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// LatencyBuckets suit inference traffic: from a cached or tiny request (a few
// ms) to long generations (minutes).
var LatencyBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// TTFBBuckets resolve time to first byte, which is short even for long
// streams.
var TTFBBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// ITLBuckets resolve inter-token latency: a few milliseconds per token on a
// fast replica, up to a second on an overloaded one.
var ITLBuckets = []float64{.001, .0025, .005, .01, .02, .04, .08, .16, .32, .64, 1.28}

// Gateway holds the data plane's metric families.
type Gateway struct {
	Requests        *prometheus.CounterVec   // sluice_requests_total{pool,code}
	Duration        *prometheus.HistogramVec // sluice_request_duration_seconds{pool}
	Upstream        *prometheus.CounterVec   // sluice_upstream_requests_total{pool,backend,code}
	Retries         *prometheus.CounterVec   // sluice_retries_total{pool}
	TTFB            *prometheus.HistogramVec // sluice_time_to_first_byte_seconds{pool}
	Reloads         *prometheus.CounterVec   // sluice_config_reloads_total{result}
	Tokens          *prometheus.CounterVec   // sluice_tokens_total{pool,tenant,kind}
	StreamErrors    *prometheus.CounterVec   // sluice_stream_errors_total{pool,reason}
	QueueWait       *prometheus.HistogramVec // sluice_queue_wait_seconds{pool}
	QueueRejections *prometheus.CounterVec   // sluice_queue_rejections_total{pool,reason}
	Ejections       *prometheus.CounterVec   // sluice_outlier_ejections_total{pool}
	Fallbacks       *prometheus.CounterVec   // sluice_fallbacks_total{pool,to}
	TTFT            *prometheus.HistogramVec // sluice_time_to_first_token_seconds{pool,model}
	ITL             *prometheus.HistogramVec // sluice_inter_token_latency_seconds{pool,model}
	BufferedBody    prometheus.Gauge         // sluice_buffered_request_bytes
}

// NewGateway creates the families and registers them on reg.
func NewGateway(reg prometheus.Registerer) *Gateway {
	g := &Gateway{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_requests_total", Help: "Requests answered by the data plane, by pool and HTTP status (pool is \"\" when none matched).",
		}, []string{"pool", "code"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sluice_request_duration_seconds", Help: "Time from request received to response complete, streams included.", Buckets: LatencyBuckets,
		}, []string{"pool"}),
		Upstream: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_upstream_requests_total", Help: "Attempts sent to backends, by outcome (HTTP status, or error: connect, timeout, canceled).",
		}, []string{"pool", "backend", "code"}),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_retries_total", Help: "Retried upstream attempts.",
		}, []string{"pool"}),
		TTFB: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sluice_time_to_first_byte_seconds", Help: "Time from request received to upstream response headers.", Buckets: TTFBBuckets,
		}, []string{"pool"}),
		Reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_config_reloads_total", Help: "Config reloads, by result (success or failure).",
		}, []string{"result"}),
		Tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_tokens_total", Help: "Tokens reported in responses' usage, by pool, tenant and kind (prompt, completion).",
		}, []string{"pool", "tenant", "kind"}),
		StreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_stream_errors_total", Help: "Responses that failed after the status was sent, by reason (upstream_error, idle_timeout, client_gone).",
		}, []string{"pool", "reason"}),
		QueueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sluice_queue_wait_seconds", Help: "Time requests waited in a pool queue for a backend.", Buckets: LatencyBuckets,
		}, []string{"pool"}),
		QueueRejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_queue_rejections_total", Help: "Requests refused with 503, by reason (queue_full, queue_timeout, no_backend).",
		}, []string{"pool", "reason"}),
		Ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_outlier_ejections_total", Help: "Backends ejected by outlier detection (their breaker opened).",
		}, []string{"pool"}),
		Fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_fallbacks_total", Help: "Requests a pool could not serve that a fallback pool served, by pool and the fallback (to).",
		}, []string{"pool", "to"}),
		TTFT: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sluice_time_to_first_token_seconds", Help: "Time from request received to the first event of a streamed response (the model's first token), by pool and model (\"other\" for names the pool's config does not list).", Buckets: TTFBBuckets,
		}, []string{"pool", "model"}),
		ITL: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sluice_inter_token_latency_seconds", Help: "Mean gap between the events of a streamed response (the model's time per output token), one sample per response, by pool and model.", Buckets: ITLBuckets,
		}, []string{"pool", "model"}),
		BufferedBody: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_buffered_request_bytes", Help: "Request body bytes the gateway holds in memory now (bounded by limits.max_buffered_body).",
		}),
	}
	g.Reloads.WithLabelValues("success")
	g.Reloads.WithLabelValues("failure")
	reg.MustRegister(g.Requests, g.Duration, g.Upstream, g.Retries, g.TTFB, g.Reloads, g.Tokens, g.StreamErrors, g.QueueWait, g.QueueRejections, g.Ejections, g.Fallbacks, g.TTFT, g.ITL, g.BufferedBody)
	return g
}

// CodeCounters caches one counter per HTTP status for a fixed set of other
// label values, so the request path does no label hashing.
type CodeCounters struct {
	vec    *prometheus.CounterVec
	labels []string
	byCode [600]atomic.Pointer[prometheus.Counter]
}

// NewCodeCounters returns handles into vec for labels (all but the last,
// which is the code).
func NewCodeCounters(vec *prometheus.CounterVec, labels ...string) *CodeCounters {
	return &CodeCounters{vec: vec, labels: labels}
}

// Inc counts one for code. Codes outside 0-599 are counted as "other".
func (c *CodeCounters) Inc(code int) {
	if code < 0 || code >= len(c.byCode) {
		c.vec.WithLabelValues(append(c.labels[:len(c.labels):len(c.labels)], "other")...).Inc()
		return
	}
	if p := c.byCode[code].Load(); p != nil {
		(*p).Inc()
		return
	}
	ctr := c.vec.WithLabelValues(append(c.labels[:len(c.labels):len(c.labels)], strconv.Itoa(code))...)
	c.byCode[code].Store(&ctr)
	ctr.Inc()
}

// IncLabel counts one for a non-numeric outcome such as "connect".
func (c *CodeCounters) IncLabel(outcome string) {
	c.vec.WithLabelValues(append(c.labels[:len(c.labels):len(c.labels)], outcome)...).Inc()
}

// Register registers c on reg, or returns the collector already registered
// under its name, so a component rebuilt on reload (a limiter, a cache, a
// tracer) keeps counting on the same series. A nil reg registers nothing.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
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
	return c, fmt.Errorf("register metrics: %w", err)
}
