package cli

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluice-ai/sluice/internal/bench"
)

func benchServer(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.Header.Get("X-Test") != "yes" || r.Header.Get("Authorization") != "Bearer k" {
			http.Error(w, "missing headers", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"choices":[{"message":{"content":"a b"}}],"usage":{"prompt_tokens":8,"completion_tokens":2}}`)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestBenchCmdJSONToStdout(t *testing.T) {
	srv := benchServer(t)
	var stdout, stderr bytes.Buffer
	err := Run(context.Background(), []string{"bench",
		"--url", srv.URL, "--model", "m", "--rate", "50", "--arrivals", "constant", "--duration", "200ms",
		"--prompt-tokens", "8", "--api-key", "k", "--header", "X-Test: yes", "--json", "-", "--quiet",
	}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, stderr.String())
	}
	res, err := bench.ReadJSON(&stdout)
	if err != nil {
		t.Fatalf("stdout is not a result: %v", err)
	}
	if res.Sent != 10 || res.OK != 10 || res.OutputTokens != 20 || res.Config.PromptTokens != 8 || res.Mode() != "open" {
		t.Errorf("result %+v", res)
	}
	if stderr.Len() != 0 {
		t.Errorf("--quiet wrote to stderr: %q", stderr.String())
	}
}

func TestBenchCmdTableAndJSONFile(t *testing.T) {
	srv := benchServer(t)
	path := filepath.Join(t.TempDir(), "out.json")
	var stdout, stderr bytes.Buffer
	err := Run(context.Background(), []string{"bench",
		"--url", srv.URL + "/v1/chat/completions", "--model", "m", "--concurrency", "2", "--duration", "100ms",
		"--api-key", "k", "--header", "x-test:yes", "--json", path,
	}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, stderr.String())
	}
	for _, want := range []string{"Target", "closed loop, 2 workers", "latency", "p99.9"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, stdout.String())
		}
	}
	if !strings.Contains(stderr.String(), "bench: closed loop") {
		t.Errorf("no status line on stderr: %q", stderr.String())
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := bench.ReadJSON(f)
	if err != nil || res.OK == 0 || res.Failed != 0 {
		t.Fatalf("json file: %+v, %v", res, err)
	}
}

func TestBenchCmdErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()

	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no url", []string{"--model", "m"}, "url is required"},
		{"rate and concurrency", []string{"--url", closed, "--model", "m", "--rate", "1", "--concurrency", "1"}, "exclusive"},
		{"bad header", []string{"--url", closed, "--model", "m", "--header", "novalue"}, "header"},
		{"nothing succeeds", []string{"--url", closed, "--model", "m", "--rate", "20", "--arrivals", "constant", "--duration", "300ms", "-q"}, "no request succeeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := Run(context.Background(), append([]string{"bench"}, tt.args...), &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestBenchCmdInterrupted(t *testing.T) {
	srv := benchServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stdout, stderr bytes.Buffer
	err := Run(ctx, []string{"bench", "--url", srv.URL, "--model", "m", "--duration", "1m", "-q"}, &stdout, &stderr)
	if ExitCode(err) != 130 {
		t.Errorf("exit code %d (%v), want 130", ExitCode(err), err)
	}
	if !strings.Contains(stdout.String(), "interrupted") {
		t.Errorf("no partial table on interrupt:\n%s", stdout.String())
	}
}

func TestBenchCmdTrace(t *testing.T) {
	srv := benchServer(t)
	var stdout, stderr bytes.Buffer
	err := Run(context.Background(), []string{"bench",
		"--url", srv.URL, "--model", "m", "--api-key", "k", "--header", "X-Test: yes",
		"--trace", "../bench/testdata/mooncake-excerpt.jsonl", "--time-scale", "5000", "--token-scale", "0.03125",
		"--trace-limit", "9", "--goodput", "e2e=60000", "--json", "-", "--quiet",
	}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, stderr.String())
	}
	res, err := bench.ReadJSON(&stdout)
	if err != nil {
		t.Fatalf("stdout is not a result: %v", err)
	}
	if res.Mode() != "trace" || res.Sent != 9 || res.OK != 9 || res.Good != 9 || res.Trace.TokenScale != 0.03125 ||
		res.Trace.Format != bench.TraceMooncake || res.Config.TimeScale != 5000 {
		t.Errorf("result %+v, trace %+v", res, res.Trace)
	}

	for _, args := range [][]string{
		{"--trace", "missing.jsonl"},
		{"--trace", "../bench/testdata/azure-excerpt.csv", "--rate", "5"},
		{"--goodput", "ttft=fast"},
		{"--goodput", "ttft=100"}, // not streamed
		{"--trace", "../bench/testdata/azure-excerpt.csv", "--token-scale", "0"},
	} {
		err := Run(context.Background(), append([]string{"bench", "--url", srv.URL, "--model", "m", "--quiet"}, args...), io.Discard, io.Discard)
		if err == nil {
			t.Errorf("bench %v: no error", args)
		}
	}
}
