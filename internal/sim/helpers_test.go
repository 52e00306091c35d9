package sim

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fastConfig is a config with no latency, for tests about content.
func fastConfig() Config {
	cfg := DefaultConfig()
	cfg.TTFT, cfg.ITL, cfg.PrefillPerToken = 0, 0, 0
	cfg.ID = "sim-test"
	return cfg
}

// startServer runs a Server for cfg behind httptest.
func startServer(t testing.TB, cfg Config) (*Server, *httptest.Server) {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return s, ts
}

// call makes one request and returns the response with its body read.
func call(t testing.TB, method, url, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func post(t testing.TB, url, body string) (*http.Response, []byte) {
	t.Helper()
	return call(t, http.MethodPost, url, body)
}

// completion is the part of a non-streaming response the tests read.
type completion struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Index   int `json:"index"`
		Message struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"message"`
		Text         string `json:"text"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage *usage `json:"usage"`
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

func (c *completion) text() string {
	if c.Object == "chat.completion" {
		return c.Choices[0].Message.Content
	}
	return c.Choices[0].Text
}

// chunk is one streamed event.
type chunk struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Index int `json:"index"`
		Delta struct {
			Role    *string `json:"role"`
			Content *string `json:"content"`
		} `json:"delta"`
		Text         *string `json:"text"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *usage `json:"usage"`
	// hasUsage records whether the key was present at all.
	hasUsage bool
}

// parseSSE parses a complete event stream strictly: every event is a
// single "data: " line followed by a blank line, the last one is
// "data: [DONE]", and every other one is a JSON object.
func parseSSE(b []byte) ([]chunk, error) {
	var out []chunk
	rest := b
	done := false
	for len(rest) > 0 {
		if done {
			return nil, fmt.Errorf("data after [DONE]: %q", rest)
		}
		end := bytes.Index(rest, []byte("\n\n"))
		if end < 0 {
			return nil, fmt.Errorf("unterminated event %q", rest)
		}
		ev := rest[:end]
		rest = rest[end+2:]
		payload, ok := bytes.CutPrefix(ev, []byte("data: "))
		if !ok || bytes.ContainsRune(payload, '\n') {
			return nil, fmt.Errorf("event is not one data line: %q", ev)
		}
		if string(payload) == "[DONE]" {
			done = true
			continue
		}
		var c chunk
		if err := json.Unmarshal(payload, &c); err != nil {
			return nil, fmt.Errorf("event %q: %w", payload, err)
		}
		var keys map[string]json.RawMessage
		if err := json.Unmarshal(payload, &keys); err != nil {
			return nil, err
		}
		_, c.hasUsage = keys["usage"]
		out = append(out, c)
	}
	if !done {
		return nil, fmt.Errorf("stream did not end with [DONE]")
	}
	return out, nil
}

// streamText joins the content of a stream's chunks.
func streamText(chunks []chunk) string {
	var sb strings.Builder
	for _, c := range chunks {
		for _, ch := range c.Choices {
			if ch.Delta.Content != nil {
				sb.WriteString(*ch.Delta.Content)
			}
			if ch.Text != nil {
				sb.WriteString(*ch.Text)
			}
		}
	}
	return sb.String()
}

// scrape reads /metrics into a map keyed by series ("name{labels}").
func scrape(t testing.TB, base string) map[string]float64 {
	t.Helper()
	resp, body := call(t, http.MethodGet, base+"/metrics", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	out := make(map[string]float64)
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}
