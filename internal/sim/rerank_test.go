package sim

import (
	"encoding/json"
	"net/http"
	"testing"
)

// /v1/rerank orders the documents by a score that depends only on query
// and document, keeps top_n, and reports the tokens read.
func TestRerank(t *testing.T) {
	_, ts := startServer(t, fastConfig())
	type result struct {
		ID, Model string
		Results   []struct {
			Index          int
			Document       struct{ Text string }
			RelevanceScore float64 `json:"relevance_score"`
		}
		Usage struct {
			PromptTokens int `json:"prompt_tokens"`
			TotalTokens  int `json:"total_tokens"`
		}
	}
	rerank := func(body string) (int, result) {
		t.Helper()
		resp, b := post(t, ts.URL+"/v1/rerank", body)
		var r result
		if resp.StatusCode == http.StatusOK {
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode, r
	}
	const body = `{"model":"sim-llm","query":"fast fox","documents":["a quick brown fox","the lazy dog","foxes are fast"]}`
	code, all := rerank(body)
	if code != http.StatusOK || all.Model != "sim-llm" || len(all.Results) != 3 || all.Usage.PromptTokens != 3*2+4+3+3 || all.Usage.TotalTokens != all.Usage.PromptTokens {
		t.Fatalf("%d %+v", code, all)
	}
	seen := map[int]bool{}
	for i, r := range all.Results {
		seen[r.Index] = true
		if r.RelevanceScore < 0 || r.RelevanceScore >= 1 || i > 0 && r.RelevanceScore > all.Results[i-1].RelevanceScore {
			t.Fatalf("results not by descending score in [0,1): %+v", all.Results)
		}
	}
	if len(seen) != 3 {
		t.Fatalf("indexes %v", seen)
	}
	_, again := rerank(body)
	if again.Results[0] != all.Results[0] || again.ID == all.ID {
		t.Fatalf("the same request scored differently, or reused an id: %+v / %+v", all, again)
	}
	if _, top := rerank(`{"model":"sim-llm","query":"fast fox","top_n":1,"documents":["a quick brown fox","the lazy dog","foxes are fast"]}`); len(top.Results) != 1 || top.Results[0] != all.Results[0] {
		t.Fatalf("top_n 1: %+v, want the best of %+v", top.Results, all.Results)
	}
	for body, want := range map[string]int{
		`{"model":"sim-llm","query":"q","documents":[]}`:               http.StatusBadRequest,
		`{"model":"other","query":"q","documents":["d"]}`:              http.StatusNotFound,
		`{"model":"sim-llm","query":"q","documents":["d"],"top_n":-1}`: http.StatusBadRequest,
		`{"model":`: http.StatusBadRequest,
	} {
		if code, _ := rerank(body); code != want {
			t.Errorf("%s: %d, want %d", body, code, want)
		}
	}
}
