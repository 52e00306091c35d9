package sim

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metric names, as vLLM exposes them. Every series carries the label
// model_name with the first served model, as vLLM labels an engine with its
// first --served-model-name.
const (
	MetricRunning          = "vllm:num_requests_running"
	MetricWaiting          = "vllm:num_requests_waiting"
	MetricKVCacheUsage     = "vllm:kv_cache_usage_perc"
	MetricTTFT             = "vllm:time_to_first_token_seconds"
	MetricE2E              = "vllm:e2e_request_latency_seconds"
	MetricQueueTime        = "vllm:request_queue_time_seconds"
	MetricPromptTokens     = "vllm:prompt_tokens_total"
	MetricGenerationTokens = "vllm:generation_tokens_total"
	MetricRequestSuccess   = "vllm:request_success_total"
	// MetricPrefixCacheQueries and MetricPrefixCacheHits count prompt
	// tokens looked up in the prefix cache and found there (vLLM v1).
	MetricPrefixCacheQueries = "vllm:prefix_cache_queries_total"
	MetricPrefixCacheHits    = "vllm:prefix_cache_hits_total"
)

// Bucket bounds follow vLLM's, so dashboards built for it read the sim alike.
var (
	ttftBuckets = []float64{0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5,
		0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640, 2560}
	latencyBuckets = []float64{0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50,
		60, 120, 240, 480, 960, 1920, 7680}
)

// metrics is one server's Prometheus registry. The batch gauges are read
// from the engine at scrape time, so the request path only feeds the
// counters and histograms, once per request.
type metrics struct {
	reg              *prometheus.Registry
	ttft             prometheus.Histogram
	e2e              prometheus.Histogram
	queue            prometheus.Histogram
	promptTokens     prometheus.Counter
	generationTokens prometheus.Counter
	successLength    prometheus.Counter
	successStop      prometheus.Counter
}

func newMetrics(model string, e *Engine) *metrics {
	labels := prometheus.Labels{"model_name": model}
	m := &metrics{reg: prometheus.NewRegistry()}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: labels}, f)
	}
	hist := func(name, help string, buckets []float64) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, ConstLabels: labels, Buckets: buckets})
	}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels})
	}
	m.ttft = hist(MetricTTFT, "Time to first token in seconds, queueing included.", ttftBuckets)
	m.e2e = hist(MetricE2E, "End-to-end latency of finished requests in seconds.", latencyBuckets)
	m.queue = hist(MetricQueueTime, "Time finished requests spent waiting for a batch slot in seconds.", latencyBuckets)
	m.promptTokens = counter(MetricPromptTokens, "Prompt tokens prefilled.")
	m.generationTokens = counter(MetricGenerationTokens, "Output tokens generated.")
	success := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricRequestSuccess, Help: "Finished requests by finish reason.", ConstLabels: labels,
	}, []string{"finished_reason"})
	m.successLength = success.WithLabelValues("length")
	m.successStop = success.WithLabelValues("stop")
	m.reg.MustRegister(
		gauge(MetricRunning, "Requests in the batch.", func() float64 { return float64(e.Running()) }),
		gauge(MetricWaiting, "Requests waiting for a batch slot.", func() float64 { return float64(e.Waiting()) }),
		gauge(MetricKVCacheUsage, "Fraction of the KV-cache blocks held by running requests (1 = full); cached blocks no request holds count as free.",
			func() float64 { return e.KVStats().Usage() }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: MetricPrefixCacheQueries,
			Help: "Prompt tokens looked up in the prefix cache.", ConstLabels: labels},
			func() float64 { return float64(e.kv.queries.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: MetricPrefixCacheHits,
			Help: "Prompt tokens found in the prefix cache.", ConstLabels: labels},
			func() float64 { return float64(e.kv.hits.Load()) }),
		m.ttft, m.e2e, m.queue, m.promptTokens, m.generationTokens, success,
	)
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// generated records a text generation that produced t.Tokens tokens and
// finished (ok) with reason finish, or was cancelled.
func (m *metrics) generated(promptTokens int, t Timing, ok bool, finish string) {
	if t.Tokens > 0 {
		m.promptTokens.Add(float64(promptTokens))
		m.generationTokens.Add(float64(t.Tokens))
		m.ttft.Observe(t.FirstToken.Seconds())
	}
	if !ok {
		return
	}
	m.e2e.Observe(t.Total.Seconds())
	m.queue.Observe(t.Queued.Seconds())
	if finish == "length" {
		m.successLength.Inc()
	} else {
		m.successStop.Inc()
	}
}

// encoded records an embedding or v2 inference of inputTokens tokens.
func (m *metrics) encoded(inputTokens int, t Timing, ok bool) {
	if !ok {
		return
	}
	m.promptTokens.Add(float64(inputTokens))
	m.e2e.Observe(t.Total.Seconds())
	m.queue.Observe(t.Queued.Seconds())
	m.successStop.Inc()
}
