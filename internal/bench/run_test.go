package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// chatRequest is what the test servers read from a request.
type chatRequest struct {
	Model    string `json:"model"`
	Messages []struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	} `json:"messages"`
	Prompt        string `json:"prompt"`
	Input         string `json:"input"`
	MaxTokens     int    `json:"max_tokens"`
	Stream        bool   `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

func (r *chatRequest) text() string {
	if len(r.Messages) > 0 {
		return r.Messages[0].Content
	}
	if r.Prompt != "" {
		return r.Prompt
	}
	return r.Input
}

func decodeRequest(t *testing.T, r *http.Request) chatRequest {
	var req chatRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		t.Errorf("request body: %v", err)
	}
	return req
}

// jsonHandler answers every request after delay with a chat completion of
// completion tokens whose usage counts the prompt's words.
func jsonHandler(t *testing.T, delay time.Duration, completion int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		req := decodeRequest(t, r)
		time.Sleep(delay)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"choices":[{"message":{"role":"assistant","content":"hello there"}}],"usage":{"prompt_tokens":%d,"completion_tokens":%d}}`,
			len(strings.Fields(req.text())), completion)
	}
}

// sseHandler streams k content chunks: the first after first, the others
// gap apart, preceded by a role-only chunk and followed, when the request
// asks for it, by a usage chunk reporting usageTokens. Each chunk is flushed
// on its own.
func sseHandler(t *testing.T, k int, first, gap time.Duration, usageTokens int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		req := decodeRequest(t, r)
		if !req.Stream {
			t.Error("stream not requested")
		}
		rc := http.NewResponseController(w)
		w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
		send := func(s string) {
			fmt.Fprintf(w, "data: %s\n\n", s)
			if err := rc.Flush(); err != nil {
				t.Error(err)
			}
		}
		send(`{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}`)
		time.Sleep(first)
		for i := range k {
			if i > 0 {
				time.Sleep(gap)
			}
			if req.Prompt != "" {
				send(fmt.Sprintf(`{"choices":[{"index":0,"text":"t%d "}]}`, i))
			} else {
				send(fmt.Sprintf(`{"choices":[{"index":0,"delta":{"content":"t%d "}}]}`, i))
			}
		}
		if req.StreamOptions != nil && req.StreamOptions.IncludeUsage && usageTokens > 0 {
			send(fmt.Sprintf(`{"choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d}}`, len(strings.Fields(req.text())), usageTokens))
		}
		send("[DONE]")
	}
}

// run runs cfg against h and fails the test on error.
func run(t *testing.T, h http.Handler, cfg Config) *Result {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	cfg.URL = srv.URL
	if cfg.Model == "" {
		cfg.Model = "test-model"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := Run(ctx, cfg, nil)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	checkInvariants(t, res)
	return res
}

// checkInvariants checks what must hold for any result.
func checkInvariants(t *testing.T, res *Result) {
	t.Helper()
	var byStatus, byKind int64
	for _, n := range res.FailedByStatus {
		byStatus += n
	}
	for _, n := range res.FailedByKind {
		byKind += n
	}
	if res.Failed != byStatus+byKind {
		t.Errorf("failed %d, but %d by status + %d by kind", res.Failed, byStatus, byKind)
	}
	if res.Sent != res.OK+res.Failed+res.Canceled {
		t.Errorf("sent %d != ok %d + failed %d + canceled %d", res.Sent, res.OK, res.Failed, res.Canceled)
	}
	if res.Latency.Count != res.OK {
		t.Errorf("latency count %d, ok %d", res.Latency.Count, res.OK)
	}
	for name, s := range map[string]Summary{"latency": res.Latency, "ttft": res.TTFT, "itl": res.ITL} {
		if s.Count == 0 {
			continue
		}
		if !(s.Min <= s.P50 && s.P50 <= s.P90 && s.P90 <= s.P99 && s.P99 <= s.P999 && s.P999 <= s.Max) {
			t.Errorf("%s: percentiles out of order: %+v", name, s)
		}
		if s.Mean < s.Min || s.Mean > s.Max {
			t.Errorf("%s: mean %v outside [%v, %v]", name, s.Mean, s.Min, s.Max)
		}
	}
	if res.LatencyHistogram.TotalCount() != res.Latency.Count ||
		res.TTFTHistogram.TotalCount() != res.TTFT.Count ||
		res.ITLHistogram.TotalCount() != res.ITL.Count {
		t.Errorf("histogram counts differ from summaries")
	}
	if res.Elapsed < res.Config.Duration && !res.Interrupted {
		t.Errorf("elapsed %v shorter than the duration %v", res.Elapsed, res.Config.Duration)
	}
}

func TestFixedLatency(t *testing.T) {
	t.Parallel()
	const delay = 20 * time.Millisecond
	const workers = 4
	res := run(t, jsonHandler(t, delay, 7), Config{Concurrency: workers, Duration: 400 * time.Millisecond, PromptTokens: 12})
	if res.OK == 0 || res.Failed != 0 {
		t.Fatalf("ok %d, failed %d (%v %v)", res.OK, res.Failed, res.FailedByStatus, res.FailedByKind)
	}
	if res.Latency.Min < delay || res.Latency.P50 < delay {
		t.Errorf("latency min %v, p50 %v: below the server's %v", res.Latency.Min, res.Latency.P50, delay)
	}
	if res.OutputTokens != 7*res.OK || res.PromptTokens != 12*res.OK {
		t.Errorf("tokens out %d in %d for %d ok, want 7 and 12 each", res.OutputTokens, res.PromptTokens, res.OK)
	}
	// Each worker finishes at most one request per delay.
	if limit := float64(workers) / delay.Seconds(); res.RequestsPerSecond > limit*1.05 {
		t.Errorf("%.1f req/s, more than %d workers at %v each allow", res.RequestsPerSecond, workers, delay)
	}
	if res.TTFT.Count != 0 || res.ITL.Count != 0 {
		t.Errorf("ttft/itl recorded for a non-streamed run: %d, %d", res.TTFT.Count, res.ITL.Count)
	}
	if res.Mode() != "closed" || res.Config.Seed == 0 {
		t.Errorf("mode %s, seed %d", res.Mode(), res.Config.Seed)
	}
}

func TestStreaming(t *testing.T) {
	t.Parallel()
	const (
		k     = 6
		first = 10 * time.Millisecond
		gap   = 4 * time.Millisecond
	)
	tests := []struct {
		name        string
		endpoint    string
		usageTokens int
		wantTokens  int64 // per request
	}{
		// The server's usage wins over counting chunks, so report a number
		// chunk counting cannot produce.
		{"chat with usage", EndpointChat, 100, 100},
		{"chat without usage", EndpointChat, 0, k},
		{"completions", EndpointCompletions, 0, k},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := run(t, sseHandler(t, k, first, gap, tt.usageTokens), Config{
				Endpoint: tt.endpoint, Stream: true, Concurrency: 3, Duration: 300 * time.Millisecond, PromptTokens: 5,
			})
			if res.OK == 0 || res.Failed != 0 {
				t.Fatalf("ok %d, failed %d (%v %v)", res.OK, res.Failed, res.FailedByStatus, res.FailedByKind)
			}
			if res.TTFT.Count != res.OK {
				t.Errorf("ttft samples %d, want one per ok request (%d)", res.TTFT.Count, res.OK)
			}
			if want := (k - 1) * res.OK; res.ITL.Count != want {
				t.Errorf("itl samples %d, want (k-1)×ok = %d", res.ITL.Count, want)
			}
			if res.OutputTokens != tt.wantTokens*res.OK {
				t.Errorf("output tokens %d, want %d per request × %d", res.OutputTokens, tt.wantTokens, res.OK)
			}
			if res.PromptTokens != 5*res.OK {
				t.Errorf("prompt tokens %d, want 5 per request × %d", res.PromptTokens, res.OK)
			}
			if res.TTFT.Min < first {
				t.Errorf("ttft min %v, below the server's %v", res.TTFT.Min, first)
			}
			if minTotal := first + (k-1)*gap; res.Latency.Min < minTotal {
				t.Errorf("latency min %v, below the server's %v", res.Latency.Min, minTotal)
			}
			// A chunk read late makes the next gap short, so only the
			// median is held to the server's gap, with room to spare.
			if res.ITL.P50 < gap/4 {
				t.Errorf("itl p50 %v, far below the server's %v", res.ITL.P50, gap)
			}
		})
	}
}

func TestFailuresByStatus(t *testing.T) {
	t.Parallel()
	var n atomic.Int64
	ok := jsonHandler(t, 0, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%5 == 0 {
			io.Copy(io.Discard, r.Body)
			http.Error(w, `{"error":{"message":"boom"}}`, http.StatusInternalServerError)
			return
		}
		ok(w, r)
	})
	res := run(t, h, Config{Concurrency: 2, Duration: 300 * time.Millisecond})
	if res.Sent < 10 {
		t.Fatalf("only %d sent", res.Sent)
	}
	if res.Sent != n.Load() {
		t.Errorf("sent %d, server saw %d", res.Sent, n.Load())
	}
	wantFailed := res.Sent / 5
	if res.FailedByStatus[500] != wantFailed || res.Failed != wantFailed || res.OK != res.Sent-wantFailed {
		t.Errorf("sent %d: ok %d, failed %d %v; want exactly %d failed with 500", res.Sent, res.OK, res.Failed, res.FailedByStatus, wantFailed)
	}
}

func TestOpenLoopSentCount(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		cfg      Config
		min, max int64
	}{
		// Constant arrivals at i/rate: exactly rate×duration of them.
		{"constant", Config{Rate: 200, Arrivals: ArrivalsConstant, Duration: 500 * time.Millisecond}, 100, 100},
		// Warmup arrivals are sent but not counted.
		{"constant after warmup", Config{Rate: 200, Arrivals: ArrivalsConstant, Warmup: 250 * time.Millisecond, Duration: 500 * time.Millisecond}, 100, 100},
		// Poisson: 200 expected, σ ≈ 14; ±4σ.
		{"poisson", Config{Rate: 200, Duration: time.Second, Seed: 3}, 145, 255},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var seen atomic.Int64
			inner := jsonHandler(t, 0, 1)
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seen.Add(1)
				inner(w, r)
			})
			res := run(t, h, tt.cfg)
			if res.Sent < tt.min || res.Sent > tt.max {
				t.Errorf("sent %d, want [%d, %d]", res.Sent, tt.min, tt.max)
			}
			if res.OK != res.Sent || res.Dropped != 0 {
				t.Errorf("ok %d of %d, dropped %d", res.OK, res.Sent, res.Dropped)
			}
			warmup := int64(tt.cfg.Warmup.Seconds() * tt.cfg.Rate)
			if seen.Load() != res.Sent+warmup {
				t.Errorf("server saw %d requests, want %d sent + %d warmup", seen.Load(), res.Sent, warmup)
			}
			if res.Mode() != "open" {
				t.Errorf("mode %q", res.Mode())
			}
		})
	}
}

// TestCoordinatedOmission stalls the server once for 500ms. The open loop
// keeps sending on schedule and counts each request from its scheduled
// time, so every request that arrived during the stall shows it; the
// closed loop (one worker) waits out the stall and sees it once.
func TestCoordinatedOmission(t *testing.T) {
	const stall = 500 * time.Millisecond
	stallServer := func() http.Handler {
		var mu sync.Mutex
		var n int
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			mu.Lock()
			n++
			if n == 30 {
				time.Sleep(stall) // everyone else waits on mu: the server is stalled
			}
			mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"choices":[{"message":{"content":"ok"}}],"usage":{"prompt_tokens":1,"completion_tokens":1}}`)
		})
	}
	const threshold = 400 * time.Millisecond

	open := run(t, stallServer(), Config{Rate: 100, Arrivals: ArrivalsConstant, Duration: time.Second})
	closed := run(t, stallServer(), Config{Concurrency: 1, Duration: time.Second})

	// Arrivals in the stall's first 100ms wait at least 400ms: ~10 of them.
	if n := countAtLeast(open.LatencyHistogram, threshold); n < 8 {
		t.Errorf("open loop: %d requests ≥ %v, want ≥ 8 (latency %+v)", n, threshold, open.Latency)
	}
	if n := countAtLeast(closed.LatencyHistogram, threshold); n != 1 {
		t.Errorf("closed loop: %d requests ≥ %v, want exactly the stalled one (latency %+v)", n, threshold, closed.Latency)
	}
	for name, res := range map[string]*Result{"open": open, "closed": closed} {
		if res.Latency.Max < stall {
			t.Errorf("%s loop: max %v, below the stall %v", name, res.Latency.Max, stall)
		}
	}
	if open.Latency.P90 < 100*time.Millisecond {
		t.Errorf("open loop p90 %v: the stall should reach past p90", open.Latency.P90)
	}
}

// countAtLeast counts recorded values of h at or above d.
func countAtLeast(h *hdrhistogram.Histogram, d time.Duration) int64 {
	var n int64
	for _, b := range h.Distribution() {
		if b.From >= d.Microseconds() {
			n += b.Count
		}
	}
	return n
}

func TestDropped(t *testing.T) {
	t.Parallel()
	var inFlight, peak atomic.Int64
	inner := jsonHandler(t, 100*time.Millisecond, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		inner(w, r)
	})
	const arrivals = 30 // 100/s for 300ms, constant
	res := run(t, h, Config{Rate: 100, Arrivals: ArrivalsConstant, Duration: 300 * time.Millisecond, MaxInFlight: 2})
	if res.Sent+res.Dropped != arrivals {
		t.Errorf("sent %d + dropped %d, want %d arrivals", res.Sent, res.Dropped, arrivals)
	}
	// Two slots of 100ms each serve at most 2 requests per 100ms.
	if res.Dropped < 10 {
		t.Errorf("dropped %d, want most arrivals", res.Dropped)
	}
	if peak.Load() > 2 {
		t.Errorf("server saw %d requests at once, cap is 2", peak.Load())
	}
}

func TestErrorKinds(t *testing.T) {
	t.Parallel()
	hang := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The server notices a client gone only once the body is read.
		io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	stream := func(body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, body)
		}
	}
	tests := []struct {
		name   string
		h      http.Handler
		stream bool
		kind   string
	}{
		{"timeout", hang, false, KindTimeout},
		{"stream without done", stream("data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n"), true, KindOther},
		{"error event", stream("event: error\ndata: {\"message\":\"x\"}\n\n"), true, KindOther},
		{"error in chunk", stream("data: {\"error\":{\"message\":\"overloaded\"}}\n\ndata: [DONE]\n\n"), true, KindOther},
		{"bad chunk", stream("data: {nope\n\ndata: [DONE]\n\n"), true, KindOther},
		{"bad json body", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "<html>") }), false, KindOther},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			timeout := 10 * time.Second
			if tt.kind == KindTimeout {
				timeout = 50 * time.Millisecond
			}
			res := run(t, tt.h, Config{Rate: 50, Arrivals: ArrivalsConstant, Duration: 100 * time.Millisecond, Timeout: timeout, Stream: tt.stream})
			if res.Sent != 5 || res.FailedByKind[tt.kind] != res.Sent || res.OK != 0 {
				t.Errorf("sent %d, ok %d, failed by kind %v; want all 5 %s", res.Sent, res.OK, res.FailedByKind, tt.kind)
			}
		})
	}
}

func TestConnectError(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	res, err := Run(context.Background(), Config{
		URL: "http://" + addr, Model: "m", Rate: 50, Arrivals: ArrivalsConstant, Duration: 100 * time.Millisecond,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, res)
	if res.Sent != 5 || res.FailedByKind[KindConnect] != 5 {
		t.Errorf("sent %d, failed by kind %v; want 5 connect failures", res.Sent, res.FailedByKind)
	}
}

func TestRequests(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		cfg    Config
		check  func(t *testing.T, r *http.Request, req chatRequest)
		prompt int
	}{
		{"chat", Config{MaxTokens: 9, PromptTokens: 11}, func(t *testing.T, r *http.Request, req chatRequest) {
			if r.URL.Path != EndpointChat || len(req.Messages) != 1 || req.Messages[0].Role != "user" || req.MaxTokens != 9 || req.Stream {
				t.Errorf("chat request %s %+v", r.URL.Path, req)
			}
		}, 11},
		{"completions streamed", Config{Endpoint: EndpointCompletions, Stream: true}, func(t *testing.T, r *http.Request, req chatRequest) {
			if r.URL.Path != EndpointCompletions || req.Prompt == "" || req.MaxTokens != DefaultMaxTokens ||
				!req.Stream || req.StreamOptions == nil || !req.StreamOptions.IncludeUsage || r.Header.Get("Accept") != "text/event-stream" {
				t.Errorf("completions request %s %+v", r.URL.Path, req)
			}
		}, DefaultPromptTokens},
		{"embeddings", Config{Endpoint: EndpointEmbeddings, PromptTokens: 3}, func(t *testing.T, r *http.Request, req chatRequest) {
			if r.URL.Path != EndpointEmbeddings || req.Input == "" || req.MaxTokens != 0 {
				t.Errorf("embeddings request %s %+v", r.URL.Path, req)
			}
		}, 3},
		{"headers", Config{APIKey: "sk-test", Header: http.Header{"X-Tenant": {"a"}, "Host": {"models.example"}}}, func(t *testing.T, r *http.Request, req chatRequest) {
			if r.Header.Get("Authorization") != "Bearer sk-test" || r.Header.Get("X-Tenant") != "a" || r.Host != "models.example" ||
				r.Header.Get("Content-Type") != "application/json" || r.Header.Get("Accept-Encoding") != "" {
				t.Errorf("headers %v host %q", r.Header, r.Host)
			}
		}, DefaultPromptTokens},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var prompts sync.Map
			var n atomic.Int64
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				var req chatRequest
				if err := json.Unmarshal(body, &req); err != nil {
					t.Errorf("body %q: %v", body, err)
				}
				if req.Model != "test-model" {
					t.Errorf("model %q", req.Model)
				}
				if got := len(strings.Fields(req.text())); got != tt.prompt {
					t.Errorf("prompt of %d words, want %d", got, tt.prompt)
				}
				tt.check(t, r, req)
				prompts.Store(req.text(), true)
				n.Add(1)
				r.Body = io.NopCloser(bytes.NewReader(body))
				if req.Stream {
					sseHandler(t, 2, 0, 0, 0)(w, r)
				} else {
					jsonHandler(t, 0, 1)(w, r)
				}
			})
			cfg := tt.cfg
			cfg.Concurrency, cfg.Duration = 2, 100*time.Millisecond
			res := run(t, h, cfg)
			if res.OK == 0 || res.Failed != 0 {
				t.Errorf("ok %d, failed %v %v", res.OK, res.FailedByStatus, res.FailedByKind)
			}
			distinct := 0
			prompts.Range(func(any, any) bool { distinct++; return true })
			if int64(distinct) != n.Load() {
				t.Errorf("%d distinct prompts in %d requests", distinct, n.Load())
			}
		})
	}
}

func TestRepeatPrompt(t *testing.T) {
	t.Parallel()
	var prompts sync.Map
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		prompts.Store(string(body), true)
		r.Body = io.NopCloser(bytes.NewReader(body))
		jsonHandler(t, 0, 1)(w, r)
	})
	res := run(t, h, Config{Concurrency: 2, Duration: 100 * time.Millisecond, RepeatPrompt: true})
	distinct := 0
	prompts.Range(func(any, any) bool { distinct++; return true })
	if res.OK < 2 || distinct != 1 {
		t.Errorf("%d distinct bodies in %d requests, want 1", distinct, res.OK)
	}
}

func TestInterrupted(t *testing.T) {
	t.Parallel()
	const workers = 3
	release := make(chan struct{})
	allIn := make(chan struct{})
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if n.Add(1) == workers {
			close(allIn)
		}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		<-allIn
		cancel()
	})
	res, err := Run(ctx, Config{URL: srv.URL, Model: "m", Concurrency: workers, Duration: time.Minute}, nil)
	if !errors.Is(err, context.Canceled) || res == nil {
		t.Fatalf("Run = %v, %v; want a result and context.Canceled", res, err)
	}
	checkInvariants(t, res)
	if !res.Interrupted || res.Canceled != workers || res.Failed != 0 || res.Sent != workers {
		t.Errorf("interrupted %v, sent %d, canceled %d, failed %d; want the %d in flight canceled",
			res.Interrupted, res.Sent, res.Canceled, res.Failed, workers)
	}
	if res.Elapsed >= time.Minute {
		t.Errorf("elapsed %v after an interrupt", res.Elapsed)
	}
}

func TestRunConfigError(t *testing.T) {
	t.Parallel()
	res, err := Run(context.Background(), Config{URL: "http://127.0.0.1:1", Rate: 1, Concurrency: 1}, nil)
	if err == nil || res != nil {
		t.Fatalf("Run = %v, %v; want a config error", res, err)
	}
}

// syncBuffer is a bytes.Buffer safe for the progress goroutine and the test.
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

func TestProgress(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(jsonHandler(t, time.Millisecond, 1))
	defer srv.Close()
	var out syncBuffer
	_, err := Run(context.Background(), Config{URL: srv.URL, Model: "m", Concurrency: 1, Duration: 500 * time.Millisecond, Warmup: 300 * time.Millisecond}, &out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"warmup", "sent", "ok", "errors", "req/s"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("progress output lacks %q:\n%q", want, out.String())
		}
	}
}
