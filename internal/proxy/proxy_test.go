package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/upstream"
)

func pool(t *testing.T, urls ...string) *upstream.Pool {
	t.Helper()
	pc := config.DefaultPool()
	pc.Name = "p"
	pc.Balancer = "round_robin"
	pc.HealthCheck.Path = ""
	pc.Retry.Backoff = 0
	for _, u := range urls {
		pc.Backends = append(pc.Backends, config.Backend{URL: u, Weight: 1})
	}
	p, err := upstream.NewPool(&pc, upstream.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func TestRetriesAnotherBackendOnRetryableStatus(t *testing.T) {
	var bad, good atomic.Int32
	b1 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { bad.Add(1); w.WriteHeader(503) }))
	defer b1.Close()
	b2 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { good.Add(1); _, _ = io.WriteString(w, "ok") }))
	defer b2.Close()
	p := New(nil, nil)
	for range 4 {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, "/v1/x", strings.NewReader("{}"))
		res := p.Serve(w, r, &Request{Pool: pool(t, b1.URL, b2.URL), Body: []byte("{}")})
		if w.Code != 200 || res.Error != nil {
			t.Fatalf("status %d, error %v", w.Code, res.Error)
		}
	}
	if good.Load() != 4 {
		t.Fatalf("good backend answered %d of 4", good.Load())
	}
}

// Once a byte of the response reached the client, a failure is never
// retried: the client would get two responses glued together.
func TestNeverRetriesAfterBytesReachedTheClient(t *testing.T) {
	var calls atomic.Int32
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: {\"x\":1}\n\n")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}))
	be.Config.ErrorLog = nil
	defer be.Close()
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodPost, "/v1/x", strings.NewReader("{}"))
	res := New(nil, nil).Serve(w, r, &Request{Pool: pool(t, be.URL, be.URL+"/"), Body: []byte("{}")})
	if calls.Load() != 1 || res.Attempts != 1 {
		t.Fatalf("%d calls, %d attempts: a stream that broke after its first event was retried", calls.Load(), res.Attempts)
	}
	if !strings.Contains(w.Body.String(), "stream ended early") {
		t.Fatalf("the client was not told the stream broke: %q", w.Body.String())
	}
}

// The retry budget caps retries in flight at budget × requests in flight
// (floor 3): while three other requests hold it, a failing request is not
// retried; once they are done, it is.
func TestRetryBudgetStopsRetryStorms(t *testing.T) {
	var calls atomic.Int32
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(503)
	}))
	defer be.Close()
	pl := pool(t, be.URL)
	pr := New(nil, nil)
	var holders []upstream.Flight
	for range 3 {
		f := pl.Enter()
		if !f.MayRetry(false) {
			t.Fatal("the budget's floor of 3 refused a retry")
		}
		holders = append(holders, f)
	}
	serve := func() Result {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, "/v1/x", strings.NewReader("{}"))
		return pr.Serve(w, r, &Request{Pool: pl, Body: []byte("{}")})
	}
	if res := serve(); res.Attempts != 1 || calls.Load() != 1 {
		t.Fatalf("with the budget spent: %d attempts, %d calls; want no retry", res.Attempts, calls.Load())
	}
	for i := range holders {
		holders[i].Leave()
	}
	if res := serve(); res.Attempts != 3 {
		t.Fatalf("with the budget free: %d attempts, want 1 + retry.attempts (2)", res.Attempts)
	}
}
