package gateway

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzDataPlane sends arbitrary methods, paths, hosts, headers and bodies
// through the whole request path: the gateway must never panic, must answer
// every request, and must answer errors in the OpenAI shape.
func FuzzDataPlane(f *testing.F) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	defer be.Close()
	cfg := "listen: 127.0.0.1:0\nadmin: {listen: \"\"}\nlimits: {max_request_body: 4KiB}\npools:\n" +
		"  - name: chat\n    models: [m1, \"llama-*\"]\n    health_check: {path: \"\"}\n    backends: [{url: " + be.URL + "}]\n" +
		"  - name: sticky\n    models: [s1]\n    balancer: consistent_hash\n    hash_on: \"json:user.id\"\n    health_check: {path: \"\"}\n    backends: [{url: " + be.URL + "}]\n" +
		"routes:\n  - {path_prefix: /classify, pool: chat}\n"
	g := newFuzzServer(f, cfg)
	for _, seed := range []struct{ method, path, host, body string }{
		{"POST", "/v1/chat/completions", "", `{"model":"m1","messages":[]}`},
		{"POST", "/v1/embeddings", "", `{"model":"llama-3","input":"x"}`},
		{"POST", "/v1/chat/completions", "", `{"model":"s1","user":{"id":"u1"}}`},
		{"POST", "/v1/chat/completions", "", `{"model":`},
		{"GET", "/v1/models", "", ``},
		{"POST", "/v2/models/m1/versions/1/infer", "", `{}`},
		{"POST", "/v2/models//infer", "", `{}`},
		{"PUT", "/classify/x", "example.com", `\x00\xff`},
		{"POST", "/v1/x", "", `[1,2,3]`},
		{"POST", "/v1/x", "", `{"model":["a"]}`},
	} {
		f.Add(seed.method, seed.path, seed.host, seed.body, "req-1")
	}
	f.Fuzz(func(t *testing.T, method, path, host, body, reqID string) {
		if !fuzzableMethod(method) || !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \r\n?#%") {
			return
		}
		req := httptest.NewRequest("GET", "/", nil)
		req.Method = method
		req.URL.Path = path
		req.Body = http.NoBody
		if body != "" {
			req.Body = httpBody(body)
			req.ContentLength = int64(len(body))
		}
		if host != "" && !strings.ContainsAny(host, " \r\n/") {
			req.Host = host
		}
		req.Header.Set("X-Request-Id", reqID)
		rec := httptest.NewRecorder()
		g.ServeHTTP(rec, req)
		if rec.Code < 200 || rec.Code > 599 {
			t.Fatalf("status %d", rec.Code)
		}
		if got := rec.Header().Get("X-Request-Id"); got == "" || len(got) > maxRequestIDLen {
			t.Fatalf("request id %q", got)
		}
		if rec.Code >= 400 {
			var e struct {
				Error *struct{ Message, Type, Code string }
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == nil || e.Error.Message == "" {
				t.Fatalf("%d error body not in the OpenAI shape: %q", rec.Code, rec.Body.String())
			}
		}
	})
}

func fuzzableMethod(m string) bool {
	if m == "" || len(m) > 16 {
		return false
	}
	for i := 0; i < len(m); i++ {
		if m[i] < 'A' || m[i] > 'Z' {
			return false
		}
	}
	return true
}

type bodyReader struct{ *bytes.Reader }

func (bodyReader) Close() error { return nil }

func httpBody(s string) bodyReader { return bodyReader{bytes.NewReader([]byte(s))} }

// FuzzRequestID checks that any client X-Request-ID becomes a safe one.
func FuzzRequestID(f *testing.F) {
	f.Add("abc")
	f.Add("bad\nid")
	f.Fuzz(func(t *testing.T, in string) {
		out := requestID(in)
		if out == "" || len(out) > maxRequestIDLen || !printableASCII(out) {
			t.Fatalf("requestID(%q) = %q", in, out)
		}
	})
}
