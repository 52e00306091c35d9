package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sluice-ai/sluice/internal/sim"
)

// simBackend runs a real simulator in-process, counting the requests it
// gets.
func simBackend(t *testing.T) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	cfg := sim.DefaultConfig()
	cfg.TTFT, cfg.ITL = 0, 0
	cfg.Models = []string{"sim-llm", "other"}
	s, err := sim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	h := s.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1/") {
			n.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func tenancyConfig(backendURL string) string {
	return "listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0}\nlog: {level: error}\nlimits: {max_request_body: 2KiB}\n" +
		"auth:\n  keys:\n" +
		"    - {name: team-a, key_sha256: \"" + sha("key-a") + "\", models: [\"sim-*\"], limits: {rpm: 5}}\n" +
		"    - {name: team-b, key: \"key-b\", models: [\"other\"], limits: {tpm: 100}}\n" +
		"pools:\n  - name: chat\n    models: [sim-llm, other]\n    health_check: {path: \"\"}\n    cache: {ttl: 1m}\n    backends: [{url: " + backendURL + "}]\n"
}

func TestAuthLimitsAndModels(t *testing.T) {
	be, _ := simBackend(t)
	g := startGateway(t, tenancyConfig(be.URL))
	body := `{"model":"sim-llm","messages":[{"role":"user","content":"hi"}],"max_tokens":4}`

	cases := []struct {
		name, auth, body string
		want             int
	}{
		{"no credentials", "", body, 401},
		{"wrong key", "Bearer nope", body, 401},
		{"not bearer", "Basic a2V5LWE=", body, 401},
		{"valid key", "Bearer key-a", body, 200},
		{"model not allowed", "Bearer key-b", body, 403},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := g.post("/v1/chat/completions", tc.body, "Authorization", tc.auth)
			b := readAll(t, resp)
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.want, b)
			}
			if strings.Contains(b, "key-a") || strings.Contains(b, "nope") {
				t.Errorf("credential echoed in the answer: %s", b)
			}
		})
	}

	t.Run("models list is per tenant", func(t *testing.T) {
		req, _ := http.NewRequest("GET", g.url+"/v1/models", nil)
		req.Header.Set("Authorization", "Bearer key-b")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if b := readAll(t, resp); strings.Contains(b, "sim-llm") || !strings.Contains(b, "other") {
			t.Errorf("team-b sees %s", b)
		}
	})

	t.Run("rpm limit with OpenAI headers", func(t *testing.T) {
		// One request of team-a went through above; 4 more fit in rpm 5.
		var codes []int
		var last *http.Response
		for i := range 6 {
			resp := g.post("/v1/chat/completions", strings.Replace(body, "hi", "hi"+strings.Repeat("!", i), 1), "Authorization", "Bearer key-a")
			readAll(t, resp)
			codes = append(codes, resp.StatusCode)
			last = resp
		}
		want := []int{200, 200, 200, 200, 429, 429}
		for i := range want {
			if codes[i] != want[i] {
				t.Fatalf("statuses %v, want %v", codes, want)
			}
		}
		h := last.Header
		if h.Get("Retry-After") == "" || h.Get("X-Ratelimit-Limit-Requests") != "5" || h.Get("X-Ratelimit-Remaining-Requests") != "0" || h.Get("X-Ratelimit-Reset-Requests") == "" {
			t.Errorf("429 headers: %v", h)
		}
	})
}

func TestTokensAreCountedAndSettled(t *testing.T) {
	be, _ := simBackend(t)
	g := startGateway(t, tenancyConfig(be.URL))
	// team-b has tpm 100. Each streamed request reserves its max_tokens
	// plus a prompt estimate from the body's size (25 + 11 = 36) and uses
	// 3 + 25 = 28: three fit only because each is settled to its real usage
	// from the stream's final chunk (3 × 36 would exceed 100).
	stream := `{"model":"other","messages":[{"role":"user","content":"one two three"}],"max_tokens":25,"stream":true,"stream_options":{"include_usage":true}}`
	for i := range 3 {
		resp := g.post("/v1/chat/completions", strings.Replace(stream, "one", "one"+strings.Repeat("x", i), 1), "Authorization", "Bearer key-b")
		b := readAll(t, resp)
		if resp.StatusCode != 200 || !strings.Contains(b, `"usage"`) {
			t.Fatalf("stream %d: %d %s", i, resp.StatusCode, b)
		}
		if rem := resp.Header.Get("X-Ratelimit-Remaining-Tokens"); rem == "" {
			t.Fatalf("no token headers")
		}
	}
	// 3 × 28 = 84 of 100 tokens used; the next reservation of 36 is refused.
	resp := g.post("/v1/chat/completions", stream, "Authorization", "Bearer key-b")
	if b := readAll(t, resp); resp.StatusCode != 429 {
		t.Fatalf("after 84 tokens: %d %s", resp.StatusCode, b)
	}
	m := scrape(t, g.admin)
	for _, want := range []string{
		`sluice_tokens_total{kind="completion",pool="chat",tenant="team-b"} 75`,
		`sluice_tokens_total{kind="prompt",pool="chat",tenant="team-b"} 9`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestResponseCache(t *testing.T) {
	be, calls := simBackend(t)
	g := startGateway(t, strings.Replace(tenancyConfig(be.URL), "rpm: 5", "rpm: 1000", 1))
	body := `{"model":"sim-llm","messages":[{"role":"user","content":"cache me"}],"max_tokens":5}`
	first := g.post("/v1/chat/completions", body, "Authorization", "Bearer key-a")
	b1 := readAll(t, first)
	second := g.post("/v1/chat/completions", body, "Authorization", "Bearer key-a")
	b2 := readAll(t, second)
	if first.Header.Get("X-Sluice-Cache") != "miss" || second.Header.Get("X-Sluice-Cache") != "hit" || b1 != b2 || calls.Load() != 1 {
		t.Fatalf("cache: %q then %q, identical %v, backend calls %d", first.Header.Get("X-Sluice-Cache"), second.Header.Get("X-Sluice-Cache"), b1 == b2, calls.Load())
	}
	bypass := g.post("/v1/chat/completions", body, "Authorization", "Bearer key-a", "Cache-Control", "no-cache")
	readAll(t, bypass)
	if bypass.Header.Get("X-Sluice-Cache") == "hit" || calls.Load() != 2 {
		t.Fatalf("no-cache served from cache (%q, calls %d)", bypass.Header.Get("X-Sluice-Cache"), calls.Load())
	}

	// A stream is recorded and replayed as the same events.
	sb := `{"model":"sim-llm","messages":[{"role":"user","content":"stream me"}],"max_tokens":5,"stream":true}`
	s1 := g.post("/v1/chat/completions", sb, "Authorization", "Bearer key-a")
	e1 := readAll(t, s1)
	s2 := g.post("/v1/chat/completions", sb, "Authorization", "Bearer key-a")
	e2, _ := io.ReadAll(s2.Body)
	s2.Body.Close()
	if s2.Header.Get("X-Sluice-Cache") != "hit" || e1 != string(e2) || !strings.HasSuffix(e1, "data: [DONE]\n\n") || s2.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream replay: %q identical %v ct %q", s2.Header.Get("X-Sluice-Cache"), e1 == string(e2), s2.Header.Get("Content-Type"))
	}
}
