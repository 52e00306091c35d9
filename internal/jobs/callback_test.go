package jobs_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-ai/sluice/internal/jobs"
	"github.com/sluice-ai/sluice/internal/jobs/natsstore"
)

// callbackEnv is a Service on a real embedded store whose Exec answers
// 200, with the jobs API served over HTTP.
type callbackEnv struct {
	svc   *jobs.Service
	store *natsstore.Store
	api   *httptest.Server
	reg   *prometheus.Registry
	logs  *syncBuffer
}

func startCallbackEnv(t *testing.T, mod func(*jobs.Options)) *callbackEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, nil))
	store, err := natsstore.OpenEmbedded(ctx, t.TempDir(), natsstore.Options{Lease: 10 * time.Second, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	reg := prometheus.NewRegistry()
	o := jobs.Options{
		Store: store,
		Exec: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"ok":true}`)
		}),
		WebhookSecret:   "a test secret",
		CallbackBackoff: time.Millisecond,
		Logger:          logger,
		Registerer:      reg,
	}
	if mod != nil {
		mod(&o)
	}
	svc, err := jobs.New(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		svc.Close(ctx)
	})
	api := httptest.NewServer(svc.Handler(nil, nil))
	t.Cleanup(api.Close)
	return &callbackEnv{svc: svc, store: store, api: api, reg: reg, logs: logs}
}

// submit posts a job with callbackURL and returns the status and body.
func (e *callbackEnv) submit(t *testing.T, callbackURL string) (int, string) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"path": "/v1/embeddings", "body": map[string]any{"model": "m"}, "callback_url": callbackURL})
	resp, err := http.Post(e.api.URL+"/v1/jobs", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// enqueue records a job with callbackURL straight in the store, as a job
// submitted before the policy existed, or whose callback host resolved to
// a public address at submission, would be.
func (e *callbackEnv) enqueue(t *testing.T, callbackURL string) string {
	t.Helper()
	id, err := jobs.NewID()
	if err != nil {
		t.Fatal(err)
	}
	job := &jobs.Job{
		ID: id, Status: jobs.StatusQueued, Priority: jobs.PriorityNormal, CreatedAt: time.Now(),
		Request:     jobs.Request{Method: http.MethodPost, Path: "/v1/embeddings", Body: []byte(`{"model":"m"}`)},
		CallbackURL: callbackURL,
	}
	if _, _, err := e.store.Create(context.Background(), job); err != nil {
		t.Fatal(err)
	}
	return id
}

func (e *callbackEnv) deliveries(result string) float64 {
	mfs, _ := e.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "sluice_webhook_deliveries_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return -1
}

// waitFor polls cond (real work in other goroutines: the dispatcher, the
// callback sender) until it holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// receiver counts the callbacks it gets.
type receiver struct {
	*httptest.Server
	calls atomic.Int64
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		r.calls.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(r.Close)
	return r
}

// TestCallbackSSRFRefusedAtSubmit is the attack of a tenant pointing its
// callback at the gateway's admin API (or anything else on the gateway's
// network): a 400 at submission, before any job exists.
func TestCallbackSSRFRefusedAtSubmit(t *testing.T) {
	e := startCallbackEnv(t, nil)
	for _, u := range []string{
		"http://127.0.0.1:8081/api/reload",
		"http://127.1:8081/api/reload",
		"http://2130706433:8081/api/reload",
		"http://0x7f.0.0.1:8081/api/reload",
		"http://0177.0.0.1:8081/api/reload",
		"http://[::1]:8081/api/reload",
		"http://[::ffff:127.0.0.1]:8081/api/reload",
		"http://localhost:8081/api/reload",
		"http://admin.localhost/api/reload",
		"http://169.254.169.254/latest/meta-data/",
		"http://10.0.0.1/",
		"http://192.168.1.1/",
		"http://172.16.0.1/",
		"http://100.64.0.1/",
		"http://[fd00::1]/",
		"http://[fe80::1]/",
		"http://0.0.0.0:8081/",
		"http://[::]:8081/",
		"http://224.0.0.1/",
		"http://[64:ff9b::7f00:1]/",
		"http://[2002:7f00:1::]/",
		"http://user:pass@hooks.example.com/",
		"ftp://hooks.example.com/",
		"http:///path",
		"http://hooks.example.com:0/",
		"http://hooks.example.com:99999/",
		"//hooks.example.com/",
	} {
		code, body := e.submit(t, u)
		if code != http.StatusBadRequest || !strings.Contains(body, "callback_url") {
			t.Errorf("callback_url %s: %d %s, want 400", u, code, body)
		}
	}
}

// TestCallbackSSRFRefusedAtDelivery is the attack past submission: a job
// whose callback points at loopback reaches the dispatcher (through a
// name that resolves there, or stored before the policy). The job still
// finishes; the callback is refused by the dialer, given up after one
// try, and logged; the receiver gets nothing.
func TestCallbackSSRFRefusedAtDelivery(t *testing.T) {
	e := startCallbackEnv(t, nil)
	target := newReceiver(t) // stands for the admin API on 127.0.0.1
	id := e.enqueue(t, target.URL+"/api/reload")
	waitFor(t, "the callback to be given up", func() bool { return e.deliveries("failed") == 1 })
	job, err := e.store.Get(context.Background(), "", id)
	if err != nil {
		t.Fatal(err)
	}
	if job.Status != jobs.StatusSucceeded {
		t.Fatalf("job %s: %s, want succeeded", id, job.Status)
	}
	if n := target.calls.Load(); n != 0 {
		t.Fatalf("the loopback target got %d callbacks", n)
	}
	if r := e.deliveries("retried"); r != 0 {
		t.Fatalf("%v retries of a refused callback, want 0", r)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "callback given up") || !strings.Contains(logs, "loopback") || !strings.Contains(logs, "refused=true") {
		t.Fatalf("refusal not logged:\n%s", logs)
	}
}

// TestCallbackAllowlisted delivers to a receiver on loopback that the
// operator allowed.
func TestCallbackAllowlisted(t *testing.T) {
	for _, allow := range []string{"127.0.0.1", "127.0.0.0/8", "localhost"} {
		t.Run(allow, func(t *testing.T) {
			target := newReceiver(t)
			e := startCallbackEnv(t, func(o *jobs.Options) { o.CallbackAllow = []string{allow} })
			u := target.URL + "/hook"
			if allow == "localhost" {
				u = strings.Replace(u, "127.0.0.1", "localhost", 1)
			}
			if code, body := e.submit(t, u); code != http.StatusAccepted {
				t.Fatalf("submit: %d %s", code, body)
			}
			waitFor(t, "the callback", func() bool { return e.deliveries("delivered") == 1 })
			if n := target.calls.Load(); n != 1 {
				t.Fatalf("%d callbacks, want 1", n)
			}
		})
	}
}

// TestCallbackNeverToOwnAddress checks that the gateway's own listen
// addresses stay refused even inside an allowed range.
func TestCallbackNeverToOwnAddress(t *testing.T) {
	target := newReceiver(t) // stands for the gateway's admin listener
	e := startCallbackEnv(t, func(o *jobs.Options) {
		o.CallbackAllow = []string{"127.0.0.0/8"}
		o.OwnAddrs = []string{":8080", target.Listener.Addr().String()}
	})
	if code, body := e.submit(t, target.URL+"/api/reload"); code != http.StatusBadRequest || !strings.Contains(body, "own listen address") {
		t.Fatalf("submit to the own address: %d %s, want 400", code, body)
	}
	e.enqueue(t, target.URL+"/api/reload")
	waitFor(t, "the callback to be given up", func() bool { return e.deliveries("failed") == 1 })
	if n := target.calls.Load(); n != 0 {
		t.Fatalf("the gateway's own address got %d callbacks", n)
	}
}

// TestCallbackNoRedirect checks that a public-looking receiver cannot
// bounce the callback inward: redirects are not followed.
func TestCallbackNoRedirect(t *testing.T) {
	inner := newReceiver(t)
	bouncer := httptest.NewServer(http.RedirectHandler(inner.URL+"/api/reload", http.StatusTemporaryRedirect))
	t.Cleanup(bouncer.Close)
	e := startCallbackEnv(t, func(o *jobs.Options) {
		o.CallbackAllow = []string{bouncer.Listener.Addr().String()}
		o.CallbackAttempts = 2
	})
	if code, body := e.submit(t, bouncer.URL); code != http.StatusAccepted {
		t.Fatalf("submit: %d %s", code, body)
	}
	waitFor(t, "the callback to be given up", func() bool { return e.deliveries("failed") == 1 })
	if n := inner.calls.Load(); n != 0 {
		t.Fatalf("the redirect target got %d callbacks", n)
	}
}

func TestCallbackPolicyOptionsValidated(t *testing.T) {
	_, err := jobs.New(context.Background(), jobs.Options{
		Store: nopStore{}, Exec: http.NotFoundHandler(), CallbackAllow: []string{"10.0.0.0/33"},
	})
	if err == nil || !strings.Contains(err.Error(), "10.0.0.0/33") {
		t.Fatalf("New with a bad allow entry: %v", err)
	}
}

// nopStore is never used: New fails before it touches the store.
type nopStore struct{ jobs.Store }

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
