// Package bridge feeds a pool from a message queue, for teams whose
// producers already write inference requests to one: RabbitMQ (the RPC
// pattern: a request carries reply_to and correlation_id, and the answer
// is published to reply_to with the same correlation_id) and Kafka (the
// answer goes to a results topic, keyed by the request's key).
//
// Each message is run through the gateway like a job — the same handler
// the job dispatcher uses, so it gets the pool's balancing, admission,
// rate limits and retries — and is acknowledged (RabbitMQ ack, Kafka
// offset commit) only after its answer was published and confirmed.
// Delivery is at least once: a gateway that dies after running a request
// and before acknowledging it runs it again when the message comes back,
// and may publish two answers for one request (consumers keep the first
// per correlation_id or key).
//
// A message that cannot succeed — not JSON, a request the gateway refuses
// (an unknown model is 404), a non-retryable answer, or a retryable one
// after MaxAttempts — is answered with its error (so an RPC caller does
// not wait in vain) and copied to the dead-letter destination with the
// error in its headers, then acknowledged.
package bridge

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/sluice-ai/sluice/internal/jobs"
	"github.com/sluice-ai/sluice/internal/openai"
)

// Options configure a bridge. Exec is required; every other field has the
// default its comment gives for the zero value.
type Options struct {
	// Exec runs one request: the gateway's job executor (the handler given
	// to jobs.Options.Exec). Its request's context carries a job
	// (jobs.FromContext) with the bridge's tenant, pool and priority.
	Exec http.Handler
	// Validate, if set, checks a request as the gateway checks a job at
	// submission (jobs.ValidateFunc); a refusal is final (dead-lettered).
	// Its pool, if not "", is the job's pool.
	Validate jobs.ValidateFunc
	// Admit, if set, admits each attempt under the tenant's limits as the
	// job dispatcher does (jobs.Options.Admit): a refused attempt waits
	// retryAfter and asks again without using an attempt; release gives
	// the room back with the tokens the attempt used (-1: unknown).
	Admit func(ctx context.Context, job *jobs.Job) (release func(tokens int64), retryAfter time.Duration, ok bool)
	// Pool is the pool the bridge feeds (the job's pool unless Validate
	// names another).
	Pool string
	// Tenant the requests run as; "" on an open gateway.
	Tenant string
	// Priority of the requests. Default low: the queue fills spare
	// capacity and live traffic keeps its latency.
	Priority jobs.Priority
	// Path requests are sent to, unless a message's "path" header names
	// another. Default "/v1/chat/completions".
	Path string
	// Concurrency is the most requests of this bridge in flight. Default 16.
	Concurrency int
	// MaxAttempts per message. Default 3.
	MaxAttempts int
	// RetryBackoff is the delay before the first retry, doubled for each
	// further one (up to 1 minute), with jitter. Default 1s.
	RetryBackoff time.Duration
	// MaxResponseBody bounds an answer; a larger one is an error. Default
	// 32 MiB.
	MaxResponseBody int
	// Logger receives the bridge's logs. Default slog.Default().
	Logger *slog.Logger
}

// Defaults of Options.
const (
	DefaultPath            = "/v1/chat/completions"
	DefaultConcurrency     = 16
	DefaultMaxAttempts     = 3
	DefaultRetryBackoff    = time.Second
	DefaultMaxResponseBody = 32 << 20
	maxRetryBackoff        = time.Minute
)

// Headers the bridge sets on answers and dead letters.
const (
	// HeaderStatus is the HTTP status of the answer (an integer).
	HeaderStatus = "status"
	// HeaderPath on a request names the API path (default Options.Path).
	HeaderPath = "path"
	// HeaderError on an answer or dead letter says why the request failed.
	HeaderError = "x-sluice-error"
	// HeaderAttempts on a dead letter counts the attempts made.
	HeaderAttempts = "x-sluice-attempts"
)

func (o *Options) defaults() error {
	if o.Exec == nil {
		return errors.New("bridge: Options.Exec is nil")
	}
	if o.Priority == "" {
		o.Priority = jobs.PriorityLow
	}
	if _, err := jobs.ParsePriority(string(o.Priority)); err != nil {
		return fmt.Errorf("bridge: %w", err)
	}
	o.Path = cmp.Or(o.Path, DefaultPath)
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.RetryBackoff <= 0 {
		o.RetryBackoff = DefaultRetryBackoff
	}
	if o.MaxResponseBody <= 0 {
		o.MaxResponseBody = DefaultMaxResponseBody
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// result is how a message ended.
type result struct {
	status   int
	header   http.Header
	body     []byte
	err      string // non-empty: the message failed for good (dead letter)
	attempts int
	aborted  bool // the bridge is stopping: leave the message unacknowledged
}

// run takes a message's body and path through validation and up to
// MaxAttempts attempts.
func run(ctx context.Context, o *Options, body []byte, path string) result {
	path = cmp.Or(path, o.Path)
	if !json.Valid(body) {
		return failure(openai.BadRequest("the message body is not JSON"))
	}
	if !strings.HasPrefix(path, "/") || strings.HasPrefix(path, "/v1/jobs") || strings.HasPrefix(path, "/v1/batches") || strings.HasPrefix(path, "/v1/files") {
		return failure(openai.BadRequest(fmt.Sprintf("path %q cannot be bridged", path)))
	}
	pool := o.Pool
	if o.Validate != nil {
		r, err := http.NewRequestWithContext(ctx, http.MethodPost, path, bytes.NewReader(body))
		if err != nil {
			return failure(openai.BadRequest(err.Error()))
		}
		p, oerr := o.Validate(r, http.MethodPost, path, body)
		if oerr != nil {
			return failure(oerr)
		}
		pool = cmp.Or(p, pool)
	}
	var res result
	for n := 1; ; n++ {
		res = attempt(ctx, o, pool, body, path, n)
		res.attempts = n
		if res.aborted || res.err == "" {
			return res
		}
		if !res.retryable() || n >= o.MaxAttempts {
			if res.retryable() {
				res.err = fmt.Sprintf("%s after %d attempts", res.err, n)
			}
			return res
		}
		d := backoff(o.RetryBackoff, n)
		select {
		case <-ctx.Done():
			return result{aborted: true}
		case <-time.After(d):
		}
	}
}

func failure(e *openai.Error) result {
	b, _ := json.Marshal(map[string]*openai.Error{"error": e})
	return result{
		status: e.Status, header: http.Header{"Content-Type": {"application/json"}},
		body: b, err: e.Message, attempts: 0,
	}
}

func (r result) retryable() bool {
	switch code := r.status; {
	case code == 0:
		return true // no answer (the attempt failed)
	case code == http.StatusRequestTimeout, code == http.StatusTooManyRequests:
		return true
	case code == http.StatusNotImplemented, code == http.StatusHTTPVersionNotSupported:
		return false
	default:
		return code >= 500 && code <= 599
	}
}

// backoff is base·2ⁿ⁻¹ capped at a minute, a random point in the upper
// half of that.
func backoff(base time.Duration, n int) time.Duration {
	d := base
	for i := 1; i < n && d < maxRetryBackoff; i++ {
		d *= 2
	}
	d = min(d, maxRetryBackoff)
	return d/2 + rand.N(d/2+1)
}

// attempt runs the request once through Exec.
func attempt(ctx context.Context, o *Options, pool string, body []byte, path string, n int) result {
	id, err := jobs.NewID()
	if err != nil {
		return result{err: err.Error()}
	}
	job := &jobs.Job{
		ID: id, Tenant: o.Tenant, Pool: pool, Priority: o.Priority, Status: jobs.StatusRunning,
		Attempts: n, CreatedAt: time.Now(), StartedAt: time.Now(),
		Request: jobs.Request{Method: http.MethodPost, Path: path, Body: body,
			Header: http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {id}}},
	}
	r, err := http.NewRequestWithContext(jobs.NewContext(ctx, job), http.MethodPost, path, bytes.NewReader(body))
	if err != nil {
		return failure(openai.BadRequest(err.Error()))
	}
	r.RequestURI = path
	r.Header = job.Request.Header.Clone()
	release, admitted := admit(ctx, o, job)
	if !admitted {
		return result{aborted: true}
	}
	w := newCapture(o.MaxResponseBody)
	perr := serve(o, w, r)
	release(w.tokens())
	if ctx.Err() != nil {
		return result{aborted: true}
	}
	switch {
	case perr != nil:
		return result{err: perr.Error()}
	case w.tooLarge:
		return result{status: http.StatusBadGateway, err: fmt.Sprintf("response body exceeds %d bytes", o.MaxResponseBody),
			header: http.Header{}, body: nil}
	}
	res := result{status: w.code(), header: w.final, body: w.body.Bytes()}
	if res.status >= 400 {
		res.err = fmt.Sprintf("upstream answered %d", res.status)
	}
	return res
}

// admit waits until o.Admit admits job (at once without Admit); it returns
// false if ctx ends first.
func admit(ctx context.Context, o *Options, job *jobs.Job) (release func(tokens int64), ok bool) {
	if o.Admit == nil {
		return func(int64) {}, true
	}
	for {
		release, wait, ok := o.Admit(ctx, job)
		if ok {
			if release == nil {
				release = func(int64) {}
			}
			return release, true
		}
		if wait <= 0 {
			wait = time.Second
		}
		select {
		case <-ctx.Done():
			return nil, false
		case <-time.After(wait):
		}
	}
}

// serve calls Exec, turning a panic into an error.
func serve(o *Options, w http.ResponseWriter, r *http.Request) (err error) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		if v == http.ErrAbortHandler {
			err = errors.New("response aborted by the gateway")
			return
		}
		o.Logger.Error("bridged request panicked", "panic", v, "stack", string(debug.Stack()))
		err = fmt.Errorf("request panicked: %v", v)
	}()
	o.Exec.ServeHTTP(w, r)
	return nil
}

// tokens are the prompt and completion tokens the answer reports, -1 if it
// reports none.
func (c *capture) tokens() int64 {
	if c.body.Len() == 0 {
		return -1
	}
	sc := openai.NewUsageScanner(c.final.Get("Content-Type"))
	_, _ = sc.Write(c.body.Bytes())
	u, ok := sc.Usage()
	if !ok {
		return -1
	}
	return u.PromptTokens + u.CompletionTokens
}

// capture is the ResponseWriter of an attempt.
type capture struct {
	header   http.Header
	final    http.Header
	status   int
	body     bytes.Buffer
	limit    int
	tooLarge bool
}

func newCapture(limit int) *capture { return &capture{header: make(http.Header), limit: limit} }

func (c *capture) Header() http.Header { return c.header }

func (c *capture) WriteHeader(code int) {
	if c.status != 0 || code < 200 {
		return
	}
	c.status = code
	c.final = c.header.Clone()
}

func (c *capture) Write(p []byte) (int, error) {
	if c.status == 0 {
		c.WriteHeader(http.StatusOK)
	}
	if c.tooLarge || c.body.Len()+len(p) > c.limit {
		c.tooLarge = true
		return 0, errors.New("response body exceeds the limit")
	}
	return c.body.Write(p)
}

func (c *capture) Flush() {}

func (c *capture) code() int {
	if c.status == 0 {
		c.WriteHeader(http.StatusOK)
	}
	return c.status
}

// contentType of a result, for the answer's content type.
func (r result) contentType() string {
	if r.header != nil {
		if ct := r.header.Get("Content-Type"); ct != "" {
			return ct
		}
	}
	return "application/json"
}

// answerBody is what an answer carries: the response body, or for a
// failure without one, an OpenAI error.
func (r result) answerBody() []byte {
	if len(r.body) > 0 || r.err == "" {
		return r.body
	}
	b, _ := json.Marshal(map[string]any{"error": map[string]string{"message": r.err, "type": "server_error", "code": "bridge_error"}})
	return b
}

// answerStatus is the status an answer carries: 502 when no attempt got
// an answer.
func (r result) answerStatus() int {
	if r.status == 0 {
		return http.StatusBadGateway
	}
	return r.status
}
