package console

import (
	"encoding/json"
	"math"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Stats is the body of GET /api/stats: cumulative counters and current
// gauges read from the registry at one instant. The page turns counters
// into rates, and histograms into quantiles, from the difference between
// two polls, as Prometheus's rate() and histogram_quantile() would.
type Stats struct {
	// Time is when the registry was read, in Unix milliseconds.
	Time  int64                 `json:"time"`
	Pools map[string]*PoolStats `json:"pools"`
	// Backends holds upstream attempts per pool and backend key: outcome
	// (HTTP status or error class) to count.
	Backends map[string]map[string]map[string]float64 `json:"backends"`
	Tenants  map[string]*TenantStats                  `json:"tenants"`
	// Jobs counts retained jobs by state.
	Jobs map[string]float64 `json:"jobs"`
	// TracingDropped counts spans never delivered to the collector.
	TracingDropped float64 `json:"tracing_dropped"`
}

// PoolStats is one pool's counters and gauges.
type PoolStats struct {
	// Requests counts responses by HTTP status.
	Requests map[string]float64 `json:"requests"`
	Duration *Histogram         `json:"duration,omitempty"`
	TTFT     *Histogram         `json:"ttft,omitempty"`
	// Tokens counts tokens by kind (prompt, completion).
	Tokens     map[string]float64 `json:"tokens"`
	QueueDepth float64            `json:"queue_depth"`
	Rejections float64            `json:"rejections"`
	Retries    float64            `json:"retries"`
	Desired    *float64           `json:"desired,omitempty"`
	Ready      float64            `json:"ready"`
}

// Histogram is a cumulative histogram: Buckets[i] counts observations <=
// Bounds[i]. The +Inf bucket is left out (JSON has no infinity); Count is
// its count.
type Histogram struct {
	Bounds  []float64 `json:"bounds"`
	Buckets []float64 `json:"buckets"`
	Count   float64   `json:"count"`
	Sum     float64   `json:"sum"`
}

// TenantStats is one tenant's usage and limits.
type TenantStats struct {
	// Tokens counts tokens by kind.
	Tokens map[string]float64 `json:"tokens"`
	// Limited counts 429s by the limit that refused (rpm, tpm,
	// concurrency).
	Limited map[string]float64 `json:"limited"`
	Limits  *TenantLimits      `json:"limits,omitempty"`
}

// StatsHandler serves Stats read from g; tenants, when not nil, adds each
// tenant's configured limits.
func StatsHandler(g prometheus.Gatherer, tenants func() []TenantLimits) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s, err := Collect(g, tenants)
		if err != nil {
			http.Error(w, "gather metrics: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(s)
	})
}

// Collect reads Stats from g.
func Collect(g prometheus.Gatherer, tenants func() []TenantLimits) (*Stats, error) {
	mfs, err := g.Gather()
	if err != nil && len(mfs) == 0 {
		return nil, err
	}
	s := &Stats{
		Time:     time.Now().UnixMilli(),
		Pools:    map[string]*PoolStats{},
		Backends: map[string]map[string]map[string]float64{},
		Tenants:  map[string]*TenantStats{},
		Jobs:     map[string]float64{},
	}
	pool := func(name string) *PoolStats {
		p := s.Pools[name]
		if p == nil {
			p = &PoolStats{Requests: map[string]float64{}, Tokens: map[string]float64{}}
			s.Pools[name] = p
		}
		return p
	}
	tenant := func(name string) *TenantStats {
		t := s.Tenants[name]
		if t == nil {
			t = &TenantStats{Tokens: map[string]float64{}, Limited: map[string]float64{}}
			s.Tenants[name] = t
		}
		return t
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			l := labels(m)
			switch mf.GetName() {
			case "sluice_requests_total":
				if l["pool"] != "" {
					pool(l["pool"]).Requests[l["code"]] += value(m)
				}
			case "sluice_request_duration_seconds":
				pool(l["pool"]).Duration = merge(pool(l["pool"]).Duration, m.GetHistogram())
			case "sluice_time_to_first_token_seconds":
				pool(l["pool"]).TTFT = merge(pool(l["pool"]).TTFT, m.GetHistogram())
			case "sluice_tokens_total":
				pool(l["pool"]).Tokens[l["kind"]] += value(m)
				if l["tenant"] != "" {
					tenant(l["tenant"]).Tokens[l["kind"]] += value(m)
				}
			case "sluice_queue_depth":
				pool(l["pool"]).QueueDepth += value(m)
			case "sluice_queue_rejections_total":
				pool(l["pool"]).Rejections += value(m)
			case "sluice_retries_total":
				pool(l["pool"]).Retries += value(m)
			case "sluice_autoscaler_desired_replicas":
				v := value(m)
				pool(l["pool"]).Desired = &v
			case "sluice_replicas":
				if l["state"] == "healthy" {
					pool(l["pool"]).Ready += value(m)
				}
			case "sluice_upstream_requests_total":
				bp := s.Backends[l["pool"]]
				if bp == nil {
					bp = map[string]map[string]float64{}
					s.Backends[l["pool"]] = bp
				}
				b := bp[l["backend"]]
				if b == nil {
					b = map[string]float64{}
					bp[l["backend"]] = b
				}
				b[l["code"]] += value(m)
			case "sluice_ratelimited_total":
				tenant(l["tenant"]).Limited[l["limit"]] += value(m)
			case "sluice_jobs":
				s.Jobs[l["state"]] += value(m)
			case "sluice_tracing_spans_dropped_total":
				s.TracingDropped += value(m)
			}
		}
	}
	if tenants != nil {
		for _, tl := range tenants() {
			tenant(tl.Name).Limits = &tl
		}
	}
	return s, nil
}

func labels(m *dto.Metric) map[string]string {
	out := make(map[string]string, len(m.GetLabel()))
	for _, lp := range m.GetLabel() {
		out[lp.GetName()] = lp.GetValue()
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Untyped != nil:
		return m.GetUntyped().GetValue()
	}
	return 0
}

// merge adds h into acc (series of one pool with other labels, such as
// model, add up); bounds must agree, else the later histogram is skipped.
func merge(acc *Histogram, h *dto.Histogram) *Histogram {
	if h == nil {
		return acc
	}
	var bounds, counts []float64
	for _, b := range h.GetBucket() {
		if math.IsInf(b.GetUpperBound(), +1) {
			continue
		}
		bounds = append(bounds, b.GetUpperBound())
		counts = append(counts, float64(b.GetCumulativeCount()))
	}
	if acc == nil {
		return &Histogram{Bounds: bounds, Buckets: counts, Count: float64(h.GetSampleCount()), Sum: h.GetSampleSum()}
	}
	if len(acc.Bounds) != len(bounds) {
		return acc
	}
	for i := range counts {
		if acc.Bounds[i] != bounds[i] {
			return acc
		}
		acc.Buckets[i] += counts[i]
	}
	acc.Count += float64(h.GetSampleCount())
	acc.Sum += h.GetSampleSum()
	return acc
}
