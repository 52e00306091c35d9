package tracing

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/internal/config"
)

// BenchmarkRequest measures what tracing adds to one proxied request: the
// server span, one attempt span with its traceparent injected into the
// outgoing headers, the GenAI attributes and the first-token event. Compare
// the tracing=… sub-benchmarks with `benchstat -col /tracing`.
func BenchmarkRequest(b *testing.B) {
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer collector.Close()
	for _, tc := range []struct {
		name string
		cfg  config.Tracing
	}{
		{"off", config.Tracing{}},
		{"unsampled", config.Tracing{OTLPEndpoint: collector.URL, Protocol: "http", SampleRatio: 0}},
		{"sampled", config.Tracing{OTLPEndpoint: collector.URL, Protocol: "http", SampleRatio: 1}},
	} {
		b.Run("tracing="+tc.name, func(b *testing.B) {
			p, err := New(context.Background(), tc.cfg, Options{QueueSize: 1 << 16, Interval: 100 * time.Millisecond})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Shutdown(context.Background())
			in := httptest.NewRequest("POST", "/v1/chat/completions", nil)
			out := http.Header{}
			b.ReportAllocs()
			for b.Loop() {
				ctx, s := p.Start(context.Background(), in)
				s.SetRoute("POST", "/v1/chat/completions")
				s.SetOperation("/v1/chat/completions")
				s.SetModel("sim-llm")
				s.SetTenant("acme")
				s.SetPool("chat")
				actx, a := p.StartAttempt(ctx, "chat", "http://127.0.0.1:9001", 1)
				p.Inject(actx, out)
				a.SetHTTPStatus(200)
				a.FirstToken(time.Time{})
				a.End()
				s.SetUsage(12, 34)
				s.SetFinishReasons("stop")
				s.SetHTTPStatus(200)
				s.End()
			}
		})
	}
}
