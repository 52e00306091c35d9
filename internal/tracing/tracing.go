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
//
// A Provider follows config reloads (Prepare, then Commit; or Apply): the
// new tracer provider is built beside the one in force, swapped in
// atomically, and the old one is shut down — its queue flushed to its
// collector — once the last span it started has ended.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
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
	// RetireTimeout bounds how long a tracer provider replaced by a reload
	// waits for the spans it started to end before it is shut down; spans
	// that end later are dropped and counted (reason shutdown). Default 10m.
	RetireTimeout time.Duration
}

// Provider starts the gateway's spans and propagates their context. It is
// safe for concurrent use, also while a reload swaps its tracer provider.
type Provider struct {
	m    *metrics
	opts Options
	prop propagation.TextMapPropagator
	cur  atomic.Pointer[generation] // the tracer provider in force; never nil

	mu       sync.Mutex     // serializes Prepare, Commit and Shutdown
	closed   bool           // Shutdown was called; guarded by mu
	closing  chan struct{}  // closed by Shutdown: retired providers stop waiting for their spans
	retiring sync.WaitGroup // goroutines shutting down retired providers
}

// generation is one tracer provider built from one config. Every recording
// span holds its generation (active) from start to end, so a generation
// replaced by a reload is shut down only after its last span ended.
type generation struct {
	cfg    config.Tracing
	tp     *sdktrace.TracerProvider // nil: tracing off
	tracer trace.Tracer

	active   atomic.Int64 // recording spans started and not yet ended
	retired  atomic.Bool  // replaced; shut down once active is 0
	idle     chan struct{}
	idleOnce sync.Once
	down     atomic.Bool // shut down: a span ending now is dropped
	dropped  prometheus.Counter
}

// New returns a Provider exporting to cfg.OTLPEndpoint, or a Provider that
// does nothing when it is "". The exporter connects lazily: an unreachable
// collector is not an error here, only dropped spans later.
func New(ctx context.Context, cfg config.Tracing, opts Options) (*Provider, error) {
	p := &Provider{
		m:       newMetrics(opts.Registerer),
		opts:    withDefaults(opts),
		prop:    propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		closing: make(chan struct{}),
	}
	g, err := p.build(ctx, cfg)
	if err != nil {
		return nil, err
	}
	p.cur.Store(g)
	return p, nil
}

func withDefaults(opts Options) Options {
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
	if opts.RetireTimeout <= 0 {
		opts.RetireTimeout = 10 * time.Minute
	}
	return opts
}

// build makes the generation for cfg; its export loop runs until it is
// shut down.
func (p *Provider) build(ctx context.Context, cfg config.Tracing) (*generation, error) {
	g := &generation{cfg: cfg, idle: make(chan struct{}), dropped: p.m.shutdown}
	if cfg.OTLPEndpoint == "" {
		return g, nil
	}
	ratio := cfg.SampleRatio
	if ratio < 0 || ratio > 1 {
		return nil, fmt.Errorf("tracing: sample_ratio %v out of range 0..1", ratio)
	}
	exp, err := newExporter(ctx, cfg, p.opts.ExportTimeout)
	if err != nil {
		return nil, err
	}
	b := newBatcher(exp, p.opts, p.m)
	res := resource.NewSchemaless(
		attribute.String("service.name", p.opts.ServiceName),
		attribute.String("service.version", buildinfo.Version),
	)
	g.tp = sdktrace.NewTracerProvider(
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))),
		sdktrace.WithSpanProcessor(b),
		sdktrace.WithResource(res),
	)
	g.tracer = g.tp.Tracer("github.com/sluice-ai/sluice", trace.WithInstrumentationVersion(buildinfo.Version))
	return g, nil
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

// Enabled reports whether p records and exports spans (under the config
// in force).
func (p *Provider) Enabled() bool { return p != nil && p.cur.Load().tp != nil }

// acquire returns the generation in force with one more active span. A
// generation swapped out between the load and the count is given back and
// the new one taken, so a retired generation that saw no active span never
// gets one later.
func (p *Provider) acquire() *generation {
	for {
		g := p.cur.Load()
		g.active.Add(1)
		if p.cur.Load() == g {
			return g
		}
		g.release()
	}
}

// release ends one active span of g; the last one of a retired generation
// lets its shutdown go ahead.
func (g *generation) release() {
	if g.active.Add(-1) == 0 && g.retired.Load() {
		g.idleOnce.Do(func() { close(g.idle) })
	}
}

// start starts a span on the generation in force. A recording span holds
// the generation until Span.End.
func (p *Provider) start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, Span) {
	g := p.acquire()
	if g.tp == nil {
		g.release()
		return ctx, Span{}
	}
	ctx, s := g.tracer.Start(ctx, name, opts...)
	if !s.IsRecording() {
		g.release()
		return ctx, Span{s: s}
	}
	return ctx, Span{s: s, g: g}
}

// Change is a tracing config prepared by Prepare, to Commit or Discard.
type Change struct {
	p    *Provider
	next *generation // nil: the config in force stays
}

// Prepare builds the tracer provider cfg needs (its exporter connects
// lazily) without touching the one in force. It fails on a config New would
// refuse, and after Shutdown. When cfg is the config in force, the change
// keeps everything as it is.
func (p *Provider) Prepare(ctx context.Context, cfg config.Tracing) (*Change, error) {
	if p == nil {
		return nil, errors.New("tracing: no provider to reconfigure")
	}
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return nil, errors.New("tracing: the provider is shut down")
	}
	if sameConfig(p.cur.Load().cfg, cfg) {
		return &Change{p: p}, nil
	}
	g, err := p.build(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &Change{p: p, next: g}, nil
}

func sameConfig(a, b config.Tracing) bool {
	return a.OTLPEndpoint == b.OTLPEndpoint && a.Protocol == b.Protocol && a.SampleRatio == b.SampleRatio && maps.Equal(a.Headers, b.Headers)
}

// Commit puts the prepared config in force: spans started from now on use
// it; the tracer provider it replaces is shut down, its queue flushed, once
// the spans it started have ended (or after Options.RetireTimeout). It
// cannot fail; a Change is committed or discarded once.
func (c *Change) Commit() {
	if c == nil || c.next == nil {
		return
	}
	p, next := c.p, c.next
	c.next = nil
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		// Shutdown came between Prepare and Commit: nothing to trace for.
		p.shutdownLater(next)
		return
	}
	old := p.cur.Swap(next)
	old.retired.Store(true)
	if old.active.Load() == 0 {
		old.idleOnce.Do(func() { close(old.idle) })
	}
	p.shutdownLater(old)
}

// Discard drops a prepared change: its tracer provider, which started no
// span, is shut down.
func (c *Change) Discard() {
	if c == nil || c.next == nil {
		return
	}
	g := c.next
	c.next = nil
	g.retired.Store(true)
	g.idleOnce.Do(func() { close(g.idle) })
	c.p.mu.Lock()
	defer c.p.mu.Unlock()
	c.p.shutdownLater(g)
}

// Apply prepares cfg and commits it.
func (p *Provider) Apply(ctx context.Context, cfg config.Tracing) error {
	c, err := p.Prepare(ctx, cfg)
	if err != nil {
		return err
	}
	c.Commit()
	return nil
}

// shutdownLater shuts g down once it is idle (its last span ended), its
// retire timeout passed, or p shuts down. The caller holds p.mu.
func (p *Provider) shutdownLater(g *generation) {
	if g.tp == nil {
		return
	}
	p.retiring.Add(1)
	go func() {
		defer p.retiring.Done()
		t := time.NewTimer(p.opts.RetireTimeout)
		defer t.Stop()
		select {
		case <-g.idle:
		case <-t.C:
			p.opts.Logger.Warn("tracing: spans of the replaced tracing config still open; shutting it down", "spans", g.active.Load())
		case <-p.closing:
		}
		// The batcher bounds each export by ExportTimeout, so this ends.
		if err := g.shutdown(context.Background()); err != nil {
			p.opts.Logger.Debug("tracing: shut down replaced provider", "err", err)
		}
	}()
}

// ForceFlush exports every span ended so far, waiting at most until ctx is
// done.
func (p *Provider) ForceFlush(ctx context.Context) error {
	if !p.Enabled() {
		return nil
	}
	return p.cur.Load().tp.ForceFlush(ctx)
}

// Shutdown exports what is queued and stops the exporter, also those of
// configs a reload replaced, waiting at most until ctx is done. It is safe
// to call more than once; Prepare fails after it.
func (p *Provider) Shutdown(ctx context.Context) error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.closing)
	}
	p.mu.Unlock()
	var err error
	if g := p.cur.Load(); g.tp != nil {
		err = g.shutdown(ctx)
	}
	done := make(chan struct{})
	go func() { p.retiring.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		if err == nil {
			err = ctx.Err()
		}
	}
	return err
}

// shutdown flushes g's queue and stops its exporter. A span of g that
// ends afterwards is counted as dropped (the SDK no longer hands it to the
// batcher).
func (g *generation) shutdown(ctx context.Context) error {
	g.down.Store(true)
	err := g.tp.Shutdown(ctx)
	if err != nil && strings.Contains(err.Error(), "already shutdown") {
		return nil
	}
	return err
}
