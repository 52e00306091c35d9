package jobs

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
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
	if err := checkTarget(method, req.Path); err != nil {
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
		if err := s.validCallbackURL(req.CallbackURL); err != nil {
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
		TraceParent:    req.TraceParent,
	}, nil
}

// jobMethods are the methods a job may use: those of the APIs a gateway
// fronts. CONNECT, TRACE and OPTIONS do not make sense as deferred work,
// and anything else is no API's method.
var jobMethods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodPost: true,
	http.MethodPut: true, http.MethodPatch: true, http.MethodDelete: true,
}

// checkTarget checks a job's method and path: what the job replays as
// its request line, so what every later stage (the gateway's routing, the
// upstream request) may trust to be one. It runs before anything else
// looks at them.
func checkTarget(method, path string) *openai.Error {
	if !validMethod(method) {
		return openai.BadRequest(fmt.Sprintf("invalid method %q: want one of GET, HEAD, POST, PUT, PATCH, DELETE", clip(method)))
	}
	return validPath(path)
}

// validMethod reports whether m is an RFC 9110 token (upper case, as
// methods are case-sensitive and every method a job may use is) and one of
// jobMethods.
func validMethod(m string) bool {
	return jobMethods[m]
}

// validPath accepts an origin-form request target (RFC 9112 section
// 3.2.1): an absolute path and an optional query, of visible ASCII only (a
// space, a control character or a raw non-ASCII byte is not a valid
// request line, and CR or LF would inject one), without a fragment, without
// dot segments (a path is routed and authorized as written, so "/v1/x/../jobs"
// must not reach what it names), and not under the jobs API.
func validPath(p string) *openai.Error {
	if p == "" {
		return openai.BadRequest("path is required, e.g. /v1/chat/completions")
	}
	if len(p) > maxPathLen {
		return openai.BadRequest(fmt.Sprintf("path exceeds %d bytes", maxPathLen))
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c >= 0x7f {
			return openai.BadRequest(fmt.Sprintf("invalid path %q: byte %d is %q; percent-encode spaces, control characters and non-ASCII", clip(p), i, c))
		}
	}
	if p[0] != '/' || strings.HasPrefix(p, "//") {
		return openai.BadRequest(fmt.Sprintf("path %q must be a path starting with a single /, not a URL", clip(p)))
	}
	if strings.IndexByte(p, '#') >= 0 {
		return openai.BadRequest(fmt.Sprintf("path %q must not have a fragment (#)", clip(p)))
	}
	u, err := url.ParseRequestURI(p)
	if err != nil || u.Scheme != "" || u.Host != "" || u.Opaque != "" {
		return openai.BadRequest(fmt.Sprintf("invalid path %q", clip(p)))
	}
	for seg := range strings.SplitSeq(u.Path, "/") {
		if seg == "." || seg == ".." {
			return openai.BadRequest(fmt.Sprintf("path %q must not have . or .. segments", clip(p)))
		}
	}
	if u.Path == jobsPath || strings.HasPrefix(u.Path, jobsPath+"/") {
		return openai.BadRequest("a job cannot call the jobs API")
	}
	return nil
}

// clip shortens a client's value for an error message.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}

// validCallbackURL checks a callback URL at submission: an absolute http
// or https URL with a host, a valid port, and no credentials (they would
// be stored with the job and sent in the clear to wherever it points);
// and not a destination the callback policy refuses without asking DNS
// (an address literal, localhost). Names are checked again, on the
// address they resolve to, at every delivery.
func (s *Service) validCallbackURL(raw string) *openai.Error {
	if len(raw) > maxCallbackURLLen {
		return openai.BadRequest(fmt.Sprintf("callback_url exceeds %d bytes", maxCallbackURLLen))
	}
	if !printable(raw) {
		return openai.BadRequest("callback_url must be printable ASCII; percent-encode the rest")
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Hostname() == "" {
		return openai.BadRequest(fmt.Sprintf("callback_url %q must be an absolute http or https URL", clip(raw)))
	}
	if u.User != nil {
		return openai.BadRequest("callback_url must not carry credentials (user:password@); authenticate the callback by its webhook-signature")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
			return openai.BadRequest(fmt.Sprintf("callback_url port %q must be 1 to 65535", p))
		}
	}
	if err := s.cbGuard.checkURL(u); err != nil {
		return openai.BadRequest("callback_url refused: " + err.Error())
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
