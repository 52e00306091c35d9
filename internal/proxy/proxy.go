// Package proxy forwards a request to a backend of a pool and streams the
// answer back: the attempt loop with retries and their budget, per-attempt
// timeouts, header rewriting, and event-by-event streaming with pooled
// buffers.
package proxy

import (
	"bytes"
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

	"github.com/sluice-ai/sluice/internal/openai"
	"github.com/sluice-ai/sluice/internal/upstream"
)

// Errors that end an attempt, as causes of its context.
var (
	errFirstByteTimeout  = errors.New("upstream did not answer within timeouts.first_byte")
	errStreamIdleTimeout = errors.New("upstream stream stalled longer than timeouts.stream_idle")
)

// Proxy forwards requests. The zero value is not usable; use New.
type Proxy struct {
	logger  *slog.Logger
	bufPool sync.Pool
}

// New returns a Proxy that logs upstream trouble to logger (nil discards).
func New(logger *slog.Logger) *Proxy {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Proxy{logger: logger, bufPool: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
}

// Request is what the gateway decided about a request before forwarding it.
type Request struct {
	// Pool serves the request.
	Pool *upstream.Pool
	// HashKey is the consistent_hash key ("" when not hashing).
	HashKey string
	// Priority orders the request if it must wait for a backend.
	Priority upstream.Priority
	// Body is the request body when the gateway already read it (it can then
	// be replayed on retries and fallbacks); nil means stream r.Body, which
	// allows retries only for requests without a body.
	Body []byte
	// RequestID is sent upstream as X-Request-ID.
	RequestID string
	// Observe, when set, sees the response bytes as they are written to the
	// client (for token accounting). It must be cheap and never block.
	Observe func(header http.Header, p []byte)
}

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
	Err      error         // why the request failed, or nil
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
func (p *Proxy) Serve(w http.ResponseWriter, r *http.Request, pr *Request) Result {
	pool := pr.Pool
	cfg := pool.Config()
	start := time.Now()
	pool.Active.Add(1)
	defer pool.Active.Add(-1)

	maxAttempts := 1
	if pr.Replayable(r) {
		maxAttempts += cfg.Retry.Attempts
	}
	var (
		res     Result
		last    *upstream.Backend
		retried bool
	)
	defer func() {
		if retried {
			pool.Retrying.Add(-1)
		}
	}()
	for attempt := 1; ; attempt++ {
		b, err := pool.Acquire(r.Context(), pr.HashKey, pr.Priority, last)
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
		res.Backend, res.Attempts = b.Key(), attempt
		if p.attempt(w, r, pr, b, start, attempt < maxAttempts, &res) {
			return res
		}
		last = b
		// Retry within the budget: retries in flight may not exceed budget ×
		// requests in flight (with a floor of 3) so a failing pool is not
		// hammered with retry storms. A connect failure is exempt: the
		// request never reached a replica, so retrying it adds no load that
		// the first try did not already fail to add (a dead replica's port).
		if !retried && !isConnectFailure(res.Err) {
			limit := max(int64(cfg.Retry.Budget*float64(pool.Active.Load())), 3)
			if pool.Retrying.Load() >= limit {
				res.setError(errorFor(res.Err))
				return res
			}
			pool.Retrying.Add(1)
			retried = true
		}
		pool.Metrics.Retries.Inc()
		if d := backoff(cfg.Retry.Backoff.D(), attempt); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-r.Context().Done():
				t.Stop()
				res.Status, res.Err = StatusClientClosed, r.Context().Err()
				return res
			case <-t.C:
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

// attempt sends one try to b. done reports that the request is finished
// (answered, or failed for good with res.Error set); otherwise the caller may
// retry, and res.Err holds why this attempt failed.
func (p *Proxy) attempt(w http.ResponseWriter, r *http.Request, pr *Request, b *upstream.Backend, start time.Time, canRetry bool, res *Result) (done bool) {
	pool := pr.Pool
	cfg := pool.Config()
	// The attempt runs on the client's context, so a client that leaves
	// cancels it; timeouts.connect and timeouts.first_byte are enforced by
	// the pool's transport, which costs nothing per request.
	out := p.outRequest(r, pr, b)
	sent := time.Now()
	resp, err := pool.Transport(b).RoundTrip(out)
	if err != nil {
		pool.Release(b, 0)
		if r.Context().Err() != nil {
			b.Upstream.IncLabel("canceled")
			res.Status, res.Err = StatusClientClosed, r.Context().Err()
			return true
		}
		pool.Observe(b, true)
		// Each failure is retried when the status it would produce is in
		// retry.on: a connect failure (or 502), a broken connection (502),
		// a first-byte timeout (504, or "timeout").
		kind, status := "error", http.StatusBadGateway
		switch {
		case isConnectFailure(err):
			kind = "connect"
		case isTimeout(err):
			kind, status = "timeout", http.StatusGatewayTimeout
			err = errFirstByteTimeout
		}
		res.Err = err
		b.Upstream.IncLabel(kind)
		if canRetry && retryOn(cfg.Retry.On, kind, status) {
			return false
		}
		res.setError(errorFor(err))
		return true
	}
	rtt := time.Since(sent)
	b.Upstream.Inc(resp.StatusCode)
	pool.Observe(b, resp.StatusCode >= 500)
	if canRetry && retryOn(cfg.Retry.On, "", resp.StatusCode) {
		pool.Release(b, rtt)
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		res.Err = errors.New("upstream answered " + strconv.Itoa(resp.StatusCode))
		return false
	}
	res.TTFB = time.Since(start)
	pool.Metrics.TTFB.Observe(res.TTFB.Seconds())
	// The latency estimate takes the time to the first body byte: for a
	// stream the headers come before the model has done any work (servers
	// send them before the request even leaves their queue), so only the
	// first event says how loaded the replica is.
	var first time.Time
	defer func() {
		if !first.IsZero() {
			rtt = first.Sub(sent)
		}
		pool.Release(b, rtt)
	}()
	first = p.respond(w, r, pr, b, resp, res)
	return true
}

// retryOn reports whether an attempt that ended with kind (connect, timeout)
// or HTTP status is retried under the pool's retry.on list.
func retryOn(on []string, kind string, status int) bool {
	for _, c := range on {
		switch {
		case kind == "connect" && c == "connect_failure":
			return true
		case kind == "timeout" && c == "timeout":
			return true
		case status != 0 && len(c) == 3 && c == strconv.Itoa(status):
			return true
		}
	}
	return false
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

// outRequest builds the upstream request for an attempt to b.
func (p *Proxy) outRequest(r *http.Request, pr *Request, b *upstream.Backend) *http.Request {
	t := b.Target()
	u := &url.URL{Scheme: t.Scheme, Host: t.Host, Path: t.Path + r.URL.Path, RawQuery: r.URL.RawQuery}
	if r.URL.RawPath != "" {
		u.RawPath = t.Path + r.URL.RawPath
	}
	h := make(http.Header, len(r.Header)+4)
	copyHeader(h, r.Header)
	if wantsTrailers(r.Header) {
		h["Te"] = []string{"trailers"}
	}
	ip := clientIP(r)
	if prior := r.Header["X-Forwarded-For"]; len(prior) > 0 {
		ip = joinComma(prior) + ", " + ip
	}
	h["X-Forwarded-For"] = []string{ip}
	if r.TLS != nil {
		h["X-Forwarded-Proto"] = protoHTTPS
	} else {
		h["X-Forwarded-Proto"] = protoHTTP
	}
	if r.Host != "" {
		h["X-Forwarded-Host"] = []string{r.Host}
	}
	if pr.RequestID != "" {
		h["X-Request-Id"] = []string{pr.RequestID}
	}
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = emptyUA // keep Go's transport from adding its own
	}
	out := &http.Request{
		Method:     r.Method,
		URL:        u,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     h,
		Host:       t.Host,
	}
	switch {
	case pr.Body != nil:
		out.Body = io.NopCloser(bytes.NewReader(pr.Body))
		out.ContentLength = int64(len(pr.Body))
		if len(pr.Body) == 0 {
			out.Body = http.NoBody
		}
	case r.Body == nil || r.Body == http.NoBody:
		out.Body = http.NoBody
	default:
		out.Body = r.Body
		out.ContentLength = r.ContentLength
	}
	return out.WithContext(r.Context())
}

var (
	protoHTTP  = []string{"http"}
	protoHTTPS = []string{"https"}
	emptyUA    = []string{""}
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
