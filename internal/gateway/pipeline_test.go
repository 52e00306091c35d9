package gateway

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/internal/config"
)

// capturing is a backend that records the headers of every request.
type capturing struct {
	*httptest.Server
	mu   sync.Mutex
	seen []http.Header
}

func newCapturing(t *testing.T) *capturing {
	c := &capturing{}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		c.mu.Lock()
		c.seen = append(c.seen, r.Header.Clone())
		c.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"object":"chat.completion","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`)
	}))
	t.Cleanup(c.Close)
	return c
}

func (c *capturing) headers() []http.Header {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]http.Header(nil), c.seen...)
}

// A tenant allowed only model a reached model b's pool through a path route
// (defect 1): every routing shape is now checked.
func TestPathRouteChecksTenantModels(t *testing.T) {
	be := newCapturing(t)
	g := startGateway(t, "listen: 127.0.0.1:0\nadmin: {listen: \"\"}\nlog: {level: error}\n"+
		"auth:\n  keys:\n    - {name: only-a, key: key-a, models: [a]}\n    - {name: all, key: key-all}\n"+
		"pools:\n"+
		"  - {name: pa, models: [a], health_check: {path: \"\"}, backends: [{url: "+be.URL+"}]}\n"+
		"  - {name: pb, models: [b], health_check: {path: \"\"}, backends: [{url: "+be.URL+"}]}\n"+
		"  - {name: bare, health_check: {path: \"\"}, backends: [{url: "+be.URL+"}]}\n"+
		"routes:\n  - {path_prefix: /b, pool: pb}\n  - {path_prefix: /bare, pool: bare}\n  - {path_prefix: /a, pool: pa}\n")
	for _, tc := range []struct {
		key, path, body string
		want            int
	}{
		{"key-a", "/v1/chat/completions", `{"model":"a"}`, 200},
		{"key-a", "/v1/chat/completions", `{"model":"b"}`, 403},
		{"key-a", "/b/v1/chat/completions", `{"model":"b"}`, 403},
		{"key-a", "/b/anything", ``, 403},
		{"key-a", "/bare/x", ``, 403},
		{"key-a", "/a/x", `{}`, 200},
		{"key-all", "/b/anything", ``, 200},
		{"key-a", "/a/../b/x", ``, 400},
	} {
		resp := g.post(tc.path, tc.body, "Authorization", "Bearer "+tc.key)
		b := readAll(t, resp)
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s %s: %d, want %d: %s", tc.key, tc.path, tc.body, resp.StatusCode, tc.want, b)
		}
	}
}

// The tenant's own gateway key reached the model servers (defect 2); now
// neither live requests nor jobs forward the client's Authorization, and
// the pool's upstream_headers (a backend's own headers over them) are sent.
func TestClientCredentialsNeverReachBackends(t *testing.T) {
	be := newCapturing(t)
	other := newCapturing(t)
	t.Setenv("SLUICE_TEST_UPSTREAM_KEY", "upstream-secret")
	g := startGateway(t, "listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0}\nlog: {level: error}\n"+
		"auth:\n  keys:\n    - {name: t, key: tenant-secret}\n"+
		"pools:\n  - name: chat\n    models: [m]\n    balancer: round_robin\n    health_check: {path: \"\"}\n"+
		"    upstream_headers: {Authorization: \"Bearer ${SLUICE_TEST_UPSTREAM_KEY}\", X-Team: pool}\n"+
		"    backends: [{url: "+be.URL+"}, {url: "+other.URL+", headers: {X-Team: own}}]\n")
	for range 2 {
		resp := g.post("/v1/chat/completions", `{"model":"m"}`, "Authorization", "Bearer tenant-secret")
		if b := readAll(t, resp); resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, b)
		}
	}
	resp := g.post("/v1/chat/completions", `{"model":"m"}`, "Authorization", "Bearer tenant-secret", "Prefer", "respond-async")
	if b := readAll(t, resp); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("async: %d %s", resp.StatusCode, b)
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(be.headers())+len(other.headers()) < 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	all := append(be.headers(), other.headers()...)
	if len(all) < 3 {
		t.Fatalf("backends saw %d requests, want 3 (two live, one job)", len(all))
	}
	for _, h := range all {
		if got := h.Get("Authorization"); got != "Bearer upstream-secret" {
			t.Errorf("backend saw Authorization %q, want the pool's upstream credential", got)
		}
	}
	for _, h := range be.headers() {
		if h.Get("X-Team") != "pool" {
			t.Errorf("X-Team %q, want the pool's", h.Get("X-Team"))
		}
	}
	for _, h := range other.headers() {
		if h.Get("X-Team") != "own" {
			t.Errorf("X-Team %q, want the backend's own", h.Get("X-Team"))
		}
	}
	// The upstream credential shows nowhere on the admin API.
	adm, err := http.Get(g.admin + "/api/pools")
	if err != nil {
		t.Fatal(err)
	}
	if b := readAll(t, adm); strings.Contains(b, "upstream-secret") {
		t.Fatalf("/api/pools shows the upstream credential: %s", b)
	}
}

// An aborted response on a cached pool skipped the tenant's settlement and
// leaked its concurrency slot forever (defect 3).
func TestAbortedCachedResponseReleasesTheSlot(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if strings.Contains(r.Header.Get("X-Test"), "abort") {
			w.Header().Set("Content-Length", "1000")
			w.WriteHeader(200)
			_, _ = io.WriteString(w, `{"partial":`)
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		_, _ = io.WriteString(w, `{}`)
	}))
	be.Config.ErrorLog = discardLogger()
	defer be.Close()
	g := startGateway(t, "listen: 127.0.0.1:0\nadmin: {listen: \"\"}\nlog: {level: error}\n"+
		"auth:\n  keys:\n    - {name: t, key: k, limits: {concurrency: 1}}\n"+
		"pools:\n  - {name: chat, models: [m], cache: {ttl: 1m}, health_check: {path: \"\"}, retry: {attempts: 0}, backends: [{url: "+be.URL+"}]}\n")
	for i := range 3 {
		req, _ := http.NewRequest(http.MethodPost, g.url+"/v1/chat/completions", strings.NewReader(`{"model":"m","n":`+string(rune('1'+i))+`}`))
		req.Header.Set("Authorization", "Bearer k")
		req.Header.Set("X-Test", "abort")
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
	}
	resp := g.post("/v1/chat/completions", `{"model":"m"}`, "Authorization", "Bearer k")
	if b := readAll(t, resp); resp.StatusCode != 200 {
		t.Fatalf("after aborted responses: %d %s (the tenant's slot leaked)", resp.StatusCode, b)
	}
}

// A reload that failed still changed the running pool's balancer (defect
// 4): prepare now builds everything before anything is committed.
func TestRejectedReloadLeavesEverythingUntouched(t *testing.T) {
	be := newCapturing(t)
	base := "listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0}\nlog: {level: error}\n" +
		"pools:\n  - {name: chat, models: [m], balancer: %s, health_check: {path: \"\"}, backends: [{url: " + be.URL + "}]}\n"
	g := startGateway(t, strings.Replace(base, "%s", "round_robin", 1))
	// Valid as a file, but its authenticator cannot be built (the JWKS file
	// is missing), which only the prepare phase finds.
	g.rewrite(strings.Replace(base, "%s", "random", 1) + "auth:\n  jwt: {jwks_file: /nonexistent/jwks.json, issuer: i, audience: a}\n")
	if err := g.srv.Reload(); err == nil {
		t.Fatal("reload with a missing JWKS file accepted")
	}
	if got := g.srv.Pool("chat").BalancerName(); got != "round_robin" {
		t.Fatalf("rejected reload changed the balancer to %s", got)
	}
	if g.srv.Config().Auth != nil {
		t.Fatal("rejected reload changed the config in force")
	}
}

// When keda.listen could not be bound, Run returned with the admin server,
// the job system and embedded NATS still running (defect 5): now every
// listener is bound before anything starts.
func TestListenFailureLeavesNothingRunning(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Listen, cfg.Admin.Listen, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", dir
	cfg.KEDA.Listen = taken.Addr().String()
	cfg.Pools = []config.Pool{config.DefaultPool()}
	cfg.Pools[0].Name, cfg.Pools[0].Models = "chat", []string{"m"}
	cfg.Pools[0].Backends = []config.Backend{{URL: "http://127.0.0.1:1", Weight: 1}}
	srv, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Run(ctx); err == nil || !strings.Contains(err.Error(), "keda listen") {
		t.Fatalf("Run = %v, want the keda listen error", err)
	}
	if a := srv.AdminAddr(); a != "" {
		if c, err := net.DialTimeout("tcp", a, time.Second); err == nil {
			c.Close()
			t.Fatalf("admin server still listening on %s after Run failed", a)
		}
	}
	if srv.jobs != nil {
		t.Fatal("the job system was started although Run failed")
	}
}

func discardLogger() *log.Logger { return log.New(io.Discard, "", 0) }
