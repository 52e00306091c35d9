package gateway

import (
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/sluice-ai/sluice/internal/auth"
	"github.com/sluice-ai/sluice/internal/openai"
	"github.com/sluice-ai/sluice/internal/proxy"
	"github.com/sluice-ai/sluice/internal/ratelimit"
	"github.com/sluice-ai/sluice/internal/tracing"
	"github.com/sluice-ai/sluice/internal/upstream"
)

// maxRequestIDLen bounds a client-supplied X-Request-ID; longer or unsafe
// ones are replaced so logs stay clean.
const maxRequestIDLen = 128

// exchange is one request on its way through the pipeline: what admit
// decided and took, what forward did, and what settle releases and records.
type exchange struct {
	start      time.Time
	reqID      string
	reqIDValue [1]string // the X-Request-Id response header's value slice

	// Set by admit.
	tenant   *auth.Tenant // nil on an open gateway
	pool     *upstream.Pool
	model    string
	info     openai.RequestInfo // from the JSON body, when it was read
	body     []byte             // the body, when admit buffered it
	hashKey  string
	priority upstream.Priority
	// hideUsage: the gateway asked for the stream's usage on the client's
	// behalf, and removes the usage chunk from what the client sees.
	hideUsage bool
	answered  bool // admit answered the request itself (models, jobs API, 202)

	// What admit took, which settle gives back.
	slot     *tenantSlot       // the tenant's local concurrency slot
	ticket   *ratelimit.Ticket // the tenant's limiter admission
	buffered int64             // body bytes counted against limits.max_buffered_body

	// Set by forward.
	fwd      proxy.Request
	res      proxy.Result
	usage    openai.UsageScanner // the response's usage, once observed
	observed bool                // usage has seen the response
	hit      bool                // answered from the cache

	span tracing.Span // the request's server span; zero when not traced
}

func (x *exchange) tenantName() string {
	if x.tenant == nil {
		return ""
	}
	return x.tenant.Name
}

// ServeHTTP is the data plane, in three stages: admit decides who is
// asking, where the request goes, whether they may, and whether there is
// room; forward answers it from the cache or a pool; settle, always and
// once, gives back what admit took, accounts and logs.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	x := &exchange{start: s.opts.Clock.Now(), reqID: requestID(r.Header.Get("X-Request-Id"))}
	x.reqIDValue[0] = x.reqID
	w.Header()["X-Request-Id"] = x.reqIDValue[:] // Set would allocate the slice
	if s.tracer.Enabled() {
		ctx, span := s.tracer.Start(r.Context(), r)
		r = r.WithContext(ctx)
		x.span = span
	}
	t := s.table.Load()
	defer s.settle(r, x)
	if e := s.admit(w, r, t, x); e != nil {
		s.refuse(w, x, e)
		return
	}
	if x.answered {
		return
	}
	s.forward(w, r, t, x)
}

// refuse answers with e.
func (s *Server) refuse(w http.ResponseWriter, x *exchange, e *openai.Error) {
	e.Write(w)
	x.res.Status = e.Status
}

// settle ends a request: it releases what admit took, settles the tenant's
// tokens, records metrics and the access log, and aborts a response that
// broke after its status was sent.
func (s *Server) settle(r *http.Request, x *exchange) {
	tokens := int64(-1) // unknown: the reservation stands
	if x.observed {
		if u, ok := x.usage.Usage(); ok {
			tokens = u.PromptTokens + u.CompletionTokens
			s.countTokens(x, u)
			x.span.SetUsage(int(u.PromptTokens), int(u.CompletionTokens))
		}
	} else if x.hit {
		tokens = 0 // no model ran
	}
	if x.ticket != nil {
		x.ticket.Done(tokens)
	}
	x.slot.release()
	s.bodies.release(x.buffered)

	if x.pool == nil {
		s.unrouted.Inc(x.res.Status)
	} else {
		m := x.pool.Metrics
		m.Requests.Inc(x.res.Status)
		m.Duration.Observe(s.opts.Clock.Since(x.start).Seconds())
		if x.res.FirstByte > 0 && x.info.Stream {
			s.metrics.TTFT.WithLabelValues(x.pool.Name(), s.modelLabel(x)).Observe(x.res.FirstByte.Seconds())
		}
		if x.res.InterTokenGaps > 0 {
			s.metrics.ITL.WithLabelValues(x.pool.Name(), s.modelLabel(x)).Observe(x.res.InterToken.Seconds())
		}
	}
	s.endSpan(r, x)
	s.logRequest(r, x)
	if x.res.Abort {
		panic(http.ErrAbortHandler)
	}
}

// endSpan records what the request's server span may carry (never a key or
// prompt text) and ends it.
func (s *Server) endSpan(r *http.Request, x *exchange) {
	if !x.span.IsRecording() {
		x.span.End()
		return
	}
	x.span.SetOperation(r.URL.Path)
	x.span.SetTenant(x.tenantName())
	if x.pool != nil {
		x.span.SetPool(x.pool.Name())
		x.span.SetModel(x.model)
		x.span.SetStream(x.info.Stream)
	}
	if x.res.Backend != "" {
		x.span.SetBackend(x.res.Backend)
	}
	if x.res.FirstByte > 0 {
		x.span.FirstToken(x.start.Add(x.res.FirstByte))
	}
	x.span.SetHTTPStatus(x.res.Status)
	x.span.End()
}

// countTokens adds a response's usage to sluice_tokens_total.
func (s *Server) countTokens(x *exchange, u openai.Usage) {
	if u.PromptTokens > 0 {
		s.metrics.Tokens.WithLabelValues(x.pool.Name(), x.tenantName(), "prompt").Add(float64(u.PromptTokens))
	}
	if u.CompletionTokens > 0 {
		s.metrics.Tokens.WithLabelValues(x.pool.Name(), x.tenantName(), "completion").Add(float64(u.CompletionTokens))
	}
}

// modelLabel is the model label of x's metrics: the model when the pool
// names it exactly (so the label's values are bounded by the config), else
// the pool's first configured name for it.
func (s *Server) modelLabel(x *exchange) string {
	if x.model == "" {
		return ""
	}
	for _, m := range x.pool.Config().Models {
		if m == x.model {
			return m
		}
	}
	return "other"
}

// requestID returns the client's X-Request-ID when it is reasonable, else a
// new random one.
func requestID(in string) string {
	if in != "" && len(in) <= maxRequestIDLen && printableASCII(in) {
		return in
	}
	var b [16]byte
	const hex = "0123456789abcdef"
	x, y := rand.Uint64(), rand.Uint64()
	for i := range 8 {
		b[i] = hex[x>>(i*4)&0xf]
		b[8+i] = hex[y>>(i*4)&0xf]
	}
	return string(b[:])
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// logRequest writes the access-log line.
func (s *Server) logRequest(r *http.Request, x *exchange) {
	if !s.logger.Enabled(r.Context(), slog.LevelInfo) {
		return
	}
	poolName := ""
	if x.pool != nil {
		poolName = x.pool.Name()
	}
	res := &x.res
	attrs := [...]slog.Attr{
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.String("pool", poolName),
		slog.String("backend", res.Backend),
		slog.Int("status", res.Status),
		slog.Duration("duration", s.opts.Clock.Since(x.start)),
		slog.Int64("bytes", res.Bytes),
		slog.String("request_id", x.reqID),
		slog.Int("attempts", res.Attempts),
		slog.String("tenant", x.tenantName()),
	}
	if res.Err != nil && res.Status >= 400 {
		s.logger.LogAttrs(r.Context(), slog.LevelInfo, "request", append(attrs[:], slog.String("err", res.Err.Error()))...)
		return
	}
	s.logger.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs[:]...)
}
