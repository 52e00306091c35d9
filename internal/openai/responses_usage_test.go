package openai

import "testing"

// A Responses API stream reports usage once, in response.completed, inside
// the response object; earlier events carry "usage": null, and usage-like
// members deeper in the response are not its usage.
func TestUsageScannerResponsesStream(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ct     string
		body   string
		want   Usage
		wantOK bool
	}{
		{
			name: "streamed",
			ct:   "text/event-stream",
			body: "event: response.created\n" + sseEvents(`{"type":"response.created","response":{"id":"r","status":"in_progress","usage":null}}`) +
				"event: response.output_text.delta\n" + sseEvents(`{"type":"response.output_text.delta","delta":"usage"}`) +
				"event: response.completed\n" + sseEvents(`{"type":"response.completed","sequence_number":9,"response":{"id":"r","output":[{"content":[{"text":"a","usage":{"input_tokens":99}}]}],"usage":{"input_tokens":12,"input_tokens_details":{"cached_tokens":0},"output_tokens":30,"total_tokens":42}}}`),
			want: Usage{PromptTokens: 12, CompletionTokens: 30, TotalTokens: 42}, wantOK: true,
		},
		{
			name: "response member first",
			ct:   "text/event-stream",
			body: sseEvents(`{"response":{"usage":{"input_tokens":1,"output_tokens":2}},"type":"response.completed"}`),
			want: Usage{PromptTokens: 1, CompletionTokens: 2, TotalTokens: 3}, wantOK: true,
		},
		{
			name: "usage deeper than the response is not its usage",
			ct:   "text/event-stream",
			body: sseEvents(`{"type":"x","response":{"meta":{"usage":{"input_tokens":5,"output_tokens":5}}}}`),
		},
		{
			name: "response that is not an object",
			ct:   "text/event-stream",
			body: sseEvents(`{"response":[{"usage":{"input_tokens":5}}]}`),
		},
		{
			name: "an item's response is not the top-level one",
			ct:   "application/json",
			body: `{"item":{"response":{"usage":{"input_tokens":7}}}}`,
		},
		{
			name: "not streamed",
			ct:   "application/json",
			body: `{"id":"r","object":"response","output":[],"usage":{"input_tokens":3,"output_tokens":4,"total_tokens":7}}`,
			want: Usage{PromptTokens: 3, CompletionTokens: 4, TotalTokens: 7}, wantOK: true,
		},
	} {
		for _, size := range []int{1, 3, 7, 64, 1 << 20} {
			got, ok := scanAll(tc.ct, []byte(tc.body), size)
			if ok != tc.wantOK || got != tc.want {
				t.Errorf("%s (chunks of %d): %+v %v, want %+v %v", tc.name, size, got, ok, tc.want, tc.wantOK)
			}
		}
	}
}
