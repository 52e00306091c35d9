package jobs

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/sluice-ai/sluice/internal/openai"
)

// TestHostileJobTargets submits jobs whose method or path is not a valid
// request line. The validate hook builds a request from them the way the
// gateway's routing check did (httptest.NewRequest, which panics on an
// invalid request line): every one must be a 400 in the OpenAI shape from
// the jobs API itself, before the hook sees it, never a dropped connection.
func TestHostileJobTargets(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	validate := func(r *http.Request, method, path string, body []byte) (string, *openai.Error) {
		mu.Lock()
		seen = append(seen, clip(method+" "+path))
		mu.Unlock()
		_ = httptest.NewRequest(method, path, bytes.NewReader(body))
		return "chat", nil
	}
	s := &Service{opt: Options{MaxRequestBody: 1 << 20}, keep: keptHeaderSet(nil), log: slog.New(slog.DiscardHandler)}
	srv := httptest.NewServer(s.Handler(nil, validate))
	defer srv.Close()
	srv.Config.ErrorLog = nil

	tests := []struct {
		name, method, path string
	}{
		{"space in path", "POST", "/v1/chat completions"},
		{"empty path", "POST", ""},
		{"CRLF in path", "POST", "/v1/chat/completions\r\nX-Injected: 1"},
		{"LF in path", "POST", "/v1/chat\n"},
		{"NUL in path", "POST", "/v1/chat\x00"},
		{"tab in path", "POST", "/v1/\tchat"},
		{"relative path", "POST", "v1/chat/completions"},
		{"absolute URL", "POST", "http://127.0.0.1:8081/api/reload"},
		{"scheme-relative", "POST", "//127.0.0.1:8081/api/reload"},
		{"asterisk", "OPTIONS", "*"},
		{"fragment", "POST", "/v1/chat/completions#x"},
		{"non-ASCII", "POST", "/v1/chät"},
		{"dot segment", "POST", "/v1/x/../jobs"},
		{"encoded dot segment", "POST", "/v1/x/%2e%2e/jobs"},
		{"jobs API", "POST", "/v1/jobs"},
		{"encoded jobs API", "GET", "/v1%2Fjobs"},
		{"space in method", "PO ST", "/v1/chat/completions"},
		{"CRLF in method", "POST\r\nX: 1", "/v1/chat/completions"},
		{"separator in method", "POST;", "/v1/chat/completions"},
		{"CONNECT", "CONNECT", "/v1/chat/completions"},
		{"TRACE", "TRACE", "/v1/chat/completions"},
		{"unknown token", "BREW", "/v1/chat/completions"},
		{"long method", strings.Repeat("P", 100), "/v1/chat/completions"},
		{"long path", "POST", "/" + strings.Repeat("a", maxPathLen)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sub, _ := json.Marshal(map[string]any{"method": tc.method, "path": tc.path, "body": map[string]any{"model": "m"}})
			resp, err := http.Post(srv.URL+"/v1/jobs", "application/json", bytes.NewReader(sub))
			if err != nil {
				t.Fatalf("no answer (the connection dropped): %v", err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("%d %s, want 400", resp.StatusCode, body)
			}
			var oe struct {
				Error struct{ Message, Type, Code string } `json:"error"`
			}
			if err := json.Unmarshal(body, &oe); err != nil || oe.Error.Message == "" || oe.Error.Type != "invalid_request_error" {
				t.Fatalf("not an OpenAI error: %s", body)
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) > 0 {
		t.Fatalf("the validate hook was handed invalid targets: %q", seen)
	}
}

// TestValidTargets keeps what clients send today working.
func TestValidTargets(t *testing.T) {
	for _, tc := range []struct{ method, path string }{
		{"POST", "/v1/chat/completions"},
		{"POST", "/v1/chat/completions?api-version=2024-01-01&x=%20y"},
		{"GET", "/v1/models"},
		{"POST", "/v2/models/m/versions/1/infer"},
		{"PUT", "/v1/x"},
		{"PATCH", "/v1/x"},
		{"DELETE", "/v1/x"},
		{"HEAD", "/v1/x"},
		{"POST", "/v1/x/~user/a.b-c_d!$&'()*+,;=:@"},
		{"POST", "/v1/jobsx"},
	} {
		if err := checkTarget(tc.method, tc.path); err != nil {
			t.Errorf("%s %s: %v", tc.method, tc.path, err)
		}
	}
}

// TestHandlerPanicLogged checks that a panic below the jobs API is logged
// at error with its stack, and the client gets a 500 instead of a dropped
// connection.
func TestHandlerPanicLogged(t *testing.T) {
	var logs bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))
	s := &Service{opt: Options{MaxRequestBody: 1 << 20}, keep: keptHeaderSet(nil), log: logger}
	validate := func(*http.Request, string, string, []byte) (string, *openai.Error) {
		panic("validate exploded")
	}
	srv := httptest.NewServer(s.Handler(nil, validate))
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/v1/jobs", "application/json", strings.NewReader(`{"path":"/v1/chat/completions","body":{}}`))
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("status %d, want 500", resp.StatusCode)
	}
	mu.Lock()
	defer mu.Unlock()
	out := logs.String()
	if !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "validate exploded") || !strings.Contains(out, "target_test.go") {
		t.Fatalf("panic not logged at error with its stack:\n%s", out)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func FuzzCheckTarget(f *testing.F) {
	for _, s := range []string{"/v1/chat/completions", "/v1/x?y=%20", "/a b", "", "//x", "/v1/../jobs", "/%zz"} {
		f.Add("POST", s)
	}
	f.Fuzz(func(t *testing.T, method, path string) {
		if checkTarget(method, path) != nil {
			return
		}
		// Whatever passes is a valid request line for net/http, and so
		// for a validate hook that builds a request from it.
		defer func() {
			if v := recover(); v != nil {
				t.Fatalf("accepted %q %q, which net/http refuses: %v", method, path, v)
			}
		}()
		r := httptest.NewRequest(method, path, nil)
		if r.URL.Path == jobsPath || strings.HasPrefix(r.URL.Path, jobsPath+"/") {
			t.Fatalf("accepted a path to the jobs API: %q", path)
		}
	})
}

func TestUnavailableHandler(t *testing.T) {
	srv := httptest.NewServer(UnavailableHandler())
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/v1/jobs", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var oe struct {
		Error struct{ Code string } `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&oe); err != nil || resp.StatusCode != http.StatusServiceUnavailable || oe.Error.Code != "job_store_unavailable" {
		t.Fatalf("%d %+v %v, want 503 job_store_unavailable", resp.StatusCode, oe, err)
	}
}
