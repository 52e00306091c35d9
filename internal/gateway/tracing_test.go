package gateway

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/internal/tracing/tracingtest"
)

// A request through the gateway is one trace: the gateway's server span,
// its attempt span as the backend's parent, GenAI attributes, and never the
// tenant's key.
func TestRequestIsTracedIntoTheBackend(t *testing.T) {
	recv := tracingtest.StartReceiver(t)
	be := &capturing{}
	be.Server = newTracedServer(t, recv.HTTPEndpoint, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"object":"chat.completion","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}`)
	}))
	g := startGateway(t, "listen: 127.0.0.1:0\nadmin: {listen: \"\"}\nlog: {level: error}\n"+
		"tracing: {otlp_endpoint: "+recv.HTTPEndpoint+", protocol: http}\n"+
		"auth:\n  keys:\n    - {name: team, key: secret-key-123}\n"+
		"pools:\n  - {name: chat, models: [m], health_check: {path: \"\"}, backends: [{url: "+be.URL+"}]}\n")
	resp := g.post("/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"prompt text here"}]}`, "Authorization", "Bearer secret-key-123")
	if b := readAll(t, resp); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	spans := recv.Wait(t, 30*time.Second, func(ss []tracingtest.Span) bool {
		var server, backend bool
		for _, s := range ss {
			server = server || s.Service != tracingtest.BackendService && s.Kind == 2
			backend = backend || s.Service == tracingtest.BackendService
		}
		return server && backend
	})
	var server, attempt, backend *tracingtest.Span
	for i := range spans {
		s := &spans[i]
		switch {
		case s.Service == tracingtest.BackendService:
			backend = s
		case s.Kind == 2:
			server = s
		case s.Kind == 3:
			attempt = s
		}
	}
	if server == nil || attempt == nil || backend == nil {
		t.Fatalf("want server, attempt and backend spans, got %+v", spans)
	}
	if attempt.ParentSpanID != server.SpanID || backend.ParentSpanID != attempt.SpanID || backend.TraceID != server.TraceID {
		t.Fatalf("span tree broken: server %s, attempt %s (parent %s), backend parent %s", server.SpanID, attempt.SpanID, attempt.ParentSpanID, backend.ParentSpanID)
	}
	if server.Attrs["gen_ai.request.model"] != "m" || server.Attrs["sluice.tenant"] == nil {
		t.Errorf("server span attributes: %v", server.Attrs)
	}
	for _, s := range spans {
		for k, v := range s.Attrs {
			if str, ok := v.(string); ok && (strings.Contains(str, "secret-key-123") || strings.Contains(str, "prompt text")) {
				t.Fatalf("span %s attribute %s leaks %q", s.Name, k, str)
			}
		}
	}
}

// newTracedServer serves h, traced as tracingtest's backend service.
func newTracedServer(t *testing.T, endpoint string, h http.Handler) *httptest.Server {
	s := httptest.NewServer(tracingtest.Backend(t, endpoint, h))
	t.Cleanup(s.Close)
	return s
}

// TestTracingFollowsReload: tracing switched on by a reload traces the
// requests after it, without a restart.
func TestTracingFollowsReload(t *testing.T) {
	recv := tracingtest.StartReceiver(t)
	be := newBackend(t, "b")
	base := "listen: 127.0.0.1:0\nadmin: {listen: \"\"}\nlog: {level: error}\n" +
		"pools:\n  - {name: chat, models: [m1], health_check: {path: \"\"}, backends: [{url: " + be.URL + "}]}\n"
	g := startGateway(t, base)
	if b := readAll(t, g.post("/v1/chat/completions", chatBody)); !strings.Contains(b, `"backend":"b"`) {
		t.Fatalf("before the reload: %s", b)
	}
	g.rewrite("tracing: {otlp_endpoint: " + recv.HTTPEndpoint + ", protocol: http}\n" + base)
	if err := g.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	if b := readAll(t, g.post("/v1/chat/completions", chatBody)); !strings.Contains(b, `"backend":"b"`) {
		t.Fatalf("after the reload: %s", b)
	}
	recv.Wait(t, 30*time.Second, func(ss []tracingtest.Span) bool {
		for _, s := range ss {
			if s.Kind == 2 && s.Attrs["gen_ai.request.model"] == "m1" {
				return true
			}
		}
		return false
	})
}
