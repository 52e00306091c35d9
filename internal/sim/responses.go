package sim

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/sluice-ai/sluice/internal/openai"
)

// The OpenAI Responses API (POST /v1/responses), text in and text out.
//
// The prompt is the instructions and every text of the input (a string, or
// a list of messages whose content is a string or input_text parts; other
// items such as images or tool outputs are accepted and not counted). The
// output is one assistant message with one output_text part of exactly
// max_output_tokens tokens (default Config.DefaultMaxTokens), a
// deterministic function of the request like every sim answer; the
// response's status is always "completed". Usage reports input_tokens (with
// input_tokens_details.cached_tokens from the prefix cache), output_tokens
// and total_tokens. A stream sends the events of OpenAI's Responses
// streaming, each as "event: TYPE" and "data: JSON" with a
// sequence_number: response.created, response.in_progress,
// response.output_item.added, response.content_part.added, one
// response.output_text.delta per token, response.output_text.done,
// response.content_part.done, response.output_item.done and
// response.completed, which carries the whole response and its usage. No
// "[DONE]" follows, as in OpenAI's API. Nothing is stored: previous_response_id
// is ignored.

type responsesRequest struct {
	Model           string          `json:"model"`
	Input           responsesInput  `json:"input"`
	Instructions    *string         `json:"instructions"`
	MaxOutputTokens *int            `json:"max_output_tokens"`
	Stream          bool            `json:"stream"`
	Seed            *int64          `json:"seed"`
	Metadata        json.RawMessage `json:"metadata"`
}

// responsesInput is the "input" of a Responses request: a string or a list
// of items.
type responsesInput struct {
	text  string
	items []responsesItem
	set   bool
}

type responsesItem struct {
	Type    string         `json:"type"`
	Role    string         `json:"role"`
	Content messageContent `json:"content"`
}

func (in *responsesInput) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0:
		return errors.New("empty input")
	case b[0] == 'n':
		*in = responsesInput{}
		return nil
	case b[0] == '"':
		*in = responsesInput{text: unquote(b), set: true}
		return nil
	case b[0] == '[':
		in.set = true
		return json.Unmarshal(b, &in.items)
	}
	return errors.New("input must be a string or an array of input items")
}

func (s *Server) handleResponses(w http.ResponseWriter, r *http.Request) {
	var req responsesRequest
	buf, p, ok := s.request(w, r, &req)
	if !ok {
		return
	}
	putBuf(p, buf)
	g, apiErr := s.responsesGeneration(&req)
	if apiErr != nil {
		apiErr.Write(w)
		return
	}
	defer g.release()
	if s.fail() {
		errSimulated.Write(w)
		return
	}
	res := &responseObject{
		ID:                s.newID("resp_"),
		Object:            "response",
		CreatedAt:         s.clock.Now().Unix(),
		Status:            "in_progress",
		Model:             g.model,
		Output:            []responseItem{},
		ParallelToolCalls: true,
		Temperature:       1,
		TopP:              1,
		ToolChoice:        "auto",
		Tools:             []json.RawMessage{},
		Truncation:        "disabled",
		Text:              json.RawMessage(`{"format":{"type":"text"}}`),
		Reasoning:         json.RawMessage(`{"effort":null,"summary":null}`),
		Instructions:      req.Instructions,
		MaxOutputTokens:   req.MaxOutputTokens,
		Metadata:          req.Metadata,
	}
	if len(res.Metadata) == 0 || string(res.Metadata) == "null" {
		res.Metadata = json.RawMessage(`{}`)
	}
	itemID := "msg_" + strings.TrimPrefix(res.ID, "resp_")

	if !req.Stream {
		t, err := s.engine.Generate(r.Context(), g.prompt(), g.outputTokens, nil)
		s.metrics.generated(g.promptTokens, t, err == nil, g.finish)
		if err != nil {
			cancelled().Write(w)
			return
		}
		res.complete(&g, itemID, t.CachedTokens)
		writeJSON(w, http.StatusOK, res)
		return
	}

	h := w.Header()
	h["Content-Type"] = sseContentType
	h["Cache-Control"] = noCache
	w.WriteHeader(http.StatusOK)
	ev := &responseEvents{w: w}
	ev.flusher, _ = w.(http.Flusher)
	ev.send("response.created", map[string]any{"response": res})
	ev.send("response.in_progress", map[string]any{"response": res})
	ev.send("response.output_item.added", map[string]any{"output_index": 0,
		"item": responseItem{ID: itemID, Type: "message", Status: "in_progress", Role: "assistant", Content: []outputText{}}})
	ev.send("response.content_part.added", map[string]any{"item_id": itemID, "output_index": 0, "content_index": 0,
		"part": outputText{Type: "output_text", Annotations: []json.RawMessage{}}})
	var text strings.Builder
	t, err := s.engine.Generate(r.Context(), g.prompt(), g.outputTokens, func(i int) error {
		bare, _ := g.token(i)
		text.WriteString(bare)
		return ev.send("response.output_text.delta", map[string]any{"item_id": itemID, "output_index": 0,
			"content_index": 0, "delta": bare, "logprobs": []any{}})
	})
	s.metrics.generated(g.promptTokens, t, err == nil, g.finish)
	if err != nil {
		return
	}
	res.complete(&g, itemID, t.CachedTokens)
	part := res.Output[0].Content[0]
	ev.send("response.output_text.done", map[string]any{"item_id": itemID, "output_index": 0, "content_index": 0,
		"text": text.String(), "logprobs": []any{}})
	ev.send("response.content_part.done", map[string]any{"item_id": itemID, "output_index": 0, "content_index": 0, "part": part})
	ev.send("response.output_item.done", map[string]any{"output_index": 0, "item": res.Output[0]})
	ev.send("response.completed", map[string]any{"response": res})
}

// responsesGeneration validates a Responses request into a generation.
func (s *Server) responsesGeneration(req *responsesRequest) (generation, *openai.Error) {
	model, ok := s.model(req.Model)
	if !ok {
		return generation{}, unknownModel(req.Model)
	}
	if !req.Input.set {
		return generation{}, openai.BadRequest("input is required")
	}
	out, err := outputTokens(s.cfg.DefaultMaxTokens, req.MaxOutputTokens)
	if err != nil {
		return generation{}, openai.BadRequest(strings.Replace(err.Error(), "max_tokens", "max_output_tokens", 1))
	}
	g := generation{ep: responsesEndpoint, model: model, outputTokens: out, finish: finishReason(req.MaxOutputTokens)}
	h := newHasher()
	h.byte('r')
	h.string(model)
	h.sep()
	tk := s.tokenizer(&g)
	if req.Instructions != nil {
		tk.mark("system")
		tk.text(*req.Instructions)
		h.string(*req.Instructions)
	}
	h.sep()
	if req.Input.items == nil {
		tk.mark("user")
		tk.text(req.Input.text)
		h.string(req.Input.text)
	}
	for i := range req.Input.items {
		it := &req.Input.items[i]
		if it.Type != "" && it.Type != "message" {
			continue
		}
		role := it.Role
		if role == "" {
			role = "user"
		}
		h.string(role)
		h.sep()
		tk.mark(role)
		tk.text(it.Content.text)
		h.string(it.Content.text)
		for _, part := range it.Content.parts {
			tk.text(part.Text)
			h.sep()
			h.string(part.Text)
		}
		h.sep()
	}
	g.setPrompt(&tk)
	g.hash = finishHash(h, out, req.Seed)
	return g, nil
}

// responseObject is OpenAI's Response object, with the fields the SDKs
// read.
type responseObject struct {
	ID                 string            `json:"id"`
	Object             string            `json:"object"`
	CreatedAt          int64             `json:"created_at"`
	Status             string            `json:"status"`
	Error              *json.RawMessage  `json:"error"`
	IncompleteDetails  *json.RawMessage  `json:"incomplete_details"`
	Instructions       *string           `json:"instructions"`
	MaxOutputTokens    *int              `json:"max_output_tokens"`
	Model              string            `json:"model"`
	Output             []responseItem    `json:"output"`
	ParallelToolCalls  bool              `json:"parallel_tool_calls"`
	PreviousResponseID *string           `json:"previous_response_id"`
	Reasoning          json.RawMessage   `json:"reasoning"`
	Store              bool              `json:"store"`
	Temperature        float64           `json:"temperature"`
	Text               json.RawMessage   `json:"text"`
	ToolChoice         string            `json:"tool_choice"`
	Tools              []json.RawMessage `json:"tools"`
	TopP               float64           `json:"top_p"`
	Truncation         string            `json:"truncation"`
	Usage              *responseUsage    `json:"usage"`
	User               *string           `json:"user"`
	Metadata           json.RawMessage   `json:"metadata"`
}

type responseItem struct {
	ID      string       `json:"id"`
	Type    string       `json:"type"`
	Status  string       `json:"status"`
	Role    string       `json:"role"`
	Content []outputText `json:"content"`
}

type outputText struct {
	Type        string            `json:"type"`
	Text        string            `json:"text"`
	Annotations []json.RawMessage `json:"annotations"`
}

type responseUsage struct {
	InputTokens        int `json:"input_tokens"`
	InputTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"input_tokens_details"`
	OutputTokens        int `json:"output_tokens"`
	OutputTokensDetails struct {
		ReasoningTokens int `json:"reasoning_tokens"`
	} `json:"output_tokens_details"`
	TotalTokens int `json:"total_tokens"`
}

// complete fills in the finished output and usage of g.
func (res *responseObject) complete(g *generation, itemID string, cached int) {
	var text strings.Builder
	for i := range g.outputTokens {
		bare, _ := g.token(i)
		text.WriteString(bare)
	}
	res.Status = "completed"
	res.Output = []responseItem{{
		ID: itemID, Type: "message", Status: "completed", Role: "assistant",
		Content: []outputText{{Type: "output_text", Text: text.String(), Annotations: []json.RawMessage{}}},
	}}
	u := &responseUsage{InputTokens: g.promptTokens, OutputTokens: g.outputTokens, TotalTokens: g.promptTokens + g.outputTokens}
	u.InputTokensDetails.CachedTokens = cached
	res.Usage = u
}

// responseEvents writes Responses API server-sent events, numbering them.
type responseEvents struct {
	w       http.ResponseWriter
	flusher http.Flusher
	seq     int
	buf     []byte
}

// send writes one event of type typ whose payload is fields plus type and
// sequence_number, and flushes it.
func (e *responseEvents) send(typ string, fields map[string]any) error {
	fields["type"] = typ
	fields["sequence_number"] = e.seq
	e.seq++
	data, err := json.Marshal(fields)
	if err != nil {
		return err
	}
	b := append(e.buf[:0], "event: "...)
	b = append(b, typ...)
	b = append(b, "\ndata: "...)
	b = append(b, data...)
	b = append(b, "\n\n"...)
	e.buf = b
	if _, err := e.w.Write(b); err != nil {
		return err
	}
	if e.flusher != nil {
		e.flusher.Flush()
	}
	return nil
}
