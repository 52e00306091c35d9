package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-ai/sluice/internal/auth"
	"github.com/sluice-ai/sluice/internal/batch"
	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/jobs"
	"github.com/sluice-ai/sluice/internal/jobs/jobstore"
	"github.com/sluice-ai/sluice/internal/openai"
	"github.com/sluice-ai/sluice/internal/tracing"
	"github.com/sluice-ai/sluice/internal/upstream"
)

// tenantKey carries the authenticated tenant to the jobs API handler.
type tenantKey struct{}

// openJobs opens the job store and starts the dispatcher. Jobs run through
// the gateway's own request path (s as the Exec handler), so they get the
// same balancing, admission, retries and fallbacks as live traffic.
func (s *Server) openJobs(ctx context.Context, cfg *config.Config, ownAddrs []string) error {
	storeUp := jobs.NewStoreUpGauge()
	if err := s.reg.Register(storeUp); err != nil {
		return fmt.Errorf("jobs store metric: %w", err)
	}
	store, err := jobstore.Open(ctx, cfg, s.logger)
	if errors.Is(err, jobs.ErrStoreUnavailable) {
		// A damaged store takes jobs down, not live inference.
		s.logger.Error("job store could not be opened or repaired; serving without jobs (the jobs API answers 503)", "store", cfg.Jobs.Store, "err", err)
		s.jobsAPI = jobs.UnavailableHandler()
		return nil
	}
	if err != nil {
		return fmt.Errorf("jobs store %q: %w", cfg.Jobs.Store, err)
	}
	storeUp.Set(1)
	failures := recordJobFailures(store) // the dispatcher's store, which remembers failed jobs (GET /api/jobs/failures)
	var keep []string
	for _, pc := range cfg.Pools {
		if h := pc.ParsedHashOn(); pc.Balancer == "consistent_hash" && h.Kind == config.HashHeader {
			keep = append(keep, h.Name)
		}
	}
	svc, err := jobs.New(ctx, jobs.Options{
		Store:          failures,
		Exec:           http.HandlerFunc(s.runJob),
		Admit:          s.admitJob,
		Concurrency:    cfg.Jobs.Concurrency,
		MaxAttempts:    cfg.Jobs.MaxAttempts,
		Retention:      cfg.Jobs.Retention.D(),
		WebhookSecret:  cfg.Jobs.WebhookSecret,
		MaxRequestBody: int(cfg.Limits.MaxRequestBody),
		KeepHeaders:    keep,
		CallbackAllow:  cfg.Jobs.CallbackAllow,
		OwnAddrs:       ownAddrs,
		Logger:         s.logger,
		Registerer:     s.reg,
	})
	if err != nil {
		_ = store.Close()
		return err
	}
	s.jobStore, s.jobs = failures, svc
	s.jobsAPI = svc.Handler(tenantOfRequest, s.validateJob)
	s.jobsPending = func(pool string) int { return svc.PendingByPool()[pool] }
	var rdb redis.UniversalClient
	if s.redis != nil {
		rdb = s.redis
	}
	bsvc, err := batch.New(ctx, batch.Options{
		Jobs: svc, Store: store, Redis: rdb,
		MaxFileSize:    int64(cfg.Jobs.MaxFileSize),
		FileRetention:  cfg.Jobs.FileRetention.D(),
		MaxRequestBody: int(cfg.Limits.MaxRequestBody),
		Logger:         s.logger,
		Clock:          s.opts.Clock,
	})
	if err != nil {
		_ = svc.Close(ctx)
		_ = store.Close()
		return fmt.Errorf("batch API: %w", err)
	}
	s.batch = bsvc
	s.batchAPI = bsvc.Handler(tenantOfRequest, s.validateJob)
	return nil
}

// tenantOfRequest is the tenant the gateway put on a jobs or batch API
// request's context.
func tenantOfRequest(r *http.Request) string {
	if t, ok := r.Context().Value(tenantKey{}).(*auth.Tenant); ok && t != nil {
		return t.Name
	}
	return ""
}

// closeJobs stops dispatching (running jobs finish or are handed back) and
// closes the store.
func (s *Server) closeJobs(ctx context.Context) {
	if s.jobs == nil {
		return
	}
	if s.batch != nil {
		s.batch.Close()
	}
	if err := s.jobs.Close(ctx); err != nil {
		s.logger.Warn("jobs: close", "err", err)
	}
	if err := s.jobStore.Close(); err != nil {
		s.logger.Warn("jobs: close store", "err", err)
	}
}

// isJobsPath reports whether p is the jobs API.
func isJobsPath(p string) bool {
	return p == "/v1/jobs" || strings.HasPrefix(p, "/v1/jobs/")
}

// isBatchPath reports whether p is the Files or Batch API.
func isBatchPath(p string) bool {
	return p == "/v1/files" || strings.HasPrefix(p, "/v1/files/") || p == "/v1/batches" || strings.HasPrefix(p, "/v1/batches/")
}

// serveTenantAPI answers a request of the jobs or batch API (h) for the
// authenticated tenant; a nil h means the job system is not running.
func serveTenantAPI(h http.Handler, w http.ResponseWriter, r *http.Request, tenant *auth.Tenant) int {
	if h == nil {
		e := openai.Unavailable("jobs_unavailable", "the job system is not running", 0)
		e.Write(w)
		return e.Status
	}
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	h.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), tenantKey{}, tenant)))
	return rec.status
}

// validateJob routes a job's request as the data plane would, so a job for
// an unknown model, with bad JSON or too large a body, or for a model the
// tenant may not use, is refused when it is submitted.
func (s *Server) validateJob(r *http.Request, method, target string, body []byte) (string, *openai.Error) {
	if isJobsPath(target) {
		return "", openai.BadRequest("a job cannot call the jobs API")
	}
	jr, e := jobRequest(r.Context(), method, target, r.Host, body)
	if e != nil {
		return "", e
	}
	x := &exchange{body: body}
	if t, ok := r.Context().Value(tenantKey{}).(*auth.Tenant); ok {
		x.tenant = t
	}
	if int64(len(body)) > int64(s.Config().Limits.MaxRequestBody) {
		return "", tooLarge(int64(s.Config().Limits.MaxRequestBody))
	}
	if e := s.routeJob(jr, x); e != nil {
		return "", e
	}
	return x.pool.Name(), nil
}

// jobRequest builds the request a job replays, refusing a method or path
// that no HTTP request could carry.
func jobRequest(ctx context.Context, method, target, host string, body []byte) (*http.Request, *openai.Error) {
	if !validMethod(method) {
		return nil, openai.BadRequest("job method " + strconv.Quote(method) + " is not an HTTP method")
	}
	if !strings.HasPrefix(target, "/") || strings.ContainsAny(target, " \t\r\n\x00") {
		return nil, openai.BadRequest("job path " + strconv.Quote(target) + " must be a path like /v1/chat/completions, without spaces or control characters")
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return nil, openai.BadRequest("job path " + strconv.Quote(target) + " is not a valid request path")
	}
	r := (&http.Request{Method: method, URL: u, RequestURI: target, Host: host, Header: make(http.Header), Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}).WithContext(ctx)
	r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	return r, nil
}

// validMethod reports whether m is an RFC 9110 method token.
func validMethod(m string) bool {
	if m == "" || len(m) > 32 {
		return false
	}
	for i := 0; i < len(m); i++ {
		c := m[i]
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}

// routeJob routes a job's request r, whose body x holds, as admit routes a
// live one, and checks the tenant may use the pool.
func (s *Server) routeJob(r *http.Request, x *exchange) *openai.Error {
	if !cleanPath(r.URL.Path) {
		return openai.BadRequest("the job path has empty, \".\" or \"..\" segments; send it in normal form")
	}
	t := s.table.Load()
	needBody, e := s.route(discard{}, r, t, x)
	if e != nil {
		return e
	}
	if x.answered {
		return openai.BadRequest(r.Method + " " + r.URL.Path + " is answered by the gateway itself; it cannot be a job")
	}
	if needBody {
		return s.routeByBody(t, x)
	}
	return mayUse(x.tenant, x.pool, x.model)
}

// admitJob is asked by the dispatcher before each attempt of a job: the
// job's tenant must have room under its concurrency and rate limits now,
// as a live request of its would; if not, the job waits.
func (s *Server) admitJob(ctx context.Context, job *jobs.Job) (release func(tokens int64), retryAfter time.Duration, ok bool) {
	limits, found := tenantLimits(s.Config(), job.Tenant)
	if !found {
		return nil, 0, true
	}
	tenant := &auth.Tenant{Name: job.Tenant, Limits: limits}
	slot := s.slots.take(tenant)
	if slot == nil {
		return nil, time.Second, false
	}
	info, _ := openai.PeekRequest(job.Request.Body)
	ticket, e := s.limiter.Admit(ctx, tenant.Name, limits, info.TokenReservation(defaultMaxTokens))
	if e != nil {
		slot.release()
		return nil, e.RetryAfter, false
	}
	return func(tokens int64) {
		ticket.Done(tokens)
		slot.release()
	}, 0, true
}

// tenantLimits finds the limits of the tenant named name in cfg.
func tenantLimits(cfg *config.Config, name string) (config.TenantLimits, bool) {
	if cfg.Auth == nil || name == "" {
		return config.TenantLimits{}, false
	}
	for _, k := range cfg.Auth.Keys {
		if k.Name == name {
			return k.Limits, true
		}
	}
	if cfg.Auth.JWT != nil && strings.HasPrefix(name, auth.JWTTenantPrefix) {
		return cfg.Auth.JWT.Limits, true
	}
	return config.TenantLimits{}, false
}

// runJob runs one attempt of a job (the dispatcher's executor): routed as
// at submission, admitted by admitJob, then forwarded and settled like a
// live request.
func (s *Server) runJob(w http.ResponseWriter, r *http.Request) {
	job, _ := jobs.FromContext(r.Context())
	x := &exchange{start: s.opts.Clock.Now(), reqID: requestID(r.Header.Get("X-Request-Id"))}
	if job != nil && s.tracer.Enabled() {
		ctx, span := s.tracer.StartDispatch(r.Context(), job.TraceParent, job.ID, job.Pool, job.Attempts)
		r = r.WithContext(ctx)
		x.span = span
	}
	defer s.settle(r, x)
	body, _ := io.ReadAll(r.Body)
	x.body = body
	if e := s.routeJob(r, x); e != nil {
		s.refuse(w, x, e)
		return
	}
	if job != nil {
		x.priority = upstream.ParsePriority(string(job.Priority))
		if job.Tenant != "" {
			x.tenant = &auth.Tenant{Name: job.Tenant}
		}
	}
	x.hashKey = hashKey(s.table.Load(), x.pool, r, x.body)
	s.forward(w, r, s.table.Load(), x)
}

// statusRecorder remembers the status a handler wrote, for the access log.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// discard is a ResponseWriter for validation, which writes nothing.
type discard struct{}

func (discard) Header() http.Header         { return http.Header{} }
func (discard) Write(p []byte) (int, error) { return len(p), nil }
func (discard) WriteHeader(int)             {}

var _ io.Writer = discard{}

// prefersAsync reports whether the client asked for the request to become a
// job (RFC 7240 Prefer: respond-async).
func prefersAsync(h http.Header) bool {
	for _, v := range h.Values("Prefer") {
		for p := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(p), "respond-async") {
				return true
			}
		}
	}
	return false
}

// submitJob turns a routed, admitted request into a job and answers 202.
func (s *Server) submitJob(w http.ResponseWriter, r *http.Request, x *exchange) {
	if s.jobs == nil {
		openai.Unavailable("jobs_unavailable", "the job system is not running", 0).Write(w)
		return
	}
	body := x.body
	if body == nil && r.Body != nil {
		var err error
		if body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, int64(s.Config().Limits.MaxRequestBody))); err != nil {
			openai.BadRequest("reading request body: " + err.Error()).Write(w)
			return
		}
	}
	s.jobs.Accept(w, r, jobs.SubmitRequest{
		Tenant:         x.tenantName(),
		Pool:           x.pool.Name(),
		Method:         r.Method,
		Path:           r.URL.RequestURI(),
		Host:           r.Host,
		Header:         r.Header,
		Body:           body,
		Priority:       jobs.Priority(r.Header.Get("X-Sluice-Priority")),
		CallbackURL:    r.Header.Get("X-Sluice-Callback-URL"),
		IdempotencyKey: r.Header.Get("Idempotency-Key"),
		TraceParent:    tracing.LinkOf(r.Context()),
	})
}
