package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
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
			time.Sleep(300 * time.Millisecond) // beyond the plan's timeout
			fmt.Fprint(w, `{"choices":[]}`)
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
		Timeout:   150 * time.Millisecond,
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
	if o, err := parseFlags(nil); err != nil || o.out != "bench/results" || len(o.scenarios) != len(allScenarios) {
		t.Fatalf("defaults: %+v %v", o, err)
	}
}
