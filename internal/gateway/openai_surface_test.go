package gateway

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// Rerank and score requests of vLLM and TEI are JSON with a model, and
// route like any other: to the pool serving that model, body unchanged.
func TestRerankAndScoreRouteByModel(t *testing.T) {
	chat := newBackend(t, "chat")
	ranker := newBackend(t, "ranker")
	g := startGateway(t, "listen: 127.0.0.1:0\nadmin: {listen: \"\"}\nlog: {level: error}\n"+
		"pools:\n"+
		"  - {name: chat, models: [m], health_check: {path: \"\"}, backends: [{url: "+chat.URL+"}]}\n"+
		"  - {name: rerank, models: [\"BAAI/bge-reranker-*\"], health_check: {path: \"\"}, backends: [{url: "+ranker.URL+"}]}\n")
	for _, tc := range []struct{ path, body string }{
		{"/v1/rerank", `{"model":"BAAI/bge-reranker-v2-m3","query":"q","documents":["a","b"],"top_n":1}`},
		{"/v1/score", `{"model":"BAAI/bge-reranker-base","text_1":"q","text_2":["a","b"]}`},
	} {
		resp := g.post(tc.path, tc.body)
		got := readAll(t, resp)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Backend") != "ranker" {
			t.Fatalf("%s: %d from %q: %s", tc.path, resp.StatusCode, resp.Header.Get("X-Backend"), got)
		}
		if want := `"path":"` + tc.path + `","body_len":` + strconv.Itoa(len(tc.body)); !strings.Contains(got, want) {
			t.Fatalf("%s: the backend saw %s, want %s", tc.path, got, want)
		}
	}
	if chat.count() != 0 {
		t.Fatalf("the chat pool got %d rerank/score requests", chat.count())
	}
}
