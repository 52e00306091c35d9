package gateway

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// Every refusal the gateway writes tells an SDK what to do: a 429 or 503
// that may pass later carries Retry-After (whole seconds, at least 1) and
// retry-after-ms; one that cannot (a request costing more than the whole
// tpm budget, a 400, a 413) carries x-should-retry: false and no
// Retry-After, since the OpenAI SDKs otherwise retry every 429 and 5xx.
func TestRefusalsSayWhetherToRetry(t *testing.T) {
	release := make(chan struct{})
	slow := newBackend(t, "slow")
	slow.setHandler(func(w http.ResponseWriter, r *http.Request) {
		<-release
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"choices":[]}`))
	})
	fast := newBackend(t, "fast")
	down := newBackend(t, "down")
	down.setHealth(http.StatusInternalServerError)
	g := startGateway(t, "listen: 127.0.0.1:0\nadmin: {listen: \"\"}\nlog: {level: error}\nlimits: {max_request_body: 4KiB}\n"+
		"auth:\n  keys:\n"+
		"    - {name: tpm, key: k-tpm, limits: {tpm: 100}}\n"+
		"    - {name: rpm, key: k-rpm, limits: {rpm: 1}}\n"+
		"    - {name: conc, key: k-conc, limits: {concurrency: 1}}\n"+
		"    - {name: open, key: k-open}\n"+
		"pools:\n"+
		"  - {name: chat, models: [m], health_check: {path: \"\"}, backends: [{url: "+fast.URL+"}]}\n"+
		"  - {name: slow, models: [slow], max_concurrency: 1, queue: {size: 0}, health_check: {path: \"\"}, backends: [{url: "+slow.URL+"}]}\n"+
		"  - {name: down, models: [down], health_check: {path: /health, interval: 50ms, timeout: 40ms, unhealthy_threshold: 1}, backends: [{url: "+down.URL+"}]}\n")

	chat := func(model, key string, extra ...string) *http.Response {
		body := `{"model":"` + model + `","messages":[{"role":"user","content":"hi"}]` + strings.Join(extra, "") + `}`
		return g.post("/v1/chat/completions", body, "Authorization", "Bearer "+key)
	}
	// Hold one request of tenant conc in the slow pool: the pool's one slot
	// and the tenant's one slot are taken.
	held := make(chan *http.Response, 1)
	go func() { held <- chat("slow", "k-conc") }()
	eventually(t, "the held request to reach its backend", func() bool { return slow.count() == 1 })
	defer func() {
		close(release)
		(<-held).Body.Close()
	}()
	eventually(t, "pool down to be unhealthy", func() bool {
		resp := chat("down", "k-open")
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	if resp := chat("m", "k-rpm"); resp.StatusCode != http.StatusOK {
		t.Fatalf("first request of tenant rpm: %d", resp.StatusCode)
	}

	cases := []struct {
		name   string
		send   func() *http.Response
		status int
		retry  bool
	}{
		{"reservation over the whole tpm", func() *http.Response { return chat("m", "k-tpm", `,"max_tokens":500`) }, http.StatusTooManyRequests, false},
		{"tpm budget spent for now", func() *http.Response {
			chat("m", "k-tpm", `,"max_tokens":90`).Body.Close()
			return chat("m", "k-tpm", `,"max_tokens":90`)
		}, http.StatusTooManyRequests, true},
		{"tenant rpm", func() *http.Response { return chat("m", "k-rpm") }, http.StatusTooManyRequests, true},
		{"tenant concurrency", func() *http.Response { return chat("m", "k-conc") }, http.StatusTooManyRequests, true},
		{"pool at capacity, no queue", func() *http.Response { return chat("slow", "k-open") }, http.StatusServiceUnavailable, true},
		{"no healthy backend", func() *http.Response { return chat("down", "k-open") }, http.StatusServiceUnavailable, true},
		{"body over max_request_body", func() *http.Response { return chat("m", "k-open", `,"x":"`+strings.Repeat("a", 8<<10)+`"`) }, http.StatusRequestEntityTooLarge, false},
		{"not JSON", func() *http.Response {
			return g.post("/v1/chat/completions", `{"model":`, "Authorization", "Bearer k-open")
		}, http.StatusBadRequest, false},
		{"no model", func() *http.Response { return g.post("/v1/chat/completions", `{}`, "Authorization", "Bearer k-open") }, http.StatusBadRequest, false},
		{"unknown model", func() *http.Response { return chat("nope", "k-open") }, http.StatusNotFound, false},
		{"bad key", func() *http.Response { return chat("m", "wrong") }, http.StatusUnauthorized, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := tc.send()
			body := readAll(t, resp)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			ra, ms, should := resp.Header.Get("Retry-After"), resp.Header.Get("Retry-After-Ms"), resp.Header.Get("X-Should-Retry")
			if !tc.retry {
				if ra != "" || ms != "" || should != "false" {
					t.Fatalf("Retry-After %q, retry-after-ms %q, x-should-retry %q; want none, none, false", ra, ms, should)
				}
				return
			}
			if secs, err := strconv.Atoi(ra); err != nil || secs < 1 {
				t.Errorf("Retry-After %q, want whole seconds >= 1", ra)
			}
			if n, err := strconv.Atoi(ms); err != nil || n < 1 {
				t.Errorf("retry-after-ms %q, want milliseconds >= 1", ms)
			}
			if should == "false" {
				t.Error("a retryable refusal says x-should-retry: false")
			}
		})
	}
}
