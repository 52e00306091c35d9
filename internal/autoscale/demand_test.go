package autoscale

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/sim"
)

func TestDemand(t *testing.T) {
	base := config.DefaultAutoscale() // target 4, every signal off
	with := func(f func(*config.Autoscale)) *config.Autoscale {
		c := base
		f(&c)
		return &c
	}
	all := with(func(c *config.Autoscale) {
		c.Signals = config.Signals{ReplicaQueue: 0.5, KVCache: 0.8, Tokens: 8000}
	})
	tests := []struct {
		name string
		cfg  *config.Autoscale
		in   Inputs
		want float64
	}{
		{"nil config: requests and jobs", nil, Inputs{Active: 5, PendingJobs: 2, Replicas: ReplicaLoad{Waiting: 9}}, 7},
		{"defaults ignore replica signals", &base, Inputs{Active: 5, TokensInFlight: 1e6, Replicas: ReplicaLoad{Waiting: 9, KVCache: 3}}, 5},
		{"negative counts are zero", &base, Inputs{Active: -3, PendingJobs: -1}, 0},
		{"replica queue adds its weight", all, Inputs{Active: 6, Replicas: ReplicaLoad{Waiting: 4}}, 8},
		// Two replicas at 0.96 and 0.96 KV usage = 1.92 / 0.8 = 2.4
		// replicas' worth = 9.6 at target 4, above the 3 requests.
		{"kv cache raises demand", all, Inputs{Active: 3, Replicas: ReplicaLoad{Replicas: 2, KVCache: 1.92}}, 9.6},
		{"kv cache below target does not lower it", all, Inputs{Active: 10, Replicas: ReplicaLoad{Replicas: 2, KVCache: 0.4}}, 10},
		// 20000 tokens / 8000 per replica = 2.5 replicas = 10 at target 4.
		{"tokens in flight raise demand", all, Inputs{Active: 2, TokensInFlight: 20000}, 10},
		{"largest signal wins", all, Inputs{Active: 2, TokensInFlight: 20000, Replicas: ReplicaLoad{KVCache: 2.4}}, 12},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Demand(tc.cfg, tc.in); math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("Demand = %v, want %v", got, tc.want)
			}
		})
	}
}

// startSim runs a real simulated vLLM replica on a loopback port.
func startSim(t *testing.T, maxRunning int) string {
	t.Helper()
	cfg := sim.DefaultConfig()
	cfg.MaxRunning = maxRunning
	cfg.ITL = 20 * time.Millisecond
	cfg.TTFT = 200 * time.Millisecond
	s, err := sim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return srv.URL
}

func chat(ctx context.Context, base string, maxTokens int) error {
	body := fmt.Sprintf(`{"model":"sim-llm","messages":[{"role":"user","content":"hello there"}],"max_tokens":%d}`, maxTokens)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// TestScraperReadsRealReplicas sends load to two real sims and reads what
// their /metrics say: running and waiting requests, KV-cache usage, and the
// TTFT of the requests that finished between two reads.
func TestScraperReadsRealReplicas(t *testing.T) {
	a, b := startSim(t, 2), startSim(t, 2)
	down := httptest.NewServer(http.NotFoundHandler())
	defer down.Close()
	s := NewScraper(ScraperOptions{Targets: func() []string { return []string{a, b, down.URL} }, Quantile: 0.5})
	ctx := t.Context()

	first := s.Scrape(ctx)
	if first.Replicas != 2 || first.Running != 0 || first.Waiting != 0 || first.TTFT != 0 {
		t.Fatalf("idle replicas read %+v, want 2 replicas with nothing running", first)
	}
	// Five long requests at a replica that runs two at a time: two run,
	// three wait.
	var wg sync.WaitGroup
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range 5 {
		wg.Go(func() { _ = chat(lctx, a, 200) })
	}
	var busy ReplicaLoad
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if busy = s.Scrape(ctx); busy.Running == 2 && busy.Waiting == 3 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if busy.Running != 2 || busy.Waiting != 3 || !(busy.KVCache > 0) {
		t.Fatalf("busy replicas read %+v, want 2 running, 3 waiting and some KV cache in use", busy)
	}
	cancel()
	wg.Wait()

	// Requests that finish their prefill between two reads give a TTFT:
	// the sim's is 200ms plus prefill, so the median is in its bucket.
	s.Scrape(ctx)
	for range 4 {
		if err := chat(ctx, b, 1); err != nil {
			t.Fatal(err)
		}
	}
	got := s.Scrape(ctx)
	if got.TTFT < 150*time.Millisecond || got.TTFT > 300*time.Millisecond {
		t.Errorf("TTFT = %v, want about the sim's 200ms", got.TTFT)
	}
	if again := s.Scrape(ctx); again.TTFT != 0 {
		t.Errorf("TTFT with no request since the last read = %v, want 0", again.TTFT)
	}
}

func TestParseReplicaMetrics(t *testing.T) {
	in := `# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="a"} 3
vllm:num_requests_running{model_name="b"} 1
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="a"} 2
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="a"} 0.75
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{le="0.1"} 1
vllm:time_to_first_token_seconds_bucket{le="0.5"} 3
vllm:time_to_first_token_seconds_bucket{le="+Inf"} 4
vllm:time_to_first_token_seconds_sum 1.9
vllm:time_to_first_token_seconds_count 4
`
	m, err := ParseReplicaMetrics(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if m.Running != 4 || m.Waiting != 2 || m.KVCache != 0.75 || len(m.TTFT) != 3 || m.TTFT[1].Count != 3 {
		t.Errorf("parsed %+v", m)
	}
	// Median of 4: rank 2, the 2nd of 2 observations in (0.1, 0.5]: 0.3.
	if q, ok := histogramQuantile(0.5, m.TTFT); !ok || math.Abs(q-0.3) > 1e-9 {
		t.Errorf("median = %v, %v; want 0.3", q, ok)
	}
	if q, _ := histogramQuantile(0.99, m.TTFT); q != 0.5 {
		t.Errorf("p99 in the +Inf bucket = %v, want the highest finite bound 0.5", q)
	}
	if _, err := ParseReplicaMetrics(strings.NewReader("vllm:num_requests_running{ 3\n")); err == nil {
		t.Error("malformed exposition parsed without error")
	}
}

func FuzzParseReplicaMetrics(f *testing.F) {
	f.Add([]byte("vllm:num_requests_waiting 2\n"))
	f.Add([]byte("# TYPE vllm:time_to_first_token_seconds histogram\nvllm:time_to_first_token_seconds_bucket{le=\"NaN\"} 1\n"))
	f.Add([]byte("vllm:kv_cache_usage_perc{a=\"b\"} +Inf\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseReplicaMetrics(bytes.NewReader(b))
		if err != nil {
			return
		}
		if m.Running < 0 || m.Waiting < 0 || m.KVCache < 0 || math.IsNaN(m.Running+m.Waiting+m.KVCache) {
			t.Fatalf("negative or NaN sums %+v", m)
		}
		for i := 1; i < len(m.TTFT); i++ {
			if !(m.TTFT[i-1].UpperBound < m.TTFT[i].UpperBound) {
				t.Fatalf("buckets out of order: %+v", m.TTFT)
			}
		}
		if q, ok := histogramQuantile(0.9, m.TTFT); ok && (math.IsNaN(q) || q < 0 && m.TTFT[0].UpperBound >= 0) {
			t.Fatalf("quantile %v of %+v", q, m.TTFT)
		}
	})
}
