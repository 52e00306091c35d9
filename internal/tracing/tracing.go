// Package tracing records OpenTelemetry traces of the gateway's work: the
// request (server span), admission, queue wait, cache lookup, each upstream
// attempt, and job dispatch linked to the request that submitted the job.
// It exports them over OTLP (http or grpc) through a bounded queue that drops
// spans, and counts them, rather than slow a request down.
//
// Spans are set only through typed helpers (pool, backend, tenant, model,
// token counts, finish reasons, status): there is no way to put an API key,
// a header value or prompt text into a span from here.
//
// A nil *Provider, or one made from a config without an endpoint, does
// nothing and costs nothing per request; every method is safe on it.
package tracing

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-ai/sluice/internal/buildinfo"
	"github.com/sluice-ai/sluice/internal/config"
)

// Options are what New needs besides the config. The zero value works.
type Options struct {
	// Registerer receives sluice_tracing_spans_dropped_total and
	// sluice_tracing_spans_exported_total. If nil, they are not registered.
	// Registering on a registry that already has them (a reload) reuses
	// the registered counters.
	Registerer prometheus.Registerer
	// Logger reports export failures (once when exports start failing,
	// once when they recover). If nil, slog.Default() is used.
	Logger *slog.Logger
	// QueueSize bounds the spans waiting for export; a span ended while
	// it is full is dropped and counted. Default 2048.
	QueueSize int
	// BatchSize is the most spans sent in one export. Default 512.
	BatchSize int
	// Interval is the longest a span waits for its batch to fill before
	// it is sent. Default 2s.
	Interval time.Duration
	// ExportTimeout bounds one export, retries included. Default 10s.
	ExportTimeout time.Duration
	// ServiceName is the service.name resource attribute. Default "sluice".
	ServiceName string
}

// Provider starts the gateway's spans and propagates their context.
type Provider struct {
	m      *metrics
	tp     *sdktrace.TracerProvider
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
}

// New returns a Provider exporting to cfg.OTLPEndpoint, or a Provider that
// does nothing when it is "". The exporter connects lazily: an unreachable
// collector is not an error here, only dropped spans later.
func New(ctx context.Context, cfg config.Tracing, opts Options) (*Provider, error) {
	m := newMetrics(opts.Registerer)
	if cfg.OTLPEndpoint == "" {
		return &Provider{m: m}, nil
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = 2048
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 512
	}
	if opts.Interval <= 0 {
		opts.Interval = 2 * time.Second
	}
	if opts.ExportTimeout <= 0 {
		opts.ExportTimeout = 10 * time.Second
	}
	if opts.ServiceName == "" {
		opts.ServiceName = "sluice"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	exp, err := newExporter(ctx, cfg, opts.ExportTimeout)
	if err != nil {
		return nil, err
	}
	ratio := cfg.SampleRatio
	if ratio < 0 || ratio > 1 {
		return nil, fmt.Errorf("tracing: sample_ratio %v out of range 0..1", ratio)
	}
	b := newBatcher(exp, opts, m)
	res := resource.NewSchemaless(
		attribute.String("service.name", opts.ServiceName),
		attribute.String("service.version", buildinfo.Version),
	)
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))),
		sdktrace.WithSpanProcessor(b),
		sdktrace.WithResource(res),
	)
	return &Provider{
		m:      m,
		tp:     tp,
		tracer: tp.Tracer("github.com/sluice-ai/sluice", trace.WithInstrumentationVersion(buildinfo.Version)),
		prop:   propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
	}, nil
}

// newExporter builds the OTLP exporter. Retries stay within timeout, so a
// down collector holds the export goroutine for at most that long per batch.
func newExporter(ctx context.Context, cfg config.Tracing, timeout time.Duration) (sdktrace.SpanExporter, error) {
	u, err := url.Parse(cfg.OTLPEndpoint)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("tracing: otlp_endpoint %q: want http://host:port or https://host:port", cfg.OTLPEndpoint)
	}
	insecure := u.Scheme == "http"
	switch cfg.Protocol {
	case "", "http":
		path := u.Path
		if path == "" || path == "/" {
			path = "/v1/traces"
		}
		o := []otlptracehttp.Option{
			otlptracehttp.WithEndpoint(u.Host), otlptracehttp.WithURLPath(path),
			otlptracehttp.WithTimeout(timeout),
			otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: true, InitialInterval: 250 * time.Millisecond, MaxInterval: 2 * time.Second, MaxElapsedTime: timeout}),
		}
		if insecure {
			o = append(o, otlptracehttp.WithInsecure())
		}
		if len(cfg.Headers) > 0 {
			o = append(o, otlptracehttp.WithHeaders(cfg.Headers))
		}
		return otlptracehttp.New(ctx, o...)
	case "grpc":
		o := []otlptracegrpc.Option{
			otlptracegrpc.WithEndpoint(u.Host),
			otlptracegrpc.WithTimeout(timeout),
			otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{Enabled: true, InitialInterval: 250 * time.Millisecond, MaxInterval: 2 * time.Second, MaxElapsedTime: timeout}),
		}
		if insecure {
			o = append(o, otlptracegrpc.WithInsecure())
		}
		if len(cfg.Headers) > 0 {
			o = append(o, otlptracegrpc.WithHeaders(cfg.Headers))
		}
		return otlptracegrpc.New(ctx, o...)
	default:
		return nil, fmt.Errorf("tracing: unknown protocol %q; want http or grpc", cfg.Protocol)
	}
}

// Enabled reports whether p records and exports spans.
func (p *Provider) Enabled() bool { return p != nil && p.tp != nil }

// ForceFlush exports every span ended so far, waiting at most until ctx is
// done.
func (p *Provider) ForceFlush(ctx context.Context) error {
	if !p.Enabled() {
		return nil
	}
	return p.tp.ForceFlush(ctx)
}

// Shutdown exports what is queued and stops the exporter, waiting at most
// until ctx is done. It is safe to call more than once.
func (p *Provider) Shutdown(ctx context.Context) error {
	if !p.Enabled() {
		return nil
	}
	err := p.tp.Shutdown(ctx)
	if err != nil && strings.Contains(err.Error(), "already shutdown") {
		return nil
	}
	return err
}
