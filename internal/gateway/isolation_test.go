package gateway

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A tenant with concurrency 2 had 10 jobs running at once: the dispatcher
// skipped admission. Jobs are now admitted at dispatch; over the limit they
// wait, and all of them finish.
func TestJobsObeyTenantConcurrency(t *testing.T) {
	var running, peak, done atomic.Int32
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		n := running.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(150 * time.Millisecond)
		running.Add(-1)
		done.Add(1)
		_, _ = io.WriteString(w, `{"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`)
	}))
	defer be.Close()
	g := startGateway(t, "listen: 127.0.0.1:0\nadmin: {listen: \"\"}\nlog: {level: error}\n"+
		"auth:\n  keys:\n    - {name: t, key: k, limits: {concurrency: 2}}\n"+
		"pools:\n  - {name: chat, models: [m], health_check: {path: \"\"}, backends: [{url: "+be.URL+"}]}\n")
	const jobs = 8
	for range jobs {
		resp := g.post("/v1/chat/completions", `{"model":"m"}`, "Authorization", "Bearer k", "Prefer", "respond-async")
		if b := readAll(t, resp); resp.StatusCode != http.StatusAccepted {
			t.Fatalf("submit: %d %s", resp.StatusCode, b)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for done.Load() < jobs && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if done.Load() != jobs {
		t.Fatalf("%d of %d jobs ran", done.Load(), jobs)
	}
	if p := peak.Load(); p > 2 {
		t.Fatalf("%d jobs of a tenant with concurrency 2 ran at once", p)
	}
}

// A cross-origin POST /api/reload succeeded, and the admin API had no way
// to require credentials.
func TestAdminAPIProtection(t *testing.T) {
	be := newCapturing(t)
	g := startGateway(t, "listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0, token: adm1n}\nlog: {level: error}\n"+
		"pools:\n  - {name: chat, models: [m], health_check: {path: \"\"}, backends: [{url: "+be.URL+"}]}\n")
	do := func(method, path string, hdr ...string) int {
		req, _ := http.NewRequest(method, g.admin+path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
		return resp.StatusCode
	}
	for _, tc := range []struct {
		method, path string
		hdr          []string
		want         int
	}{
		{"GET", "/healthz", nil, 200},
		{"GET", "/readyz", nil, 200},
		{"GET", "/", nil, 200},
		{"GET", "/api/pools", nil, 401},
		{"GET", "/metrics", []string{"Authorization", "Bearer wrong"}, 401},
		{"GET", "/api/pools", []string{"Authorization", "Bearer adm1n"}, 200},
		{"POST", "/api/reload", []string{"Authorization", "Bearer adm1n", "Origin", "http://evil.example"}, 403},
		{"POST", "/api/reload", []string{"Authorization", "Bearer adm1n", "Sec-Fetch-Site", "cross-site"}, 403},
		{"POST", "/api/reload", []string{"Authorization", "Bearer adm1n"}, 200},
	} {
		if got := do(tc.method, tc.path, tc.hdr...); got != tc.want {
			t.Errorf("%s %s %v: %d, want %d", tc.method, tc.path, tc.hdr, got, tc.want)
		}
	}
}

// Tenant B was served tenant A's cached answer (and learned from
// X-Sluice-Cache: hit that A sent that prompt), and a response to
// ?api-version=evil was served to a request without it.
func TestCacheIsolatesTenantsAndQueries(t *testing.T) {
	var mu sync.Mutex
	calls := map[string]int{}
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		calls[r.URL.RawQuery]++
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"answer":"`+r.URL.RawQuery+`"}`)
	}))
	defer be.Close()
	g := startGateway(t, "listen: 127.0.0.1:0\nadmin: {listen: \"\"}\nlog: {level: error}\n"+
		"auth:\n  keys:\n    - {name: a, key: ka}\n    - {name: b, key: kb}\n"+
		"pools:\n  - {name: chat, models: [m], cache: {ttl: 1m}, health_check: {path: \"\"}, backends: [{url: "+be.URL+"}]}\n")
	body := `{"model":"m","messages":[{"role":"user","content":"secret question"}]}`
	if r := g.post("/v1/chat/completions", body, "Authorization", "Bearer ka"); r.Header.Get("X-Sluice-Cache") != "miss" {
		t.Fatalf("first request: %q", r.Header.Get("X-Sluice-Cache"))
	}
	if r := g.post("/v1/chat/completions", body, "Authorization", "Bearer ka"); r.Header.Get("X-Sluice-Cache") != "hit" {
		t.Fatalf("same tenant again: %q, want hit", r.Header.Get("X-Sluice-Cache"))
	}
	if r := g.post("/v1/chat/completions", body, "Authorization", "Bearer kb"); r.Header.Get("X-Sluice-Cache") == "hit" {
		t.Fatal("tenant b was served tenant a's cached answer")
	}
	resp := g.post("/v1/chat/completions?api-version=evil", body, "Authorization", "Bearer ka")
	if b := readAll(t, resp); !strings.Contains(b, "evil") {
		t.Fatalf("a request with a query was served the answer to one without: %s", b)
	}
	resp = g.post("/v1/chat/completions", body, "Authorization", "Bearer ka")
	if b := readAll(t, resp); strings.Contains(b, "evil") {
		t.Fatalf("a request without a query was served the answer to ?api-version=evil: %s", b)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls[""] != 2 || calls["api-version=evil"] != 1 {
		t.Fatalf("backend calls by query: %v, want 2 without (tenants a and b) and 1 with", calls)
	}
}

// Six streams without usage produced 18,000 tokens against tpm: 5000 and
// settled to their reservations. A tpm-limited tenant's stream now asks for
// usage (the client still sees no usage chunk) and a request without
// max_tokens gets the one its reservation assumed.
func TestStreamsOfTPMTenantsSettleToTheirUsage(t *testing.T) {
	var mu sync.Mutex
	var bodies []string
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n")
		if strings.Contains(string(b), `"include_usage":true`) {
			_, _ = io.WriteString(w, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":700,\"total_tokens\":703}}\n\n")
		}
		_, _ = io.WriteString(w, "data: [DONE]\n\n")
	}))
	defer be.Close()
	g := startGateway(t, "listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0}\nlog: {level: error}\n"+
		"auth:\n  keys:\n    - {name: t, key: k, limits: {tpm: 100000}}\n"+
		"pools:\n  - {name: chat, models: [m], health_check: {path: \"\"}, backends: [{url: "+be.URL+"}]}\n")
	resp := g.post("/v1/chat/completions", `{"model":"m","stream":true,"messages":[]}`, "Authorization", "Bearer k")
	b := readAll(t, resp)
	if strings.Contains(b, `"usage"`) || !strings.Contains(b, `"hi"`) || !strings.Contains(b, "[DONE]") {
		t.Fatalf("client saw %q: want the stream without the usage chunk it did not ask for", b)
	}
	mu.Lock()
	sent := bodies[0]
	mu.Unlock()
	if !strings.Contains(sent, `"include_usage":true`) || !strings.Contains(sent, `"max_tokens":1024`) {
		t.Fatalf("backend got %s: want include_usage and the reserved max_tokens", sent)
	}
	m, err := http.Get(g.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if mb := readAll(t, m); !strings.Contains(mb, `sluice_tokens_total{kind="completion",pool="chat",tenant="t"} 700`) {
		t.Fatalf("the stream's 700 completion tokens were not counted")
	}
	// A client that asked for usage gets it.
	resp = g.post("/v1/chat/completions", `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`, "Authorization", "Bearer k")
	if b := readAll(t, resp); !strings.Contains(b, `"usage"`) {
		t.Fatalf("a client that asked for usage did not get it: %q", b)
	}
}
