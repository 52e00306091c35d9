package sim

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

// fuzzServer answers at once and keeps responses small enough for fuzzing.
func fuzzServer(t testing.TB) *Server {
	cfg := fastConfig()
	cfg.MaxBodyBytes = 64 << 10
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// fuzzEndpoint posts body to path and checks that the answer is one the
// contract allows: a well-formed success or a JSON error with an expected
// status.
func fuzzEndpoint(f *testing.F, path string, seeds ...string) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	s := fuzzServer(f)
	h := s.Handler()
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body)))
		res := rec.Result()
		out := rec.Body.Bytes()
		switch res.StatusCode {
		case http.StatusOK:
			if res.Header.Get("Content-Type") == "text/event-stream" {
				if _, err := parseSSE(out); err != nil {
					t.Fatalf("bad stream for %q: %v", body, err)
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

func FuzzChatRequest(f *testing.F) {
	fuzzEndpoint(f, "/v1/chat/completions",
		`{"model":"sim-llm","messages":[{"role":"user","content":"hi there"}]}`,
		`{"model":"sim-llm","messages":[{"role":"user","content":[{"type":"text","text":"a"}]}],"max_tokens":3,"stream":true,"stream_options":{"include_usage":true}}`,
		`{"model":"sim-llm","messages":[{"role":"user","content":null}],"max_completion_tokens":2,"seed":-5}`,
		`{"model":"x","messages":[]}`,
		`{"messages":[{"content":"\u00a0\ud800"}],"n":1}`,
		`[]`,
	)
}

func FuzzCompletionRequest(f *testing.F) {
	fuzzEndpoint(f, "/v1/completions",
		`{"model":"sim-llm","prompt":"once upon a time","max_tokens":4}`,
		`{"model":"sim-llm","prompt":["one"],"stream":true}`,
		`{"model":"sim-llm","prompt":[1,2,3]}`,
		`{"model":"sim-llm","prompt":[[1,2],[3]]}`,
		`{"model":"sim-llm","prompt":[]}`,
		`{"prompt":null}`,
	)
}

func FuzzEmbeddingRequest(f *testing.F) {
	fuzzEndpoint(f, "/v1/embeddings",
		`{"model":"sim-llm","input":"hello"}`,
		`{"model":"sim-llm","input":["a","b c"],"encoding_format":"base64","dimensions":3}`,
		`{"model":"sim-llm","input":[[1,2],[3]]}`,
		`{"model":"sim-llm","input":[1,"a"]}`,
		`{"input":{}}`,
	)
}

func FuzzInferRequest(f *testing.F) {
	fuzzEndpoint(f, "/v2/models/sim-llm/infer",
		`{"inputs":[{"name":"x","datatype":"FP32","shape":[2,2],"data":[[1,2],[3,4]]}]}`,
		`{"id":"a","inputs":[{"name":"t","datatype":"BYTES","shape":[1],"data":["hi"]}],"outputs":[{"name":"OUTPUT0"}]}`,
		`{"inputs":[{"name":"b","datatype":"BOOL","shape":[],"data":true}]}`,
		`{"inputs":[{"name":"x","datatype":"INT64","shape":[3,0],"data":[]}]}`,
		`{"inputs":[{"name":"x","datatype":"FP32","shape":[9223372036854775807,2],"data":[1]}]}`,
	)
}
