package sim

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

// fakeClockConfig is a config on a fake clock with whole-millisecond
// latencies.
func fakeClockConfig() (Config, *clockwork.FakeClock) {
	fc := clockwork.NewFakeClockAt(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	cfg := fastConfig()
	cfg.Clock = fc
	cfg.TTFT = 10 * time.Millisecond
	cfg.ITL = 4 * time.Millisecond
	return cfg, fc
}

// waitUntil polls cond until it holds; the server moves in other
// goroutines, so tests wait for a state rather than for a time.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// advanceWhileRunning moves the fake clock on in 1ms steps whenever every
// running request is parked on it, until done is closed.
func advanceWhileRunning(fc *clockwork.FakeClock, e *Engine, done <-chan struct{}) {
	for {
		select {
		case <-done:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Millisecond)
		if n := e.Running(); n > 0 && fc.BlockUntilContext(ctx, n) == nil {
			fc.Advance(time.Millisecond)
		}
		cancel()
		time.Sleep(20 * time.Microsecond)
	}
}

func TestStreamFirstChunkBeforeEnd(t *testing.T) {
	cfg, fc := fakeClockConfig()
	s, ts := startServer(t, cfg)

	resp, err := http.Post(ts.URL+"/v1/chat/completions", "application/json",
		strings.NewReader(chatBody("sim-llm", "hello", `,"max_tokens":5,"stream":true`)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// Headers arrive before the prefill ends, as from a real engine.
	if resp.StatusCode != http.StatusOK {
		t.Fatal(resp.Status)
	}
	if err := fc.BlockUntilContext(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	fc.Advance(cfg.TTFT)

	r := bufio.NewReader(resp.Body)
	var first bytes.Buffer
	for !bytes.Contains(first.Bytes(), []byte(`"content":"`)) || !bytes.HasSuffix(first.Bytes(), []byte("\n\n")) {
		line, err := r.ReadBytes('\n')
		if err != nil {
			t.Fatalf("reading the first token: %v (read %q)", err, first.Bytes())
		}
		first.Write(line)
	}
	// The stream cannot have ended: the clock has not reached the second token.
	if got := s.Engine().Running(); got != 1 {
		t.Fatalf("running %d after the first token, want 1", got)
	}

	done := make(chan struct{})
	go advanceWhileRunning(fc, s.Engine(), done)
	rest, err := io.ReadAll(r)
	close(done)
	if err != nil {
		t.Fatal(err)
	}
	chunks, err := parseSSE(append(first.Bytes(), rest...))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(strings.Fields(streamText(chunks))); n != 5 {
		t.Errorf("stream has %d tokens, want 5", n)
	}
}

func TestClientDisconnectFreesSlot(t *testing.T) {
	cfg, fc := fakeClockConfig()
	cfg.MaxRunning = 1
	s, ts := startServer(t, cfg)

	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, "POST", ts.URL+"/v1/chat/completions",
		strings.NewReader(chatBody("sim-llm", "hello", `,"max_tokens":1000,"stream":true`)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()

	// A second request waits behind the first.
	second := make(chan int, 1)
	go func() {
		resp, err := http.Post(ts.URL+"/v1/chat/completions", "application/json",
			strings.NewReader(chatBody("sim-llm", "hello", `,"max_tokens":1`)))
		if err != nil {
			second <- 0
			return
		}
		resp.Body.Close()
		second <- resp.StatusCode
	}()
	waitUntil(t, "the second request to queue", func() bool { return s.Engine().Waiting() == 1 })

	cancel()
	waitUntil(t, "the slot to pass on", func() bool { return s.Engine().Waiting() == 0 })
	done := make(chan struct{})
	go advanceWhileRunning(fc, s.Engine(), done)
	code := <-second
	close(done)
	if code != http.StatusOK {
		t.Errorf("second request: status %d", code)
	}
}

func TestStartupDelay(t *testing.T) {
	cfg, fc := fakeClockConfig()
	cfg.TTFT, cfg.ITL = 0, 0
	cfg.StartupDelay = 30 * time.Second
	_, ts := startServer(t, cfg)

	checks := []struct {
		method, path, body string
		loading            int
	}{
		{"GET", "/health", "", 503},
		{"GET", "/v2/health/ready", "", 503},
		{"GET", "/v2/models/sim-llm/ready", "", 503},
		{"GET", "/v1/models", "", 503},
		{"POST", "/v1/chat/completions", chatBody("sim-llm", "hi", ""), 503},
		{"POST", "/v1/completions", completionBody("sim-llm", "hi", ""), 503},
		{"POST", "/v1/embeddings", `{"model":"sim-llm","input":"hi"}`, 503},
		{"POST", "/v2/models/sim-llm/infer", `{"inputs":[{"name":"x","datatype":"BYTES","shape":[1],"data":["hi"]}]}`, 503},
		{"GET", "/v2/health/live", "", 200},
		{"GET", "/metrics", "", 200},
	}
	run := func(phase string, loading bool) {
		for _, c := range checks {
			resp, b := call(t, c.method, ts.URL+c.path, c.body)
			want := 200
			if loading {
				want = c.loading
			}
			if resp.StatusCode != want {
				t.Errorf("%s: %s %s: %d, want %d (%s)", phase, c.method, c.path, resp.StatusCode, want, b)
			}
			if resp.StatusCode == 503 && c.path != "/v2/health/ready" && c.path != "/v2/models/sim-llm/ready" && resp.Header.Get("Retry-After") == "" {
				t.Errorf("%s: %s: 503 without Retry-After", phase, c.path)
			}
		}
	}
	run("at start", true)
	fc.Advance(cfg.StartupDelay - time.Millisecond)
	run("just before the delay", true)
	fc.Advance(time.Millisecond)
	run("after the delay", false)
}

func TestMetrics(t *testing.T) {
	cfg, fc := fakeClockConfig()
	cfg.Models = []string{"m1", "m2"}
	cfg.MaxRunning = 2
	cfg.KVBlocks = 50
	s, ts := startServer(t, cfg)
	label := `{model_name="m1"}`

	// Four requests of 3 prompt words and 4 tokens on a batch of two.
	results := make(chan int, 4)
	for i := range 4 {
		body := chatBody("m2", "one two three", `,"max_tokens":4`)
		if i%2 == 1 {
			body = chatBody("m1", "one two three", `,"max_tokens":4,"stream":true`)
		}
		go func() {
			resp, err := http.Post(ts.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
			if err != nil {
				results <- 0
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			results <- resp.StatusCode
		}()
	}
	waitUntil(t, "two running and two waiting", func() bool {
		return s.Engine().Running() == 2 && s.Engine().Waiting() == 2
	})
	m := scrape(t, ts.URL)
	for series, want := range map[string]float64{
		MetricRunning + label:      2,
		MetricWaiting + label:      2,
		MetricKVCacheUsage + label: 0.04, // 2 × 1 block (3 prompt tokens) of 50
	} {
		if m[series] != want {
			t.Errorf("%s = %v, want %v", series, m[series], want)
		}
	}

	done := make(chan struct{})
	go advanceWhileRunning(fc, s.Engine(), done)
	for range 4 {
		if code := <-results; code != 200 {
			t.Errorf("status %d", code)
		}
	}
	close(done)

	m = scrape(t, ts.URL)
	// Each pair runs 10ms of prefill and 3 more tokens 4ms × 1.25 apart (a
	// full batch of two): 25ms; the second pair waits for the first.
	for series, want := range map[string]float64{
		MetricRunning + label:                                               0,
		MetricWaiting + label:                                               0,
		MetricKVCacheUsage + label:                                          0,
		MetricPromptTokens + label:                                          12,
		MetricPrefixCacheQueries + label:                                    12,
		MetricPrefixCacheHits + label:                                       0,
		MetricGenerationTokens + label:                                      16,
		MetricTTFT + "_count" + label:                                       4,
		MetricTTFT + "_sum" + label:                                         0.010 + 0.010 + 0.035 + 0.035,
		MetricTTFT + `_bucket{model_name="m1",le="0.01"}`:                   2,
		MetricTTFT + `_bucket{model_name="m1",le="0.04"}`:                   4,
		MetricE2E + "_count" + label:                                        4,
		MetricE2E + "_sum" + label:                                          0.025 + 0.025 + 0.050 + 0.050,
		MetricQueueTime + "_sum" + label:                                    0.025 + 0.025,
		MetricRequestSuccess + `{finished_reason="length",model_name="m1"}`: 4,
	} {
		if got := m[series]; fmt.Sprintf("%.6f", got) != fmt.Sprintf("%.6f", want) {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	for series := range m {
		if strings.HasPrefix(series, "vllm:") && !strings.Contains(series, label[1:len(label)-1]) {
			t.Errorf("series %s is not labelled with the first model", series)
		}
	}
}

func TestServeShutdown(t *testing.T) {
	tests := []struct {
		name    string
		timeout time.Duration
		advance bool // let the in-flight request finish during the drain
		status  int
	}{
		{"in-flight request finishes", time.Minute, true, 200},
		{"grace period over", 0, false, 503},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, fc := fakeClockConfig()
			cfg.ID = ""
			cfg.Addr = "127.0.0.1:0"
			cfg.ShutdownTimeout = tc.timeout
			var logs syncBuffer
			cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			s, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			ctx, cancel := context.WithCancel(t.Context())
			served := make(chan error, 1)
			go func() { served <- s.Serve(ctx, ln) }()
			waitUntil(t, "the start line", func() bool { return strings.Contains(logs.String(), "sim listening") })
			if !strings.Contains(logs.String(), "addr="+addr) || s.ID() != addr {
				t.Errorf("start line %q, id %q; want addr %s", logs.String(), s.ID(), addr)
			}

			type result struct {
				code     int
				instance string
				err      error
			}
			got := make(chan result, 1)
			go func() {
				resp, err := http.Post("http://"+addr+"/v1/chat/completions", "application/json",
					strings.NewReader(chatBody("sim-llm", "hi", `,"max_tokens":3`)))
				if err != nil {
					got <- result{err: err}
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				got <- result{code: resp.StatusCode, instance: resp.Header.Get(InstanceHeader)}
			}()
			waitUntil(t, "the request to run", func() bool { return s.Engine().Running() == 1 })
			cancel()

			done := make(chan struct{})
			if tc.advance {
				go advanceWhileRunning(fc, s.Engine(), done)
			}
			if err := <-served; err != nil {
				t.Errorf("Serve: %v", err)
			}
			close(done)
			r := <-got
			if r.err != nil || r.code != tc.status {
				t.Errorf("in-flight request: status %d, err %v; want %d", r.code, r.err, tc.status)
			}
			if r.err == nil && r.instance != addr {
				t.Errorf("instance header %q, want %q", r.instance, addr)
			}
			if _, err := net.Dial("tcp", addr); err == nil {
				t.Errorf("still accepting after Serve returned")
			}
			if err := s.Serve(t.Context(), mustListen(t)); err == nil {
				t.Errorf("a second Serve succeeded")
			}
		})
	}
}

func TestServeSpeaksH2C(t *testing.T) {
	s, err := New(fastConfig())
	if err != nil {
		t.Fatal(err)
	}
	ln := mustListen(t)
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Error(err)
		}
	}()

	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protocols}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Post("http://"+ln.Addr().String()+"/v1/chat/completions",
		"application/json", strings.NewReader(chatBody("sim-llm", "hi", `,"stream":true`)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s", resp.Proto, resp.Status)
	}
	if _, err := parseSSE(b); err != nil {
		t.Error(err)
	}
}

func mustListen(t *testing.T) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func TestNewRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"negative ttft", func(c *Config) { c.TTFT = -1 }, "ttft"},
		{"error rate above one", func(c *Config) { c.ErrorRate = 1.5 }, "error-rate"},
		{"NaN slowdown", func(c *Config) { c.Slowdown = nanValue() }, "slowdown"},
		{"negative max running", func(c *Config) { c.MaxRunning = -2 }, "max-running"},
		{"dim too large", func(c *Config) { c.Dim = MaxDim + 1 }, "dim"},
		{"duplicate model", func(c *Config) { c.Models = []string{"a", "a"} }, "given twice"},
		{"empty model", func(c *Config) { c.Models = []string{""} }, "empty name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.mutate(&cfg)
			_, err := New(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one about %q", err, tc.want)
			}
		})
	}
	var both Config
	both.TTFT, both.ErrorRate = -1, 2
	if _, err := New(both); err == nil || !strings.Contains(err.Error(), "ttft") || !strings.Contains(err.Error(), "error-rate") {
		t.Errorf("want every problem reported, got %v", err)
	}
	s, err := New(Config{})
	if err != nil {
		t.Fatalf("zero Config: %v", err)
	}
	if s.ID() != "127.0.0.1:9001" || s.cfg.MaxRunning != 8 || s.cfg.Dim != 64 || s.cfg.Models[0] != "sim-llm" {
		t.Errorf("zero Config defaults: id %q, %+v", s.ID(), s.cfg)
	}
}

func nanValue() float64 {
	zero := 0.0
	return zero / zero
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestEncodeLatencyGrowsWithInput(t *testing.T) {
	tests := []struct {
		name, path, body string
		want             time.Duration // 10ms + 1ms per input token
	}{
		{"one embedding", "/v1/embeddings", `{"model":"sim-llm","input":"a b"}`, 12 * time.Millisecond},
		{"three embeddings", "/v1/embeddings", `{"model":"sim-llm","input":["a b","c d e","f"]}`, 16 * time.Millisecond},
		{"token ids", "/v1/embeddings", `{"model":"sim-llm","input":[[1,2,3,4,5,6,7,8,9,10]]}`, 20 * time.Millisecond},
		{"v2 tensors", "/v2/models/sim-llm/infer", `{"inputs":[{"name":"x","datatype":"FP32","shape":[2,3],"data":[1,2,3,4,5,6]},{"name":"t","datatype":"BYTES","shape":[1],"data":["one two"]}]}`, 18 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, fc := fakeClockConfig()
			cfg.PrefillPerToken = time.Millisecond
			s, ts := startServer(t, cfg)
			code := make(chan int, 1)
			go func() {
				resp, err := http.Post(ts.URL+tc.path, "application/json", strings.NewReader(tc.body))
				if err != nil {
					code <- 0
					return
				}
				resp.Body.Close()
				code <- resp.StatusCode
			}()
			waitUntil(t, "the request to run", func() bool { return s.Engine().Running() == 1 })
			done := make(chan struct{})
			go advanceWhileRunning(fc, s.Engine(), done)
			if c := <-code; c != http.StatusOK {
				t.Fatalf("status %d", c)
			}
			close(done)
			label := `{model_name="sim-llm"}`
			if got := scrape(t, ts.URL)[MetricE2E+"_sum"+label]; got != tc.want.Seconds() {
				t.Errorf("took %vs, want %v", got, tc.want)
			}
		})
	}
}
