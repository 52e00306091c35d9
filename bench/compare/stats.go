package main

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/sluice-ai/sluice/internal/bench"
)

// median returns the median of vs, the mean of the middle two for an even
// count, or 0 for none.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// bestOf returns the best of a measurement's rounds: the highest when
// higher is better, else the lowest; 0 for none. Other work on a shared
// machine can only slow a round down, never speed it up, so the least
// disturbed round is the closest to what the target itself costs; the
// baseline is treated the same way.
func bestOf(vs []float64, higherIsBetter bool) float64 {
	if len(vs) == 0 {
		return 0
	}
	if higherIsBetter {
		return slices.Max(vs)
	}
	return slices.Min(vs)
}

// ms converts d to float milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// dist is a latency distribution in milliseconds.
type dist struct {
	P50 float64 `json:"p50_ms"`
	P90 float64 `json:"p90_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

func distOf(s bench.Summary) dist {
	return dist{P50: ms(s.P50), P90: ms(s.P90), P99: ms(s.P99), Max: ms(s.Max)}
}

// p99WithFailures is the 99th percentile of a run's latency with every
// request that did not succeed (failed or dropped) counted as infinitely
// slow: a run that loses more than 1% of its requests has no finite p99,
// which is reported as +Inf. Counting only the successes would reward a
// balancer for letting requests time out.
func p99WithFailures(r *bench.Result) float64 {
	lost := r.Failed + r.Dropped
	total := r.OK + lost
	if total == 0 || r.OK == 0 {
		return math.Inf(1)
	}
	rank := int64(math.Ceil(0.99 * float64(total)))
	if rank > r.OK {
		return math.Inf(1)
	}
	q := 100 * float64(rank) / float64(r.OK)
	v := time.Duration(r.LatencyHistogram.ValueAtQuantile(q)) * time.Microsecond
	return ms(min(max(v, r.Latency.Min), r.Latency.Max))
}

// jsonFloat is a float64 that encodes +Inf as null (JSON has no infinity)
// and keeps 4 decimals.
type jsonFloat float64

// MarshalJSON implements json.Marshaler.
func (f jsonFloat) MarshalJSON() ([]byte, error) {
	v := float64(f)
	if math.IsInf(v, 0) || math.IsNaN(v) {
		return []byte("null"), nil
	}
	return strconv.AppendFloat(nil, math.Round(v*1e4)/1e4, 'f', -1, 64), nil
}

// UnmarshalJSON implements json.Unmarshaler: null is +Inf.
func (f *jsonFloat) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*f = jsonFloat(math.Inf(1))
		return nil
	}
	v, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("number %q: %w", b, err)
	}
	*f = jsonFloat(v)
	return nil
}
