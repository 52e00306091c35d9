// Package tracingtest runs a real OpenTelemetry Collector (the OTLP
// receiver, gRPC and HTTP, writing what it receives to a file) for tests of
// code that exports traces, and reads the spans back.
//
// The collector binary is built once from the Go module proxy by
// scripts/otelcol-test-assets.sh into the user's cache directory (or taken
// from $SLUICE_OTELCOL). When it cannot be had, tests fail under CI=true
// and are skipped elsewhere.
package tracingtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Receiver is a running collector.
type Receiver struct {
	// HTTPEndpoint is the OTLP/HTTP base URL, e.g. http://127.0.0.1:43180
	// (exporters post to /v1/traces under it).
	HTTPEndpoint string
	// GRPCEndpoint is the OTLP/gRPC URL, e.g. http://127.0.0.1:43170.
	GRPCEndpoint string
	file         string
}

// Span is one received span, flattened.
type Span struct {
	TraceID, SpanID, ParentSpanID string
	Name                          string
	// Service is the resource's service.name.
	Service string
	// Kind is the OTLP span kind: 1 internal, 2 server, 3 client, 4
	// producer, 5 consumer.
	Kind int
	// Attrs holds string, int64, float64, bool and []any values.
	Attrs  map[string]any
	Events []string
	Links  []Link
	// StatusCode is 0 unset, 1 ok, 2 error.
	StatusCode int
	Start, End time.Time
}

// Link is a span link.
type Link struct{ TraceID, SpanID string }

// Binary returns the collector binary, building it on first use.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("SLUICE_OTELCOL"); p != "" {
		return p
	}
	binOnce.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			binErr = err
			return
		}
		cmd := exec.Command(filepath.Join(root, "scripts", "otelcol-test-assets.sh"))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			binErr = fmt.Errorf("scripts/otelcol-test-assets.sh: %v\n%s", err, stderr.String())
			return
		}
		binPath = strings.TrimSpace(string(out))
	})
	if binErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the OTLP collector is required under CI: %v", binErr)
		}
		t.Skipf("no OTLP collector: %v", binErr)
	}
	return binPath
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.Contains(b, []byte("module github.com/sluice-ai/sluice\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no sluice module above the working directory")
		}
		dir = parent
	}
}

// StartReceiver starts a collector on free loopback ports; it stops when
// the test ends.
func StartReceiver(t testing.TB) *Receiver {
	t.Helper()
	bin := Binary(t)
	dir := t.TempDir()
	grpcAddr, httpAddr := freeAddr(t), freeAddr(t)
	r := &Receiver{HTTPEndpoint: "http://" + httpAddr, GRPCEndpoint: "http://" + grpcAddr, file: filepath.Join(dir, "spans.jsonl")}
	cfg := fmt.Sprintf(`receivers:
  otlp:
    protocols:
      grpc: {endpoint: %q}
      http: {endpoint: %q}
exporters:
  file:
    path: %q
    flush_interval: 50ms
service:
  telemetry:
    logs: {level: warn}
    metrics: {level: none}
  pipelines:
    traces: {receivers: [otlp], exporters: [file]}
`, grpcAddr, httpAddr, r.file)
	cfgPath := filepath.Join(dir, "otelcol.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	cmd := exec.Command(bin, "--config", "file:"+cfgPath)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start collector: %v", err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("collector exited: %v\n%s", waitErr, logs.String())
		default:
		}
		if up(httpAddr) && up(grpcAddr) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("collector not listening after 30s\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// syncBuffer collects the collector's output, read while it runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func up(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Spans returns every span received so far.
func (r *Receiver) Spans() ([]Span, error) {
	f, err := os.Open(r.file)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var lines [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	for sc.Scan() {
		if line := bytes.TrimSpace(sc.Bytes()); len(line) > 0 {
			lines = append(lines, bytes.Clone(line))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	var out []Span
	for i, line := range lines {
		spans, err := ParseOTLPJSON(line)
		if err != nil {
			if i == len(lines)-1 {
				break // the exporter is still writing it
			}
			return nil, err
		}
		out = append(out, spans...)
	}
	return out, nil
}

// Trace returns the received spans of traceID (hex).
func (r *Receiver) Trace(traceID string) []Span {
	all, _ := r.Spans()
	var out []Span
	for _, s := range all {
		if s.TraceID == traceID {
			out = append(out, s)
		}
	}
	return out
}

// Wait polls until match returns true for the spans received so far, or
// fails the test after timeout, and returns the spans.
func (r *Receiver) Wait(t testing.TB, timeout time.Duration, match func([]Span) bool) []Span {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		spans, err := r.Spans()
		if err == nil && match(spans) {
			return spans
		}
		select {
		case <-ctx.Done():
			t.Fatalf("spans did not arrive within %v (have %d, last error %v)", timeout, len(spans), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ParseOTLPJSON decodes one OTLP/JSON ExportTraceServiceRequest.
func ParseOTLPJSON(b []byte) ([]Span, error) {
	var req struct {
		ResourceSpans []struct {
			Resource struct {
				Attributes []kv `json:"attributes"`
			} `json:"resource"`
			ScopeSpans []struct {
				Spans []struct {
					TraceID      string `json:"traceId"`
					SpanID       string `json:"spanId"`
					ParentSpanID string `json:"parentSpanId"`
					Name         string `json:"name"`
					Kind         int    `json:"kind"`
					Start        string `json:"startTimeUnixNano"`
					End          string `json:"endTimeUnixNano"`
					Attributes   []kv   `json:"attributes"`
					Events       []struct {
						Name string `json:"name"`
					} `json:"events"`
					Links []struct {
						TraceID string `json:"traceId"`
						SpanID  string `json:"spanId"`
					} `json:"links"`
					Status struct {
						Code int `json:"code"`
					} `json:"status"`
				} `json:"spans"`
			} `json:"scopeSpans"`
		} `json:"resourceSpans"`
	}
	if err := json.Unmarshal(b, &req); err != nil {
		return nil, fmt.Errorf("OTLP JSON: %w", err)
	}
	var out []Span
	for _, rs := range req.ResourceSpans {
		service, _ := attrs(rs.Resource.Attributes)["service.name"].(string)
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				sp := Span{
					TraceID: s.TraceID, SpanID: s.SpanID, ParentSpanID: s.ParentSpanID,
					Name: s.Name, Service: service, Kind: s.Kind, Attrs: attrs(s.Attributes),
					StatusCode: s.Status.Code, Start: unixNano(s.Start), End: unixNano(s.End),
				}
				for _, e := range s.Events {
					sp.Events = append(sp.Events, e.Name)
				}
				for _, l := range s.Links {
					sp.Links = append(sp.Links, Link{TraceID: l.TraceID, SpanID: l.SpanID})
				}
				out = append(out, sp)
			}
		}
	}
	return out, nil
}

type kv struct {
	Key   string   `json:"key"`
	Value anyValue `json:"value"`
}

type anyValue struct {
	StringValue *string  `json:"stringValue"`
	IntValue    *string  `json:"intValue"`
	DoubleValue *float64 `json:"doubleValue"`
	BoolValue   *bool    `json:"boolValue"`
	ArrayValue  *struct {
		Values []anyValue `json:"values"`
	} `json:"arrayValue"`
}

func (v anyValue) get() any {
	switch {
	case v.StringValue != nil:
		return *v.StringValue
	case v.IntValue != nil:
		n, _ := strconv.ParseInt(*v.IntValue, 10, 64)
		return n
	case v.DoubleValue != nil:
		return *v.DoubleValue
	case v.BoolValue != nil:
		return *v.BoolValue
	case v.ArrayValue != nil:
		out := make([]any, 0, len(v.ArrayValue.Values))
		for _, e := range v.ArrayValue.Values {
			out = append(out, e.get())
		}
		return out
	}
	return nil
}

func attrs(kvs []kv) map[string]any {
	m := make(map[string]any, len(kvs))
	for _, a := range kvs {
		m[a.Key] = a.Value.get()
	}
	return m
}

func unixNano(s string) time.Time {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}
	}
	return time.Unix(0, n)
}
