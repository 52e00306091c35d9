package openai

import (
	"bytes"
	"strconv"
	"strings"
	"testing"

	"github.com/sluice-ai/sluice/internal/race"
)

// scanAll feeds body to a fresh scanner in the given chunk sizes (the last
// size repeats) and returns the result.
func scanAll(contentType string, body []byte, sizes ...int) (Usage, bool) {
	s := NewUsageScanner(contentType)
	for len(body) > 0 {
		n := len(body)
		if len(sizes) > 0 {
			n = min(sizes[0], len(body))
			if len(sizes) > 1 {
				sizes = sizes[1:]
			}
		}
		if w, err := s.Write(body[:n]); w != n || err != nil {
			panic("UsageScanner.Write did not take the whole chunk")
		}
		body = body[n:]
	}
	return s.Usage()
}

func sseEvents(events ...string) string {
	var b strings.Builder
	for _, e := range events {
		b.WriteString("data: ")
		b.WriteString(e)
		b.WriteString("\n\n")
	}
	return b.String()
}

func TestUsageScanner(t *testing.T) {
	bigEmbedding := `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[` +
		strings.Repeat("0.0123456789,", 200_000) + `0.5]}],"model":"m","usage":{"prompt_tokens":8,"total_tokens":8}}`

	tests := []struct {
		name        string
		contentType string
		body        string
		want        Usage
		wantOK      bool
	}{
		{
			name:        "chat completion",
			contentType: "application/json",
			body:        `{"id":"x","choices":[{"message":{"role":"assistant","content":"hi \"usage\": {}"}}],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}`,
			want:        Usage{PromptTokens: 12, CompletionTokens: 5, TotalTokens: 17},
			wantOK:      true,
		},
		{
			name:        "usage first, pretty printed",
			contentType: "application/json; charset=utf-8",
			body:        "{\n  \"usage\" : {\n    \"prompt_tokens\": 3,\n    \"completion_tokens\": 4,\n    \"prompt_tokens_details\": {\"cached_tokens\": 0}\n  },\n  \"id\": \"x\"\n}\n",
			want:        Usage{PromptTokens: 3, CompletionTokens: 4, TotalTokens: 7},
			wantOK:      true,
		},
		{
			name:        "nested usage is not the response's",
			contentType: "application/json",
			body:        `{"choices":[{"usage":{"prompt_tokens":99}}],"meta":{"usage":{"prompt_tokens":98}},"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`,
			want:        Usage{PromptTokens: 1, CompletionTokens: 2, TotalTokens: 3},
			wantOK:      true,
		},
		{
			name:        "only a total, as vLLM's rerank reports it",
			contentType: "application/json",
			body:        `{"id":"rerank-1","results":[{"index":0,"relevance_score":0.9}],"usage":{"total_tokens":21}}`,
			want:        Usage{PromptTokens: 21, TotalTokens: 21},
			wantOK:      true,
		},
		{
			name:        "only nested usage",
			contentType: "application/json",
			body:        `{"choices":[{"usage":{"prompt_tokens":99,"completion_tokens":1}}],"x":"usage"}`,
		},
		{
			name:        "large embeddings response",
			contentType: "application/json",
			body:        bigEmbedding,
			want:        Usage{PromptTokens: 8, TotalTokens: 8},
			wantOK:      true,
		},
		{
			name:        "responses api names",
			contentType: "application/json",
			body:        `{"object":"response","usage":{"input_tokens":10,"output_tokens":20,"total_tokens":30}}`,
			want:        Usage{PromptTokens: 10, CompletionTokens: 20, TotalTokens: 30},
			wantOK:      true,
		},
		{
			name:        "usage null",
			contentType: "application/json",
			body:        `{"usage":null}`,
		},
		{
			name:        "usage is a string",
			contentType: "application/json",
			body:        `{"usage":"{\"prompt_tokens\":1}"}`,
		},
		{
			name:        "negative counts",
			contentType: "application/json",
			body:        `{"usage":{"prompt_tokens":-1,"completion_tokens":2}}`,
		},
		{
			name:        "escaped member name does not match",
			contentType: "application/json",
			body:        `{"us\u0061ge":{"prompt_tokens":1,"completion_tokens":2}}`,
		},
		{
			name:        "not json",
			contentType: "text/plain",
			body:        `usage: {"prompt_tokens": 1}`,
		},
		{
			name:        "stream with include_usage",
			contentType: "text/event-stream",
			body: sseEvents(
				`{"id":"c","choices":[{"delta":{"role":"assistant"}}],"usage":null}`,
				`{"id":"c","choices":[{"delta":{"content":"Hel"}}],"usage":null}`,
				`{"id":"c","choices":[{"delta":{},"finish_reason":"stop"}],"usage":null}`,
				`{"id":"c","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}`,
				`[DONE]`,
			),
			want:   Usage{PromptTokens: 9, CompletionTokens: 2, TotalTokens: 11},
			wantOK: true,
		},
		{
			name:        "stream without usage",
			contentType: "text/event-stream",
			body:        sseEvents(`{"choices":[{"delta":{"content":"x"}}]}`, `[DONE]`),
		},
		{
			name:        "stream with CRLF, comments, other fields and no space",
			contentType: "text/event-stream; charset=utf-8",
			body: ": keep-alive\r\n\r\nevent: message\r\nid: 1\r\ndata:{\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":6}}\r\n\r\n" +
				"datax: {\"usage\":{\"prompt_tokens\":100}}\r\n\r\n",
			want:   Usage{PromptTokens: 4, CompletionTokens: 6, TotalTokens: 10},
			wantOK: true,
		},
		{
			name:        "stream with lone CR line ends",
			contentType: "text/event-stream",
			body:        "data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\r\rdata: [DONE]\r\r",
			want:        Usage{PromptTokens: 1, CompletionTokens: 1, TotalTokens: 2},
			wantOK:      true,
		},
		{
			name:        "event data over several lines",
			contentType: "text/event-stream",
			body:        "data: {\"usage\":\ndata: {\"prompt_tokens\":5,\ndata\ndata: \"completion_tokens\":1}}\n\n",
			want:        Usage{PromptTokens: 5, CompletionTokens: 1, TotalTokens: 6},
			wantOK:      true,
		},
		{
			name:        "stream cut after the usage line",
			contentType: "text/event-stream",
			body:        "data: {\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":3}}\n",
			want:        Usage{PromptTokens: 2, CompletionTokens: 3, TotalTokens: 5},
			wantOK:      true,
		},
		{
			name:        "later usage wins",
			contentType: "text/event-stream",
			body:        sseEvents(`{"usage":{"prompt_tokens":1}}`, `{"usage":{"prompt_tokens":2,"completion_tokens":8}}`, `{"usage":null}`),
			want:        Usage{PromptTokens: 2, CompletionTokens: 8, TotalTokens: 10},
			wantOK:      true,
		},
		{
			name:        "oversized usage value is ignored",
			contentType: "application/json",
			body:        `{"usage":{"prompt_tokens":1,"pad":"` + strings.Repeat("x", 5000) + `"}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := []byte(tt.body)
			check := func(how string, got Usage, ok bool) {
				t.Helper()
				if ok != tt.wantOK || got != tt.want {
					t.Fatalf("%s: Usage() = %+v, %v; want %+v, %v", how, got, ok, tt.want, tt.wantOK)
				}
			}
			got, ok := scanAll(tt.contentType, body)
			check("whole body", got, ok)
			got, ok = scanAll(tt.contentType, body, 1)
			check("byte by byte", got, ok)
			got, ok = scanAll(tt.contentType, body, 7, 1, 3)
			check("odd chunks", got, ok)
			if len(body) < 4096 {
				for i := 1; i < len(body); i++ {
					got, ok = scanAll(tt.contentType, body, i, len(body))
					check("split at "+strconv.Itoa(i), got, ok)
				}
			}
		})
	}
}

func TestUsageScannerReset(t *testing.T) {
	s := NewUsageScanner("text/event-stream")
	_, _ = s.Write([]byte(sseEvents(`{"usage":{"prompt_tokens":1,"completion_tokens":1}}`)))
	if _, ok := s.Usage(); !ok {
		t.Fatal("no usage before Reset")
	}
	s.Reset("application/json")
	if u, ok := s.Usage(); ok {
		t.Fatalf("Usage() after Reset = %+v, want none", u)
	}
	_, _ = s.Write([]byte(`{"usage":{"prompt_tokens":2,"completion_tokens":2}}`))
	if u, ok := s.Usage(); !ok || u.TotalTokens != 4 {
		t.Fatalf("Usage() = %+v, %v; want total 4", u, ok)
	}
}

func FuzzUsageScanner(f *testing.F) {
	f.Add([]byte(`{"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}`), false, uint16(3))
	f.Add([]byte(sseEvents(`{"usage":null}`, `{"usage":{"prompt_tokens":9,"completion_tokens":2}}`, `[DONE]`)), true, uint16(5))
	f.Add([]byte("data: {\"usage\":\r\ndata: {\"input_tokens\":1}}\r\n\r\n"), true, uint16(1))
	f.Add([]byte(`{"a":[{"usage":1}],"usage":{"prompt_tokens":1e3}}`), false, uint16(2))
	f.Fuzz(func(t *testing.T, body []byte, sse bool, step uint16) {
		ct := "application/json"
		if sse {
			ct = "text/event-stream"
		}
		want, wantOK := scanAll(ct, body)
		if got, ok := scanAll(ct, body, 1); got != want || ok != wantOK {
			t.Fatalf("byte by byte: %+v, %v; whole: %+v, %v", got, ok, want, wantOK)
		}
		if got, ok := scanAll(ct, body, int(step)+1); got != want || ok != wantOK {
			t.Fatalf("chunks of %d: %+v, %v; whole: %+v, %v", int(step)+1, got, ok, want, wantOK)
		}
		if len(body) > 0 {
			at := int(step) % len(body)
			if got, ok := scanAll(ct, body, at, len(body)); got != want || ok != wantOK {
				t.Fatalf("split at %d: %+v, %v; whole: %+v, %v", at, got, ok, want, wantOK)
			}
		}
		if wantOK && (want.PromptTokens < 0 || want.CompletionTokens < 0 || want.TotalTokens < 0) {
			t.Fatalf("negative usage %+v", want)
		}
	})
}

func BenchmarkUsageScannerStream(b *testing.B) {
	var stream bytes.Buffer
	for i := 0; i < 200; i++ {
		stream.WriteString(sseEvents(`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"sim-llm","choices":[{"index":0,"delta":{"content":"token "},"finish_reason":null}],"usage":null}`))
	}
	stream.WriteString(sseEvents(`{"id":"chatcmpl-1","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":200,"total_tokens":209}}`, "[DONE]"))
	body := stream.Bytes()
	s := NewUsageScanner("text/event-stream")
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		s.Reset("text/event-stream")
		for p := body; len(p) > 0; {
			n := min(len(p), 180)
			_, _ = s.Write(p[:n])
			p = p[n:]
		}
		if u, ok := s.Usage(); !ok || u.CompletionTokens != 200 {
			b.Fatalf("Usage() = %+v, %v", u, ok)
		}
	}
}

func TestPeekRequest(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    RequestInfo
		wantErr bool
	}{
		{
			name: "chat stream with usage",
			body: `{"model":"sim-llm","messages":[{"role":"user","content":"hello"}],"stream":true,"stream_options":{"include_usage":true},"max_tokens":32}`,
			want: RequestInfo{Model: "sim-llm", Stream: true, IncludeUsage: true, MaxTokens: 32, N: 1,
				PromptBytes: int64(len(`[{"role":"user","content":"hello"}]`))},
		},
		{
			name: "max_completion_tokens wins",
			body: `{"model":"m","max_tokens":10,"max_completion_tokens":20,"n":3,"prompt":"abcd"}`,
			want: RequestInfo{Model: "m", MaxTokens: 20, N: 3, PromptBytes: 6},
		},
		{
			name: "embeddings",
			body: `{"model":"e","input":["a","b"]}`,
			want: RequestInfo{Model: "e", N: 1, PromptBytes: 9},
		},
		{
			name: "no model",
			body: `{}`,
			want: RequestInfo{N: 1},
		},
		{name: "not json", body: `model=x`, wantErr: true},
		{name: "array", body: `[1,2]`, wantErr: true},
		{name: "model not a string", body: `{"model":1}`, wantErr: true},
		{name: "negative max_tokens", body: `{"model":"m","max_tokens":-1}`, wantErr: true},
		{name: "zero n", body: `{"model":"m","n":0}`, wantErr: true},
		{name: "trailing garbage", body: `{"model":"m"}x`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PeekRequest([]byte(tt.body))
			if (err != nil) != tt.wantErr {
				t.Fatalf("PeekRequest() error = %v, want error %v", err, tt.wantErr)
			}
			if err == nil && got != tt.want {
				t.Fatalf("PeekRequest() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestTokenReservation(t *testing.T) {
	tests := []struct {
		ri   RequestInfo
		def  int64
		want int64
	}{
		{RequestInfo{PromptBytes: 8, MaxTokens: 10, N: 1}, 16, 2 + 10},
		{RequestInfo{PromptBytes: 9, N: 2}, 16, 3 + 32},
		{RequestInfo{}, 16, 16},
	}
	for _, tt := range tests {
		if got := tt.ri.TokenReservation(tt.def); got != tt.want {
			t.Errorf("%+v.TokenReservation(%d) = %d, want %d", tt.ri, tt.def, got, tt.want)
		}
	}
}

func FuzzPeekRequest(f *testing.F) {
	f.Add([]byte(`{"model":"sim-llm","messages":[{"role":"user","content":"hi"}],"stream":true,"max_tokens":5}`))
	f.Add([]byte(`{"model":"m","input":"x","n":2,"max_completion_tokens":1}`))
	f.Add([]byte(`{"messages":null,"stream_options":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		ri, err := PeekRequest(body)
		if err != nil {
			return
		}
		if ri.PromptBytes < 0 || ri.PromptBytes > int64(len(body)) {
			t.Fatalf("PromptBytes = %d for a body of %d bytes", ri.PromptBytes, len(body))
		}
		if ri.N < 1 || ri.MaxTokens < 0 {
			t.Fatalf("accepted N = %d, MaxTokens = %d", ri.N, ri.MaxTokens)
		}
	})
}

// FuzzParseUsage holds the hand scan of a usage object to encoding/json's
// reading of it: whatever the bytes, parseUsage answers as decodeUsage
// alone would.
func FuzzParseUsage(f *testing.F) {
	for _, s := range []string{
		`{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}`,
		`{"prompt_tokens":9,"total_tokens":21,"completion_tokens":12,"prompt_tokens_details":{"cached_tokens":0,"x":[1,"}",{"a":null}]}}`,
		`{"input_tokens":3,"output_tokens":4,"output_tokens_details":{"reasoning_tokens":0}}`,
		`{"total_tokens":40}`,
		`{"prompt_tokens":null,"completion_tokens":-0}`,
		`{"Prompt_Tokens":5}`,
		`{"prompt_tokenſ":5}`,
		`{"prompt_tokens":1e3}`,
		`{"prompt_tokens":1.0}`,
		`{"prompt_tokens":"5"}`,
		`{"prompt_tokens":true}`,
		`{"prompt_tokens":9223372036854775808}`,
		`{"prompt_tokens":-9223372036854775808}`,
		`{"\u0070rompt_tokens":7}`,
		`{"a":"\"","prompt_tokens":2}`,
		` { } `,
		`{"prompt_tokens":1,}`,
		`{"prompt_tokens":1}x`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, gotOK := parseUsage(b)
		var want Usage
		wantOK := false
		if len(b) > 0 && b[0] == '{' {
			if fields, ok := decodeUsage(b); ok {
				want, wantOK = usageOf(fields)
			}
		}
		if got != want || gotOK != wantOK {
			t.Fatalf("parseUsage(%q) = %+v, %v; encoding/json reads %+v, %v", b, got, gotOK, want, wantOK)
		}
	})
}

func TestParseUsageAllocatesNothing(t *testing.T) {
	b := []byte(`{"prompt_tokens":9,"total_tokens":21,"completion_tokens":12,"prompt_tokens_details":{"cached_tokens":0}}`)
	// json.Valid takes its scanner from a sync.Pool, which the race
	// detector empties at random.
	if !race.Enabled {
		if n := testing.AllocsPerRun(100, func() { parseUsage(b) }); n != 0 {
			t.Errorf("parseUsage allocates %v times per call, want 0", n)
		}
	}
	if u, ok := parseUsage(b); !ok || u != (Usage{PromptTokens: 9, CompletionTokens: 12, TotalTokens: 21}) {
		t.Errorf("parseUsage = %+v, %v", u, ok)
	}
}

func TestIsEventStream(t *testing.T) {
	for ct, want := range map[string]bool{
		"text/event-stream":                 true,
		"text/event-stream; charset=utf-8":  true,
		" Text/Event-Stream ;charset=utf-8": true,
		"application/json":                  false,
		"text/event-streamx":                false,
		"":                                  false,
	} {
		if got := isEventStream(ct); got != want {
			t.Errorf("isEventStream(%q) = %v, want %v", ct, got, want)
		}
	}
}
