// Package consoletest runs a real sluice gateway under load for the tests
// of the admin console and of the dashboards: the binary built from this
// checkout, `sluice sim` backends, tenants with limits that refuse some
// requests, a pool whose queue overflows, a backend that refuses
// connections, an autoscaled process pool and async jobs (some of which fail
// against a backend that answers 500), so every metric family the gateway
// exports has data.
package consoletest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Gateway is a running `sluice serve` with its backends.
type Gateway struct {
	// URL is the data plane's base URL, Admin the admin listener's.
	URL, Admin string
	logs       *syncBuffer
}

// Keys of the test tenants: team-a has rpm 10 and gets 429s under Load;
// team-b is not limited in practice.
const (
	KeyA = "key-a"
	KeyB = "key-b"
)

// Build builds the sluice binary of this checkout into a temporary
// directory and returns its path.
func Build(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "sluice")
	// -pgo=off: the tests' binary needs no profile, and building the
	// dependencies a second time with cmd/sluice/default.pgo costs minutes.
	cmd := exec.Command("go", "build", "-pgo=off", "-o", bin, "./cmd/sluice")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(out)))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/sluice: %v\n%s", err, b)
	}
	return bin
}

const configTemplate = `listen: LISTEN
admin: {listen: ADMIN}
data_dir: DATA
log: {level: warn}
auth:
  keys:
    - {name: team-a, key: "` + KeyA + `", limits: {rpm: 10}}
    - {name: team-b, key: "` + KeyB + `", limits: {tpm: 100000000, concurrency: 256}}
pools:
  - name: chat
    models: [sim-llm]
    health_check: {path: ""}
    outlier_detection: {consecutive_failures: 2, ejection_time: 1s, max_ejected_percent: 50}
    retry: {attempts: 3, budget: 1, backoff: 1ms, on: [connect_failure, 502, 503, 504]}
    cache: {ttl: 60s}
    backends:
      - {url: "http://SIM1"}
      - {url: "http://SIM2"}
      - {url: "http://DEAD"}
  - name: tiny
    models: [tiny-llm]
    max_concurrency: 1
    queue: {size: 1, timeout: 100ms}
    health_check: {path: ""}
    backends: [{url: "http://SIM1"}]
  - name: broken
    models: [broken-llm]
    health_check: {path: ""}
    backends: [{url: "http://BROKEN"}]
  - name: auto
    models: [auto-llm]
    process:
      command: ["BIN", "sim", "--addr", "127.0.0.1:{port}", "--model", "auto-llm", "--ttft", "40ms", "--itl", "4ms"]
      ready_path: /health
      stop_timeout: 2s
    health_check: {path: /health, interval: 500ms, timeout: 400ms}
    autoscale: {min: 1, max: 3, target_concurrency: 1, stable_window: 6s, panic_window: 2s, scale_down_delay: 4s}
jobs: {store: embedded, concurrency: 1}
`

// Start runs three sims (one answers every request with 500) and a
// gateway in front of them (see the package comment); everything stops when
// the test ends.
func Start(t testing.TB, bin string) *Gateway {
	t.Helper()
	sim1, sim2, broken, dead := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	for _, a := range []string{sim1, sim2} {
		run(t, bin, "sim", "--addr", a, "--model", "sim-llm", "--model", "tiny-llm", "--ttft", "20ms", "--itl", "3ms")
		waitOK(t, "http://"+a+"/health")
	}
	run(t, bin, "sim", "--addr", broken, "--model", "broken-llm", "--error-rate", "1")
	waitOK(t, "http://"+broken+"/health")
	listen, admin := freeAddr(t), freeAddr(t)
	dir := t.TempDir()
	cfg := strings.NewReplacer("LISTEN", listen, "ADMIN", admin, "DATA", filepath.Join(dir, "data"),
		"SIM1", sim1, "SIM2", sim2, "BROKEN", broken, "DEAD", dead, "BIN", bin).Replace(configTemplate)
	path := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := run(t, bin, "serve", "-c", path)
	g := &Gateway{URL: "http://" + listen, Admin: "http://" + admin, logs: logs}
	waitOK(t, g.Admin+"/readyz")
	return g
}

// Logs returns what the gateway wrote so far.
func (g *Gateway) Logs() string { return g.logs.String() }

// Load sends a mix of traffic until ctx ends: streamed and plain chat
// completions (some repeated, so the cache hits), a tenant over its rpm,
// bursts at the one-slot queue of pool tiny, waves of requests to the
// autoscaled pool, bursts of async jobs that queue up, and now and then a
// job for pool broken, whose backend answers 500, which fails after its
// retries (high priority, so the backlog does not hold it up).
func (g *Gateway) Load(ctx context.Context) {
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 10 * time.Second}
	post := func(key, model, prompt string, stream bool, hdr ...string) {
		body := fmt.Sprintf(`{"model":%q,"max_tokens":16,"stream":%v,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":%q}]}`, model, stream, prompt)
		req, err := http.NewRequestWithContext(ctx, "POST", g.URL+"/v1/chat/completions", strings.NewReader(body))
		if err != nil {
			return
		}
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	loop := func(n int, f func(worker, i int)) {
		for w := range n {
			wg.Go(func() {
				for i := 0; ctx.Err() == nil; i++ {
					f(w, i)
				}
			})
		}
	}
	loop(6, func(w, i int) { post(KeyB, "sim-llm", fmt.Sprintf("w%d i%d", w, i%50), i%2 == 0) })
	loop(1, func(_, i int) { post(KeyA, "sim-llm", "same prompt", false); pause(ctx, 200*time.Millisecond) })
	loop(4, func(_, i int) { post(KeyB, "tiny-llm", fmt.Sprint("tiny ", i), true) })
	// The autoscaled pool gets load in waves of 12s on, 12s off, so the
	// autoscaler keeps deciding to scale up and down.
	loop(3, func(w, i int) {
		if time.Now().Unix()/12%2 == 1 {
			pause(ctx, 250*time.Millisecond)
			return
		}
		post(KeyB, "auto-llm", fmt.Sprint("auto ", w, i), true)
	})
	// Clients that hang up mid-stream (stream errors, reason client_gone).
	loop(1, func(_, i int) {
		body := fmt.Sprintf(`{"model":"sim-llm","max_tokens":200,"stream":true,"messages":[{"role":"user","content":"hang up %d"}]}`, i)
		req, err := http.NewRequestWithContext(ctx, "POST", g.URL+"/v1/chat/completions", strings.NewReader(body))
		if err != nil {
			return
		}
		req.Header.Set("Authorization", "Bearer "+KeyB)
		if resp, err := client.Do(req); err == nil {
			_, _ = resp.Body.Read(make([]byte, 64))
			resp.Body.Close()
		}
		pause(ctx, 300*time.Millisecond)
	})
	// Bursts of jobs beyond the one-at-a-time dispatcher build a backlog.
	loop(1, func(_, i int) {
		for j := range 8 {
			post(KeyB, "sim-llm", fmt.Sprint("job ", i, j), false, "Prefer", "respond-async")
		}
		pause(ctx, 500*time.Millisecond)
	})
	loop(1, func(_, i int) {
		post(KeyB, "broken-llm", fmt.Sprint("doomed ", i), false, "Prefer", "respond-async", "X-Sluice-Priority", "high")
		pause(ctx, 5*time.Second)
	})
	wg.Wait()
}

func pause(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// run starts bin with args and stops it when the test ends.
func run(t testing.TB, bin string, args ...string) *syncBuffer {
	t.Helper()
	logs := &syncBuffer{}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = io.Discard, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("log of sluice %s:\n%s", args[0], tail(logs.String(), 30))
		}
	})
	return logs
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func waitOK(t testing.TB, url string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after 60s: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freeAddr returns a loopback address nothing listens on right now.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// FreeAddr is freeAddr for the tests that use this package.
func FreeAddr(t testing.TB) string { return freeAddr(t) }

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 1<<20 {
		return len(p), nil
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
