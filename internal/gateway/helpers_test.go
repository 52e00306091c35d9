package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/internal/config"
)

// gw is a gateway running for one test.
type gw struct {
	t      *testing.T
	srv    *Server
	url    string
	admin  string
	path   string
	cancel context.CancelFunc
	done   chan error
}

// startGateway writes cfgYAML to a temp file and runs the real server on
// port 0 until the test ends.
func startGateway(t *testing.T, cfgYAML string) *gw {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(path, []byte(cfgYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	if !strings.Contains(cfgYAML, "data_dir:") {
		cfg.DataDir = dir // the embedded job store lives here
	}
	srv, err := New(cfg, Options{Load: func() (*config.Config, error) {
		c, err := config.Load(path)
		if err == nil && !strings.Contains(cfgYAML, "data_dir:") {
			c.DataDir = dir
		}
		return c, err
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &gw{t: t, srv: srv, path: path, cancel: cancel, done: make(chan error, 1)}
	go func() { g.done <- srv.Run(ctx) }()
	select {
	case <-srv.Listening():
	case err := <-g.done:
		t.Fatalf("run: %v", err)
	}
	g.url = "http://" + srv.Addr()
	g.admin = "http://" + srv.AdminAddr()
	t.Cleanup(func() { g.stop() })
	return g
}

func (g *gw) stop() error {
	g.cancel()
	select {
	case err := <-g.done:
		g.done <- err
		return err
	case <-time.After(30 * time.Second):
		g.t.Fatal("gateway did not stop")
		return nil
	}
}

// rewrite replaces the config file (the file watcher or an explicit reload
// picks it up).
func (g *gw) rewrite(cfgYAML string) {
	g.t.Helper()
	tmp := g.path + ".tmp"
	if err := os.WriteFile(tmp, []byte(cfgYAML), 0o600); err != nil {
		g.t.Fatal(err)
	}
	if err := os.Rename(tmp, g.path); err != nil {
		g.t.Fatal(err)
	}
}

func (g *gw) post(path, body string, hdr ...string) *http.Response {
	g.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, g.url+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		g.t.Fatal(err)
	}
	return resp
}

func (g *gw) pools() []PoolStatus {
	g.t.Helper()
	resp, err := http.Get(g.admin + "/api/pools")
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Pools []PoolStatus }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		g.t.Fatal(err)
	}
	return out.Pools
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// backend is a test model server that names itself in X-Backend and counts
// its requests.
type backend struct {
	*httptest.Server
	name string
	mu   sync.Mutex
	hits int
	// health is the status /health answers (200 by default).
	health int
	// handler, when set, answers non-health requests.
	handler http.HandlerFunc
}

func newBackend(t *testing.T, name string) *backend {
	t.Helper()
	b := &backend{name: name, health: http.StatusOK}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", name)
		if r.URL.Path == "/health" {
			b.mu.Lock()
			code := b.health
			b.mu.Unlock()
			w.WriteHeader(code)
			return
		}
		b.mu.Lock()
		b.hits++
		h := b.handler
		b.mu.Unlock()
		if h != nil {
			h(w, r)
			return
		}
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"backend":%q,"path":%q,"body_len":%d,"xff":%q,"rid":%q}`, name, r.URL.Path, len(body), r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Request-Id"))
	}))
	t.Cleanup(b.Close)
	return b
}

func (b *backend) setHealth(code int) {
	b.mu.Lock()
	b.health = code
	b.mu.Unlock()
}

func (b *backend) setHandler(h http.HandlerFunc) {
	b.mu.Lock()
	b.handler = h
	b.mu.Unlock()
}

func (b *backend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.hits
}

// eventually polls cond until it holds or 10s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

const chatBody = `{"model":"m1","messages":[{"role":"user","content":"hi"}]}`

// newFuzzServer builds a Server (not listening) for handler-level tests.
func newFuzzServer(f *testing.F, cfgYAML string) *Server {
	f.Helper()
	cfg, err := config.Parse("fuzz.yaml", []byte(cfgYAML))
	if err != nil {
		f.Fatal(err)
	}
	srv, err := New(cfg, Options{})
	if err != nil {
		f.Fatal(err)
	}
	return srv
}
