package tracing

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
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
		dropped = register(reg, dropped)
		exported = register(reg, exported)
	}
	return &metrics{
		queueFull:    dropped.WithLabelValues("queue_full"),
		exportFailed: dropped.WithLabelValues("export_failed"),
		shutdown:     dropped.WithLabelValues("shutdown"),
		exported:     exported,
	}
}

// register registers c, or returns the collector already registered under
// its name (a provider rebuilt on reload keeps counting on the same series).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if old, ok := are.ExistingCollector.(C); ok {
				return old
			}
		}
		panic(err)
	}
	return c
}
