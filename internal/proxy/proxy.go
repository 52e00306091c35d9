// Package proxy forwards a request to a backend of a pool and streams the
// answer back: the attempt loop with retries and their budget, per-attempt
// timeouts, header rewriting, and event-by-event streaming with pooled
// buffers.
package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/sluice-ai/sluice/internal/openai"
	"github.com/sluice-ai/sluice/internal/tracing"
	"github.com/sluice-ai/sluice/internal/upstream"
)

// Errors that end an attempt, as causes of its context.
var (
	errFirstByteTimeout  = errors.New("upstream did not answer within timeouts.first_byte")
	errStreamIdleTimeout = errors.New("upstream stream stalled longer than timeouts.stream_idle")
)

// Proxy forwards requests. The zero value is not usable; use New.
type Proxy struct {
	// Tracer, when set and enabled, traces each attempt as a client span
	// and propagates it to the backend (traceparent). Nil traces nothing.
	Tracer *tracing.Provider

	logger  *slog.Logger
	clock   clockwork.Clock
	bufPool sync.Pool
	watches sync.Pool // *idleWatch, armed on this Proxy's clock
}

// New returns a Proxy that logs upstream trouble to logger (nil discards)
// and reads time from clock (nil is the real clock).
func New(logger *slog.Logger, clock clockwork.Clock) *Proxy {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	return &Proxy{logger: logger, clock: clock, bufPool: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
}

// Request is what the gateway decided about a request before forwarding it.
type Request struct {
	// Pool serves the request.
	Pool *upstream.Pool
	// HashKey is the consistent_hash key ("" when not hashing).
	HashKey string
	// Prompt is the body's prompt blocks for a kv_aware pool
	// (upstream.Pool.HashPrompt); nil routes by load alone.
	Prompt *upstream.Prompt
	// Priority orders the request if it must wait for a backend.
	Priority upstream.Priority
	// Body is the request body when the gateway already read it (it can then
	// be replayed on retries and fallbacks); nil means stream r.Body, which
	// allows retries only for requests without a body.
	Body []byte
	// RequestID is sent upstream as X-Request-ID.
	RequestID string
	// Observer, when set, sees the response bytes as they are written to
	// the client (for token accounting).
	Observer Observer
}

// An Observer sees a response's bytes as they are written to the client.
// Observe must be cheap and never block.
type Observer interface {
	Observe(header http.Header, p []byte)
}

// ObserveFunc is a function as an Observer.
type ObserveFunc func(header http.Header, p []byte)

// Observe calls f.
func (f ObserveFunc) Observe(header http.Header, p []byte) { f(header, p) }

// Replayable reports whether the request can be sent again (retries,
// fallbacks): its body is in memory or it has none.
func (pr *Request) Replayable(r *http.Request) bool {
	return pr.Body != nil || r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0
}

// Result describes how a forwarded request ended, for logs and metrics.
type Result struct {
	// Status is the status sent to the client, or that Error would send;
	// 499 when the client went away first.
	Status   int
	Backend  string        // last backend tried ("" if none)
	Attempts int           // attempts made
	Bytes    int64         // response body bytes written
	TTFB     time.Duration // time to upstream response headers (0 if none)
	// FirstByte is the time to the first response body byte (0 if none):
	// for a stream, the first event, which the model sends when it has done
	// the prefill.
	FirstByte time.Duration
	// InterToken is a streamed (SSE) response's mean gap between events,
	// the inter-token latency, over InterTokenGaps gaps (0 for responses
	// that are not streamed or had one event).
	InterToken     time.Duration
	InterTokenGaps int
	Err            error // why the request failed, or nil
	// Error, when not nil, is the answer the pool could not avoid (no
	// capacity, every attempt failed) and nothing has been written to the
	// client yet: the caller may try a fallback pool, or write it.
	Error *openai.Error
	// Abort means the body broke after the status was sent and the response
	// cannot say so in-band: the caller must abort it (panic with
	// http.ErrAbortHandler) once it has logged the request.
	Abort bool
}

// StatusClientClosed is logged for requests whose client left before the
// answer was complete (as NGINX does).
const StatusClientClosed = 499

// Serve forwards r per pr. It writes the response to w, except when the pool
// cannot serve at all: then nothing is written and Result.Error says why.
// A request is retried (on another backend when there is one) while the
// pool's retry.on, its retry budget and retry.attempts allow, and never
// once a byte of the response reached the client.
func (p *Proxy) Serve(w http.ResponseWriter, r *http.Request, pr *Request) Result {
	pool := pr.Pool
	cfg := pool.Config()
	start := p.clock.Now()
	flight := pool.Enter()
	defer flight.Leave()

	maxAttempts := 1
	if pr.Replayable(r) {
		maxAttempts += cfg.Retry.Attempts
	}
	var (
		res  Result
		last *upstream.Backend
	)
	for attempt := 1; ; attempt++ {
		a, err := pool.Try(r.Context(), pr.HashKey, pr.Prompt, pr.Priority, last)
		if err != nil {
			if r.Context().Err() != nil {
				res.Status, res.Err = StatusClientClosed, r.Context().Err()
				return res
			}
			if last == nil || !errors.Is(err, upstream.ErrNoBackend) {
				res.Err = err
			}
			res.setError(admissionError(pool.Name(), res.Err))
			return res
		}
		res.Backend, res.Attempts = a.Backend().Key(), attempt
		kind, done := p.attempt(w, r, pr, a, start, attempt, attempt < maxAttempts, &res)
		if done {
			return res
		}
		if !flight.MayRetry(kind == "connect") {
			res.setError(errorFor(res.Err))
			return res
		}
		last = a.Backend()
		pool.Metrics.Retries.Inc()
		if d := backoff(cfg.Retry.Backoff.D(), attempt); d > 0 {
			t := p.clock.NewTimer(d)
			select {
			case <-r.Context().Done():
				t.Stop()
				res.Status, res.Err = StatusClientClosed, r.Context().Err()
				return res
			case <-t.Chan():
			}
		}
	}
}

func (res *Result) setError(e *openai.Error) {
	res.Error, res.Status = e, e.Status
}

// backoff is the delay before retry n (1-based): base × 2^(n-1), with full
// jitter in [0.5, 1.5) so retries of many requests spread out.
func backoff(base time.Duration, n int) time.Duration {
	if base <= 0 {
		return 0
	}
	d := base << min(n-1, 10)
	return time.Duration(float64(d) * (0.5 + rand.Float64()))
}

// admissionError is the answer when a pool has no backend for a request.
func admissionError(pool string, err error) *openai.Error {
	switch {
	case errors.Is(err, upstream.ErrQueueFull):
		return openai.Unavailable("queue_full", "pool "+pool+" is at capacity and its queue is full; retry later", time.Second)
	case errors.Is(err, upstream.ErrQueueTimeout):
		return openai.Unavailable("queue_timeout", "pool "+pool+" had no free backend within queue.timeout; retry later", time.Second)
	case errors.Is(err, upstream.ErrNoCapacity):
		return openai.Unavailable("no_capacity", "every backend of pool "+pool+" is at max_concurrency; retry later", time.Second)
	case errors.Is(err, upstream.ErrNoBackend):
		return openai.Unavailable("no_healthy_backend", "pool "+pool+" has no healthy backend; retry later", 5*time.Second)
	default:
		return errorFor(err) // retries ran out of backends after failures
	}
}

func errorFor(err error) *openai.Error {
	switch {
	case errors.Is(err, errFirstByteTimeout):
		return openai.GatewayTimeout(err.Error())
	case err == nil:
		return openai.BadGateway("upstream failed")
	default:
		return openai.BadGateway("upstream failed: " + err.Error())
	}
}

// attempt sends one try through a. done reports that the request is
// finished (answered, or failed for good with res.Error set); otherwise the
// caller may retry, res.Err holds why this attempt failed and kind how
// ("connect", "timeout", "error", or "" for a retryable status).
func (p *Proxy) attempt(w http.ResponseWriter, r *http.Request, pr *Request, a upstream.Attempt, start time.Time, n int, canRetry bool, res *Result) (kind string, done bool) {
	pool := pr.Pool
	// The attempt runs on the client's context, so a client that leaves
	// cancels it; timeouts.connect and timeouts.first_byte are enforced by
	// the pool's transport, which costs nothing per request.
	ctx := r.Context()
	var span tracing.Span
	if p.Tracer.Enabled() {
		ctx, span = p.Tracer.StartAttempt(ctx, pool.Name(), a.Backend().Key(), n)
		defer span.End()
	}
	out := p.outRequest(ctx, r, pr, a)
	sent := p.clock.Now()
	resp, err := a.Transport().RoundTrip(out)
	if err != nil {
		if r.Context().Err() != nil {
			span.SetError("canceled")
			a.Done(upstream.Outcome{Kind: "canceled"})
			res.Status, res.Err = StatusClientClosed, r.Context().Err()
			return "", true
		}
		kind = "error"
		switch {
		case isConnectFailure(err):
			kind = "connect"
		case isTimeout(err):
			kind, err = "timeout", errFirstByteTimeout
		}
		span.SetError(kind)
		a.Done(upstream.Outcome{Kind: kind, Failed: true})
		res.Err = err
		if canRetry && pool.RetryOn(kind, 0) {
			return kind, false
		}
		res.setError(errorFor(err))
		return kind, true
	}
	rtt := p.clock.Since(sent)
	span.SetHTTPStatus(resp.StatusCode)
	if canRetry && pool.RetryOn("", resp.StatusCode) {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		a.Done(upstream.Outcome{Status: resp.StatusCode, Failed: resp.StatusCode >= 500, Latency: rtt})
		res.Err = errors.New("upstream answered " + strconv.Itoa(resp.StatusCode))
		return "", false
	}
	res.TTFB = p.clock.Since(start)
	pool.Metrics.TTFB.Observe(res.TTFB.Seconds())
	// The latency estimate takes the time to the first body byte: for a
	// stream the headers come before the model has done any work (servers
	// send them before the request even leaves their queue), so only the
	// first event says how loaded the replica is.
	first, broken := p.respond(w, r, pr, resp, res)
	o := upstream.Outcome{Status: resp.StatusCode, Failed: resp.StatusCode >= 500 || broken, Latency: rtt}
	if !first.IsZero() {
		span.FirstToken(first)
		o.Latency = first.Sub(sent)
		if resp.StatusCode < 400 {
			o.FirstToken = o.Latency
		}
		o.Latency += res.decodeCost() // a stream's decoding speed counts too
		res.FirstByte = first.Sub(start)
	}
	a.Done(o)
	return "", true
}

// outbound holds what an attempt's upstream request is made of besides
// the request and its header map, allocated in one piece: the URL, the
// body reader and the values of the headers the proxy sets.
type outbound struct {
	url  url.URL
	body bodyReader
	vals [3]string // X-Forwarded-For, X-Forwarded-Host, X-Request-Id
}

// bodyReader replays a buffered request body; it is io.NopCloser around a
// bytes.Reader in one allocation instead of two.
type bodyReader struct{ bytes.Reader }

func (*bodyReader) Close() error { return nil }

// outRequest builds the upstream request for an attempt to b. It costs
// four allocations: outbound, the header map, the request, and the
// X-Forwarded-For value when a prior proxy set one.
func (p *Proxy) outRequest(ctx context.Context, r *http.Request, pr *Request, a upstream.Attempt) *http.Request {
	t := a.Backend().Target()
	o := &outbound{}
	u := &o.url
	u.Scheme, u.Host, u.Path, u.RawQuery = t.Scheme, t.Host, t.Path+r.URL.Path, r.URL.RawQuery
	if r.URL.RawPath != "" {
		u.RawPath = t.Path + r.URL.RawPath
	}
	h := make(http.Header, len(r.Header)+4)
	copyHeader(h, r.Header)
	if wantsTrailers(r.Header) {
		h["Te"] = teTrailers
	}
	ip := clientIP(r)
	if prior := r.Header["X-Forwarded-For"]; len(prior) > 0 {
		ip = joinComma(prior) + ", " + ip
	}
	o.vals[0] = ip
	h["X-Forwarded-For"] = o.vals[0:1:1]
	if r.TLS != nil {
		h["X-Forwarded-Proto"] = protoHTTPS
	} else {
		h["X-Forwarded-Proto"] = protoHTTP
	}
	if r.Host != "" {
		o.vals[1] = r.Host
		h["X-Forwarded-Host"] = o.vals[1:2:2]
	}
	if pr.RequestID != "" {
		o.vals[2] = pr.RequestID
		h["X-Request-Id"] = o.vals[2:3:3]
	}
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = emptyUA // keep Go's transport from adding its own
	}
	for k, vv := range pr.Pool.Headers(a.Backend()) {
		h[k] = vv
	}
	// WithContext is the one way to give a request its context, and it
	// copies: copy r and set every field, rather than build a request and
	// copy that.
	out := r.WithContext(ctx)
	out.Method = r.Method
	out.URL = u
	out.Proto, out.ProtoMajor, out.ProtoMinor = "HTTP/1.1", 1, 1
	out.Header = h
	out.Host = t.Host
	out.Body, out.GetBody, out.ContentLength = nil, nil, 0
	out.TransferEncoding, out.Close, out.Trailer = nil, false, nil
	out.Form, out.PostForm, out.MultipartForm = nil, nil, nil
	out.RemoteAddr, out.RequestURI, out.Pattern = "", "", ""
	out.TLS, out.Response = nil, nil // (Cancel is never set on a server's request)
	switch {
	case pr.Body != nil:
		out.ContentLength = int64(len(pr.Body))
		if len(pr.Body) == 0 {
			out.Body = http.NoBody
		} else {
			o.body.Reset(pr.Body)
			out.Body = &o.body
		}
	case r.Body == nil || r.Body == http.NoBody:
		out.Body = http.NoBody
	default:
		out.Body = r.Body
		out.ContentLength = r.ContentLength
	}
	if p.Tracer.Enabled() {
		p.Tracer.Inject(ctx, h) // the attempt's span is the backend's parent
	}
	return out
}

var (
	protoHTTP  = []string{"http"}
	protoHTTPS = []string{"https"}
	emptyUA    = []string{""}
	teTrailers = []string{"trailers"}
)

func joinComma(vv []string) string {
	if len(vv) == 1 {
		return vv[0]
	}
	n := 0
	for _, v := range vv {
		n += len(v) + 2
	}
	b := make([]byte, 0, n)
	for i, v := range vv {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, v...)
	}
	return string(b)
}

// isConnectFailure reports errors that happened before the request could
// have reached the backend, so retrying elsewhere is safe.
func isConnectFailure(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// isTimeout reports the transport's timeout for response headers.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
