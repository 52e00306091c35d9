package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestDueAt(t *testing.T) {
	start := time.Unix(1000, 0)
	for _, tt := range []struct {
		rate float64
		i    int64
		want time.Duration
	}{{1000, 0, 0}, {1000, 1, time.Millisecond}, {3, 2, 666666666}, {20000, 40000, 2 * time.Second}} {
		if got := dueAt(start, tt.rate, tt.i).Sub(start); got != tt.want {
			t.Errorf("dueAt(rate %v, %d) = +%v, want +%v", tt.rate, tt.i, got, tt.want)
		}
	}
}

// TestConstLoad runs a short constant-rate load against the backend and
// against a server that fails every request: every request due in the
// measured interval is counted once, as OK or failed.
func TestConstLoad(t *testing.T) {
	ok := httptest.NewServer(backendHandler(time.Second))
	defer ok.Close()
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusBadGateway)
	}))
	defer bad.Close()
	for _, tt := range []struct {
		name     string
		url      string
		wantOK   bool
		firstErr string
	}{{"ok", ok.URL, true, ""}, {"failing", bad.URL, false, "status 502"}} {
		t.Run(tt.name, func(t *testing.T) {
			load := &constLoad{
				Addr: strings.TrimPrefix(tt.url, "http://"), Request: smallChat,
				Rate: 1000, Conns: 8, Warmup: 50 * time.Millisecond, Duration: 200 * time.Millisecond, Timeout: 10 * time.Second,
			}
			r, err := load.run(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if r.Due != 200 || r.OK+r.Failed != r.Due {
				t.Fatalf("due %d, ok %d, failed %d: want 200 due, each counted once", r.Due, r.OK, r.Failed)
			}
			if tt.wantOK {
				if r.Failed != 0 || r.Latency.TotalCount() != r.OK || r.Achieved() <= 0 || r.Percentile(99) <= 0 {
					t.Errorf("ok %d failed %d (%v), latencies %d, achieved %v", r.OK, r.Failed, r.FirstError, r.Latency.TotalCount(), r.Achieved())
				}
				if r.Elapsed < load.Duration {
					t.Errorf("elapsed %v, shorter than the duration", r.Elapsed)
				}
				return
			}
			if r.OK != 0 || r.FirstError == nil || r.FirstError.Error() != tt.firstErr {
				t.Errorf("ok %d, first error %v, want none ok and %q", r.OK, r.FirstError, tt.firstErr)
			}
		})
	}
}

// TestConstLoadBehind checks that a target too slow for the rate does not
// stretch the run: requests that fell due longer than the timeout ago fail
// unsent.
func TestConstLoadBehind(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond)
	}))
	defer slow.Close()
	load := &constLoad{
		Addr: strings.TrimPrefix(slow.URL, "http://"), Request: smallChat,
		Rate: 2000, Conns: 1, Duration: 500 * time.Millisecond, Timeout: 100 * time.Millisecond,
	}
	r, err := load.run(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if r.Due != 1000 || r.OK+r.Failed != r.Due || r.Failed == 0 {
		t.Fatalf("due %d ok %d failed %d", r.Due, r.OK, r.Failed)
	}
	// One connection at 20 ms a request sends at most ~30 in the run's
	// 0.6 s; the rest fail unsent.
	if r.OK > 100 {
		t.Errorf("%d answered, more than one slow connection can", r.OK)
	}
}
