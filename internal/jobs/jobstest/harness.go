// Package jobstest is the conformance suite every jobs.Store passes: the
// same tests, run by each store package against its real engine, of the
// job system's guarantees (tenant isolation, idempotency, priorities,
// cancellation, retries, retention, callbacks, long polls, leases) and of
// the store contract itself, plus the end-to-end benchmarks.
package jobstest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-ai/sluice/internal/jobs"
	"github.com/sluice-ai/sluice/internal/openai"
)

// Store is a store instance under test; Close drops its connection (the
// "death" of a gateway in the lease tests) and may be called twice.
type Store interface {
	jobs.Store
	io.Closer
}

// Open opens a new store instance (its own connection) on one namespace of
// the engine under test, with the given lease. Instances of one namespace
// share jobs; the suite closes them when the test ends.
type Open func(t testing.TB, lease time.Duration) Store

// NewNamespace returns the Open of a fresh, empty namespace.
type NewNamespace func(t testing.TB) Open

// Leases used by the suite: long enough not to lapse under a loaded race
// detector, and short where a test waits for one to lapse.
const (
	normalLease = 10 * time.Second
	shortLease  = 2 * time.Second
)

// waitLimit bounds every wait of the suite; it only matters when a test
// fails.
const waitLimit = 30 * time.Second

// TestLogger returns a logger that discards, or writes to stderr when
// SLUICE_TEST_LOG is set.
func TestLogger() *slog.Logger {
	if os.Getenv("SLUICE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// env is one Service under test with its API and fake clock.
type env struct {
	t     *testing.T
	svc   *jobs.Service
	api   http.Handler
	clock *clockwork.FakeClock
	reg   *prometheus.Registry
}

// start runs a Service on store with exec; mods adjust the options.
func start(t *testing.T, store jobs.Store, exec http.Handler, mods ...func(*jobs.Options)) *env {
	t.Helper()
	clock := clockwork.NewFakeClockAt(time.Now())
	reg := prometheus.NewRegistry()
	o := jobs.Options{
		Store:           store,
		Exec:            exec,
		Concurrency:     4,
		RetryBackoff:    time.Millisecond,
		CallbackBackoff: time.Millisecond,
		// The suite's callback receivers are httptest servers on loopback,
		// which the callback policy refuses unless allowed.
		CallbackAllow: []string{"127.0.0.0/8"},
		Logger:        TestLogger(),
		Clock:         clock,
		Registerer:    reg,
	}
	for _, m := range mods {
		m(&o)
	}
	svc, err := jobs.New(context.Background(), o)
	if err != nil {
		t.Fatalf("new service: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = svc.Close(ctx)
	})
	return &env{t: t, svc: svc, api: svc.Handler(tenantOf, validate), clock: clock, reg: reg}
}

func tenantOf(r *http.Request) string { return r.Header.Get("X-Tenant") }

// validate accepts JSON bodies for model "sim" (pool "chat") and "big"
// (pool "batch"), as a gateway would.
func validate(_ *http.Request, _, _ string, body []byte) (string, *openai.Error) {
	var m struct {
		Model string `json:"model"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return "", openai.BadRequest("invalid JSON body")
	}
	switch m.Model {
	case "sim":
		return "chat", nil
	case "big":
		return "batch", nil
	}
	return "", openai.NotFound("model_not_found", fmt.Sprintf("model %q does not exist", m.Model))
}

// call sends a request to the API in process.
func (e *env) call(method, target, tenant string, body []byte, header map[string]string) *httptest.ResponseRecorder {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	r := httptest.NewRequestWithContext(ctx, method, target, bytes.NewReader(body))
	r.Header.Set("X-Tenant", tenant)
	for k, v := range header {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	e.api.ServeHTTP(w, r)
	return w
}

// job is the API's view of a job.
type job struct {
	ID         string  `json:"id"`
	Status     string  `json:"status"`
	Attempts   int     `json:"attempts"`
	CreatedAt  *string `json:"created_at"`
	StartedAt  *string `json:"started_at"`
	FinishedAt *string `json:"finished_at"`
	Error      *string `json:"error"`
	Result     *struct {
		StatusCode   int               `json:"status_code"`
		Headers      map[string]string `json:"headers"`
		Body         json.RawMessage   `json:"body"`
		BodyEncoding string            `json:"body_encoding"`
	} `json:"result"`
}

func decode[T any](t *testing.T, w *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
		t.Fatalf("decode %d response %q: %v", w.Code, w.Body.String(), err)
	}
	return v
}

// chat is a job submission for model "sim".
func chat(extra map[string]any) []byte {
	sub := map[string]any{
		"method": "POST",
		"path":   "/v1/chat/completions",
		"body":   map[string]any{"model": "sim", "messages": []any{map[string]string{"role": "user", "content": "hi"}}},
	}
	for k, v := range extra {
		sub[k] = v
	}
	b, _ := json.Marshal(sub)
	return b
}

// submit posts a job and expects 202.
func (e *env) submit(tenant string, body []byte, header map[string]string) job {
	e.t.Helper()
	w := e.call(http.MethodPost, "/v1/jobs", tenant, body, header)
	if w.Code != http.StatusAccepted {
		e.t.Fatalf("submit: %d %s", w.Code, w.Body.String())
	}
	j := decode[job](e.t, w)
	if loc := w.Header().Get("Location"); loc != "/v1/jobs/"+j.ID {
		e.t.Fatalf("Location %q, want /v1/jobs/%s", loc, j.ID)
	}
	return j
}

// await long-polls the job until it is final.
func (e *env) await(tenant, id string) job {
	e.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for time.Now().Before(deadline) {
		w := e.call(http.MethodGet, "/v1/jobs/"+id+"?wait=60s", tenant, nil, nil)
		if w.Code != http.StatusOK {
			e.t.Fatalf("get %s: %d %s", id, w.Code, w.Body.String())
		}
		if w.Body.Len() == 0 {
			break // the request's own deadline passed
		}
		j := decode[job](e.t, w)
		switch j.Status {
		case "succeeded", "failed", "canceled":
			return j
		}
	}
	e.t.Fatalf("job %s did not finish in %s", id, waitLimit)
	return job{}
}

// get reads a job without waiting.
func (e *env) get(tenant, id string) (job, int) {
	e.t.Helper()
	w := e.call(http.MethodGet, "/v1/jobs/"+id, tenant, nil, nil)
	if w.Code != http.StatusOK {
		return job{}, w.Code
	}
	return decode[job](e.t, w), w.Code
}

// counter returns the value of a counter of the Service's registry.
func (e *env) counter(name, label, value string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					if c := m.GetCounter(); c != nil {
						return c.GetValue()
					}
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	return 0
}

// upstream is the Exec handler of a test: it records each attempt and
// answers with respond, or echoes the job's ID and attempt number as JSON.
type upstream struct {
	respond func(w http.ResponseWriter, r *http.Request, j *jobs.Job, n int)
	started chan string

	mu     sync.Mutex
	calls  map[string]int
	order  []string
	seen   map[string]*jobs.Job
	bodies map[string][]byte
}

func newUpstream(respond func(w http.ResponseWriter, r *http.Request, j *jobs.Job, n int)) *upstream {
	return &upstream{
		respond: respond,
		started: make(chan string, 1024),
		calls:   make(map[string]int),
		seen:    make(map[string]*jobs.Job),
		bodies:  make(map[string][]byte),
	}
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	j, ok := jobs.FromContext(r.Context())
	if !ok {
		http.Error(w, "not a job", http.StatusInternalServerError)
		return
	}
	body, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.calls[j.ID]++
	n := u.calls[j.ID]
	u.order = append(u.order, j.ID)
	u.seen[j.ID] = j
	u.bodies[j.ID] = body
	u.mu.Unlock()
	u.started <- j.ID
	if u.respond != nil {
		u.respond(w, r, j, n)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"job":%q,"attempt":%d}`, j.ID, n)
}

func (u *upstream) callsOf(id string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.calls[id]
}

// attempt returns the job and body of the latest attempt of id.
func (u *upstream) attempt(id string) (*jobs.Job, []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.seen[id], u.bodies[id]
}

func (u *upstream) orderAfter(skip int) []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.order[skip:]...)
}

// waitStarted waits until the upstream starts an attempt of id.
func (u *upstream) waitStarted(t *testing.T, id string) {
	t.Helper()
	timeout := time.After(waitLimit)
	for {
		select {
		case got := <-u.started:
			if got == id {
				return
			}
		case <-timeout:
			t.Fatalf("job %s never started", id)
		}
	}
}

// eventually retries cond, running step between tries, until it holds.
func eventually(t *testing.T, what string, cond func() bool, step func()) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		if step != nil {
			step()
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func query(v map[string]string) string {
	q := url.Values{}
	for k, x := range v {
		q.Set(k, x)
	}
	return q.Encode()
}
