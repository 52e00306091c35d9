package sim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"

	"github.com/sluice-ai/sluice/internal/openai"
)

// Header values shared by every response that uses them; net/http only
// reads them.
var (
	jsonContentType = []string{"application/json"}
	sseContentType  = []string{"text/event-stream"}
	noCache         = []string{"no-cache"}
)

func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", s.handleChat)
	mux.HandleFunc("POST /v1/completions", s.handleCompletion)
	mux.HandleFunc("POST /v1/embeddings", s.handleEmbeddings)
	mux.HandleFunc("POST /v1/responses", s.handleResponses)
	mux.HandleFunc("POST /v1/rerank", s.handleRerank)
	mux.HandleFunc("GET /v1/models", s.handleModels)
	mux.HandleFunc("GET /v1/models/{model...}", s.handleModel)
	mux.HandleFunc("GET /health", s.handleHealth)
	mux.Handle("GET /metrics", s.metrics.handler())
	s.routesV2(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		openai.NotFound("not_found", fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path)).Write(w)
	})
	return mux
}

func (s *Server) handleHealth(w http.ResponseWriter, _ *http.Request) {
	if ok, left := s.ready(); !ok {
		loadingError(left).Write(w)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

type modelCard struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

func (s *Server) card(name string) modelCard {
	return modelCard{ID: name, Object: "model", Created: s.started.Unix(), OwnedBy: "sluice-sim"}
}

func (s *Server) handleModels(w http.ResponseWriter, _ *http.Request) {
	if ok, left := s.ready(); !ok {
		loadingError(left).Write(w)
		return
	}
	list := struct {
		Object string      `json:"object"`
		Data   []modelCard `json:"data"`
	}{Object: "list"}
	for _, m := range s.cfg.Models {
		list.Data = append(list.Data, s.card(m))
	}
	writeJSON(w, http.StatusOK, list)
}

func (s *Server) handleModel(w http.ResponseWriter, r *http.Request) {
	if ok, left := s.ready(); !ok {
		loadingError(left).Write(w)
		return
	}
	name := r.PathValue("model")
	m, ok := s.model(name)
	if !ok || name == "" {
		unknownModel(name).Write(w)
		return
	}
	writeJSON(w, http.StatusOK, s.card(m))
}

// request reads and decodes a JSON body into v after the readiness check.
// On success it returns the body buffer (reusable for the response) and its
// pool handle; otherwise it has answered and returns ok false.
func (s *Server) request(w http.ResponseWriter, r *http.Request, v any) (buf []byte, p *[]byte, ok bool) {
	if ready, left := s.ready(); !ready {
		loadingError(left).Write(w)
		return nil, nil, false
	}
	p = getBuf()
	buf, err := s.readBody(r, *p)
	if err == nil {
		if err = json.Unmarshal(buf, v); err != nil {
			err = fmt.Errorf("invalid JSON body: %w", err)
		}
	}
	if err != nil {
		putBuf(p, buf)
		bodyError(err).Write(w)
		return nil, nil, false
	}
	return buf[:0], p, true
}

func (s *Server) handleChat(w http.ResponseWriter, r *http.Request) {
	var req chatRequest
	buf, p, ok := s.request(w, r, &req)
	if !ok {
		return
	}
	g, stream, apiErr := s.chatGeneration(&req)
	if apiErr != nil {
		putBuf(p, buf)
		apiErr.Write(w)
		return
	}
	s.generate(w, r, &g, stream, buf, p)
}

func (s *Server) chatGeneration(req *chatRequest) (generation, bool, *openai.Error) {
	model, ok := s.model(req.Model)
	if !ok {
		return generation{}, false, unknownModel(req.Model)
	}
	if len(req.Messages) == 0 {
		return generation{}, false, openai.BadRequest("messages must not be empty")
	}
	if err := checkN(req.N); err != nil {
		return generation{}, false, openai.BadRequest(err.Error())
	}
	out, err := outputTokens(s.cfg.DefaultMaxTokens, req.MaxCompletionTokens, req.MaxTokens)
	if err != nil {
		return generation{}, false, openai.BadRequest(err.Error())
	}
	g := generation{
		ep:           chatEndpoint,
		model:        model,
		outputTokens: out,
		finish:       finishReason(req.MaxCompletionTokens, req.MaxTokens),
		includeUsage: req.Stream && req.StreamOptions != nil && req.StreamOptions.IncludeUsage,
	}
	h := newHasher()
	h.byte('c')
	h.string(model)
	h.sep()
	tk := s.tokenizer(&g)
	for i := range req.Messages {
		m := &req.Messages[i]
		h.string(m.Role)
		h.sep()
		tk.mark(m.Role)
		tk.text(m.Content.text)
		h.string(m.Content.text)
		for _, part := range m.Content.parts {
			tk.text(part.Text)
			h.sep()
			h.string(part.Text)
		}
		h.sep()
	}
	g.setPrompt(&tk)
	g.hash = finishHash(h, out, req.Seed)
	return g, req.Stream, nil
}

// tokenizer returns a tokenizer for g's prompt that hashes blocks, into a
// pooled buffer that g.release returns, when the prefix cache is on.
func (s *Server) tokenizer(g *generation) tokenizer {
	if s.cfg.DisablePrefixCache {
		return newTokenizer(0, nil)
	}
	g.blockBuf = blockPool.Get().(*[]uint64)
	return newTokenizer(s.engine.BlockTokens(), *g.blockBuf)
}

// blockPool holds the block-hash buffers of prompts.
var blockPool = sync.Pool{New: func() any { return new([]uint64) }}

// release returns g's pooled buffers; g's blocks are invalid after it.
func (g *generation) release() {
	if g.blockBuf == nil {
		return
	}
	if cap(g.blocks) <= maxPooledBlocks {
		*g.blockBuf = g.blocks[:0]
		blockPool.Put(g.blockBuf)
	}
	g.blockBuf, g.blocks = nil, nil
}

// maxPooledBlocks keeps the block buffers of rare huge prompts out of the
// pool.
const maxPooledBlocks = 1 << 14

func (s *Server) handleCompletion(w http.ResponseWriter, r *http.Request) {
	var req completionRequest
	buf, p, ok := s.request(w, r, &req)
	if !ok {
		return
	}
	g, apiErr := s.completionGeneration(&req)
	if apiErr != nil {
		putBuf(p, buf)
		apiErr.Write(w)
		return
	}
	s.generate(w, r, &g, req.Stream, buf, p)
}

func (s *Server) completionGeneration(req *completionRequest) (generation, *openai.Error) {
	model, ok := s.model(req.Model)
	if !ok {
		return generation{}, unknownModel(req.Model)
	}
	switch n := len(req.Prompt.items); {
	case n == 0:
		return generation{}, openai.BadRequest("prompt is required and must not be empty")
	case n > 1:
		return generation{}, openai.BadRequest("the simulator takes one prompt per request, got " + strconv.Itoa(n))
	}
	if err := checkN(req.N); err != nil {
		return generation{}, openai.BadRequest(err.Error())
	}
	out, err := outputTokens(s.cfg.DefaultMaxTokens, req.MaxTokens)
	if err != nil {
		return generation{}, openai.BadRequest(err.Error())
	}
	it := &req.Prompt.items[0]
	h := newHasher()
	h.byte('p')
	h.string(model)
	h.sep()
	it.hash(&h)
	g := generation{
		ep:           completionEndpoint,
		model:        model,
		outputTokens: out,
		finish:       finishReason(req.MaxTokens),
		includeUsage: req.Stream && req.StreamOptions != nil && req.StreamOptions.IncludeUsage,
	}
	tk := s.tokenizer(&g)
	it.tokenize(&tk)
	g.setPrompt(&tk)
	g.hash = finishHash(h, out, req.Seed)
	return g, nil
}

// finishHash mixes the token budget and the seed into a request's hash.
func finishHash(h hasher, out int, seed *int64) uint64 {
	h.uint64(uint64(out))
	if seed != nil {
		h.byte(1)
		h.uint64(uint64(*seed))
	}
	return h.sum()
}

func finishReason(limits ...*int) string {
	for _, l := range limits {
		if l != nil {
			return "length"
		}
	}
	return "stop"
}

// generate runs g on the engine and answers, streaming or not. buf and p
// are the pooled buffer to answer from; generate returns it.
func (s *Server) generate(w http.ResponseWriter, r *http.Request, g *generation, stream bool, buf []byte, p *[]byte) {
	defer g.release()
	if s.fail() {
		putBuf(p, buf)
		errSimulated.Write(w)
		return
	}
	prefix := "chatcmpl-"
	if g.ep == completionEndpoint {
		prefix = "cmpl-"
	}
	id := s.newID(prefix)
	created := s.clock.Now().Unix()
	h := w.Header()

	if stream {
		h["Content-Type"] = sseContentType
		h["Cache-Control"] = noCache
		w.WriteHeader(http.StatusOK)
		sw := newSSEWriter(w, g, id, created, buf)
		if sw.flusher != nil {
			sw.flusher.Flush()
		}
		t, err := s.engine.Generate(r.Context(), g.prompt(), g.outputTokens, sw.token)
		g.cachedTokens = t.CachedTokens
		if err == nil {
			err = sw.finish()
		}
		putBuf(p, sw.buf)
		s.metrics.generated(g.promptTokens, t, err == nil, g.finish)
		return
	}

	t, err := s.engine.Generate(r.Context(), g.prompt(), g.outputTokens, nil)
	g.cachedTokens = t.CachedTokens
	s.metrics.generated(g.promptTokens, t, err == nil, g.finish)
	if err != nil {
		putBuf(p, buf)
		cancelled().Write(w)
		return
	}
	b := appendCompletion(buf, g, id, created)
	h["Content-Type"] = jsonContentType
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	_, _ = w.Write(b)
	putBuf(p, b)
}

// cancelled answers a request whose context ended in the engine: the client
// is gone (and the answer is lost) or the server is cutting requests.
func cancelled() *openai.Error {
	return openai.Unavailable("request_cancelled", "the request was cancelled before it finished", 0)
}

func (s *Server) handleEmbeddings(w http.ResponseWriter, r *http.Request) {
	var req embeddingRequest
	buf, p, ok := s.request(w, r, &req)
	if !ok {
		return
	}
	items, dim, b64, apiErr := s.embeddingJob(&req)
	if apiErr != nil {
		putBuf(p, buf)
		apiErr.Write(w)
		return
	}
	if s.fail() {
		putBuf(p, buf)
		errSimulated.Write(w)
		return
	}
	model, _ := s.model(req.Model)
	tokens := 0
	for i := range items {
		tokens += max(items[i].tokens(), 1)
	}
	t, err := s.engine.Encode(r.Context(), tokens)
	s.metrics.encoded(tokens, t, err == nil)
	if err != nil {
		putBuf(p, buf)
		cancelled().Write(w)
		return
	}
	var small [64]float32
	var vec []float32
	if dim <= len(small) {
		vec = small[:dim]
	} else {
		vec = make([]float32, dim)
	}
	b := appendEmbeddings(buf, model, items, vec, b64, tokens)
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	_, _ = w.Write(b)
	putBuf(p, b)
}

// embeddingJob validates an embeddings request: its inputs, the vector
// dimension, and whether vectors go out as base64.
func (s *Server) embeddingJob(req *embeddingRequest) (items []promptItem, dim int, b64 bool, apiErr *openai.Error) {
	if _, ok := s.model(req.Model); !ok {
		return nil, 0, false, unknownModel(req.Model)
	}
	items = req.Input.items
	switch {
	case len(items) == 0:
		return nil, 0, false, openai.BadRequest("input is required and must not be empty")
	case len(items) > MaxEmbeddingInputs:
		return nil, 0, false, openai.BadRequest(fmt.Sprintf("input may hold at most %d items, got %d", MaxEmbeddingInputs, len(items)))
	}
	switch req.EncodingFormat {
	case "", "float":
	case "base64":
		b64 = true
	default:
		return nil, 0, false, openai.BadRequest(fmt.Sprintf("encoding_format must be float or base64, got %q", req.EncodingFormat))
	}
	dim = s.cfg.Dim
	if req.Dimensions != nil {
		dim = *req.Dimensions
		if dim < 1 || dim > MaxDim {
			return nil, 0, false, openai.BadRequest(fmt.Sprintf("dimensions must be between 1 and %d, got %d", MaxDim, dim))
		}
	}
	if len(items)*dim > maxOutputFloats {
		return nil, 0, false, openai.BadRequest(fmt.Sprintf("%d inputs of %d dimensions is more than the simulator answers at once", len(items), dim))
	}
	return items, dim, b64, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h["Content-Type"] = jsonContentType
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
