package gateway

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/internal/config"
)

// BenchmarkProxyOverhead measures what sluice adds to a small inference
// request: the same client and backend, once direct and once through the
// gateway, in one run. The difference of the two (ns/op, allocs/op) is the
// gateway's cost; both include the loopback round trips of the client.
func BenchmarkProxyOverhead(b *testing.B) {
	resp := []byte(`{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hello"}}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}`)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(resp)
	}))
	defer backend.Close()

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}}
	body := `{"model":"m1","messages":[{"role":"user","content":"say hello"}],"max_tokens":1}`
	run := func(b *testing.B, url string) {
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			r, err := client.Post(url, "application/json", strings.NewReader(body))
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, r.Body)
			r.Body.Close()
			if r.StatusCode != 200 {
				b.Fatalf("status %d", r.StatusCode)
			}
		}
	}
	b.Run("direct", func(b *testing.B) { run(b, backend.URL+"/v1/chat/completions") })

	// The floor of any net/http proxy: the standard library's reverse proxy
	// with a tuned transport and no routing, balancing or accounting.
	b.Run("stdlib_reverseproxy", func(b *testing.B) {
		target, _ := url.Parse(backend.URL)
		rp := httputil.NewSingleHostReverseProxy(target)
		rp.Transport = &http.Transport{MaxIdleConnsPerHost: 1024, DisableCompression: true}
		rp.ErrorLog = log.New(io.Discard, "", 0)
		front := httptest.NewServer(rp)
		defer front.Close()
		run(b, front.URL+"/v1/chat/completions")
	})

	for _, logOn := range []bool{false, true} {
		name := "sluice"
		if logOn {
			name = "sluice_access_log"
		}
		b.Run(name, func(b *testing.B) {
			addr := benchGateway(b, backend.URL, logOn)
			run(b, "http://"+addr+"/v1/chat/completions")
		})
	}
}

// BenchmarkProxyStream measures a streamed completion through the
// gateway: 16 token events and a usage chunk, flushed one by one by the
// backend, read to the end by the client; direct and through sluice.
func BenchmarkProxyStream(b *testing.B) {
	var events []byte
	for i := range 16 {
		events = fmt.Appendf(events, "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok%d\"}}]}\n\n", i)
	}
	usage := []byte("data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":16,\"total_tokens\":19}}\n\ndata: [DONE]\n\n")
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		for i := 0; i < len(events); {
			j := bytes.Index(events[i:], []byte("\n\n")) + i + 2
			_, _ = w.Write(events[i:j])
			_ = rc.Flush()
			i = j
		}
		_, _ = w.Write(usage)
	}))
	defer backend.Close()

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}}
	body := `{"model":"m1","messages":[{"role":"user","content":"say hello"}],"max_tokens":16,"stream":true,"stream_options":{"include_usage":true}}`
	run := func(b *testing.B, url string) {
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			r, err := client.Post(url, "application/json", strings.NewReader(body))
			if err != nil {
				b.Fatal(err)
			}
			n, _ := io.Copy(io.Discard, r.Body)
			r.Body.Close()
			if r.StatusCode != 200 || n < int64(len(events)) {
				b.Fatalf("status %d, %d bytes", r.StatusCode, n)
			}
		}
	}
	b.Run("direct", func(b *testing.B) { run(b, backend.URL+"/v1/chat/completions") })
	b.Run("sluice", func(b *testing.B) {
		run(b, "http://"+benchGateway(b, backend.URL, false)+"/v1/chat/completions")
	})
}

// benchGateway starts a gateway with one pool of one backend and returns
// its address; it stops when b ends.
func benchGateway(b *testing.B, backendURL string, accessLog bool) string {
	b.Helper()
	dir := b.TempDir()
	path := filepath.Join(dir, "s.yaml")
	cfg := "listen: 127.0.0.1:0\nadmin: {listen: \"\"}\npools:\n  - name: chat\n    models: [m1]\n    health_check: {path: \"\"}\n    backends: [{url: " + backendURL + "}]\n"
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		b.Fatal(err)
	}
	c, err := config.Load(path)
	if err != nil {
		b.Fatal(err)
	}
	c.DataDir = dir
	var logger *slog.Logger
	if accessLog {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	srv, err := New(c, Options{Logger: logger})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	<-srv.Listening()
	b.Cleanup(func() {
		cancel()
		<-done
	})
	return srv.Addr()
}

// BenchmarkIdleKeepAlive opens b.N keep-alive connections to a gateway,
// sends one request on each (GET /v1/models, which the gateway answers
// itself) and leaves them idle, then reports the heap and stack the process
// grew by per connection. The client's end of each connection is a bare
// net.Conn (its read buffer is dropped), so the figure is the gateway's,
// plus a few hundred bytes. Run it with -benchtime 5000x: each connection
// takes two file descriptors here.
func BenchmarkIdleKeepAlive(b *testing.B) {
	addr := benchGateway(b, "http://127.0.0.1:1", false)
	get := func() (net.Conn, error) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return nil, err
		}
		if _, err := io.WriteString(c, "GET /v1/models HTTP/1.1\r\nHost: sluice\r\n\r\n"); err != nil {
			c.Close()
			return nil, err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			c.Close()
			return nil, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return c, nil
	}
	for range 10 { // warm the gateway's pools
		if c, err := get(); err == nil {
			c.Close()
		}
	}
	time.Sleep(100 * time.Millisecond)
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	conns := make([]net.Conn, 0, b.N)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range b.N {
		c, err := get()
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
	}
	time.Sleep(500 * time.Millisecond) // the gateway's connections go idle
	runtime.GC()
	runtime.ReadMemStats(&m1)
	grown := int64(m1.HeapInuse+m1.StackInuse) - int64(m0.HeapInuse+m0.StackInuse)
	b.ReportMetric(float64(grown)/float64(b.N)/1024, "KiB/conn")
}
