package jobs

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sluice-ai/sluice/internal/openai"
)

// KeptHeaders are the request headers a job keeps to replay: what shapes
// the response or traces it. Credentials (Authorization, cookies, API-key
// headers) are never stored; a job runs as its tenant instead.
var KeptHeaders = []string{
	"Content-Type",
	"Accept",
	"X-Request-Id",
	"Cache-Control",
	"Traceparent",
	"Tracestate",
	"User-Agent",
	"Openai-Beta",
}

// neverKept are refused even when listed in Options.KeepHeaders.
var neverKept = map[string]bool{
	"Authorization": true, "Proxy-Authorization": true, "Cookie": true,
	"Api-Key": true, "X-Api-Key": true, "Content-Length": true,
	"Host": true, "Prefer": true, "Idempotency-Key": true,
}

func keptHeaderSet(extra []string) map[string]bool {
	set := make(map[string]bool, len(KeptHeaders)+len(extra))
	for _, h := range KeptHeaders {
		set[h] = true
	}
	for _, h := range extra {
		if k := http.CanonicalHeaderKey(h); !neverKept[k] {
			set[k] = true
		}
	}
	return set
}

// keepHeaders returns the kept subset of h.
func (s *Service) keepHeaders(h http.Header) http.Header {
	out := make(http.Header)
	for k, vs := range h {
		if s.keep[http.CanonicalHeaderKey(k)] && len(vs) > 0 {
			out[http.CanonicalHeaderKey(k)] = append([]string(nil), vs...)
		}
	}
	return out
}

// Limits of submitted fields.
const (
	maxPathLen           = 8 << 10
	maxIdempotencyKeyLen = 255
	maxCallbackURLLen    = 2 << 10
)

// jobsPath is where the job API lives; jobs of jobs are refused.
const jobsPath = "/v1/jobs"

// newJob validates req and builds the job to store.
func (s *Service) newJob(req SubmitRequest) (*Job, *openai.Error) {
	return s.newJobAt(req, s.clock.Now())
}

// newJobAt is newJob with the creation time given.
func (s *Service) newJobAt(req SubmitRequest, now time.Time) (*Job, *openai.Error) {
	method := req.Method
	if method == "" {
		method = http.MethodPost
	}
	if !validMethod(method) {
		return nil, openai.BadRequest(fmt.Sprintf("invalid method %q", method))
	}
	if err := validPath(req.Path); err != nil {
		return nil, err
	}
	if len(req.Body) > s.opt.MaxRequestBody {
		return nil, openai.TooLarge(fmt.Sprintf("request body exceeds %d bytes", s.opt.MaxRequestBody))
	}
	prio, err := ParsePriority(string(req.Priority))
	if err != nil {
		return nil, openai.BadRequest(err.Error())
	}
	if req.CallbackURL != "" {
		if err := validCallbackURL(req.CallbackURL); err != nil {
			return nil, err
		}
		if s.webhookKey == nil {
			return nil, openai.BadRequest("callback_url needs jobs.webhook_secret to be configured on the gateway")
		}
	}
	if len(req.IdempotencyKey) > maxIdempotencyKeyLen || !printable(req.IdempotencyKey) {
		return nil, openai.BadRequest(fmt.Sprintf("Idempotency-Key must be at most %d printable ASCII characters", maxIdempotencyKeyLen))
	}
	id, nerr := NewID()
	if nerr != nil {
		return nil, openai.Unavailable("job_id_unavailable", nerr.Error(), 0)
	}
	header := s.keepHeaders(req.Header)
	if header.Get("X-Request-Id") == "" {
		header.Set("X-Request-Id", id)
	}
	return &Job{
		ID:       id,
		Tenant:   req.Tenant,
		Pool:     req.Pool,
		Priority: prio,
		Status:   StatusQueued,
		Request: Request{
			Method: method,
			Path:   req.Path,
			Host:   req.Host,
			Header: header,
			Body:   req.Body,
		},
		CreatedAt:      now,
		CallbackURL:    req.CallbackURL,
		IdempotencyKey: req.IdempotencyKey,
	}, nil
}

func validMethod(m string) bool {
	if m == "" || len(m) > 16 {
		return false
	}
	for i := 0; i < len(m); i++ {
		if m[i] < 'A' || m[i] > 'Z' {
			return false
		}
	}
	return m != http.MethodConnect
}

func validPath(p string) *openai.Error {
	if p == "" {
		return openai.BadRequest("path is required")
	}
	if len(p) > maxPathLen {
		return openai.BadRequest(fmt.Sprintf("path exceeds %d bytes", maxPathLen))
	}
	if !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") {
		return openai.BadRequest(fmt.Sprintf("path %q must start with a single /", p))
	}
	u, err := url.ParseRequestURI(p)
	if err != nil {
		return openai.BadRequest(fmt.Sprintf("invalid path %q", p))
	}
	if u.Path == jobsPath || strings.HasPrefix(u.Path, jobsPath+"/") {
		return openai.BadRequest("a job cannot call the jobs API")
	}
	return nil
}

func validCallbackURL(raw string) *openai.Error {
	if len(raw) > maxCallbackURLLen {
		return openai.BadRequest(fmt.Sprintf("callback_url exceeds %d bytes", maxCallbackURLLen))
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return openai.BadRequest(fmt.Sprintf("callback_url %q must be an absolute http or https URL", raw))
	}
	return nil
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
