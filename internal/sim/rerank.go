package sim

import (
	"fmt"
	"math"
	"net/http"
	"slices"

	"github.com/sluice-ai/sluice/internal/openai"
)

// MaxRerankDocuments bounds the documents of one /v1/rerank request.
const MaxRerankDocuments = 1024

// rerankRequest is the rerank request vLLM, Jina and Cohere-style servers
// take: a query and the documents to order by relevance to it.
type rerankRequest struct {
	Model     string   `json:"model"`
	Query     string   `json:"query"`
	Documents []string `json:"documents"`
	TopN      int      `json:"top_n"`
}

type rerankResult struct {
	Index          int            `json:"index"`
	Document       rerankDocument `json:"document"`
	RelevanceScore float64        `json:"relevance_score"`
}

type rerankDocument struct {
	Text string `json:"text"`
}

// handleRerank answers POST /v1/rerank as vLLM does: the documents by
// descending relevance score (a hash of query and document, so the same
// request scores the same), top_n of them when set, and the tokens read in
// usage. The latency is that of encoding those tokens.
func (s *Server) handleRerank(w http.ResponseWriter, r *http.Request) {
	var req rerankRequest
	buf, p, ok := s.request(w, r, &req)
	if !ok {
		return
	}
	putBuf(p, buf)
	model, ok := s.model(req.Model)
	switch {
	case !ok:
		unknownModel(req.Model).Write(w)
		return
	case len(req.Documents) == 0:
		openai.BadRequest("documents is required and must not be empty").Write(w)
		return
	case len(req.Documents) > MaxRerankDocuments:
		openai.BadRequest(fmt.Sprintf("documents may hold at most %d items, got %d", MaxRerankDocuments, len(req.Documents))).Write(w)
		return
	case req.TopN < 0:
		openai.BadRequest("top_n must not be negative").Write(w)
		return
	}
	if s.fail() {
		errSimulated.Write(w)
		return
	}
	query := countWords(req.Query)
	tokens := 0
	results := make([]rerankResult, len(req.Documents))
	for i, d := range req.Documents {
		tokens += max(query+countWords(d), 1)
		h := newHasher()
		h.string(req.Query)
		h.sep()
		h.string(d)
		score := float64(mix64(h.sum())>>11) / (1 << 53)
		results[i] = rerankResult{Index: i, Document: rerankDocument{Text: d}, RelevanceScore: math.Round(score*1e6) / 1e6}
	}
	t, err := s.engine.Encode(r.Context(), tokens)
	s.metrics.encoded(tokens, t, err == nil)
	if err != nil {
		cancelled().Write(w)
		return
	}
	slices.SortStableFunc(results, func(a, b rerankResult) int {
		switch {
		case a.RelevanceScore > b.RelevanceScore:
			return -1
		case a.RelevanceScore < b.RelevanceScore:
			return 1
		}
		return 0
	})
	if req.TopN > 0 && req.TopN < len(results) {
		results = results[:req.TopN]
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"id":      s.newID("rerank-"),
		"model":   model,
		"results": results,
		"usage":   map[string]int{"prompt_tokens": tokens, "total_tokens": tokens},
	})
}
