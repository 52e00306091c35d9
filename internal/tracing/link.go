package tracing

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// LinkOf returns the span context of ctx's span as a W3C traceparent
// string ("00-<trace-id>-<span-id>-<flags>"), to store with a job so its
// dispatch can link back to the request that submitted it. It returns ""
// when ctx carries no valid span (tracing off).
func LinkOf(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return ""
	}
	c := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(trace.ContextWithSpanContext(context.Background(), sc), c)
	return c["traceparent"]
}

// ParseLink parses what LinkOf returned. ok is false for "" and for
// anything that is not a valid traceparent.
func ParseLink(link string) (sc trace.SpanContext, ok bool) {
	if link == "" {
		return sc, false
	}
	ctx := propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier{"traceparent": link})
	sc = trace.SpanContextFromContext(ctx)
	return sc, sc.IsValid()
}

// StartDispatch starts the span of one dispatch of a job: a new trace
// (the job runs long after the request that submitted it ended) with a span
// link to link, the submitting request's span as LinkOf gave it. Attempts
// started under the returned context are its children. A bad or empty link
// only means no link.
func (p *Provider) StartDispatch(ctx context.Context, link, jobID, pool string, attempt int) (context.Context, Span) {
	if !p.Enabled() {
		return ctx, Span{}
	}
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer), trace.WithNewRoot()}
	if sc, ok := ParseLink(link); ok {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
	}
	ctx, sp := p.start(ctx, nameDispatch, opts...)
	sp.server = true
	if sp.IsRecording() {
		sp.s.SetAttributes(keyJobID.String(jobID), keyPool.String(pool), keyAttempt.Int(attempt))
	}
	return ctx, sp
}
