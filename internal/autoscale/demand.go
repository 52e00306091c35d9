package autoscale

import (
	"math"
	"time"

	"github.com/sluice-ai/sluice/internal/config"
)

// Inputs are what the gateway knows about one pool's load at an instant.
// Demand turns them into the one number the Scaler sizes the pool for.
type Inputs struct {
	// Active is the requests in flight to the pool's replicas plus the
	// requests waiting in its queue (upstream.Pool.Active).
	Active int64
	// PendingJobs is the async jobs queued for the pool.
	PendingJobs int64
	// TokensInFlight is the prompt plus expected output tokens of the active
	// requests; 0 when the gateway does not count them.
	TokensInFlight int64
	// Replicas is what the replicas report on their /metrics (a
	// ReplicaScraper's Load); the zero value when they are not read.
	Replicas ReplicaLoad
}

// ReplicaLoad sums the vLLM gauges of a pool's replicas.
type ReplicaLoad struct {
	// Replicas is how many replicas' /metrics were read.
	Replicas int `json:"replicas"`
	// Running and Waiting sum vllm:num_requests_running and
	// vllm:num_requests_waiting: requests in the replicas' batches and in
	// their own queues.
	Running float64 `json:"running"`
	Waiting float64 `json:"waiting"`
	// KVCache sums vllm:kv_cache_usage_perc (vllm:gpu_cache_usage_perc
	// before vLLM v1), each 0 to 1.
	KVCache float64 `json:"kv_cache"`
	// TTFT is the TTFT quantile the replicas observed since the previous
	// read (vllm:time_to_first_token_seconds), 0 when no request finished
	// its prefill in between.
	TTFT time.Duration `json:"ttft"`
}

// Demand is a pool's demand in requests' worth of concurrency, the unit of
// target_concurrency: the requests in flight and waiting plus pending jobs,
// raised by each LLM signal cfg.Signals turns on:
//
//   - replica_queue adds that weight per request waiting inside a replica;
//   - kv_cache: at least the replicas' summed KV-cache usage / kv_cache
//     replicas' worth;
//   - tokens: at least tokens in flight / tokens replicas' worth.
//
// Each signal can only raise demand, as Kubernetes' HPA takes the largest of
// several metrics' recommendations: any one resource running out is reason
// enough for another replica. A nil cfg counts requests and jobs only.
func Demand(cfg *config.Autoscale, in Inputs) float64 {
	d := float64(max(in.Active, 0) + max(in.PendingJobs, 0))
	if cfg == nil {
		return d
	}
	sig, target := cfg.Signals, cfg.TargetConcurrency
	if !(target > 0) {
		target = 1
	}
	if sig.ReplicaQueue > 0 && in.Replicas.Waiting > 0 {
		d += sig.ReplicaQueue * in.Replicas.Waiting
	}
	if sig.KVCache > 0 && in.Replicas.KVCache > 0 {
		d = max(d, in.Replicas.KVCache/sig.KVCache*target)
	}
	if sig.Tokens > 0 && in.TokensInFlight > 0 {
		d = max(d, float64(in.TokensInFlight)/sig.Tokens*target)
	}
	if math.IsNaN(d) || math.IsInf(d, 0) {
		return 0
	}
	return d
}
