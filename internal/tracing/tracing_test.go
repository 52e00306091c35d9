package tracing

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/tracing/tracingtest"
)

const secretKey = "sk-live-SECRET-never-in-a-span"

// request plays the gateway's request path against a traced backend: a
// server span continuing the client's trace, admission, cache lookup, queue
// wait, a failed attempt and a retry that streams a first token.
func request(t *testing.T, p *Provider, backendURL, clientTraceparent string) {
	t.Helper()
	r := httptest.NewRequest("POST", "/v1/chat/completions", strings.NewReader(`{"messages":[{"role":"user","content":"prompt text"}]}`))
	r.Header.Set("Authorization", "Bearer "+secretKey)
	r.Header.Set("traceparent", clientTraceparent)
	ctx, span := p.Start(context.Background(), r)
	span.SetRoute("POST", "/v1/chat/completions")
	span.SetOperation(r.URL.Path)
	span.SetModel("sim-llm")
	span.SetTenant("acme")
	span.SetPool("chat")
	span.SetStream(true)

	_, admit := p.StartAdmit(ctx)
	admit.End()
	_, lookup := p.StartCacheLookup(ctx, "chat")
	lookup.SetCacheResult("miss")
	lookup.End()
	_, wait := p.StartQueueWait(ctx, "chat")
	wait.SetQueueOutcome("admitted")
	wait.End()

	for attempt := 1; attempt <= 2; attempt++ {
		actx, a := p.StartAttempt(ctx, "chat", backendURL, attempt)
		a.SetModel("sim-llm")
		out, err := http.NewRequestWithContext(actx, "POST", backendURL+"/v1/chat/completions", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		out.Header.Set("traceparent", clientTraceparent) // as forwarded from the client; Inject replaces it
		if attempt == 1 {
			out.Header.Set("X-Fail", "1")
		}
		p.Inject(actx, out.Header)
		resp, err := http.DefaultClient.Do(out)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		a.SetHTTPStatus(resp.StatusCode)
		if resp.StatusCode == 200 {
			a.FirstToken(time.Time{})
			a.SetUsage(12, 34)
			a.SetFinishReasons("stop")
			a.SetResponse("sim-llm", "chatcmpl-1")
		}
		a.End()
	}
	span.FirstToken(time.Time{})
	span.SetUsage(12, 34)
	span.SetFinishReasons("stop")
	span.SetHTTPStatus(200)
	span.End()
}

func TestExportOverOTLP(t *testing.T) {
	recv := tracingtest.StartReceiver(t)
	for _, tc := range []struct {
		protocol, endpoint string
		clientTraceID      string
	}{
		{"http", recv.HTTPEndpoint, "4bf92f3577b34da6a3ce929d0e0e4736"},
		{"grpc", recv.GRPCEndpoint, "5bf92f3577b34da6a3ce929d0e0e4737"},
	} {
		t.Run(tc.protocol, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			p, err := New(context.Background(), config.Tracing{OTLPEndpoint: tc.endpoint, Protocol: tc.protocol, SampleRatio: 1, Headers: map[string]string{"X-Collector-Token": "t0ken"}}, Options{Registerer: reg, Interval: 50 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Shutdown(context.Background())
			var mu sync.Mutex
			var seen []string
			backend := httptest.NewServer(tracingtest.Backend(t, recv.HTTPEndpoint, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				seen = append(seen, r.Header.Get("traceparent"))
				mu.Unlock()
				if r.Header.Get("X-Fail") != "" {
					w.WriteHeader(502)
					return
				}
				_, _ = io.WriteString(w, `{"choices":[]}`)
			})))
			defer backend.Close()

			const clientSpan = "00f067aa0ba902b7"
			request(t, p, backend.URL, "00-"+tc.clientTraceID+"-"+clientSpan+"-01")
			if err := p.ForceFlush(context.Background()); err != nil {
				t.Fatal(err)
			}
			spans := recv.Wait(t, 20*time.Second, func(s []tracingtest.Span) bool { return len(only(s, tc.clientTraceID)) >= 8 })
			spans = only(spans, tc.clientTraceID)

			server := one(t, spans, "POST /v1/chat/completions", "sluice")
			if server.ParentSpanID != clientSpan || server.Kind != 2 {
				t.Errorf("server span parent %q kind %d, want the client's span %s and kind server", server.ParentSpanID, server.Kind, clientSpan)
			}
			for _, name := range []string{"admit", "cache lookup", "queue wait"} {
				if s := one(t, spans, name, "sluice"); s.ParentSpanID != server.SpanID {
					t.Errorf("%s: parent %s, want the server span %s", name, s.ParentSpanID, server.SpanID)
				}
			}
			if got := one(t, spans, "cache lookup", "sluice").Attrs["sluice.cache.result"]; got != "miss" {
				t.Errorf("cache result %v", got)
			}
			attempts := named(spans, "upstream attempt", "sluice")
			backends := named(spans, "POST /v1/chat/completions", tracingtest.BackendService)
			if len(attempts) != 2 || len(backends) != 2 {
				t.Fatalf("%d attempts and %d backend spans, want 2 and 2", len(attempts), len(backends))
			}
			for _, a := range attempts {
				if a.ParentSpanID != server.SpanID || a.Kind != 3 {
					t.Errorf("attempt %v: parent %s kind %d; want siblings under the server span, kind client", a.Attrs["sluice.attempt"], a.ParentSpanID, a.Kind)
				}
				if a.Attrs["sluice.pool"] != "chat" || a.Attrs["sluice.backend"] == nil {
					t.Errorf("attempt attributes %v", a.Attrs)
				}
				var child *tracingtest.Span
				for i := range backends {
					if backends[i].ParentSpanID == a.SpanID {
						child = &backends[i]
					}
				}
				if child == nil {
					t.Errorf("no backend span has attempt %v (%s) as its parent", a.Attrs["sluice.attempt"], a.SpanID)
				}
				switch a.Attrs["sluice.attempt"] {
				case int64(1):
					if a.StatusCode != 2 || a.Attrs["http.response.status_code"] != int64(502) || a.Attrs["error.type"] != "502" {
						t.Errorf("failed attempt: status %d attrs %v", a.StatusCode, a.Attrs)
					}
				case int64(2):
					if !contains(a.Events, EventFirstToken) || a.Attrs["gen_ai.usage.output_tokens"] != int64(34) || a.Attrs["gen_ai.response.id"] != "chatcmpl-1" {
						t.Errorf("retried attempt: events %v attrs %v", a.Events, a.Attrs)
					}
				}
			}
			want := map[string]any{
				"gen_ai.operation.name":          "chat",
				"gen_ai.request.model":           "sim-llm",
				"gen_ai.usage.input_tokens":      int64(12),
				"gen_ai.usage.output_tokens":     int64(34),
				"gen_ai.response.finish_reasons": []any{"stop"},
				"sluice.tenant":                  "acme",
				"sluice.pool":                    "chat",
				"http.route":                     "/v1/chat/completions",
				"http.response.status_code":      int64(200),
			}
			for k, v := range want {
				if got := server.Attrs[k]; !equal(got, v) {
					t.Errorf("server span %s = %#v, want %#v", k, got, v)
				}
			}
			if !contains(server.Events, EventFirstToken) {
				t.Errorf("server span events %v, want %s", server.Events, EventFirstToken)
			}
			for _, s := range spans {
				for k, v := range s.Attrs {
					if str, _ := v.(string); strings.Contains(str, "SECRET") || strings.Contains(str, "prompt text") {
						t.Errorf("span %q attribute %s leaks %q", s.Name, k, str)
					}
				}
			}
			mu.Lock()
			defer mu.Unlock()
			for _, tp := range seen {
				if !strings.Contains(tp, tc.clientTraceID) || strings.Contains(tp, clientSpan) {
					t.Errorf("backend saw traceparent %q; want sluice's attempt span in the client's trace", tp)
				}
			}
			if got := testutil.ToFloat64(p.metricsForTest().exported); got < 6 {
				t.Errorf("exported counter %v, want the sluice spans", got)
			}
		})
	}
}

func TestJobDispatchLinksToSubmitter(t *testing.T) {
	recv := tracingtest.StartReceiver(t)
	p, err := New(context.Background(), config.Tracing{OTLPEndpoint: recv.HTTPEndpoint, Protocol: "http", SampleRatio: 1}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	ctx, submit := p.Start(context.Background(), httptest.NewRequest("POST", "/v1/chat/completions", nil))
	link := LinkOf(ctx)
	submit.End()
	if sc, ok := ParseLink(link); !ok || sc.SpanID() != trace.SpanContextFromContext(ctx).SpanID() {
		t.Fatalf("link %q does not round-trip", link)
	}
	dctx, dispatch := p.StartDispatch(context.Background(), link, "job_123", "chat", 1)
	_, attempt := p.StartAttempt(dctx, "chat", "http://user:pw@127.0.0.1:9001", 1)
	attempt.End()
	dispatch.End()
	if err := p.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	submitSC := trace.SpanContextFromContext(ctx)
	spans := recv.Wait(t, 20*time.Second, func(s []tracingtest.Span) bool { return len(named(s, "upstream attempt", "sluice")) == 1 })
	d := one(t, spans, "job dispatch", "sluice")
	if d.TraceID == submitSC.TraceID().String() || d.ParentSpanID != "" {
		t.Errorf("dispatch is in trace %s parent %q; want a new root", d.TraceID, d.ParentSpanID)
	}
	if len(d.Links) != 1 || d.Links[0].TraceID != submitSC.TraceID().String() || d.Links[0].SpanID != submitSC.SpanID().String() {
		t.Errorf("dispatch links %v, want the submitting span %s/%s", d.Links, submitSC.TraceID(), submitSC.SpanID())
	}
	if d.Attrs["sluice.job.id"] != "job_123" {
		t.Errorf("dispatch attributes %v", d.Attrs)
	}
	a := one(t, spans, "upstream attempt", "sluice")
	if a.ParentSpanID != d.SpanID {
		t.Errorf("job attempt parent %s, want the dispatch span %s", a.ParentSpanID, d.SpanID)
	}
	if b := a.Attrs["sluice.backend"]; b != "http://127.0.0.1:9001" {
		t.Errorf("backend attribute %v keeps user information", b)
	}
}

// TestUnreachableCollector: a collector that accepts connections and never
// answers holds the exporter, never the caller; spans past the queue are
// dropped and counted.
func TestUnreachableCollector(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	t.Cleanup(func() {
		l.Close()
		for c := range accepted {
			c.Close()
		}
	})
	reg := prometheus.NewRegistry()
	p, err := New(context.Background(), config.Tracing{OTLPEndpoint: "http://" + l.Addr().String(), Protocol: "http", SampleRatio: 1},
		Options{Registerer: reg, QueueSize: 8, BatchSize: 4, Interval: time.Hour, ExportTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// The first full batch goes to the exporter, which hangs on the silent
	// collector; everything after the queue's 8 is dropped without waiting.
	const n = 1000
	for i := range n {
		_, s := p.Start(context.Background(), httptest.NewRequest("GET", "/v1/models", nil))
		s.End()
		if i == 3 {
			select {
			case c := <-accepted:
				accepted <- c
			case <-time.After(10 * time.Second):
				t.Fatal("the exporter never connected")
			}
		}
	}
	dropped := testutil.ToFloat64(p.metricsForTest().queueFull)
	if dropped < n-4-8-4 {
		t.Errorf("dropped %v spans for a full queue, want at least %d", dropped, n-16)
	}
	if n, err := testutil.GatherAndCount(reg, "sluice_tracing_spans_dropped_total"); err != nil || n != 3 {
		t.Errorf("sluice_tracing_spans_dropped_total has %d series (%v), want one per reason", n, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_ = p.Shutdown(ctx) // returns when ctx ends; the loop ends by itself within its export timeouts
}

func TestSampling(t *testing.T) {
	recv := tracingtest.StartReceiver(t)
	p, err := New(context.Background(), config.Tracing{OTLPEndpoint: recv.HTTPEndpoint, Protocol: "http", SampleRatio: 0}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	// A new trace is not sampled at ratio 0, yet its context still goes to
	// the backend, marked not sampled.
	ctx, s := p.Start(context.Background(), httptest.NewRequest("GET", "/v1/models", nil))
	actx, a := p.StartAttempt(ctx, "chat", "http://127.0.0.1:1", 1)
	h := http.Header{}
	p.Inject(actx, h)
	if tp := h.Get("traceparent"); !strings.HasSuffix(tp, "-00") || len(tp) != 55 {
		t.Errorf("unsampled traceparent %q", tp)
	}
	if s.IsRecording() || a.IsRecording() {
		t.Error("spans of an unsampled trace record")
	}
	a.End()
	s.End()
	// A client's sampled trace is followed whatever the ratio.
	r := httptest.NewRequest("GET", "/v1/models", nil)
	r.Header.Set("traceparent", "00-6bf92f3577b34da6a3ce929d0e0e4738-00f067aa0ba902b7-01")
	_, s = p.Start(context.Background(), r)
	if !s.IsRecording() {
		t.Error("a sampled parent's trace is not recorded")
	}
	s.End()
	_ = p.ForceFlush(context.Background())
	spans := recv.Wait(t, 20*time.Second, func(s []tracingtest.Span) bool { return len(s) >= 1 })
	if len(spans) != 1 || spans[0].TraceID != "6bf92f3577b34da6a3ce929d0e0e4738" {
		t.Errorf("received %+v, want only the client-sampled span", spans)
	}
}

func TestDisabledIsFree(t *testing.T) {
	for _, p := range []*Provider{nil, mustNew(t, config.Tracing{})} {
		r := httptest.NewRequest("POST", "/v1/chat/completions", nil)
		r.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
		ctx := context.Background()
		allocs := testing.AllocsPerRun(100, func() {
			c, s := p.Start(ctx, r)
			s.SetModel("m")
			s.SetUsage(1, 2)
			s.SetFinishReasons("stop")
			s.FirstToken(time.Time{})
			ac, a := p.StartAttempt(c, "chat", "http://b", 1)
			p.Inject(ac, r.Header)
			a.SetHTTPStatus(200)
			a.End()
			s.End()
		})
		if allocs != 0 {
			t.Errorf("disabled tracing allocates %v per request", allocs)
		}
		if got := r.Header.Get("traceparent"); got != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" {
			t.Errorf("disabled tracing changed the client's traceparent to %q", got)
		}
		if p.Enabled() || LinkOf(ctx) != "" {
			t.Error("disabled provider reports enabled or a link")
		}
		if err := p.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	}
}

func TestParseLink(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", true},
		{"", false},
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", false},
		{"garbage", false},
		{"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false},
	} {
		if _, ok := ParseLink(tc.in); ok != tc.ok {
			t.Errorf("ParseLink(%q) ok = %v, want %v", tc.in, ok, tc.ok)
		}
	}
}

func FuzzParseLink(f *testing.F) {
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		sc, ok := ParseLink(s)
		if ok && !sc.IsValid() {
			t.Fatalf("%q: ok with an invalid span context", s)
		}
	})
}

func mustNew(t *testing.T, c config.Tracing) *Provider {
	p, err := New(context.Background(), c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func only(spans []tracingtest.Span, traceID string) []tracingtest.Span {
	var out []tracingtest.Span
	for _, s := range spans {
		if s.TraceID == traceID {
			out = append(out, s)
		}
	}
	return out
}

func named(spans []tracingtest.Span, name, service string) []tracingtest.Span {
	var out []tracingtest.Span
	for _, s := range spans {
		if s.Name == name && s.Service == service {
			out = append(out, s)
		}
	}
	return out
}

func one(t *testing.T, spans []tracingtest.Span, name, service string) tracingtest.Span {
	t.Helper()
	got := named(spans, name, service)
	if len(got) != 1 {
		t.Fatalf("%d spans named %q of %s, want 1 (all: %v)", len(got), name, service, names(spans))
	}
	return got[0]
}

func names(spans []tracingtest.Span) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Service+":"+s.Name)
	}
	return out
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

func equal(a, b any) bool {
	as, aok := a.([]any)
	bs, bok := b.([]any)
	if aok && bok {
		if len(as) != len(bs) {
			return false
		}
		for i := range as {
			if as[i] != bs[i] {
				return false
			}
		}
		return true
	}
	return a == b
}
