package tracing

import (
	"github.com/prometheus/client_golang/prometheus"

	smetrics "github.com/sluice-ai/sluice/internal/metrics"
)

// metrics count what happened to ended spans.
type metrics struct {
	queueFull, exportFailed, shutdown prometheus.Counter
	exported                          prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_tracing_spans_dropped_total",
		Help: "Sampled spans never delivered to the OTLP collector, by reason: queue_full (the export queue was full), export_failed (the collector refused or was unreachable), shutdown (ended after shutdown).",
	}, []string{"reason"})
	exported := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sluice_tracing_spans_exported_total",
		Help: "Spans the OTLP collector accepted.",
	})
	if reg != nil {
		dropped = mustRegister(reg, dropped)
		exported = mustRegister(reg, exported)
	}
	return &metrics{
		queueFull:    dropped.WithLabelValues("queue_full"),
		exportFailed: dropped.WithLabelValues("export_failed"),
		shutdown:     dropped.WithLabelValues("shutdown"),
		exported:     exported,
	}
}

// mustRegister is metrics.Register for collectors that cannot clash.
func mustRegister[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	c, err := smetrics.Register(reg, c)
	if err != nil {
		panic(err)
	}
	return c
}
