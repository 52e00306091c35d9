package gateway

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-ai/sluice/internal/auth"
	"github.com/sluice-ai/sluice/internal/cache"
	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/jobs"
	"github.com/sluice-ai/sluice/internal/openai"
	"github.com/sluice-ai/sluice/internal/proxy"
	"github.com/sluice-ai/sluice/internal/ratelimit"
	"github.com/sluice-ai/sluice/internal/upstream"
)

// maxRequestIDLen bounds a client-supplied X-Request-ID; longer or unsafe
// ones are replaced so logs stay clean.
const maxRequestIDLen = 128

// call is what the gateway learned about one request on its way through.
type call struct {
	pr     *proxy.Request
	info   openai.RequestInfo // from the JSON body, when it was read
	model  string
	tenant *auth.Tenant // nil on an open gateway
}

// tenantName labels metrics and logs ("" on an open gateway).
func (c *call) tenantName() string {
	if c.tenant == nil {
		return ""
	}
	return c.tenant.Name
}

// ServeHTTP is the data plane: authenticate, route the request to a pool,
// admit it under the tenant's limits, answer from the cache or forward it,
// account its tokens, log it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	reqID := requestID(r.Header.Get("X-Request-Id"))
	w.Header().Set("X-Request-Id", reqID)
	t := s.table.Load()

	var (
		c   call
		res proxy.Result
	)
	defer func() {
		s.logRequest(r, &c, reqID, start, &res)
		if res.Abort {
			panic(http.ErrAbortHandler)
		}
	}()
	fail := func(e *openai.Error) {
		e.Write(w)
		res.Status = e.Status
		if c.pr == nil {
			s.unrouted.Inc(e.Status)
		} else {
			c.pr.Pool.Metrics.Requests.Inc(e.Status)
		}
	}

	job, fromJob := jobs.FromContext(r.Context())
	switch {
	case fromJob:
		// The dispatcher runs a job the tenant submitted; it was
		// authenticated and admitted then.
		if job.Tenant != "" {
			c.tenant = &auth.Tenant{Name: job.Tenant}
		}
	case t.auth != nil:
		tenant, e := t.auth.Authenticate(r)
		if e != nil {
			fail(e)
			return
		}
		c.tenant = tenant
	}
	if !fromJob && isJobsPath(r.URL.Path) {
		res.Status = s.serveJobsAPI(w, r, c.tenant)
		return
	}
	if e := s.route(w, r, t, &c); e != nil {
		fail(e)
		return
	}
	if c.pr == nil { // answered here (GET /v1/models)
		res.Status = http.StatusOK
		return
	}
	if !fromJob && c.tenant != nil && c.model != "" && !c.tenant.MayUse(c.model) {
		fail(openai.Forbidden("tenant " + c.tenant.Name + " may not use model \"" + c.model + "\""))
		return
	}
	pool := c.pr.Pool
	c.pr.RequestID = reqID
	if fromJob {
		c.pr.Priority = upstream.ParsePriority(string(job.Priority))
	} else {
		c.pr.Priority = upstream.ParsePriority(r.Header.Get("X-Sluice-Priority"))
	}

	var ticket *ratelimit.Ticket
	if c.tenant != nil && !fromJob {
		var e *openai.Error
		ticket, e = s.limiter.Admit(r.Context(), c.tenant.Name, c.tenant.Limits, c.info.TokenReservation(defaultMaxTokens))
		ticket.SetHeaders(w.Header())
		if e != nil {
			fail(e)
			return
		}
	}
	if !fromJob && prefersAsync(r.Header) {
		s.submitJob(w, r, &c)
		res.Status = http.StatusAccepted
		if ticket != nil {
			ticket.Done(-1) // the job's tokens are counted when it runs
		}
		return
	}
	var usage *openai.UsageScanner
	c.pr.Observe = func(h http.Header, p []byte) {
		if usage == nil {
			usage = openai.NewUsageScanner(h.Get("Content-Type"))
		}
		_, _ = usage.Write(p)
	}

	pc := pool.Config()
	if ttl := pc.Cache.TTL.D(); ttl > 0 && s.cache != nil && c.pr.Body != nil {
		tenant := ""
		if pc.Cache.PerTenant {
			tenant = c.tenantName()
		}
		if key, err := cache.KeyFor(pool.Name(), r.URL.Path, c.pr.Body, tenant); err == nil {
			s.cache.Serve(w, r, key, ttl, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				res = s.serve(w, r, t, c.pr)
				if res.Abort {
					panic(http.ErrAbortHandler) // so the cache drops what it recorded
				}
			}))
			if res.Status == 0 { // answered from the cache
				res.Status = http.StatusOK
			}
		} else {
			res = s.serve(w, r, t, c.pr)
		}
	} else {
		res = s.serve(w, r, t, c.pr)
	}

	tokens := int64(-1) // unknown: the reservation stands
	if usage != nil {
		if u, ok := usage.Usage(); ok {
			tokens = u.PromptTokens + u.CompletionTokens
			if u.PromptTokens > 0 {
				s.metrics.Tokens.WithLabelValues(c.pr.Pool.Name(), c.tenantName(), "prompt").Add(float64(u.PromptTokens))
			}
			if u.CompletionTokens > 0 {
				s.metrics.Tokens.WithLabelValues(c.pr.Pool.Name(), c.tenantName(), "completion").Add(float64(u.CompletionTokens))
			}
		}
	} else if w.Header().Get("X-Sluice-Cache") == "hit" {
		tokens = 0 // no model ran
	}
	if ticket != nil {
		ticket.Done(tokens)
	}
	c.pr.Pool.Metrics.Requests.Inc(res.Status)
	c.pr.Pool.Metrics.Duration.Observe(time.Since(start).Seconds())
}

// defaultMaxTokens is the completion budget reserved against a tokens-per-
// minute limit for a request that sets no max_tokens (it is settled to the
// real usage afterwards).
const defaultMaxTokens = 1024

// serve forwards to the request's pool and, when that pool cannot serve it
// (no capacity, breaker open, retries exhausted — and nothing was written
// yet), to its fallback pools in order. A fallback that serves is recorded
// in X-Sluice-Fallback and sluice_fallbacks_total.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, t *table, pr *proxy.Request) proxy.Result {
	primary := pr.Pool
	res := s.proxy.Serve(w, r, pr)
	if res.Error != nil && pr.Replayable(r) {
		for _, name := range primary.Config().Fallback {
			fb := t.pools[name]
			if fb == nil {
				continue
			}
			pr.Pool = fb
			w.Header().Set("X-Sluice-Fallback", name)
			fres := s.proxy.Serve(w, r, pr)
			fres.Attempts += res.Attempts
			res = fres
			if res.Error == nil {
				s.metrics.Fallbacks.WithLabelValues(primary.Name(), name).Inc()
				break
			}
		}
		if res.Error != nil {
			w.Header().Del("X-Sluice-Fallback")
		}
	}
	if res.Error != nil {
		res.Error.Write(w)
	}
	return res
}

// route decides which pool serves r and fills c. It leaves c.pr nil when it
// answered the request itself.
func (s *Server) route(w http.ResponseWriter, r *http.Request, t *table, c *call) *openai.Error {
	if p := t.routeFor(r); p != nil {
		c.pr = &proxy.Request{Pool: p}
		if h, ok := t.hash[p.Name()]; ok && h.Kind == config.HashJSON {
			body, err := s.readBody(w, r, t.cfg)
			if err != nil {
				return err
			}
			c.pr.Body = body
		}
		c.pr.HashKey = hashKey(t, p, r, c.pr.Body)
		return nil
	}
	switch {
	case r.URL.Path == "/v1/models" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		s.listModels(w, t, c.tenant)
		return nil
	case strings.HasPrefix(r.URL.Path, "/v1/"):
		if r.Method != http.MethodPost {
			return openai.NotFound("unknown_route", "no route for "+r.Method+" "+r.URL.Path+"; OpenAI-compatible requests are POSTs with a JSON body naming a model")
		}
		body, apiErr := s.readBody(w, r, t.cfg)
		if apiErr != nil {
			return apiErr
		}
		info, err := openai.PeekRequest(body)
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
		c.info, c.model = info, info.Model
		c.pr = &proxy.Request{Pool: p, Body: body, HashKey: hashKey(t, p, r, body)}
		return nil
	}
	if name, ok := v2Model(r.URL.Path); ok {
		p := t.poolForModel(name)
		if p == nil {
			return openai.NotFound("model_not_found", "model \""+name+"\" is not served here")
		}
		c.model = name
		c.pr = &proxy.Request{Pool: p}
		c.pr.HashKey = hashKey(t, p, r, nil)
		return nil
	}
	return openai.NotFound("unknown_route", "no route for "+r.Method+" "+r.URL.Path)
}

// readBody reads the whole request body, bounded by limits.max_request_body.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, cfg *config.Config) ([]byte, *openai.Error) {
	limit := int64(cfg.Limits.MaxRequestBody)
	if r.ContentLength > limit {
		return nil, tooLarge(limit)
	}
	rd := http.MaxBytesReader(w, r.Body, limit)
	var (
		body []byte
		err  error
	)
	if r.ContentLength > 0 {
		body = make([]byte, r.ContentLength)
		_, err = io.ReadFull(rd, body)
	} else {
		body, err = io.ReadAll(rd)
	}
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, tooLarge(limit)
		}
		return nil, openai.BadRequest("reading request body: " + err.Error())
	}
	return body, nil
}

func tooLarge(limit int64) *openai.Error {
	return openai.TooLarge("request body is larger than limits.max_request_body (" + strconv.FormatInt(limit, 10) + " bytes)")
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
		return jsonField(body, h.Name)
	}
	return ""
}

// jsonField returns the value at a dot-separated path of object keys in a
// JSON body: a string's content, or another value's JSON text; "" when the
// path is absent.
func jsonField(body []byte, path string) string {
	raw := json.RawMessage(body)
	for key := range strings.SplitSeq(path, ".") {
		var m map[string]json.RawMessage
		if json.Unmarshal(raw, &m) != nil {
			return ""
		}
		v, ok := m[key]
		if !ok {
			return ""
		}
		raw = v
	}
	var str string
	if json.Unmarshal(raw, &str) == nil {
		return str
	}
	return string(raw)
}

// listModels answers GET /v1/models from config, in OpenAI's list format:
// every configured model, or those the tenant may use.
func (s *Server) listModels(w http.ResponseWriter, t *table, tenant *auth.Tenant) {
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	out := struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
	}{Object: "list", Data: make([]model, 0, len(t.models))}
	for _, m := range t.models {
		if tenant != nil && !tenant.MayUse(m) {
			continue
		}
		out.Data = append(out.Data, model{ID: m, Object: "model", Created: s.started.Unix(), OwnedBy: "sluice"})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
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
func (s *Server) logRequest(r *http.Request, c *call, reqID string, start time.Time, res *proxy.Result) {
	if !s.logger.Enabled(r.Context(), slog.LevelInfo) {
		return
	}
	poolName := ""
	if c.pr != nil {
		poolName = c.pr.Pool.Name()
	}
	attrs := [...]slog.Attr{
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.String("pool", poolName),
		slog.String("backend", res.Backend),
		slog.Int("status", res.Status),
		slog.Duration("duration", time.Since(start)),
		slog.Int64("bytes", res.Bytes),
		slog.String("request_id", reqID),
		slog.Int("attempts", res.Attempts),
		slog.String("tenant", c.tenantName()),
	}
	if res.Err != nil {
		s.logger.LogAttrs(r.Context(), slog.LevelInfo, "request", append(attrs[:], slog.String("err", res.Err.Error()))...)
		return
	}
	s.logger.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs[:]...)
}
