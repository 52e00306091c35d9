package kvroute

import (
	"errors"
	"math"
	"strings"
	"testing"
)

const vllmText = `# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="llama"} 12.0
vllm:num_requests_running{engine="1",model_name="llama"} 3.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="llama"} 4.0
vllm:num_requests_waiting{engine="1",model_name="llama"} 1.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="llama"} 0.5
vllm:kv_cache_usage_perc{engine="1",model_name="llama"} 0.7
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{le="0.001",model_name="llama"} 0.0
vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="llama"} 9.0
vllm:time_to_first_token_seconds_count{model_name="llama"} 9.0
vllm:time_to_first_token_seconds_sum{model_name="llama"} 1.5
`

func TestParseLoad(t *testing.T) {
	for _, tc := range []struct {
		name string
		text string
		want Load
		err  error
	}{
		{"vllm v1", vllmText, Load{Engine: "vllm", Waiting: 5, Running: 15, KVUsage: 0.6, HasKV: true}, nil},
		{"vllm v0 names", "vllm:num_requests_waiting 2\nvllm:num_requests_running 1\nvllm:gpu_cache_usage_perc 0.25\n",
			Load{Engine: "vllm", Waiting: 2, Running: 1, KVUsage: 0.25, HasKV: true}, nil},
		{"both kv names prefer the new", "vllm:num_requests_waiting 0\nvllm:gpu_cache_usage_perc 0.9\nvllm:kv_cache_usage_perc 0.1\n",
			Load{Engine: "vllm", KVUsage: 0.1, HasKV: true}, nil},
		{"sglang", "# TYPE sglang:num_queue_reqs gauge\nsglang:num_queue_reqs{model_name=\"m\"} 7\nsglang:num_running_reqs{model_name=\"m\"} 30\nsglang:token_usage{model_name=\"m\"} 0.28\n",
			Load{Engine: "sglang", Waiting: 7, Running: 30, KVUsage: 0.28, HasKV: true}, nil},
		{"tgi", "# TYPE tgi_queue_size gauge\ntgi_queue_size 3\n# TYPE tgi_batch_current_size gauge\ntgi_batch_current_size 8\n",
			Load{Engine: "tgi", Waiting: 3, Running: 8}, nil},
		{"unrelated garbage lines", "go_gc{{{ bad\nvllm:num_requests_waiting 1\n\x00\xff\nvllm:num_requests_running 2", Load{Engine: "vllm", Waiting: 1, Running: 2}, nil},
		{"usage above one", "vllm:num_requests_waiting 0\nvllm:kv_cache_usage_perc 1.5\n", Load{Engine: "vllm", KVUsage: 1, HasKV: true}, nil},
		{"NaN and negative ignored", "vllm:num_requests_waiting NaN\nvllm:num_requests_running -3\nvllm:num_requests_running{a=\"b\"} 2\nvllm:kv_cache_usage_perc +Inf\n",
			Load{Engine: "vllm", Running: 2}, nil},
		{"no known metrics", "process_cpu_seconds_total 12\n", Load{}, ErrNoLoadMetrics},
		{"empty", "", Load{}, ErrNoLoadMetrics},
		{"html", "<html><body>not found</body></html>", Load{}, ErrNoLoadMetrics},
		{"malformed value", "vllm:num_requests_waiting twelve\n", Load{}, ErrBadMetrics},
		{"malformed labels", "vllm:num_requests_waiting{a=b} 1\n", Load{}, ErrBadMetrics},
		{"type clash", "# TYPE vllm:num_requests_waiting gauge\n# TYPE vllm:num_requests_waiting counter\nvllm:num_requests_waiting 1\n", Load{}, ErrBadMetrics},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseLoad([]byte(tc.text))
			if !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if math.Abs(got.KVUsage-tc.want.KVUsage) > 1e-9 {
				t.Errorf("kv usage %v, want %v", got.KVUsage, tc.want.KVUsage)
			}
			got.KVUsage = tc.want.KVUsage
			if got != tc.want {
				t.Errorf("ParseLoad = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func FuzzParseLoad(f *testing.F) {
	f.Add([]byte(vllmText))
	f.Add([]byte("sglang:num_queue_reqs 1\nsglang:token_usage 0.5\n"))
	f.Add([]byte("tgi_queue_size{x=\"\\\"\"} 1e3\n# TYPE tgi_queue_size gauge\n"))
	f.Add([]byte("vllm:num_requests_waiting{a=\"1\",} 1 123456\nvllm:num_requests_waiting{a=\"1\"} 2\n"))
	f.Add([]byte(strings.Repeat("vllm:kv_cache_usage_perc 0.1\n", 3)))
	f.Fuzz(func(t *testing.T, text []byte) {
		l, err := ParseLoad(text)
		if err != nil {
			if l != (Load{}) {
				t.Fatalf("error %v with a load %+v", err, l)
			}
			if !errors.Is(err, ErrNoLoadMetrics) && !errors.Is(err, ErrBadMetrics) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		for _, v := range []float64{l.Waiting, l.Running, l.KVUsage} {
			if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
				t.Fatalf("bad value in %+v", l)
			}
		}
		if l.KVUsage > 1 || (!l.HasKV && l.KVUsage != 0) || l.Engine == "" {
			t.Fatalf("bad load %+v", l)
		}
	})
}
