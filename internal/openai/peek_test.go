package openai

import (
	"encoding/json"
	"errors"
	"strconv"
	"testing"
)

func TestPeekRequestExactKeys(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       RequestInfo
		ambiguous  bool
	}{
		{name: "plain", body: `{"model":"m1","stream":true,"max_tokens":7,"stream_options":{"include_usage":true}}`,
			want: RequestInfo{Model: "m1", Stream: true, MaxTokens: 7, N: 1, IncludeUsage: true}},
		{name: "max_completion_tokens wins", body: `{"max_tokens":100000,"model":"m","max_completion_tokens":5}`,
			want: RequestInfo{Model: "m", MaxTokens: 5, N: 1}},
		{name: "escaped name is the same name", body: `{"mod\u0065l":"m2"}`, want: RequestInfo{Model: "m2", N: 1}},
		{name: "other fields are ignored", body: `{"model":"m","Messages":[1],"user":"x","MODELS":"y"}`, want: RequestInfo{Model: "m", N: 1}},
		{name: "prompt measured", body: `{"model":"m","messages":[{"role":"user","content":"hi"}]}`,
			want: RequestInfo{Model: "m", N: 1, PromptBytes: int64(len(`[{"role":"user","content":"hi"}]`))}},
		{name: "case variant of model", body: `{"model":"m2","MODEL":"m1"}`, ambiguous: true},
		{name: "case variant alone", body: `{"Model":"m1"}`, ambiguous: true},
		{name: "duplicate model", body: `{"model":"m1","model":"m2"}`, ambiguous: true},
		{name: "escaped duplicate", body: `{"model":"m1","\u006dodel":"m2"}`, ambiguous: true},
		{name: "max_tokens in upper case", body: `{"model":"m","max_tokens":100000,"MAX_TOKENS":1}`, ambiguous: true},
		{name: "include_usage case", body: `{"model":"m","stream_options":{"Include_Usage":true}}`, ambiguous: true},
		{name: "duplicate stream", body: `{"model":"m","stream":false,"stream":true}`, ambiguous: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := PeekRequest([]byte(tc.body))
			if tc.ambiguous {
				if !errors.Is(err, errAmbiguous) {
					t.Fatalf("PeekRequest(%s) = %+v, %v; want an ambiguity error", tc.body, got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("PeekRequest(%s) = %+v, want %+v", tc.body, got, tc.want)
			}
		})
	}
}

func TestPeekRequestErrors(t *testing.T) {
	for _, body := range []string{``, `[]`, `{"model":1}`, `{"max_tokens":"5"}`, `{"max_tokens":-1}`, `{"n":0}`, `{"model":"m"} x`, `{"stream":"yes"}`} {
		if ri, err := PeekRequest([]byte(body)); err == nil {
			t.Errorf("PeekRequest(%q) = %+v, want an error", body, ri)
		}
	}
}

func TestField(t *testing.T) {
	body := []byte(`{"user":"u1","metadata":{"session":"s-9","n":3},"USER":"other"}`)
	for path, want := range map[string]string{"user": "u1", "metadata.session": "s-9", "metadata.n": "3", "missing": "", "user.x": ""} {
		if got := Field(body, path); got != want {
			t.Errorf("Field(%q) = %q, want %q", path, got, want)
		}
	}
}

// FuzzPeekRequestExact checks PeekRequest against a case-sensitive decoder: for
// every body it accepts, each routing field it reports is the one a server
// reading exact member names sees.
func FuzzPeekRequestExact(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","stream":true,"max_tokens":3}`, `{"model":"m2","MODEL":"m1"}`, `{"mod\u0065l":"x"}`,
		`{"max_tokens":1,"max_completion_tokens":2,"n":2}`, `{"stream_options":{"include_usage":true}}`, `{}`, `{"model":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		ri, err := PeekRequest(body)
		if err != nil {
			return
		}
		var exact map[string]json.RawMessage // map keys match exactly
		if err := json.Unmarshal(body, &exact); err != nil {
			t.Fatalf("PeekRequest accepted %q, which is not a JSON object: %v", body, err)
		}
		var model string
		if raw, ok := exact["model"]; ok && string(raw) != "null" {
			if err := json.Unmarshal(raw, &model); err != nil {
				t.Fatalf("model is not a string in accepted body %q", body)
			}
		}
		if model != ri.Model {
			t.Fatalf("body %q: PeekRequest model %q, exact decoder %q", body, ri.Model, model)
		}
		want := int64(0)
		for _, k := range []string{"max_tokens", "max_completion_tokens"} {
			if raw, ok := exact[k]; ok && string(raw) != "null" {
				v, err := strconv.ParseInt(string(raw), 10, 64)
				if err != nil {
					t.Fatalf("body %q: %s %s accepted but not an integer", body, k, raw)
				}
				want = v
			}
		}
		if want != ri.MaxTokens {
			t.Fatalf("body %q: PeekRequest max tokens %d, exact decoder %d", body, ri.MaxTokens, want)
		}
		for k := range exact {
			if f, ok := routingField([]byte(k)); ok && f != k {
				t.Fatalf("body %q with %q accepted", body, k)
			}
		}
	})
}

// FuzzField checks the hash_on json:FIELD extractor on arbitrary bodies.
func FuzzField(f *testing.F) {
	f.Add([]byte(`{"user":{"id":"u1"}}`), "user.id")
	f.Add([]byte(`{"a":1}`), "a")
	f.Add([]byte(`[]`), "a.b")
	f.Fuzz(func(t *testing.T, body []byte, path string) {
		_ = Field(body, path)
	})
}

func TestAddFields(t *testing.T) {
	for in, want := range map[string]string{
		`{"model":"m"}`:  `{"model":"m","max_tokens":5,"stream_options":{"include_usage":true}}`,
		`{ }`:            `{ "max_tokens":5,"stream_options":{"include_usage":true}}`,
		"{\"a\":[1]}\n ": "{\"a\":[1],\"max_tokens\":5,\"stream_options\":{\"include_usage\":true}}\n ",
	} {
		got := string(AddFields([]byte(in), `"max_tokens":5`, `"stream_options":{"include_usage":true}`))
		if got != want {
			t.Errorf("AddFields(%q) = %q, want %q", in, got, want)
		}
		if _, err := PeekRequest([]byte(got)); err != nil {
			t.Errorf("AddFields(%q) is not a valid request: %v", in, err)
		}
	}
}

func BenchmarkPeekRequest(b *testing.B) {
	body := []byte(`{"model":"m1","messages":[{"role":"user","content":"say hello"}],"max_tokens":1,"stream":true,"stream_options":{"include_usage":true}}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := PeekRequest(body); err != nil {
			b.Fatal(err)
		}
	}
}
