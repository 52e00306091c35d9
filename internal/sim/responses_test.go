package sim

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// responseBody is the part of a Response object the tests read.
type responseBody struct {
	ID     string `json:"id"`
	Object string `json:"object"`
	Status string `json:"status"`
	Model  string `json:"model"`
	Output []struct {
		ID      string `json:"id"`
		Type    string `json:"type"`
		Role    string `json:"role"`
		Status  string `json:"status"`
		Content []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"content"`
	} `json:"output"`
	Usage *struct {
		InputTokens        int `json:"input_tokens"`
		OutputTokens       int `json:"output_tokens"`
		TotalTokens        int `json:"total_tokens"`
		InputTokensDetails struct {
			CachedTokens *int `json:"cached_tokens"`
		} `json:"input_tokens_details"`
	} `json:"usage"`
}

func (r *responseBody) text() string {
	if len(r.Output) == 0 || len(r.Output[0].Content) == 0 {
		return ""
	}
	return r.Output[0].Content[0].Text
}

func TestResponses(t *testing.T) {
	_, ts := startServer(t, fastConfig())
	long := words(0, 40)
	tests := []struct {
		name   string
		body   string
		input  int
		output int
	}{
		{"string input", `{"model":"sim-llm","input":"` + long + `","max_output_tokens":5}`, 40, 5},
		{"messages and instructions", `{"model":"sim-llm","instructions":"be brief now","input":[
			{"role":"user","content":"one two"},
			{"type":"message","role":"assistant","content":[{"type":"output_text","text":"three"}]},
			{"role":"user","content":[{"type":"input_text","text":"four five six"},{"type":"input_image","image_url":"x"}]},
			{"type":"function_call_output","call_id":"c","output":"ignored words here"}]}`, 9, 16},
	}
	for _, tc := range tests {
		resp, b := post(t, ts.URL+"/v1/responses", tc.body)
		if resp.StatusCode != 200 || resp.Header.Get(InstanceHeader) != "sim-test" {
			t.Fatalf("%s: %s %s", tc.name, resp.Status, b)
		}
		var r responseBody
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		if r.Object != "response" || r.Status != "completed" || r.Model != "sim-llm" || !strings.HasPrefix(r.ID, "resp_") ||
			len(r.Output) != 1 || r.Output[0].Type != "message" || r.Output[0].Role != "assistant" || r.Output[0].Content[0].Type != "output_text" {
			t.Errorf("%s: %s", tc.name, b)
		}
		if n := len(strings.Fields(r.text())); n != tc.output {
			t.Errorf("%s: %d output words, want %d", tc.name, n, tc.output)
		}
		u := r.Usage
		if u == nil || u.InputTokens != tc.input || u.OutputTokens != tc.output || u.TotalTokens != tc.input+tc.output ||
			u.InputTokensDetails.CachedTokens == nil {
			t.Errorf("%s: usage %s", tc.name, b)
		}
		// The same request again: the same text, and its prefix cached.
		_, b2 := post(t, ts.URL+"/v1/responses", tc.body)
		var r2 responseBody
		if err := json.Unmarshal(b2, &r2); err != nil {
			t.Fatal(err)
		}
		if r2.text() != r.text() || r2.ID == r.ID {
			t.Errorf("%s: repeat gave %q (id %s), first %q (id %s)", tc.name, r2.text(), r2.ID, r.text(), r.ID)
		}
		if want := (tc.input - 1) / 16 * 16; *r2.Usage.InputTokensDetails.CachedTokens != want {
			t.Errorf("%s: repeat cached %d tokens, want %d", tc.name, *r2.Usage.InputTokensDetails.CachedTokens, want)
		}
	}

	for _, bad := range []struct {
		body   string
		status int
	}{
		{`{"model":"nope","input":"x"}`, 404},
		{`{"model":"sim-llm"}`, 400},
		{`{"model":"sim-llm","input":5}`, 400},
		{`{"model":"sim-llm","input":"x","max_output_tokens":0}`, 400},
	} {
		if resp, b := post(t, ts.URL+"/v1/responses", bad.body); resp.StatusCode != bad.status {
			t.Errorf("%s: %s %s, want %d", bad.body, resp.Status, b, bad.status)
		}
	}
}

// responseEvent is one parsed event of a Responses stream.
type responseEvent struct {
	name string
	data map[string]json.RawMessage
}

func (e responseEvent) str(key string) string {
	var s string
	_ = json.Unmarshal(e.data[key], &s)
	return s
}

// parseResponseEvents parses a Responses stream strictly: each event is an
// "event:" line and one "data:" line whose type matches it.
func parseResponseEvents(t *testing.T, b []byte) []responseEvent {
	t.Helper()
	var out []responseEvent
	for _, ev := range bytes.Split(bytes.TrimSuffix(b, []byte("\n\n")), []byte("\n\n")) {
		lines := strings.Split(string(ev), "\n")
		if len(lines) != 2 || !strings.HasPrefix(lines[0], "event: ") || !strings.HasPrefix(lines[1], "data: ") {
			t.Fatalf("malformed event %q", ev)
		}
		e := responseEvent{name: strings.TrimPrefix(lines[0], "event: ")}
		if err := json.Unmarshal([]byte(strings.TrimPrefix(lines[1], "data: ")), &e.data); err != nil {
			t.Fatalf("event %q: %v", ev, err)
		}
		if e.str("type") != e.name {
			t.Fatalf("event %s has type %s", e.name, e.str("type"))
		}
		out = append(out, e)
	}
	return out
}

func TestResponsesStream(t *testing.T) {
	_, ts := startServer(t, fastConfig())
	body := `{"model":"sim-llm","input":"tell me about rivers","max_output_tokens":4,"stream":true}`
	resp, b := post(t, ts.URL+"/v1/responses", body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("%s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	events := parseResponseEvents(t, b)
	var names []string
	var deltas strings.Builder
	for i, e := range events {
		names = append(names, e.name)
		var seq int
		if err := json.Unmarshal(e.data["sequence_number"], &seq); err != nil || seq != i {
			t.Errorf("event %d (%s): sequence_number %s", i, e.name, e.data["sequence_number"])
		}
		if e.name == "response.output_text.delta" {
			deltas.WriteString(e.str("delta"))
		}
	}
	want := []string{"response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
		"response.output_text.delta", "response.output_text.delta", "response.output_text.delta", "response.output_text.delta",
		"response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Fatalf("events:\n%v\nwant\n%v", names, want)
	}
	var created, completed responseBody
	_ = json.Unmarshal(events[0].data["response"], &created)
	_ = json.Unmarshal(events[len(events)-1].data["response"], &completed)
	if created.Status != "in_progress" || len(created.Output) != 0 || created.Usage != nil {
		t.Errorf("created: %s", events[0].data["response"])
	}
	if completed.Status != "completed" || completed.ID != created.ID || completed.text() != deltas.String() ||
		events[8].str("text") != deltas.String() || completed.Usage == nil || completed.Usage.InputTokens != 4 || completed.Usage.OutputTokens != 4 {
		t.Errorf("completed %s, deltas %q", events[len(events)-1].data["response"], deltas.String())
	}
	if item := events[2].str("item_id"); item != "" {
		t.Errorf("output_item.added carries item_id %q; the item is in item", item)
	}
	for _, i := range []int{3, 4, 8, 9} {
		if events[i].str("item_id") != completed.Output[0].ID {
			t.Errorf("%s: item_id %q, want %q", events[i].name, events[i].str("item_id"), completed.Output[0].ID)
		}
	}
	// Streaming and not give the same text.
	_, nb := post(t, ts.URL+"/v1/responses", strings.Replace(body, `,"stream":true`, "", 1))
	var plain responseBody
	if err := json.Unmarshal(nb, &plain); err != nil || plain.text() != deltas.String() {
		t.Errorf("non-streamed text %q, streamed %q", plain.text(), deltas.String())
	}
}

func FuzzResponsesRequest(f *testing.F) {
	for _, s := range []string{
		`{"model":"sim-llm","input":"hi there"}`,
		`{"model":"sim-llm","input":[{"role":"user","content":[{"type":"input_text","text":"a b"}]}],"instructions":"x","max_output_tokens":3,"stream":true}`,
		`{"input":[{"type":"function_call_output","output":"x"},{"content":null}],"metadata":{"k":"v"},"seed":-1}`,
		`{"model":"sim-llm","input":null}`,
		`[]`,
	} {
		f.Add([]byte(s))
	}
	h := fuzzServer(f).Handler()
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/responses", bytes.NewReader(body)))
		res := rec.Result()
		out := rec.Body.Bytes()
		switch res.StatusCode {
		case http.StatusOK:
			if res.Header.Get("Content-Type") == "text/event-stream" {
				events := parseResponseEvents(t, out)
				if last := events[len(events)-1]; last.name != "response.completed" {
					t.Fatalf("stream for %q ends with %s", body, last.name)
				}
				return
			}
		case http.StatusBadRequest, http.StatusNotFound, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("status %d for %q: %s", res.StatusCode, body, out)
		}
		if !json.Valid(out) {
			t.Fatalf("invalid JSON answer for %q: %s", body, out)
		}
	})
}
