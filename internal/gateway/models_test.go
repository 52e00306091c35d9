package gateway

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// GET /v1/models lists what the replicas serve under a pool's pattern,
// asked with the pool's upstream headers (never the client's key), cached,
// filtered by what the tenant may use; a pool whose replicas cannot say
// is listed by its pattern. GET /v1/models/{id} answers the same ids.
func TestModelDiscovery(t *testing.T) {
	var mu sync.Mutex
	var asked []string // Authorization of each GET /v1/models
	llama := newBackend(t, "llama")
	llama.setHandler(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/models" {
			mu.Lock()
			asked = append(asked, r.Header.Get("Authorization"))
			mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"object":"list","data":[{"id":"llama-3-8b","object":"model"},{"id":"llama-3-70b","object":"model"},{"id":"mistral-7b","object":"model"}]}`))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"choices":[]}`))
	})
	mute := newBackend(t, "mute")
	mute.setHandler(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", http.StatusInternalServerError) })
	plain := newBackend(t, "plain")
	g := startGateway(t, "listen: 127.0.0.1:0\nadmin: {listen: \"\"}\nlog: {level: error}\n"+
		"auth:\n  keys:\n    - {name: all, key: k-all}\n    - {name: only, key: k-only, models: [llama-3-8b, m]}\n"+
		"pools:\n"+
		"  - {name: llama, models: [\"llama-3-*\"], upstream_headers: {Authorization: \"Bearer upstream-secret\"}, health_check: {path: \"\"}, backends: [{url: "+llama.URL+"}]}\n"+
		"  - {name: qwen, models: [\"qwen-*\"], health_check: {path: \"\"}, backends: [{url: "+mute.URL+"}]}\n"+
		"  - {name: exact, models: [m], health_check: {path: \"\"}, backends: [{url: "+plain.URL+"}]}\n")

	get := func(path, key string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, g.url+path, nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, []byte(readAll(t, resp))
	}
	list := func(key string) []string {
		t.Helper()
		code, body := get("/v1/models", key)
		var out struct {
			Object string
			Data   []struct{ ID, Object string }
		}
		if err := json.Unmarshal(body, &out); code != http.StatusOK || err != nil || out.Object != "list" {
			t.Fatalf("GET /v1/models: %d %s", code, body)
		}
		var ids []string
		for _, m := range out.Data {
			ids = append(ids, m.ID)
		}
		return ids
	}
	if got, want := list("k-all"), []string{"llama-3-8b", "llama-3-70b", "qwen-*", "m"}; !slices.Equal(got, want) {
		t.Fatalf("models: %q, want %q", got, want)
	}
	if got, want := list("k-only"), []string{"llama-3-8b", "m"}; !slices.Equal(got, want) {
		t.Fatalf("models of a restricted tenant: %q, want %q", got, want)
	}
	mu.Lock()
	if len(asked) != 1 || asked[0] != "Bearer upstream-secret" {
		t.Errorf("the replica was asked %d times with Authorization %q; want once (cached), with the pool's upstream header", len(asked), asked)
	}
	mu.Unlock()

	for _, tc := range []struct {
		id, key string
		code    int
	}{
		{"llama-3-70b", "k-all", http.StatusOK},
		{"llama-3-70b", "k-only", http.StatusNotFound},
		{"llama-3-8b", "k-only", http.StatusOK},
		{"mistral-7b", "k-all", http.StatusNotFound}, // served, but not under the pool's pattern
		{"qwen-2", "k-all", http.StatusOK},           // its replicas cannot say: routed by the pattern
		{"m", "k-all", http.StatusOK},
		{"nope", "k-all", http.StatusNotFound},
	} {
		code, body := get("/v1/models/"+tc.id, tc.key)
		if code != tc.code {
			t.Errorf("GET /v1/models/%s as %s: %d %s, want %d", tc.id, tc.key, code, body, tc.code)
			continue
		}
		var m struct{ ID, Object string }
		if code == http.StatusOK && (json.Unmarshal(body, &m) != nil || m.ID != tc.id || m.Object != "model") {
			t.Errorf("GET /v1/models/%s: %s", tc.id, body)
		}
		var e struct{ Error struct{ Code string } }
		if code == http.StatusNotFound && (json.Unmarshal(body, &e) != nil || e.Error.Code != "model_not_found") {
			t.Errorf("GET /v1/models/%s: %s, want an OpenAI error with code model_not_found", tc.id, body)
		}
	}

	// A listed id routes to its pool through the pattern.
	resp := g.post("/v1/chat/completions", `{"model":"llama-3-70b","messages":[]}`, "Authorization", "Bearer k-all")
	if b := readAll(t, resp); resp.StatusCode != http.StatusOK || resp.Header.Get("X-Backend") != "llama" {
		t.Fatalf("chat with a discovered id: %d from %q: %s", resp.StatusCode, resp.Header.Get("X-Backend"), b)
	}
}

// TestModelCatalogRefreshedInBackground: the replicas of a pool named by a
// pattern are asked what they serve without waiting for a client to list
// models, so a listing finds the answer ready.
func TestModelCatalogRefreshedInBackground(t *testing.T) {
	be := newBackend(t, "b")
	var asked atomic.Int32
	be.setHandler(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/models" {
			asked.Add(1)
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"object":"list","data":[{"id":"llama-3-8b","object":"model"}]}`)
		}
	})
	g := startGateway(t, header()+"  - {name: chat, models: [\"llama-3-*\"], health_check: {path: \"\"}, backends: [{url: "+be.URL+"}]}\n")
	eventually(t, "the replica asked for its models", func() bool { return asked.Load() > 0 })
	resp, err := http.Get(g.url + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	if b := readAll(t, resp); !strings.Contains(b, `"llama-3-8b"`) || asked.Load() != 1 {
		t.Fatalf("listing %s after %d questions; want the replica's id from the one answer kept", b, asked.Load())
	}
}
