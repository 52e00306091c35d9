package bridge_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluice-ai/sluice/internal/bridge"
	"github.com/sluice-ai/sluice/internal/jobs"
	"github.com/sluice-ai/sluice/internal/jobs/amqpstore/amqptest"
	"github.com/sluice-ai/sluice/internal/jobs/jobstest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	amqptest.Stop()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "leaked goroutines:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// model is the backend: a model server on httptest that echoes the
// request. Model "flaky" answers 503 to its first attempt of each
// request; "slow" takes 50 ms.
type model struct {
	srv   *httptest.Server
	mu    sync.Mutex
	calls map[string]int // by request id field
}

func newModel(t *testing.T) *model {
	m := &model{calls: make(map[string]int)}
	m.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Model string `json:"model"`
			ID    string `json:"id"`
		}
		body, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(body, &req)
		m.mu.Lock()
		m.calls[req.ID]++
		n := m.calls[req.ID]
		m.mu.Unlock()
		if req.Model == "flaky" && n == 1 {
			http.Error(w, "no capacity", http.StatusServiceUnavailable)
			return
		}
		if req.Model == "slow" {
			select {
			case <-time.After(50 * time.Millisecond):
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"object":"chat.completion","model":%q,"id":%q,"attempt":%d,"tenant":%q}`, req.Model, req.ID, n, r.Header.Get("X-Tenant"))
	}))
	t.Cleanup(m.srv.Close)
	return m
}

func (m *model) callsOf(id string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls[id]
}

// gateway is the Exec of the tests: it refuses requests that are not
// jobs, answers an unknown model 404 as the gateway does, and proxies the
// rest to the model with the job's tenant.
func (m *model) gateway() http.Handler {
	u, _ := url.Parse(m.srv.URL)
	proxy := httputil.NewSingleHostReverseProxy(u)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		j, ok := jobs.FromContext(r.Context())
		if !ok {
			http.Error(w, "not a job", http.StatusInternalServerError)
			return
		}
		body, _ := io.ReadAll(r.Body)
		var req struct{ Model string }
		_ = json.Unmarshal(body, &req)
		switch req.Model {
		case "sim", "flaky", "slow":
		default:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintf(w, `{"error":{"message":"model %s does not exist","type":"invalid_request_error","code":"model_not_found"}}`, req.Model)
			return
		}
		r2 := r.Clone(r.Context())
		r2.Body = io.NopCloser(bytes.NewReader(body))
		r2.ContentLength = int64(len(body))
		r2.Header.Set("X-Tenant", j.Tenant)
		proxy.ServeHTTP(w, r2)
	})
}

func options(m *model) bridge.Options {
	return bridge.Options{
		Exec: m.gateway(), Pool: "chat", Tenant: "team-a", Concurrency: 4,
		MaxAttempts: 3, RetryBackoff: time.Millisecond, Logger: jobstest.TestLogger(),
	}
}

// answer is a decoded answer body.
type answer struct {
	Model   string `json:"model"`
	ID      string `json:"id"`
	Attempt int    `json:"attempt"`
	Tenant  string `json:"tenant"`
	Error   *struct {
		Message string `json:"message"`
	} `json:"error"`
}

func request(model, id string) []byte {
	return fmt.Appendf(nil, `{"model":%q,"id":%q,"messages":[{"role":"user","content":"hi"}]}`, model, id)
}

func (m *model) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, c := range m.calls {
		n += c
	}
	return n
}
