package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestDriveClassifiesOutcomes runs the driver against a server that
// answers each request by its prompt's first word (which encodes the
// request index) in one of the ways a gateway can, and checks each record.
func TestDriveClassifiesOutcomes(t *testing.T) {
	const n = 7
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Stream   bool `json:"stream"`
			Messages []struct {
				Content string `json:"content"`
			} `json:"messages"`
			MaxTokens int `json:"max_tokens"`
		}
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &body); err != nil || len(body.Messages) != 1 || body.MaxTokens != 3 {
			http.Error(w, fmt.Sprintf("bad body %s: %v", b, err), http.StatusBadRequest)
			return
		}
		w.Header().Set("X-Sim-Instance", "s1")
		i := int(r.Header.Get("X-Sluice-Priority")[1] - '0') // "p3" → 3
		sse := func(lines ...string) {
			w.Header().Set("Content-Type", "text/event-stream")
			for _, l := range lines {
				fmt.Fprintf(w, "%s\n\n", l)
				w.(http.Flusher).Flush()
			}
		}
		switch i {
		case 0:
			fmt.Fprint(w, `{"choices":[{"message":{"content":"a b c"}}]}`)
		case 1:
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"error":{"message":"full","type":"unavailable","code":"queue_full"}}`)
		case 2:
			sse(`data: {"choices":[{"delta":{"content":"a"}}]}`, `data: [DONE]`)
		case 3:
			sse(`data: {"choices":[{"delta":{"content":"a"}}]}`, `data: {"error":{"message":"upstream died","code":"upstream_error"}}`)
		case 4:
			sse(`data: {"choices":[{"delta":{"content":"a"}}]}`) // cut short
		case 5:
			<-r.Context().Done() // no answer before the plan's timeout
			return
		case 6:
			fmt.Fprint(w, `not json`)
		}
	}))
	defer srv.Close()

	recs, _, err := drive(context.Background(), plan{
		URL: srv.URL,
		// Enough arrivals at a high rate that the first n exist; the rest
		// are checked for count only.
		Phases:    []phase{{Duration: 200 * time.Millisecond, Rate: 200}},
		Seed:      5,
		MaxTokens: 3,
		// Long enough that only the request never answered times out,
		// however loaded the machine.
		Timeout: 5 * time.Second,
		Shape: func(i int) shape {
			return shape{Stream: i%n >= 2 && i%n <= 4, Priority: fmt.Sprintf("p%d", i%n)}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) < n {
		t.Fatalf("%d records, want at least %d", len(recs), n)
	}
	want := []struct {
		fail     string
		status   int
		code     string
		gotBytes bool
	}{
		{"", 200, "", true},
		{failStatus, 503, "queue_full", false},
		{"", 200, "", true},
		{failStreamErr, 200, "", true},
		{failTruncated, 200, "", true},
		{failTimeout, 0, "", false},
		{failBadBody, 200, "", true},
	}
	for i, r := range recs {
		w := want[i%n]
		if r.Fail != w.fail || r.Status != w.status || r.Code != w.code || r.GotBytes != w.gotBytes {
			t.Errorf("request %d: fail %q status %d code %q bytes %v; want %q %d %q %v",
				i, r.Fail, r.Status, r.Code, r.GotBytes, w.fail, w.status, w.code, w.gotBytes)
		}
		if i%n == 1 && !r.RetryAfter {
			t.Errorf("request %d: Retry-After not seen", i)
		}
		if r.Fail != failTimeout && r.Instance != "s1" {
			t.Errorf("request %d: instance %q", i, r.Instance)
		}
		if r.Latency <= 0 || (r.Fail == failTimeout && r.Latency < 150*time.Millisecond) {
			t.Errorf("request %d (%s): latency %v", i, r.Fail, r.Latency)
		}
	}
}

func TestDriveStopsWhenCanceled(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The server notices a client leaving only once the body is read.
		_, _ = io.Copy(io.Discard, r.Body)
		<-r.Context().Done()
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	recs, _, err := drive(ctx, plan{URL: srv.URL, Phases: []phase{{Duration: 10 * time.Second, Rate: 1000}}, Seed: 1})
	if err != context.Canceled {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	if len(recs) == 0 || len(recs) > 1000 {
		t.Fatalf("%d records after 100ms at 1000/s", len(recs))
	}
	for i, r := range recs {
		if r.Fail != failCanceled {
			t.Errorf("request %d: %q, want canceled", i, r.Fail)
		}
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-quick", "-scenarios", "kill, autoscale"})
	if err != nil {
		t.Fatal(err)
	}
	if o.out != "bench/.quick" || !o.scenarios["kill"] || !o.scenarios["autoscale"] || o.scenarios["overload"] {
		t.Fatalf("options %+v", o)
	}
	if _, err := parseFlags([]string{"-scenarios", "overload,chaos"}); err == nil || !strings.Contains(err.Error(), "chaos") {
		t.Fatalf("unknown scenario: err %v", err)
	}
	if o, err := parseFlags(nil); err != nil || o.out != "bench/results" || len(o.scenarios) != len(defaultScenarios) || o.scenarios["trace"] {
		t.Fatalf("defaults: %+v %v", o, err)
	}
}

// TestLoadAzureTrace scales a small trace in the Azure format: time, one
// request in keep, tokens.
func TestLoadAzureTrace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trace.csv")
	csv := "TIMESTAMP,ContextTokens,GeneratedTokens\n" +
		"2023-11-16 18:15:46.6805900,374,44\n" +
		"2023-11-16 18:15:50.9951690,396,109\n" +
		"2023-11-16 18:16:16.6805900,879,55\n" +
		"2023-11-16 18:16:17.0000000,91,3\n" +
		"2023-11-16 18:16:46.6805900,16,7\n"
	if err := os.WriteFile(path, []byte(csv), 0o600); err != nil {
		t.Fatal(err)
	}
	reqs, err := loadAzureTrace(path, 30, 2, 8)
	if err != nil {
		t.Fatal(err)
	}
	want := []traceRequest{{0, 46, 5}, {time.Second, 109, 6}, {2 * time.Second, 2, 1}}
	if !slices.Equal(reqs, want) {
		t.Errorf("scaled trace %+v, want %+v", reqs, want)
	}
	if err := os.WriteFile(path, []byte("TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,1,2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadAzureTrace(path, 30, 1, 1); err == nil {
		t.Error("a bad timestamp loaded")
	}
	// Offered concurrency: two requests of 20ms + 1.25 × 3 × 20ms = 95ms
	// of service in a 1s window.
	c := traceConcurrency([]traceRequest{{0, 0, 3}, {500 * time.Millisecond, 0, 3}}, time.Second, time.Second)
	if len(c) != 1 || c[0].V < 0.189 || c[0].V > 0.191 {
		t.Errorf("concurrency %+v, want 0.19", c)
	}
}
