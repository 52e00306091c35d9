package gateway

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/sluice-ai/sluice/internal/auth"
	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/jobs"
	"github.com/sluice-ai/sluice/internal/jobs/jobstore"
	"github.com/sluice-ai/sluice/internal/openai"
)

// tenantKey carries the authenticated tenant to the jobs API handler.
type tenantKey struct{}

// openJobs opens the job store and starts the dispatcher. Jobs run through
// the gateway's own request path (s as the Exec handler), so they get the
// same balancing, admission, retries and fallbacks as live traffic.
func (s *Server) openJobs(ctx context.Context, cfg *config.Config) error {
	store, err := jobstore.Open(ctx, cfg, s.logger)
	if err != nil {
		return fmt.Errorf("jobs store %q: %w", cfg.Jobs.Store, err)
	}
	var keep []string
	for _, pc := range cfg.Pools {
		if h := pc.ParsedHashOn(); pc.Balancer == "consistent_hash" && h.Kind == config.HashHeader {
			keep = append(keep, h.Name)
		}
	}
	svc, err := jobs.New(ctx, jobs.Options{
		Store:          store,
		Exec:           s,
		Concurrency:    cfg.Jobs.Concurrency,
		MaxAttempts:    cfg.Jobs.MaxAttempts,
		Retention:      cfg.Jobs.Retention.D(),
		WebhookSecret:  cfg.Jobs.WebhookSecret,
		MaxRequestBody: int(cfg.Limits.MaxRequestBody),
		KeepHeaders:    keep,
		Logger:         s.logger,
		Registerer:     s.reg,
	})
	if err != nil {
		_ = store.Close()
		return err
	}
	s.jobStore, s.jobs = store, svc
	s.jobsAPI = svc.Handler(func(r *http.Request) string {
		if t, ok := r.Context().Value(tenantKey{}).(*auth.Tenant); ok && t != nil {
			return t.Name
		}
		return ""
	}, s.validateJob)
	s.jobsPending = func(pool string) int { return svc.PendingByPool()[pool] }
	return nil
}

// closeJobs stops dispatching (running jobs finish or are handed back) and
// closes the store.
func (s *Server) closeJobs(ctx context.Context) {
	if s.jobs == nil {
		return
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

// serveJobsAPI answers /v1/jobs for the authenticated tenant.
func (s *Server) serveJobsAPI(w http.ResponseWriter, r *http.Request, tenant *auth.Tenant) int {
	if s.jobsAPI == nil {
		e := openai.Unavailable("jobs_unavailable", "the job system is not running", 0)
		e.Write(w)
		return e.Status
	}
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	s.jobsAPI.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), tenantKey{}, tenant)))
	return rec.status
}

// validateJob routes a job's request as the data plane would, so a job for
// an unknown model, with bad JSON or too large a body, or for a model the
// tenant may not use, is refused when it is submitted.
func (s *Server) validateJob(r *http.Request, method, path string, body []byte) (string, *openai.Error) {
	if isJobsPath(path) {
		return "", openai.BadRequest("a job cannot call the jobs API")
	}
	probe := httptest.NewRequestWithContext(r.Context(), method, path, bytes.NewReader(body))
	probe.Host = r.Host
	var c call
	if t, ok := r.Context().Value(tenantKey{}).(*auth.Tenant); ok {
		c.tenant = t
	}
	if e := s.route(discard{}, probe, s.table.Load(), &c); e != nil {
		return "", e
	}
	if c.pr == nil {
		return "", openai.BadRequest(method + " " + path + " is answered by the gateway itself; it cannot be a job")
	}
	if c.tenant != nil && c.model != "" && !c.tenant.MayUse(c.model) {
		return "", openai.Forbidden("tenant " + c.tenant.Name + " may not use model \"" + c.model + "\"")
	}
	return c.pr.Pool.Name(), nil
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
func (s *Server) submitJob(w http.ResponseWriter, r *http.Request, c *call) {
	if s.jobs == nil {
		openai.Unavailable("jobs_unavailable", "the job system is not running", 0).Write(w)
		return
	}
	body := c.pr.Body
	if body == nil && r.Body != nil {
		var err error
		if body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, int64(s.Config().Limits.MaxRequestBody))); err != nil {
			openai.BadRequest("reading request body: " + err.Error()).Write(w)
			return
		}
	}
	s.jobs.Accept(w, r, jobs.SubmitRequest{
		Tenant:         c.tenantName(),
		Pool:           c.pr.Pool.Name(),
		Method:         r.Method,
		Path:           r.URL.RequestURI(),
		Host:           r.Host,
		Header:         r.Header,
		Body:           body,
		Priority:       jobs.Priority(r.Header.Get("X-Sluice-Priority")),
		CallbackURL:    r.Header.Get("X-Sluice-Callback-URL"),
		IdempotencyKey: r.Header.Get("Idempotency-Key"),
	})
}
