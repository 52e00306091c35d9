package tracing

import (
	"context"
	"log/slog"
	"sync"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// batcher is a span processor with a bounded queue that never blocks the
// caller. It is the SDK's batch span processor with the one thing that one
// lacks for operators: every span it drops is counted in a Prometheus
// counter (the SDK drops silently unless its experimental self-metrics are
// turned on through an OpenTelemetry metrics pipeline).
type batcher struct {
	exp       sdktrace.SpanExporter
	queue     chan sdktrace.ReadOnlySpan
	batchSize int
	interval  time.Duration
	timeout   time.Duration
	m         *metrics
	log       *slog.Logger

	flush chan chan struct{}
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
	err   error
}

var _ sdktrace.SpanProcessor = (*batcher)(nil)

func newBatcher(exp sdktrace.SpanExporter, o Options, m *metrics) *batcher {
	b := &batcher{
		exp: exp, queue: make(chan sdktrace.ReadOnlySpan, o.QueueSize),
		batchSize: o.BatchSize, interval: o.Interval, timeout: o.ExportTimeout,
		m: m, log: o.Logger,
		flush: make(chan chan struct{}), stop: make(chan struct{}), done: make(chan struct{}),
	}
	go b.run()
	return b
}

func (b *batcher) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

// OnEnd queues a sampled span, or drops and counts it when the queue is
// full. It never waits.
func (b *batcher) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return
	}
	select {
	case <-b.done:
		b.m.shutdown.Inc()
		return
	default:
	}
	select {
	case b.queue <- s:
	default:
		b.m.queueFull.Inc()
	}
}

// run owns the export loop; Shutdown stops it and waits for it.
func (b *batcher) run() {
	defer close(b.done)
	t := time.NewTicker(b.interval)
	defer t.Stop()
	batch := make([]sdktrace.ReadOnlySpan, 0, b.batchSize)
	failing := false
	send := func(ctx context.Context) {
		if len(batch) == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(ctx, b.timeout)
		err := b.exp.ExportSpans(ctx, batch)
		cancel()
		if err != nil {
			b.m.exportFailed.Add(float64(len(batch)))
			if !failing {
				// The error names the endpoint, never the headers.
				b.log.Warn("tracing: export failed; spans are dropped until the collector answers", "spans", len(batch), "err", err)
				failing = true
			}
		} else {
			b.m.exported.Add(float64(len(batch)))
			if failing {
				b.log.Info("tracing: exports recovered")
				failing = false
			}
		}
		clear(batch)
		batch = batch[:0]
	}
	drain := func(ctx context.Context) {
		for {
			select {
			case s := <-b.queue:
				batch = append(batch, s)
				if len(batch) == b.batchSize {
					send(ctx)
				}
			default:
				send(ctx)
				return
			}
		}
	}
	for {
		select {
		case s := <-b.queue:
			batch = append(batch, s)
			if len(batch) == b.batchSize {
				send(context.Background())
			}
		case <-t.C:
			send(context.Background())
		case ack := <-b.flush:
			drain(context.Background())
			close(ack)
		case <-b.stop:
			// Each export is bounded by b.timeout, so this ends even when
			// Shutdown's caller stopped waiting.
			drain(context.Background())
			return
		}
	}
}

// ForceFlush exports everything queued before it returns.
func (b *batcher) ForceFlush(ctx context.Context) error {
	ack := make(chan struct{})
	select {
	case b.flush <- ack:
	case <-b.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-ack:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Shutdown exports what is queued, stops the loop and the exporter. Later
// calls return the first call's result. When ctx ends first, the loop still
// finishes by itself within one export timeout per queued batch.
func (b *batcher) Shutdown(ctx context.Context) error {
	b.once.Do(func() {
		close(b.stop)
		select {
		case <-b.done:
		case <-ctx.Done():
			b.err = ctx.Err()
		}
		if err := b.exp.Shutdown(ctx); err != nil && b.err == nil {
			b.err = err
		}
	})
	return b.err
}
