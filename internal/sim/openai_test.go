package sim

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"net/http"
	"strings"
	"testing"
)

func chatBody(model, prompt string, extra string) string {
	b, _ := json.Marshal(prompt)
	return `{"model":"` + model + `","messages":[{"role":"user","content":` + string(b) + `}]` + extra + `}`
}

func completionBody(model, prompt string, extra string) string {
	b, _ := json.Marshal(prompt)
	return `{"model":"` + model + `","prompt":` + string(b) + extra + `}`
}

var textEndpoints = []struct {
	name string
	path string
	body func(model, prompt, extra string) string
}{
	{"chat", "/v1/chat/completions", chatBody},
	{"completions", "/v1/completions", completionBody},
}

func TestTextIsDeterministic(t *testing.T) {
	_, ts := startServer(t, fastConfig())
	for _, ep := range textEndpoints {
		t.Run(ep.name, func(t *testing.T) {
			get := func(body string) (completion, []byte) {
				t.Helper()
				resp, b := post(t, ts.URL+ep.path, body)
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("%s: %s %s", body, resp.Status, b)
				}
				var c completion
				if err := json.Unmarshal(b, &c); err != nil {
					t.Fatal(err)
				}
				return c, b
			}
			stream := func(body string) []chunk {
				t.Helper()
				resp, b := post(t, ts.URL+ep.path, body)
				if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
					t.Fatalf("%s: %s %s", body, resp.Header.Get("Content-Type"), resp.Status)
				}
				chunks, err := parseSSE(b)
				if err != nil {
					t.Fatal(err)
				}
				return chunks
			}

			base := ep.body("sim-llm", "tell me about the river", `,"max_tokens":12`)
			a, _ := get(base)
			b, _ := get(base)
			if a.text() != b.text() {
				t.Errorf("same request, different text:\n%q\n%q", a.text(), b.text())
			}
			if a.ID == b.ID {
				t.Errorf("two responses share the id %q", a.ID)
			}
			if n := len(strings.Fields(a.text())); n != 12 {
				t.Errorf("text %q has %d words, want 12", a.text(), n)
			}
			wantUsage := usage{PromptTokens: 5, CompletionTokens: 12, TotalTokens: 17}
			if a.Usage == nil || *a.Usage != wantUsage {
				t.Errorf("usage %+v, want %+v", a.Usage, wantUsage)
			}
			if a.Choices[0].FinishReason != "length" {
				t.Errorf("finish_reason %q with max_tokens set, want length", a.Choices[0].FinishReason)
			}

			chunks := stream(ep.body("sim-llm", "tell me about the river", `,"max_tokens":12,"stream":true,"stream_options":{"include_usage":true}`))
			if got := streamText(chunks); got != a.text() {
				t.Errorf("stream text %q differs from non-stream text %q", got, a.text())
			}
			last := chunks[len(chunks)-1]
			if last.Usage == nil || *last.Usage != wantUsage {
				t.Errorf("stream usage %+v, want %+v", last.Usage, wantUsage)
			}

			for name, other := range map[string]string{
				"prompt":     ep.body("sim-llm", "tell me about the ocean", `,"max_tokens":12`),
				"seed":       ep.body("sim-llm", "tell me about the river", `,"max_tokens":12,"seed":7`),
				"max_tokens": ep.body("sim-llm", "tell me about the river", `,"max_tokens":13`),
			} {
				if c, _ := get(other); c.text() == a.text() || strings.HasPrefix(c.text(), a.text()) {
					t.Errorf("a different %s gave the same text %q", name, c.text())
				}
			}

			d, _ := get(ep.body("", "tell me about the river", ""))
			if d.Model != "sim-llm" || len(strings.Fields(d.text())) != 16 || d.Choices[0].FinishReason != "stop" {
				t.Errorf("default request: model %q, text %q, finish %q; want sim-llm, 16 words, stop",
					d.Model, d.text(), d.Choices[0].FinishReason)
			}
		})
	}
}

func TestPromptTokenCounting(t *testing.T) {
	_, ts := startServer(t, fastConfig())
	tests := []struct {
		name string
		path string
		body string
		want usage
	}{
		{"chat words across messages", "/v1/chat/completions",
			`{"model":"sim-llm","max_tokens":2,"messages":[{"role":"system","content":"be  brief\n"},{"role":"user","content":"what is\tup"}]}`,
			usage{5, 2, 7}},
		{"chat content parts", "/v1/chat/completions",
			`{"model":"sim-llm","max_tokens":1,"messages":[{"role":"user","content":[{"type":"text","text":"one two"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"three"}]}]}`,
			usage{3, 1, 4}},
		{"chat null content counts one", "/v1/chat/completions",
			`{"model":"sim-llm","max_tokens":1,"messages":[{"role":"assistant","content":null}]}`,
			usage{1, 1, 2}},
		{"max_completion_tokens wins", "/v1/chat/completions",
			`{"model":"sim-llm","max_tokens":9,"max_completion_tokens":3,"messages":[{"role":"user","content":"hi"}]}`,
			usage{1, 3, 4}},
		{"completion token ids", "/v1/completions",
			`{"model":"sim-llm","max_tokens":4,"prompt":[1,2,3,4,5,6,7]}`,
			usage{7, 4, 11}},
		{"completion one-element lists", "/v1/completions",
			`{"model":"sim-llm","max_tokens":4,"prompt":[[5,6]]}`,
			usage{2, 4, 6}},
		{"completion unicode spaces", "/v1/completions",
			"{\"model\":\"sim-llm\",\"max_tokens\":4,\"prompt\":[\"a\u00a0b\u3000c d\"]}",
			usage{4, 4, 8}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := post(t, ts.URL+tc.path, tc.body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s %s", resp.Status, b)
			}
			var c completion
			if err := json.Unmarshal(b, &c); err != nil {
				t.Fatal(err)
			}
			if *c.Usage != tc.want {
				t.Errorf("usage %+v, want %+v", *c.Usage, tc.want)
			}
		})
	}
}

func TestStreamFormat(t *testing.T) {
	_, ts := startServer(t, fastConfig())
	tests := []struct {
		name         string
		path         string
		body         string
		chat         bool
		includeUsage bool
	}{
		{"chat", "/v1/chat/completions", chatBody("sim-llm", "hello", `,"max_tokens":4,"stream":true`), true, false},
		{"chat with usage", "/v1/chat/completions", chatBody("sim-llm", "hello", `,"max_tokens":4,"stream":true,"stream_options":{"include_usage":true}`), true, true},
		{"completions", "/v1/completions", completionBody("sim-llm", "hello", `,"max_tokens":4,"stream":true`), false, false},
		{"completions with usage", "/v1/completions", completionBody("sim-llm", "hello", `,"max_tokens":4,"stream":true,"stream_options":{"include_usage":true}`), false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := post(t, ts.URL+tc.path, tc.body)
			if got := resp.Header.Get("Content-Type"); got != "text/event-stream" {
				t.Fatalf("content type %q", got)
			}
			if resp.Header.Get(InstanceHeader) != "sim-test" {
				t.Errorf("stream without %s", InstanceHeader)
			}
			chunks, err := parseSSE(b)
			if err != nil {
				t.Fatal(err)
			}
			wantObject := "text_completion"
			if tc.chat {
				wantObject = "chat.completion.chunk"
			}
			tokens := 0
			for i, c := range chunks {
				if c.Object != wantObject || c.Model != "sim-llm" || c.ID != chunks[0].ID {
					t.Errorf("chunk %d: object %q model %q id %q", i, c.Object, c.Model, c.ID)
				}
				if c.hasUsage != tc.includeUsage {
					t.Errorf("chunk %d: usage key present %v, want %v", i, c.hasUsage, tc.includeUsage)
				}
				isUsage := tc.includeUsage && i == len(chunks)-1
				if isUsage {
					if len(c.Choices) != 0 || c.Usage == nil || c.Usage.CompletionTokens != 4 {
						t.Errorf("usage chunk: choices %d, usage %+v", len(c.Choices), c.Usage)
					}
					continue
				}
				if c.Usage != nil {
					t.Errorf("chunk %d: usage %+v before the last chunk", i, c.Usage)
				}
				if len(c.Choices) != 1 {
					t.Fatalf("chunk %d: %d choices", i, len(c.Choices))
				}
				ch := c.Choices[0]
				finishing := ch.FinishReason != nil
				last := i == len(chunks)-1 || (tc.includeUsage && i == len(chunks)-2)
				if finishing != last {
					t.Errorf("chunk %d: finish_reason %v", i, ch.FinishReason)
				}
				if finishing && *ch.FinishReason != "length" {
					t.Errorf("finish_reason %q, want length", *ch.FinishReason)
				}
				if tc.chat && i == 0 {
					if ch.Delta.Role == nil || *ch.Delta.Role != "assistant" {
						t.Errorf("first chat chunk has no assistant role")
					}
					continue
				}
				if (tc.chat && ch.Delta.Content != nil && *ch.Delta.Content != "") || (!tc.chat && ch.Text != nil && *ch.Text != "") {
					tokens++
				}
			}
			if tokens != 4 {
				t.Errorf("%d token chunks, want 4", tokens)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	cfg := fastConfig()
	cfg.MaxBodyBytes = 1024
	_, ts := startServer(t, cfg)
	tests := []struct {
		name   string
		method string
		path   string
		body   string
		status int
		code   string
	}{
		{"unknown model", "POST", "/v1/chat/completions", chatBody("gpt-9", "hi", ""), 404, "model_not_found"},
		{"unknown completion model", "POST", "/v1/completions", completionBody("gpt-9", "hi", ""), 404, "model_not_found"},
		{"unknown embedding model", "POST", "/v1/embeddings", `{"model":"gpt-9","input":"x"}`, 404, "model_not_found"},
		{"unknown model card", "GET", "/v1/models/gpt-9", "", 404, "model_not_found"},
		{"malformed JSON", "POST", "/v1/chat/completions", `{"model":`, 400, "bad_request"},
		{"wrong JSON type", "POST", "/v1/chat/completions", `{"model":"sim-llm","messages":"hi"}`, 400, "bad_request"},
		{"no messages", "POST", "/v1/chat/completions", `{"model":"sim-llm","messages":[]}`, 400, "bad_request"},
		{"zero max_tokens", "POST", "/v1/chat/completions", chatBody("sim-llm", "hi", `,"max_tokens":0`), 400, "bad_request"},
		{"huge max_tokens", "POST", "/v1/completions", completionBody("sim-llm", "hi", `,"max_tokens":100000000`), 400, "bad_request"},
		{"n above one", "POST", "/v1/chat/completions", chatBody("sim-llm", "hi", `,"n":2`), 400, "bad_request"},
		{"no prompt", "POST", "/v1/completions", `{"model":"sim-llm"}`, 400, "bad_request"},
		{"two prompts", "POST", "/v1/completions", `{"model":"sim-llm","prompt":["a","b"]}`, 400, "bad_request"},
		{"mixed prompt list", "POST", "/v1/completions", `{"model":"sim-llm","prompt":["a",1]}`, 400, "bad_request"},
		{"no input", "POST", "/v1/embeddings", `{"model":"sim-llm","input":[]}`, 400, "bad_request"},
		{"bad encoding", "POST", "/v1/embeddings", `{"model":"sim-llm","input":"x","encoding_format":"hex"}`, 400, "bad_request"},
		{"bad dimensions", "POST", "/v1/embeddings", `{"model":"sim-llm","input":"x","dimensions":0}`, 400, "bad_request"},
		{"body too large", "POST", "/v1/chat/completions", chatBody("sim-llm", strings.Repeat("word ", 300), ""), 413, "request_too_large"},
		{"unknown route", "GET", "/v1/nothing", "", 404, "not_found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := call(t, tc.method, ts.URL+tc.path, tc.body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, b)
			}
			if resp.Header.Get(InstanceHeader) != "sim-test" {
				t.Errorf("error without %s", InstanceHeader)
			}
			var e struct {
				Error struct {
					Message string `json:"message"`
					Type    string `json:"type"`
					Code    string `json:"code"`
				} `json:"error"`
			}
			if err := json.Unmarshal(b, &e); err != nil {
				t.Fatalf("error body %q: %v", b, err)
			}
			if e.Error.Code != tc.code || e.Error.Message == "" || e.Error.Type == "" {
				t.Errorf("error %+v, want code %q", e.Error, tc.code)
			}
		})
	}
}

func TestErrorRate(t *testing.T) {
	requests := []struct{ path, body string }{
		{"/v1/chat/completions", chatBody("sim-llm", "hi", "")},
		{"/v1/chat/completions", chatBody("sim-llm", "hi", `,"stream":true`)},
		{"/v1/completions", completionBody("sim-llm", "hi", "")},
		{"/v1/embeddings", `{"model":"sim-llm","input":"hi"}`},
		{"/v2/models/sim-llm/infer", `{"inputs":[{"name":"x","datatype":"BYTES","shape":[1],"data":["hi"]}]}`},
	}
	statuses := func(rate float64, seed uint64, rounds int) []int {
		cfg := fastConfig()
		cfg.ErrorRate, cfg.Seed = rate, seed
		_, ts := startServer(t, cfg)
		var out []int
		for range rounds {
			for _, r := range requests {
				resp, b := post(t, ts.URL+r.path, r.body)
				out = append(out, resp.StatusCode)
				if resp.StatusCode == http.StatusInternalServerError && !strings.Contains(string(b), `"error"`) {
					t.Errorf("500 without an error body: %s", b)
				}
			}
		}
		return out
	}
	count := func(codes []int, code int) int {
		n := 0
		for _, c := range codes {
			if c == code {
				n++
			}
		}
		return n
	}
	if all := statuses(1, 0, 4); count(all, 500) != len(all) {
		t.Errorf("error rate 1: statuses %v, want all 500", all)
	}
	if none := statuses(0, 0, 4); count(none, 200) != len(none) {
		t.Errorf("error rate 0: statuses %v, want all 200", none)
	}
	half := statuses(0.5, 42, 10)
	if n := count(half, 500); n == 0 || n == len(half) {
		t.Errorf("error rate 0.5: %d of %d failed", n, len(half))
	}
	if again := statuses(0.5, 42, 10); !equalInts(again, half) {
		t.Errorf("same seed, different failures:\n%v\n%v", half, again)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

type embeddingResponse struct {
	Object string `json:"object"`
	Model  string `json:"model"`
	Data   []struct {
		Object    string          `json:"object"`
		Index     int             `json:"index"`
		Embedding json.RawMessage `json:"embedding"`
	} `json:"data"`
	Usage struct {
		PromptTokens int `json:"prompt_tokens"`
		TotalTokens  int `json:"total_tokens"`
	} `json:"usage"`
}

func (r embeddingResponse) vectors(t *testing.T) [][]float32 {
	t.Helper()
	var out [][]float32
	for _, d := range r.Data {
		var v []float32
		if d.Embedding[0] == '"' {
			var s string
			if err := json.Unmarshal(d.Embedding, &s); err != nil {
				t.Fatal(err)
			}
			raw, err := base64.StdEncoding.DecodeString(s)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i+4 <= len(raw); i += 4 {
				v = append(v, math.Float32frombits(binary.LittleEndian.Uint32(raw[i:])))
			}
		} else if err := json.Unmarshal(d.Embedding, &v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

func TestEmbeddings(t *testing.T) {
	cfg := fastConfig()
	cfg.Dim = 48
	_, ts := startServer(t, cfg)
	embed := func(body string) embeddingResponse {
		t.Helper()
		resp, b := post(t, ts.URL+"/v1/embeddings", body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %s %s", body, resp.Status, b)
		}
		var r embeddingResponse
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		return r
	}

	r := embed(`{"model":"sim-llm","input":["the quick fox","a dog","the quick fox"]}`)
	vs := r.vectors(t)
	if r.Object != "list" || r.Model != "sim-llm" || len(vs) != 3 || r.Usage.PromptTokens != 8 || r.Usage.TotalTokens != 8 {
		t.Fatalf("response %+v", r)
	}
	for i, v := range vs {
		if len(v) != 48 || r.Data[i].Index != i || r.Data[i].Object != "embedding" {
			t.Errorf("item %d: %d dims, index %d", i, len(v), r.Data[i].Index)
		}
		var sum float64
		for _, x := range v {
			sum += float64(x) * float64(x)
		}
		if math.Abs(math.Sqrt(sum)-1) > 1e-5 {
			t.Errorf("item %d has norm %v", i, math.Sqrt(sum))
		}
	}
	if !equalVec(vs[0], vs[2]) || equalVec(vs[0], vs[1]) {
		t.Errorf("same inputs must share a vector and different ones must not")
	}

	single := embed(`{"model":"sim-llm","input":"the quick fox"}`).vectors(t)
	b64 := embed(`{"model":"sim-llm","input":"the quick fox","encoding_format":"base64"}`).vectors(t)
	if !equalVec(single[0], vs[0]) || !equalVec(b64[0], vs[0]) {
		t.Errorf("a string input, a list input and base64 must give the same vector")
	}

	ids := embed(`{"model":"sim-llm","input":[[1,2,3],[4]],"dimensions":8}`)
	if v := ids.vectors(t); len(v) != 2 || len(v[0]) != 8 || ids.Usage.PromptTokens != 4 {
		t.Errorf("token id inputs: %d vectors, usage %+v", len(v), ids.Usage)
	}
}

func equalVec(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestModels(t *testing.T) {
	cfg := fastConfig()
	cfg.Models = []string{"alpha", "org/beta"}
	_, ts := startServer(t, cfg)
	resp, b := call(t, "GET", ts.URL+"/v1/models", "")
	var list struct {
		Object string `json:"object"`
		Data   []struct {
			ID     string `json:"id"`
			Object string `json:"object"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &list); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%s %s: %v", resp.Status, b, err)
	}
	if list.Object != "list" || len(list.Data) != 2 || list.Data[0].ID != "alpha" || list.Data[1].ID != "org/beta" || list.Data[0].Object != "model" {
		t.Errorf("models %+v", list)
	}
	if resp.Header.Get(InstanceHeader) != "sim-test" {
		t.Errorf("no %s", InstanceHeader)
	}
	resp, b = call(t, "GET", ts.URL+"/v1/models/org/beta", "")
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"id":"org/beta"`) {
		t.Errorf("model card: %s %s", resp.Status, b)
	}
	resp, b = post(t, ts.URL+"/v1/chat/completions", chatBody("org/beta", "hi", ""))
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"model":"org/beta"`) {
		t.Errorf("chat with the second model: %s %s", resp.Status, b)
	}
}
