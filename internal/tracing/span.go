package tracing

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Attribute keys: OpenTelemetry semantic conventions (HTTP, GenAI) where
// one applies, sluice.* for the gateway's own.
const (
	keyMethod        = attribute.Key("http.request.method")
	keyRoute         = attribute.Key("http.route")
	keyStatus        = attribute.Key("http.response.status_code")
	keyPath          = attribute.Key("url.path")
	keyErrorType     = attribute.Key("error.type")
	keyOperation     = attribute.Key("gen_ai.operation.name")
	keyRequestModel  = attribute.Key("gen_ai.request.model")
	keyResponseModel = attribute.Key("gen_ai.response.model")
	keyResponseID    = attribute.Key("gen_ai.response.id")
	keyInputTokens   = attribute.Key("gen_ai.usage.input_tokens")
	keyOutputTokens  = attribute.Key("gen_ai.usage.output_tokens")
	keyFinishReasons = attribute.Key("gen_ai.response.finish_reasons")
	keyPool          = attribute.Key("sluice.pool")
	keyBackend       = attribute.Key("sluice.backend")
	keyAttempt       = attribute.Key("sluice.attempt")
	keyTenant        = attribute.Key("sluice.tenant")
	keyStream        = attribute.Key("sluice.stream")
	keyCacheResult   = attribute.Key("sluice.cache.result")
	keyQueueOutcome  = attribute.Key("sluice.queue.outcome")
	keyJobID         = attribute.Key("sluice.job.id")
)

// Span names. Constant, so starting a span allocates no name.
const (
	nameAdmit    = "admit"
	nameQueue    = "queue wait"
	nameCache    = "cache lookup"
	nameAttempt  = "upstream attempt"
	nameDispatch = "job dispatch"
	// EventFirstToken marks the first token of a response on its span.
	EventFirstToken = "first_token"
)

// Span is one span of the gateway's work. The zero Span (tracing off, or
// not sampled) does nothing; its methods cost a nil check.
type Span struct {
	s      trace.Span
	server bool        // HTTP status >= 500 is an error on a server span, >= 400 on a client span
	g      *generation // the tracer provider a recording span holds until End
}

// Start starts the server span of request r, continuing the trace of its
// traceparent/tracestate (and baggage) headers if it has them. The span is
// named for the method and, when r matched a ServeMux pattern, its route;
// SetRoute renames it. The returned context carries the span.
func (p *Provider) Start(ctx context.Context, r *http.Request) (context.Context, Span) {
	if !p.Enabled() {
		return ctx, Span{}
	}
	ctx = p.prop.Extract(ctx, propagation.HeaderCarrier(r.Header))
	name := r.Method
	if r.Pattern != "" {
		name = r.Pattern
		if !strings.HasPrefix(name, r.Method+" ") {
			name = r.Method + " " + name
		}
	}
	ctx, sp := p.start(ctx, name, trace.WithSpanKind(trace.SpanKindServer))
	sp.server = true
	if sp.IsRecording() {
		sp.s.SetAttributes(keyMethod.String(r.Method), keyPath.String(r.URL.Path))
	}
	return ctx, sp
}

// StartAdmit starts the span of admission: authentication, rate limits,
// routing and the concurrency caps, before a backend is picked.
func (p *Provider) StartAdmit(ctx context.Context) (context.Context, Span) {
	return p.startInternal(ctx, nameAdmit, "")
}

// StartQueueWait starts the span of a request's wait in pool's queue; end
// it with SetQueueOutcome when the wait ends.
func (p *Provider) StartQueueWait(ctx context.Context, pool string) (context.Context, Span) {
	return p.startInternal(ctx, nameQueue, pool)
}

// StartCacheLookup starts the span of a response-cache lookup for pool; set
// its result with SetCacheResult.
func (p *Provider) StartCacheLookup(ctx context.Context, pool string) (context.Context, Span) {
	return p.startInternal(ctx, nameCache, pool)
}

func (p *Provider) startInternal(ctx context.Context, name, pool string) (context.Context, Span) {
	if !p.Enabled() || !trace.SpanContextFromContext(ctx).IsValid() {
		// Stages are only recorded under a request's span.
		return ctx, Span{}
	}
	ctx, sp := p.start(ctx, name, trace.WithSpanKind(trace.SpanKindInternal))
	sp.server = true
	if pool != "" && sp.IsRecording() {
		sp.s.SetAttributes(keyPool.String(pool))
	}
	return ctx, sp
}

// StartAttempt starts the client span of one upstream attempt (attempt 1 is
// the first try; retries and fallbacks are siblings under the request's
// span). Pass the returned context to Inject so the backend's spans become
// children of this one. backend is the backend's key (its URL); user
// information in it is never recorded.
func (p *Provider) StartAttempt(ctx context.Context, pool, backend string, attempt int) (context.Context, Span) {
	if !p.Enabled() {
		return ctx, Span{}
	}
	ctx, sp := p.start(ctx, nameAttempt, trace.WithSpanKind(trace.SpanKindClient))
	if sp.IsRecording() {
		sp.s.SetAttributes(keyPool.String(pool), keyBackend.String(redactURL(backend)), keyAttempt.Int(attempt))
	}
	return ctx, sp
}

// Inject writes the W3C traceparent and tracestate (and baggage) of ctx's
// span into h, replacing what the client sent, so the backend continues the
// trace under the attempt span. With tracing off it leaves h alone: a
// client's own traceparent then passes through unchanged.
func (p *Provider) Inject(ctx context.Context, h http.Header) {
	if !p.Enabled() {
		return
	}
	p.prop.Inject(ctx, propagation.HeaderCarrier(h))
}

// redactURL drops user information from a backend URL.
func redactURL(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable backend URL)"
	}
	u.User = nil
	return u.String()
}

// End ends the span. A span ends once; later calls do nothing.
func (s Span) End() {
	if s.s == nil {
		return
	}
	if s.g != nil && s.s.IsRecording() {
		if s.g.down.Load() {
			s.g.dropped.Inc()
		}
		s.s.End() // queued on its own provider before that may shut down
		s.g.release()
		return
	}
	s.s.End()
}

// IsRecording reports whether the span records attributes (it is sampled).
// Callers need not check it before the setters; it lets a caller skip work
// done only to compute an attribute.
func (s Span) IsRecording() bool { return s.s != nil && s.s.IsRecording() }

// TraceID returns the span's trace ID in hex, or "" when there is none (for
// access logs).
func (s Span) TraceID() string {
	if s.s == nil {
		return ""
	}
	sc := s.s.SpanContext()
	if !sc.IsValid() {
		return ""
	}
	return sc.TraceID().String()
}

// set records one attribute. It takes one value, not a variadic list: a
// list would escape to the heap at every call site, even when the span is
// off.
func (s Span) set(kv attribute.KeyValue) {
	if s.s != nil && s.s.IsRecording() {
		s.s.SetAttributes(kv)
	}
}

// SetRoute records the low-cardinality route the request matched (such as
// "/v1/chat/completions") and names the span "METHOD route".
func (s Span) SetRoute(method, route string) {
	if !s.IsRecording() {
		return
	}
	s.s.SetName(method + " " + route)
	s.s.SetAttributes(keyRoute.String(route))
}

// SetPool records the pool that serves the request.
func (s Span) SetPool(pool string) { s.set(keyPool.String(pool)) }

// SetBackend records the backend (its key) an attempt went to.
func (s Span) SetBackend(backend string) { s.set(keyBackend.String(redactURL(backend))) }

// SetTenant records the tenant's name (never its key).
func (s Span) SetTenant(tenant string) { s.set(keyTenant.String(tenant)) }

// SetJob records the ID of the job a span works for.
func (s Span) SetJob(id string) { s.set(keyJobID.String(id)) }

// SetModel records gen_ai.request.model, the model the client asked for.
func (s Span) SetModel(model string) { s.set(keyRequestModel.String(model)) }

// SetOperation records gen_ai.operation.name for an OpenAI-style path:
// "chat" for /v1/chat/completions, "text_completion" for /v1/completions,
// "embeddings" for /v1/embeddings. Other paths record nothing.
func (s Span) SetOperation(path string) {
	if op := Operation(path); op != "" {
		s.set(keyOperation.String(op))
	}
}

// Operation maps an OpenAI-style path to its gen_ai.operation.name, or "".
func Operation(path string) string {
	switch path {
	case "/v1/chat/completions":
		return "chat"
	case "/v1/completions":
		return "text_completion"
	case "/v1/embeddings":
		return "embeddings"
	}
	return ""
}

// SetStream records whether the response is streamed.
func (s Span) SetStream(stream bool) { s.set(keyStream.Bool(stream)) }

// SetResponse records gen_ai.response.model and gen_ai.response.id from
// the response body; empty values are skipped.
func (s Span) SetResponse(model, id string) {
	if !s.IsRecording() {
		return
	}
	if model != "" {
		s.s.SetAttributes(keyResponseModel.String(model))
	}
	if id != "" {
		s.s.SetAttributes(keyResponseID.String(id))
	}
}

// SetUsage records gen_ai.usage.input_tokens and output_tokens.
func (s Span) SetUsage(input, output int) {
	if s.IsRecording() {
		s.s.SetAttributes(keyInputTokens.Int(input), keyOutputTokens.Int(output))
	}
}

// SetFinishReasons records gen_ai.response.finish_reasons ("stop",
// "length", ...).
func (s Span) SetFinishReasons(reasons ...string) {
	if len(reasons) > 0 && s.IsRecording() {
		// A copy, so reasons does not escape: a caller's literal stays on
		// its stack when the span is off.
		s.s.SetAttributes(keyFinishReasons.StringSlice(append([]string(nil), reasons...)))
	}
}

// FirstToken adds the first_token event at t (now when t is zero).
func (s Span) FirstToken(t time.Time) {
	if !s.IsRecording() {
		return
	}
	if t.IsZero() {
		s.s.AddEvent(EventFirstToken)
		return
	}
	s.s.AddEvent(EventFirstToken, trace.WithTimestamp(t))
}

// SetCacheResult records a cache lookup's result: hit, miss or bypass.
func (s Span) SetCacheResult(result string) { s.set(keyCacheResult.String(result)) }

// SetQueueOutcome records how a queue wait ended: "admitted", or the
// rejection reason (queue_full, queue_timeout, no_backend), which also marks
// the span as an error.
func (s Span) SetQueueOutcome(outcome string) {
	if !s.IsRecording() {
		return
	}
	s.s.SetAttributes(keyQueueOutcome.String(outcome))
	if outcome != "admitted" {
		s.s.SetStatus(codes.Error, outcome)
	}
}

// SetHTTPStatus records the response status; 5xx (and, on an attempt,
// 4xx) marks the span as an error.
func (s Span) SetHTTPStatus(code int) {
	if !s.IsRecording() {
		return
	}
	s.s.SetAttributes(keyStatus.Int(code))
	if code >= 500 || (!s.server && code >= 400) {
		s.s.SetStatus(codes.Error, "")
		s.s.SetAttributes(keyErrorType.String(statusText(code)))
	}
}

// SetError marks the span as failed with a short error class such as
// "connect", "timeout", "canceled", "queue_full", "rate_limited". It takes a
// class, not an error, so no message (which may quote a request) is
// recorded.
func (s Span) SetError(class string) {
	if !s.IsRecording() {
		return
	}
	s.s.SetAttributes(keyErrorType.String(class))
	s.s.SetStatus(codes.Error, class)
}

func statusText(code int) string {
	switch {
	case code >= 100 && code < 600:
		return httpCodes[code-100]
	}
	return "other"
}

// httpCodes holds "100".."599" so recording a status allocates nothing.
var httpCodes = func() []string {
	out := make([]string, 500)
	for i := range out {
		out[i] = itoa(i + 100)
	}
	return out
}()

func itoa(n int) string {
	return string([]byte{byte('0' + n/100), byte('0' + n/10%10), byte('0' + n%10)})
}
