package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-ai/sluice/internal/openai"
)

// API limits.
const (
	// MaxWait bounds ?wait= of GET /v1/jobs/{id}; longer values are cut.
	MaxWait = 60 * time.Second
	// cancelWait bounds how long DELETE waits for a running attempt to
	// stop.
	cancelWait = 10 * time.Second
	// envelopeSlack is what POST /v1/jobs may add to MaxRequestBody.
	envelopeSlack = 64 << 10
	// List page sizes.
	defaultListLimit = 20
	maxListLimit     = 100
)

// ValidateFunc checks a job's request as the gateway checks live traffic
// (route, model, JSON, size, the tenant's permissions) and returns the pool
// that will serve it, or the error the client gets.
type ValidateFunc func(r *http.Request, method, path string, body []byte) (pool string, err *openai.Error)

// Handler serves the jobs API (SPEC section 6) under /v1/jobs:
//
//	POST   /v1/jobs              submit; 202 and the job
//	GET    /v1/jobs              the caller's jobs (?status=, ?limit=, ?after=)
//	GET    /v1/jobs/{id}         the job (?wait=30s long-polls, at most MaxWait)
//	DELETE /v1/jobs/{id}         cancel
//
// It does not authenticate: mount it behind the gateway's authentication.
// tenantOf names the caller's tenant (nil: every caller is tenant "");
// validate checks submitted requests and resolves their pool (nil: every
// request is accepted with pool "").
func (s *Service) Handler(tenantOf func(*http.Request) string, validate ValidateFunc) http.Handler {
	return &api{s: s, tenantOf: tenantOf, validate: validate}
}

type api struct {
	s        *Service
	tenantOf func(*http.Request) string
	validate ValidateFunc
}

func (a *api) tenant(r *http.Request) string {
	if a.tenantOf == nil {
		return ""
	}
	return a.tenantOf(r)
}

func (a *api) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ww := &wroteHeader{ResponseWriter: w}
	defer a.recoverPanic(ww, r)
	a.serve(ww, r)
}

// recoverPanic turns a panic below the jobs API into a 500 (when nothing
// was written yet) and an error log with the stack, instead of a dropped
// connection and a line only net/http's logger sees. http.ErrAbortHandler
// is a deliberate abort and goes on up.
func (a *api) recoverPanic(w *wroteHeader, r *http.Request) {
	v := recover()
	if v == nil {
		return
	}
	if v == http.ErrAbortHandler {
		panic(v)
	}
	a.s.log.Error("jobs API panic", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	if !w.wrote {
		(&openai.Error{Status: http.StatusInternalServerError, Message: "internal error in the jobs API", Type: "server_error", Code: "internal_error"}).Write(w)
	}
}

// wroteHeader remembers whether a response was started.
type wroteHeader struct {
	http.ResponseWriter
	wrote bool
}

func (w *wroteHeader) WriteHeader(code int) {
	w.wrote = true
	w.ResponseWriter.WriteHeader(code)
}

func (w *wroteHeader) Write(p []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(p)
}

func (w *wroteHeader) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (a *api) serve(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case p == jobsPath:
		switch r.Method {
		case http.MethodPost:
			a.create(w, r)
		case http.MethodGet, http.MethodHead:
			a.list(w, r)
		default:
			methodNotAllowed(w, "GET, POST")
		}
	case strings.HasPrefix(p, jobsPath+"/"):
		id := p[len(jobsPath)+1:]
		if !ValidID(id) {
			jobNotFound().Write(w)
			return
		}
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			a.get(w, r, id)
		case http.MethodDelete:
			a.cancel(w, r, id)
		default:
			methodNotAllowed(w, "GET, DELETE")
		}
	default:
		openai.NotFound("not_found", "no such endpoint").Write(w)
	}
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	(&openai.Error{
		Status:  http.StatusMethodNotAllowed,
		Message: "method not allowed; use " + allow,
		Type:    "invalid_request_error",
		Code:    "method_not_allowed",
	}).Write(w)
}

func jobNotFound() *openai.Error {
	return openai.NotFound("job_not_found", "no such job")
}

func storeUnavailable() *openai.Error {
	return openai.Unavailable("job_store_unavailable", "the job store is unavailable; try again", time.Second)
}

// storeDown is the answer of a gateway whose job store could not be opened
// at all: retrying soon does not help.
func storeDown() *openai.Error {
	return openai.Unavailable("job_store_unavailable", "the job store could not be opened; jobs are unavailable on this gateway (live requests are served)", 0)
}

// writeError answers err: an *openai.Error as it is, ErrNotFound as 404,
// anything else (the store failing) as 503.
func (s *Service) writeError(w http.ResponseWriter, err error) {
	var oe *openai.Error
	switch {
	case errors.As(err, &oe):
		oe.Write(w)
	case errors.Is(err, ErrNotFound):
		jobNotFound().Write(w)
	default:
		s.log.Warn("jobs API", "err", err)
		storeUnavailable().Write(w)
	}
}

// Accept submits req and answers 202 Accepted with Location: /v1/jobs/{id}
// and the job, as for a request sent with Prefer: respond-async. A replayed
// idempotent submission also carries Idempotent-Replayed: true.
func (s *Service) Accept(w http.ResponseWriter, r *http.Request, req SubmitRequest) {
	job, created, err := s.submit(r.Context(), req)
	if err != nil {
		s.writeError(w, err)
		return
	}
	w.Header().Set("Location", jobsPath+"/"+job.ID)
	if !created {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	writeJSON(w, http.StatusAccepted, detailOf(job))
}

// submission is the body of POST /v1/jobs.
type submission struct {
	Method      string            `json:"method"`
	Path        string            `json:"path"`
	Headers     map[string]string `json:"headers"`
	Body        json.RawMessage   `json:"body"`
	Priority    string            `json:"priority"`
	CallbackURL string            `json:"callback_url"`
}

// parsedSubmission is a submission with its body decoded.
type parsedSubmission struct {
	method, path, priority, callbackURL string
	header                              http.Header
	body                                []byte
}

// parseSubmission decodes a POST /v1/jobs body. "body" is the request
// body: a JSON object or array is sent as JSON (Content-Type
// application/json unless "headers" says otherwise); a JSON string is sent
// as its text (text/plain unless "headers" says otherwise); null or absent
// is no body.
func parseSubmission(data []byte) (parsedSubmission, *openai.Error) {
	var sub submission
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sub); err != nil {
		return parsedSubmission{}, openai.BadRequest("invalid job: " + err.Error())
	}
	if _, err := dec.Token(); err != io.EOF {
		return parsedSubmission{}, openai.BadRequest("invalid job: data after the JSON object")
	}
	p := parsedSubmission{
		method:      strings.ToUpper(sub.Method),
		path:        sub.Path,
		priority:    sub.Priority,
		callbackURL: sub.CallbackURL,
		header:      make(http.Header, len(sub.Headers)),
	}
	if p.method == "" {
		p.method = http.MethodPost
	}
	for k, v := range sub.Headers {
		p.header.Set(k, v)
	}
	raw := bytes.TrimSpace(sub.Body)
	contentType := ""
	switch {
	case len(raw) == 0 || string(raw) == "null":
	case raw[0] == '"':
		var text string
		if err := json.Unmarshal(raw, &text); err != nil {
			return parsedSubmission{}, openai.BadRequest("invalid job body: " + err.Error())
		}
		p.body = []byte(text)
		contentType = "text/plain; charset=utf-8"
	case raw[0] == '{' || raw[0] == '[':
		p.body = raw
		contentType = "application/json"
	default:
		return parsedSubmission{}, openai.BadRequest("job body must be a JSON object, array or string")
	}
	if contentType != "" && p.header.Get("Content-Type") == "" {
		p.header.Set("Content-Type", contentType)
	}
	return p, nil
}

func (a *api) create(w http.ResponseWriter, r *http.Request) {
	limit := int64(a.s.opt.MaxRequestBody) + envelopeSlack
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			openai.TooLarge(fmt.Sprintf("job exceeds %d bytes", limit)).Write(w)
			return
		}
		openai.BadRequest("read job: " + err.Error()).Write(w)
		return
	}
	sub, oerr := parseSubmission(data)
	if oerr != nil {
		oerr.Write(w)
		return
	}
	if sub.priority == "" {
		sub.priority = r.Header.Get("X-Sluice-Priority")
	}
	if sub.header.Get("X-Request-Id") == "" && r.Header.Get("X-Request-Id") != "" {
		sub.header.Set("X-Request-Id", r.Header.Get("X-Request-Id"))
	}
	// The target is checked before the validate hook (the gateway's
	// routing) sees it: the hook may build a request from it.
	if err := checkTarget(sub.method, sub.path); err != nil {
		err.Write(w)
		return
	}
	pool := ""
	if a.validate != nil {
		var verr *openai.Error
		if pool, verr = a.validate(r, sub.method, sub.path, sub.body); verr != nil {
			verr.Write(w)
			return
		}
	}
	a.s.Accept(w, r, SubmitRequest{
		Tenant:         a.tenant(r),
		Pool:           pool,
		Method:         sub.method,
		Path:           sub.path,
		Header:         sub.header,
		Body:           sub.body,
		Priority:       Priority(sub.priority),
		CallbackURL:    sub.callbackURL,
		IdempotencyKey: r.Header.Get("Idempotency-Key"),
	})
}

// parseWait parses ?wait=: a Go duration ("30s") or whole seconds ("30"),
// cut to MaxWait.
func parseWait(v string) (time.Duration, *openai.Error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		secs, serr := strconv.ParseUint(v, 10, 32)
		if serr != nil {
			return 0, openai.BadRequest(fmt.Sprintf("wait %q: want a duration such as 30s", v))
		}
		d = time.Duration(secs) * time.Second
	}
	if d < 0 {
		return 0, openai.BadRequest(fmt.Sprintf("wait %q is negative", v))
	}
	return min(d, MaxWait), nil
}

func (a *api) get(w http.ResponseWriter, r *http.Request, id string) {
	wait, oerr := parseWait(r.URL.Query().Get("wait"))
	if oerr != nil {
		oerr.Write(w)
		return
	}
	job, err := a.s.await(r.Context(), a.tenant(r), id, wait)
	if err != nil {
		if r.Context().Err() != nil {
			return // the client left
		}
		a.s.writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, detailOf(job))
}

// await returns the job once it is final or wait has passed. It waits on
// announcements (from this and the other replicas), not by polling.
func (s *Service) await(ctx context.Context, tenant, id string, wait time.Duration) (*Job, error) {
	deadline := s.clock.Now().Add(wait)
	for {
		// Registered before reading, so a finish between the read and the
		// wait is not missed.
		finished, release := s.waitFor(id)
		job, err := s.store.Get(ctx, tenant, id)
		if err != nil {
			release()
			return nil, err
		}
		remain := deadline.Sub(s.clock.Now())
		if job.Status.Final() || remain <= 0 {
			release()
			return job, nil
		}
		t := s.clock.NewTimer(remain)
		select {
		case <-finished:
		case <-t.Chan():
		case <-ctx.Done():
		}
		t.Stop()
		release()
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}

func (a *api) cancel(w http.ResponseWriter, r *http.Request, id string) {
	job, err := a.s.cancel(r.Context(), a.tenant(r), id)
	if err != nil {
		if r.Context().Err() != nil {
			return
		}
		a.s.writeError(w, err)
		return
	}
	switch job.Status {
	case StatusCanceled:
		writeJSON(w, http.StatusOK, detailOf(job))
	case StatusSucceeded, StatusFailed:
		(&openai.Error{
			Status:  http.StatusConflict,
			Message: fmt.Sprintf("job already %s", job.Status),
			Type:    "invalid_request_error",
			Code:    "job_finished",
		}).Write(w)
	default:
		// The attempt runs on a replica that has not stopped it yet.
		writeJSON(w, http.StatusAccepted, detailOf(job))
	}
}

// cancel cancels job id of tenant: a queued job at once, a running one by
// marking it and cancelling its attempt, wherever it runs, then waiting
// (at most cancelWait) for the attempt to record the cancellation.
func (s *Service) cancel(ctx context.Context, tenant, id string) (*Job, error) {
	for {
		job, err := s.store.Get(ctx, tenant, id)
		if err != nil {
			return nil, err
		}
		switch job.Status {
		case StatusSucceeded, StatusFailed, StatusCanceled:
			return job, nil
		case StatusQueued:
			if s.flushClaim(id) {
				// It runs here and now says so (or was just canceled):
				// cancel it as running.
				continue
			}
			ok, err := s.cancelQueued(ctx, job)
			if err != nil {
				return nil, err
			}
			if !ok {
				continue
			}
			return job, nil
		default:
			if !job.CancelRequested {
				job.CancelRequested = true
				err := s.store.Update(ctx, job)
				if errors.Is(err, ErrConflict) {
					continue
				}
				if err != nil {
					return nil, err
				}
			}
			s.cancelRun(id)
			if err := s.store.Publish(ctx, Event{Kind: EventCancel, ID: id}); err != nil {
				return nil, fmt.Errorf("announce cancel: %w", err)
			}
			return s.await(ctx, tenant, id, cancelWait)
		}
	}
}

// CancelQueued cancels job id of tenant if no attempt of it has started:
// one running here counts as started even while its record still says
// queued (claim.go). An attempt that started on another gateway less than
// jobs.runningWriteDelay ago cannot be told from a queued job; it is
// stopped and the job canceled. A job that is final or running is left as
// it is.
func (s *Service) CancelQueued(ctx context.Context, tenant, id string) error {
	s.flushClaim(id)
	for {
		job, err := s.store.Get(ctx, tenant, id)
		if err != nil || job.Status != StatusQueued || s.running(id) {
			return err
		}
		if ok, err := s.cancelQueued(ctx, job); ok || err != nil {
			return err
		}
	}
}

// cancelQueued records queued job canceled. It reports false if the record
// changed meanwhile.
func (s *Service) cancelQueued(ctx context.Context, job *Job) (bool, error) {
	job.Status = StatusCanceled
	job.Error = "canceled"
	job.FinishedAt = s.clock.Now()
	job.RunID = ""
	err := s.store.Update(ctx, job)
	if errors.Is(err, ErrConflict) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	// The queue entry stays; the dispatcher that takes it sees the job
	// final, sends the callback if any, and acks it. An attempt may already
	// run on another gateway whose record says queued for a while yet
	// (claim.go): stop it.
	s.notify(job.ID)
	if err := s.store.Publish(ctx, Event{Kind: EventCancel, ID: job.ID}); err != nil {
		s.log.Debug("announce cancel", "job", job.ID, "err", err)
	}
	return true, nil
}

// listPage is the body of GET /v1/jobs, in the OpenAI list shape.
type listPage struct {
	Object  string       `json:"object"`
	Data    []jobSummary `json:"data"`
	FirstID *string      `json:"first_id"`
	LastID  *string      `json:"last_id"`
	HasMore bool         `json:"has_more"`
}

func (a *api) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	lq := ListQuery{Tenant: a.tenant(r), Limit: defaultListLimit}
	if v := q.Get("status"); v != "" {
		if !Status(v).Valid() {
			openai.BadRequest(fmt.Sprintf("status %q: want queued, running, succeeded, failed or canceled", v)).Write(w)
			return
		}
		lq.Status = Status(v)
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxListLimit {
			openai.BadRequest(fmt.Sprintf("limit %q: want 1 to %d", v, maxListLimit)).Write(w)
			return
		}
		lq.Limit = n
	}
	if v := q.Get("after"); v != "" {
		if !ValidID(v) {
			openai.BadRequest(fmt.Sprintf("after %q is not a job id", v)).Write(w)
			return
		}
		lq.Before = v
	}
	jobs, more, err := a.s.store.List(r.Context(), lq)
	if err != nil {
		a.s.writeError(w, err)
		return
	}
	page := listPage{Object: "list", Data: make([]jobSummary, len(jobs)), HasMore: more}
	for i, j := range jobs {
		page.Data[i] = summaryOf(j)
	}
	if len(jobs) > 0 {
		first, last := jobs[0].ID, jobs[len(jobs)-1].ID
		page.FirstID, page.LastID = &first, &last
	}
	writeJSON(w, http.StatusOK, page)
}
