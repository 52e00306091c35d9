package main

import (
	"context"
	"encoding/json"
	"math"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/sluice-ai/sluice/internal/bench"
)

func TestMedian(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	}
	for _, tt := range tests {
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestBestOf(t *testing.T) {
	tests := []struct {
		in     []float64
		higher bool
		want   float64
	}{
		{nil, true, 0},
		{[]float64{3, 9, 5}, true, 9},
		{[]float64{3, 9, 5}, false, 3},
	}
	for _, tt := range tests {
		if got := bestOf(tt.in, tt.higher); got != tt.want {
			t.Errorf("bestOf(%v, %v) = %v, want %v", tt.in, tt.higher, got, tt.want)
		}
	}
}

// resultWith returns a result whose OK latencies are 1..ok milliseconds.
func resultWith(ok, failed int64) *bench.Result {
	h := hdrhistogram.New(1, int64(time.Hour/time.Microsecond), 3)
	for i := int64(1); i <= ok; i++ {
		_ = h.RecordValue(i * 1000)
	}
	return &bench.Result{
		OK: ok, Failed: failed, LatencyHistogram: h,
		Latency: bench.Summary{Count: ok, Min: time.Millisecond, Max: time.Duration(ok) * time.Millisecond},
	}
}

func TestP99WithFailures(t *testing.T) {
	tests := []struct {
		name       string
		ok, failed int64
		want       float64 // ms; +Inf for none
	}{
		{"no failures", 1000, 0, 990},
		// 1000 requests of which 5 failed: the 990th fastest is still a
		// success.
		{"few failures", 995, 5, 990},
		{"exactly 1% failed", 990, 10, 990},
		{"over 1% failed", 989, 11, math.Inf(1)},
		{"nothing succeeded", 0, 10, math.Inf(1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := p99WithFailures(resultWith(tt.ok, tt.failed))
			if math.IsInf(tt.want, 1) {
				if !math.IsInf(got, 1) {
					t.Fatalf("got %v, want +Inf", got)
				}
				return
			}
			// The histogram keeps 3 significant digits.
			if math.Abs(got-tt.want) > tt.want*1e-3 {
				t.Fatalf("got %v ms, want %v ms", got, tt.want)
			}
		})
	}
}

func TestJSONFloat(t *testing.T) {
	b, err := json.Marshal(struct {
		A, B, C jsonFloat
	}{jsonFloat(math.Inf(1)), 1.23456789, 2})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"A":null,"B":1.2346,"C":2}`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestNiceTicks(t *testing.T) {
	tests := []struct {
		lo, hi float64
		want   string
	}{
		{0, 2600, "0 500 1000 1500 2000 2500"},
		{-0.9, 0.7, "-0.8 -0.6 -0.4 -0.2 0.0 0.2 0.4 0.6"},
		{0, 1.2, "0.0 0.2 0.4 0.6 0.8 1.0 1.2"},
		{1, 1, ""},
	}
	for _, tt := range tests {
		var got []string
		for _, tk := range niceTicks(tt.lo, tt.hi) {
			got = append(got, tk.Label)
		}
		if s := strings.Join(got, " "); s != tt.want {
			t.Errorf("niceTicks(%v, %v) = %q, want %q", tt.lo, tt.hi, s, tt.want)
		}
	}
}

func TestRotate(t *testing.T) {
	in := []string{"a", "b", "c"}
	for round, want := range []string{"abc", "bca", "cab", "abc"} {
		got := ""
		for _, s := range rotate(in, round) {
			got += s
		}
		if got != want {
			t.Errorf("round %d: %s, want %s", round, got, want)
		}
	}
}

func TestCapacity(t *testing.T) {
	// 20ms + 64×50µs prefill, then 31 tokens at 5ms×(1+0.5×7/8).
	wantService := 20*time.Millisecond + 64*50*time.Microsecond + time.Duration(31*5*1.4375*float64(time.Millisecond))
	if got := serviceTime(balanceSim, 64, 32); got != wantService {
		t.Errorf("service time %v, want %v", got, wantService)
	}
	if got, want := capacity(balanceSim, 64, 32), 8/wantService.Seconds(); math.Abs(got-want) > 1e-9 {
		t.Errorf("capacity %v, want %v", got, want)
	}
	slow := balanceSim
	slow.Slowdown = 8
	if got, want := capacity(slow, 64, 32), capacity(balanceSim, 64, 32)/8; math.Abs(got-want) > 1e-6 {
		t.Errorf("slow capacity %v, want %v", got, want)
	}
}

// TestBackendAnswersBench checks that the overhead backend's answer is one
// the load generator counts as a success, so the overhead scenario
// measures successes.
func TestBackendAnswersBench(t *testing.T) {
	srv := httptest.NewServer(backendHandler(time.Second))
	defer srv.Close()
	r, err := bench.Run(context.Background(), bench.Config{
		URL: srv.URL, Model: "sim-llm", Concurrency: 2, Duration: 100 * time.Millisecond, Seed: 1,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.OK == 0 || r.Failed != 0 {
		t.Fatalf("ok %d failed %d (%v %v)", r.OK, r.Failed, r.FailedByStatus, r.FailedByKind)
	}
	if r.OutputTokens != 7*r.OK {
		t.Errorf("output tokens %d, want the usage's 7 per request", r.OutputTokens)
	}
}
