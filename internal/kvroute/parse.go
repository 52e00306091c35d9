package kvroute

import (
	"bytes"
	"errors"
	"fmt"
	"math"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Load is what a replica's /metrics says about its load.
type Load struct {
	// Engine is the server the metric names came from: vllm, sglang or tgi.
	Engine string `json:"engine"`
	// Waiting is the number of requests queued in the engine, not yet
	// scheduled (summed over the engine's series, e.g. data-parallel ranks).
	Waiting float64 `json:"waiting"`
	// Running is the number of requests in the engine's running batch.
	Running float64 `json:"running"`
	// KVUsage is the fraction of the KV cache in use, in [0, 1] (averaged
	// over the engine's series); meaningful only when HasKV.
	KVUsage float64 `json:"kv_usage"`
	// HasKV reports whether the engine exports a KV usage (TGI does not).
	HasKV bool `json:"has_kv"`
}

// engineNames are the series each engine exports for Load. Names verified
// against the engines' documentation: vLLM (v1 keeps
// vllm:gpu_cache_usage_perc as a deprecated alias of
// vllm:kv_cache_usage_perc; both are fractions despite the name), SGLang
// (--enable-metrics; token_usage is the KV pool's used fraction) and TGI
// (queue and current batch; no KV usage).
var engineNames = []struct {
	engine, waiting, running string
	kv                       []string // in order of preference
}{
	{"vllm", "vllm:num_requests_waiting", "vllm:num_requests_running", []string{"vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"}},
	{"sglang", "sglang:num_queue_reqs", "sglang:num_running_reqs", []string{"sglang:token_usage"}},
	{"tgi", "tgi_queue_size", "tgi_batch_current_size", nil},
}

// wanted are the metric names the parser keeps.
var wanted = func() map[string]bool {
	m := make(map[string]bool)
	for _, e := range engineNames {
		m[e.waiting], m[e.running] = true, true
		for _, k := range e.kv {
			m[k] = true
		}
	}
	return m
}()

// Parse errors, as the scrape error counter's reason label names them.
var (
	// ErrNoLoadMetrics means the exposition parsed but holds none of the
	// series Load reads.
	ErrNoLoadMetrics = errors.New("no known load metrics")
	// ErrBadMetrics means the exposition did not parse as Prometheus text.
	ErrBadMetrics = errors.New("malformed metrics")
)

// ParseLoad reads a Prometheus text exposition and returns the load it
// reports. Only the lines of the series Load reads are parsed (with
// expfmt), so a replica whose exposition has an unrelated malformed line
// is still read, and a large exposition costs one pass over its lines.
// Values that are not finite or are negative are ignored; a KV usage above
// 1 is taken as 1.
func ParseLoad(text []byte) (Load, error) {
	var kept bytes.Buffer
	for len(text) > 0 {
		line := text
		if i := bytes.IndexByte(text, '\n'); i >= 0 {
			line, text = text[:i+1], text[i+1:]
		} else {
			text = nil
		}
		if name := lineMetric(line); name != "" && wanted[name] {
			kept.Write(line)
			if line[len(line)-1] != '\n' {
				kept.WriteByte('\n')
			}
		}
	}
	if kept.Len() == 0 {
		return Load{}, ErrNoLoadMetrics
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(&kept)
	if err != nil {
		return Load{}, fmt.Errorf("%w: %v", ErrBadMetrics, err)
	}
	for _, e := range engineNames {
		w, okW := sum(fams[e.waiting])
		r, okR := sum(fams[e.running])
		if !okW && !okR {
			continue
		}
		l := Load{Engine: e.engine, Waiting: w, Running: r}
		for _, k := range e.kv {
			if u, ok := mean(fams[k]); ok {
				l.KVUsage, l.HasKV = min(u, 1), true
				break
			}
		}
		return l, nil
	}
	return Load{}, ErrNoLoadMetrics
}

// lineMetric returns the metric name a line is about: the sample's name,
// or the name a # HELP or # TYPE comment documents; "" for other lines.
func lineMetric(line []byte) string {
	line = bytes.TrimLeft(line, " \t")
	if bytes.HasPrefix(line, []byte("#")) {
		f := bytes.Fields(line[1:])
		if len(f) >= 2 && (string(f[0]) == "HELP" || string(f[0]) == "TYPE") {
			return string(f[1])
		}
		return ""
	}
	end := bytes.IndexAny(line, "{ \t\r\n")
	if end < 0 {
		end = len(line)
	}
	return string(line[:end])
}

func value(m *dto.Metric) (float64, bool) {
	var v float64
	switch {
	case m.Gauge != nil:
		v = m.Gauge.GetValue()
	case m.Counter != nil:
		v = m.Counter.GetValue()
	case m.Untyped != nil:
		v = m.Untyped.GetValue()
	default:
		return 0, false
	}
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return 0, false
	}
	return v, true
}

func sum(f *dto.MetricFamily) (float64, bool) {
	if f == nil {
		return 0, false
	}
	var s float64
	ok := false
	for _, m := range f.Metric {
		if v, good := value(m); good {
			s += v
			ok = true
		}
	}
	return s, ok
}

func mean(f *dto.MetricFamily) (float64, bool) {
	if f == nil {
		return 0, false
	}
	var s float64
	n := 0
	for _, m := range f.Metric {
		if v, good := value(m); good {
			s += v
			n++
		}
	}
	if n == 0 {
		return 0, false
	}
	return s / float64(n), true
}
