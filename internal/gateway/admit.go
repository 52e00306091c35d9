package gateway

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-ai/sluice/internal/auth"
	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/openai"
	"github.com/sluice-ai/sluice/internal/upstream"
)

// admit decides everything that can refuse a request, in the order that
// costs least: who is asking (authentication), where it goes (routes, the
// body's model, OIP v2 paths), whether the tenant may use that pool's model
// (for every way of routing), whether the tenant has a free concurrency
// slot — all before the body is buffered — then the body, read once, and
// the tenant's rate and token limits. It fills x; an error is the answer.
func (s *Server) admit(w http.ResponseWriter, r *http.Request, t *table, x *exchange) *openai.Error {
	if len(r.Header) > t.cfg.Limits.MaxHeaders {
		return headersTooLarge("the request has " + strconv.Itoa(len(r.Header)) + " header fields; limits.max_headers allows " + strconv.Itoa(t.cfg.Limits.MaxHeaders))
	}
	if r.ProtoMajor == 1 && len(r.TransferEncoding) > 0 {
		// Go's server reads a chunked body by its chunks and hides a
		// Content-Length sent beside it, so a request that had both cannot
		// be told apart; RFC 9112 section 6.1 says to close the connection
		// after answering one, as HAProxy does, so no second request can
		// hide in a body the two ends framed differently. Clients that
		// send JSON send a Content-Length and keep their connection.
		w.Header().Set("Connection", "close")
	}
	if !cleanPath(r.URL.Path) {
		return openai.BadRequest("the request path has empty, \".\" or \"..\" segments; send it in normal form")
	}
	if t.auth != nil {
		tenant, e := t.auth.Authenticate(r)
		if e != nil {
			return e
		}
		x.tenant = tenant
	}
	if isJobsPath(r.URL.Path) {
		x.res.Status = serveTenantAPI(s.jobsAPI, w, r, x.tenant)
		x.answered = true
		return nil
	}
	if isBatchPath(r.URL.Path) {
		x.res.Status = serveTenantAPI(s.batchAPI, w, r, x.tenant)
		x.answered = true
		return nil
	}
	needBody, e := s.route(w, r, t, x)
	if e != nil || x.answered {
		return e
	}
	if !needBody {
		if e := mayUse(x.tenant, x.pool, x.model); e != nil {
			return e
		}
	}
	// A request that becomes a job runs later, admitted then under the
	// tenant's concurrency (admitJob); submitting it holds no slot.
	async := prefersAsync(r.Header)
	limits := config.TenantLimits{}
	if x.tenant != nil {
		limits = x.tenant.Limits
		if async {
			limits.Concurrency = 0
		}
	}
	if x.tenant != nil && !async {
		// Before the body: a tenant at its concurrency cannot make the
		// gateway buffer more bodies for it.
		if x.slot = s.slots.take(x.tenant); x.slot == nil {
			return openai.RateLimited("tenant "+x.tenant.Name+" has "+strconv.Itoa(x.tenant.Limits.Concurrency)+" requests in flight, its concurrency limit", time.Second)
		}
	}
	if boundary := multipartBoundary(r.Header.Get("Content-Type")); needBody && boundary != "" {
		if async {
			return openai.BadRequest("a multipart request cannot run as a job (Prefer: respond-async); send it without")
		}
		if e := s.routeMultipart(w, r, t, x, boundary); e != nil {
			return e
		}
	} else if needBody || s.wantsBody(t, x.pool) {
		if e := s.readBody(w, r, t.cfg, x); e != nil {
			return e
		}
		if needBody {
			if e := s.routeByBody(t, x); e != nil {
				return e
			}
		}
	}
	if x.tenant != nil && x.tenant.Limits.TPM > 0 {
		boundTokens(r, x)
	}
	x.hashKey = hashKey(t, x.pool, r, x.body)
	x.priority = upstream.ParsePriority(r.Header.Get("X-Sluice-Priority"))
	if x.tenant != nil {
		var e *openai.Error
		x.ticket, e = s.limiter.Admit(r.Context(), x.tenant.Name, limits, x.info.TokenReservation(defaultMaxTokens))
		x.ticket.SetHeaders(w.Header())
		if e != nil {
			return e
		}
	}
	if async {
		if x.ticket != nil {
			x.ticket.Done(0) // the job's tokens are reserved and counted when it runs (admitJob)
		}
		s.submitJob(w, r, x)
		x.answered = true
	}
	return nil
}

// boundTokens makes a completion request of a tenant with a tokens-per-
// minute limit account for what it costs: a request without max_tokens
// gets the budget its reservation assumed (a model could otherwise write
// far more than was reserved), and a stream without usage asks for it
// (stream_options.include_usage), so it settles to what the model really
// produced instead of to its reservation; the usage chunk is removed from
// what the client sees (hiddenUsage), since it did not ask for it.
func boundTokens(r *http.Request, x *exchange) {
	if r.URL.Path != "/v1/chat/completions" && r.URL.Path != "/v1/completions" {
		return
	}
	var add []string
	if x.info.MaxTokens == 0 {
		add = append(add, `"max_tokens":`+strconv.Itoa(defaultMaxTokens))
		x.info.MaxTokens = defaultMaxTokens
	}
	if x.info.Stream && !x.info.IncludeUsage && !bytes.Contains(x.body, []byte(`"stream_options"`)) {
		add = append(add, `"stream_options":{"include_usage":true}`)
		x.info.IncludeUsage = true
		x.hideUsage = true
	}
	if len(add) > 0 {
		x.body = openai.AddFields(x.body, add...)
	}
}

// defaultMaxTokens is the completion budget reserved against a tokens-per-
// minute limit for a request that sets no max_tokens (it is settled to the
// real usage afterwards).
const defaultMaxTokens = 1024

// route decides which pool serves r without reading its body when it can.
// needBody says the pool depends on the body's model (an OpenAI-style
// request); routeByBody finishes the job once admit read it.
func (s *Server) route(w http.ResponseWriter, r *http.Request, t *table, x *exchange) (needBody bool, e *openai.Error) {
	if p := t.routeFor(r); p != nil {
		x.pool = p
		return false, nil
	}
	switch {
	case r.URL.Path == "/v1/models" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		x.res.Bytes = s.listModels(w, r, t, x.tenant)
		x.res.Status = http.StatusOK
		x.answered = true
		return false, nil
	case strings.HasPrefix(r.URL.Path, "/v1/models/") && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		n, e := s.retrieveModel(w, r, t, x.tenant, strings.TrimPrefix(r.URL.Path, "/v1/models/"))
		if e != nil {
			return false, e
		}
		x.res.Bytes, x.res.Status, x.answered = n, http.StatusOK, true
		return false, nil
	case strings.HasPrefix(r.URL.Path, "/v1/"):
		if r.Method != http.MethodPost {
			return false, openai.NotFound("unknown_route", "no route for "+r.Method+" "+r.URL.Path+"; OpenAI-compatible requests are POSTs with a JSON body naming a model")
		}
		return true, nil
	}
	if name, ok := v2Model(r.URL.Path); ok {
		p := t.poolForModel(name)
		if p == nil {
			return false, openai.NotFound("model_not_found", "model \""+name+"\" is not served here")
		}
		x.model, x.pool = name, p
		return false, nil
	}
	return false, openai.NotFound("unknown_route", "no route for "+r.Method+" "+r.URL.Path)
}

// routeByBody routes an OpenAI-style request by its body's model.
func (s *Server) routeByBody(t *table, x *exchange) *openai.Error {
	info, err := openai.PeekRequest(x.body)
	if err != nil {
		return openai.BadRequest("request body is not a valid JSON request: " + err.Error())
	}
	if info.Model == "" {
		return openai.BadRequest("request body has no \"model\" field")
	}
	p := t.poolForModel(info.Model)
	if p == nil {
		return openai.NotFound("model_not_found", "model \""+info.Model+"\" is not served here; GET /v1/models lists the models")
	}
	x.info, x.model, x.pool = info, info.Model, p
	return mayUse(x.tenant, p, x.model)
}

// wantsBody reports whether a request routed without its body must still
// be buffered: its pool hashes on a JSON field.
func (s *Server) wantsBody(t *table, p *upstream.Pool) bool {
	h, ok := t.hash[p.Name()]
	return ok && h.Kind == config.HashJSON
}

// mayUse checks that tenant may reach pool p for model. A request routed by
// model (the body's, or an OIP v2 path's) needs that model allowed. A
// request routed by path reaches whatever the pool serves, so a tenant
// restricted to some models needs every model the pool lists allowed, and
// cannot reach a pool that lists none.
func mayUse(tenant *auth.Tenant, p *upstream.Pool, model string) *openai.Error {
	if tenant == nil || tenant.Unrestricted() {
		return nil
	}
	if model != "" {
		if !tenant.MayUse(model) {
			return openai.Forbidden("tenant " + tenant.Name + " may not use model \"" + model + "\"")
		}
		return nil
	}
	models := p.Config().Models
	if len(models) == 0 {
		return openai.Forbidden("tenant " + tenant.Name + " may use only some models, and this route leads to pool " + p.Name() + ", which lists none")
	}
	for _, m := range models {
		if !tenant.MayUse(m) {
			return openai.Forbidden("tenant " + tenant.Name + " may not use model \"" + m + "\", which this route's pool " + p.Name() + " serves")
		}
	}
	return nil
}

// cleanPath reports whether p is in normal form: no empty, "." or ".."
// segments, so what authorization and routing read is what a backend
// resolves.
func cleanPath(p string) bool {
	if p == "" || p == "/" {
		return true
	}
	c := path.Clean(p)
	return c == p || c+"/" == p
}

func headersTooLarge(msg string) *openai.Error {
	return &openai.Error{Status: http.StatusRequestHeaderFieldsTooLarge, Message: msg, Type: "invalid_request_error", Code: "headers_too_large"}
}

// readBody reads the request body once, into x.body: bounded by
// limits.max_request_body, by limits.body_read_timeout, and by the bytes
// every request may hold at once (limits.max_buffered_body). The buffer
// grows with the bytes that arrive, not with what Content-Length claims.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, cfg *config.Config, x *exchange) *openai.Error {
	limit := int64(cfg.Limits.MaxRequestBody)
	if r.ContentLength > limit {
		return tooLarge(limit)
	}
	if r.Body == nil || r.Body == http.NoBody {
		x.body = []byte{}
		return nil
	}
	rc := http.NewResponseController(w)
	if err := rc.SetReadDeadline(s.opts.Clock.Now().Add(cfg.Limits.BodyReadTimeout.D())); err == nil {
		defer func() { _ = rc.SetReadDeadline(time.Time{}) }()
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(min(r.ContentLength, 64<<10)))
	}
	cp := chunks.Get().(*[]byte)
	defer chunks.Put(cp)
	chunk := *cp
	rd := io.LimitReader(r.Body, limit+1)
	for {
		n, err := rd.Read(chunk)
		if n > 0 {
			if !s.bodies.take(int64(n), int64(cfg.Limits.MaxBufferedBody)) {
				return openai.Unavailable("gateway_busy", "the gateway holds limits.max_buffered_body of request bodies already; retry later", time.Second)
			}
			x.buffered += int64(n)
			if int64(buf.Len()+n) > limit {
				return tooLarge(limit)
			}
			buf.Write(chunk[:n])
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return &openai.Error{Status: http.StatusRequestTimeout, Message: "the request body did not arrive within limits.body_read_timeout (" + cfg.Limits.BodyReadTimeout.D().String() + ")", Type: "invalid_request_error", Code: "body_timeout"}
			}
			return openai.BadRequest("reading request body: " + err.Error())
		}
	}
	x.body = buf.Bytes()
	if x.body == nil {
		x.body = []byte{}
	}
	return nil
}

// chunks are the read buffers of readBody: what is read is copied into a
// buffer that grows with the body, so the chunk itself is reused.
var chunks = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

func tooLarge(limit int64) *openai.Error {
	return openai.TooLarge("request body is larger than limits.max_request_body (" + strconv.FormatInt(limit, 10) + " bytes)")
}

// bodyBudget counts the request body bytes held in memory by every request.
type bodyBudget struct {
	n     atomic.Int64
	gauge prometheus.Gauge
}

// take counts n more bytes unless that would pass limit.
func (b *bodyBudget) take(n, limit int64) bool {
	if b.n.Add(n) > limit {
		b.n.Add(-n)
		return false
	}
	b.gauge.Add(float64(n))
	return true
}

func (b *bodyBudget) release(n int64) {
	if n > 0 {
		b.n.Add(-n)
		b.gauge.Sub(float64(n))
	}
}

// tenantSlots are each tenant's requests in flight through this gateway,
// checked against its concurrency limit before a body is buffered. The
// limiter's own check (global with Redis) follows once the body is read;
// this one needs no network and bounds what one tenant can make this
// process hold.
type tenantSlots struct {
	m sync.Map // tenant name -> *atomic.Int64
}

// tenantSlot is one taken slot; nil when the tenant has no concurrency
// limit.
type tenantSlot struct{ n *atomic.Int64 }

var noSlot = &tenantSlot{}

// take returns a slot, or nil when the tenant is at its limit.
func (ts *tenantSlots) take(t *auth.Tenant) *tenantSlot {
	limit := int64(t.Limits.Concurrency)
	if limit <= 0 {
		return noSlot
	}
	v, _ := ts.m.LoadOrStore(t.Name, new(atomic.Int64))
	n := v.(*atomic.Int64)
	if n.Add(1) > limit {
		n.Add(-1)
		return nil
	}
	return &tenantSlot{n: n}
}

func (sl *tenantSlot) release() {
	if sl != nil && sl.n != nil {
		sl.n.Add(-1)
		sl.n = nil
	}
}

// hashKey extracts the consistent_hash key of r for pool p ("" when p does
// not hash or the request lacks the key).
func hashKey(t *table, p *upstream.Pool, r *http.Request, body []byte) string {
	h, ok := t.hash[p.Name()]
	if !ok {
		return ""
	}
	switch h.Kind {
	case "header":
		return r.Header.Get(h.Name)
	case "cookie":
		if c, err := r.Cookie(h.Name); err == nil {
			return c.Value
		}
	case "client_ip":
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			return r.RemoteAddr
		}
		return host
	case "json":
		return openai.Field(body, h.Name)
	}
	return ""
}
