package sim

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// discardWriter is a ResponseWriter that keeps nothing, so a benchmark
// measures the handler rather than a recorder.
type discardWriter struct {
	h      http.Header
	status int
	n      int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(code int)        { w.status = code }
func (w *discardWriter) Write(b []byte) (int, error) { w.n += len(b); return len(b), nil }
func (w *discardWriter) Flush()                      {}

// benchHandler serves body to path b.N times through the handler, with
// no latency.
func benchHandler(b *testing.B, path, body string) {
	s, err := New(fastConfig())
	if err != nil {
		b.Fatal(err)
	}
	h := s.Handler()
	rd := bytes.NewReader(nil)
	req, _ := http.NewRequest(http.MethodPost, path, io.NopCloser(rd))
	w := &discardWriter{h: make(http.Header)}
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset([]byte(body))
		req.Body = io.NopCloser(rd)
		req.ContentLength = int64(len(body))
		clear(w.h)
		w.status = 0
		h.ServeHTTP(w, req)
		if w.status != 0 && w.status != http.StatusOK {
			b.Fatalf("status %d", w.status)
		}
	}
}

func BenchmarkChat(b *testing.B) {
	benchHandler(b, "/v1/chat/completions", chatBody("sim-llm", "say something short about rivers", `,"max_tokens":16`))
}

func BenchmarkChatStream(b *testing.B) {
	benchHandler(b, "/v1/chat/completions", chatBody("sim-llm", "say something short about rivers", `,"max_tokens":16,"stream":true,"stream_options":{"include_usage":true}`))
}

// BenchmarkChatLongPrompt sends one 1024-word prompt again and again: the
// cost of tokenizing it into 64 blocks and finding them in the prefix cache.
func BenchmarkChatLongPrompt(b *testing.B) {
	benchHandler(b, "/v1/chat/completions", chatBody("sim-llm", strings.Repeat("rivers run to the sea ", 1024/5), `,"max_tokens":16`))
}

func BenchmarkCompletion(b *testing.B) {
	benchHandler(b, "/v1/completions", completionBody("sim-llm", "say something short about rivers", `,"max_tokens":16`))
}

func BenchmarkEmbeddings(b *testing.B) {
	benchHandler(b, "/v1/embeddings", `{"model":"sim-llm","input":["one short sentence","and another"]}`)
}

// BenchmarkChatLoopback measures what one sim sustains over real HTTP on
// loopback with a closed loop of keep-alive clients (req/s is reported).
func BenchmarkChatLoopback(b *testing.B) {
	cfg := fastConfig()
	cfg.MaxRunning = 64
	s, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			b.Error(err)
		}
	}()

	tr := &http.Transport{MaxIdleConnsPerHost: 256}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	url := "http://" + ln.Addr().String() + "/v1/chat/completions"
	body := chatBody("sim-llm", "say something short about rivers", `,"max_tokens":16`)
	b.ReportAllocs()
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Post(url, "application/json", strings.NewReader(body))
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}
