package autoscale

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The vLLM metric names the scraper reads.
const (
	metricRunning    = "vllm:num_requests_running"
	metricWaiting    = "vllm:num_requests_waiting"
	metricKVCache    = "vllm:kv_cache_usage_perc"
	metricKVCacheOld = "vllm:gpu_cache_usage_perc" // vLLM before v1
	metricTTFT       = "vllm:time_to_first_token_seconds"
)

// maxMetricsBody bounds one /metrics answer; vLLM's is tens of KiB.
const maxMetricsBody = 4 << 20

// ReplicaMetrics is what one replica's /metrics says.
type ReplicaMetrics struct {
	Running, Waiting, KVCache float64
	// TTFT is the cumulative vllm:time_to_first_token_seconds histogram:
	// upper bounds in seconds, ascending, with their cumulative counts.
	TTFT []HistogramBucket
}

// HistogramBucket is one cumulative bucket of a histogram.
type HistogramBucket struct {
	UpperBound float64
	Count      uint64
}

// ParseReplicaMetrics reads the vLLM gauges and the TTFT histogram from a
// Prometheus text exposition. Series of the same name (one per model or
// engine) are summed. A metric that is absent reads 0.
func ParseReplicaMetrics(r io.Reader) (ReplicaMetrics, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(io.LimitReader(r, maxMetricsBody))
	if err != nil {
		return ReplicaMetrics{}, fmt.Errorf("parse metrics: %w", err)
	}
	var m ReplicaMetrics
	m.Running = sumGauge(fams[metricRunning])
	m.Waiting = sumGauge(fams[metricWaiting])
	m.KVCache = sumGauge(fams[metricKVCache])
	if fams[metricKVCache] == nil {
		m.KVCache = sumGauge(fams[metricKVCacheOld])
	}
	if f := fams[metricTTFT]; f != nil {
		for _, mt := range f.GetMetric() {
			m.TTFT = addBuckets(m.TTFT, mt.GetHistogram().GetBucket())
		}
	}
	return m, nil
}

func sumGauge(f *dto.MetricFamily) float64 {
	var s float64
	for _, m := range f.GetMetric() {
		var v float64
		switch {
		case m.Gauge != nil:
			v = m.GetGauge().GetValue()
		case m.Untyped != nil:
			v = m.GetUntyped().GetValue()
		case m.Counter != nil:
			v = m.GetCounter().GetValue()
		}
		if v > 0 && !math.IsInf(v, 1) {
			s += v
		}
	}
	return s
}

// addBuckets adds the cumulative buckets bs into acc, matching on upper
// bound; acc stays sorted.
func addBuckets(acc []HistogramBucket, bs []*dto.Bucket) []HistogramBucket {
	for _, b := range bs {
		ub := b.GetUpperBound()
		if math.IsNaN(ub) {
			continue
		}
		i, found := slices.BinarySearchFunc(acc, ub, func(h HistogramBucket, t float64) int {
			switch {
			case h.UpperBound < t:
				return -1
			case h.UpperBound > t:
				return 1
			}
			return 0
		})
		if found {
			acc[i].Count += b.GetCumulativeCount()
		} else {
			acc = slices.Insert(acc, i, HistogramBucket{UpperBound: ub, Count: b.GetCumulativeCount()})
		}
	}
	return acc
}

// histogramQuantile is the q-quantile of cumulative buckets, interpolated
// linearly within the bucket that holds it (as PromQL's
// histogram_quantile); ok is false without observations. A quantile in the
// +Inf bucket reads as the highest finite bound.
func histogramQuantile(q float64, bs []HistogramBucket) (float64, bool) {
	if len(bs) == 0 || bs[len(bs)-1].Count == 0 {
		return 0, false
	}
	total := float64(bs[len(bs)-1].Count)
	rank := q * total
	lower, below := 0.0, 0.0
	for _, b := range bs {
		if float64(b.Count) >= rank {
			if math.IsInf(b.UpperBound, 1) {
				return lower, true
			}
			in := float64(b.Count) - below
			if in <= 0 {
				return b.UpperBound, true
			}
			return lower + (b.UpperBound-lower)*(rank-below)/in, true
		}
		lower, below = b.UpperBound, float64(b.Count)
	}
	return lower, true
}

// ScraperOptions configure a ReplicaScraper.
type ScraperOptions struct {
	// Targets returns the base URLs (http://host:port) of the replicas to
	// read now. Required.
	Targets func() []string
	// Interval between reads. Default 5s.
	Interval time.Duration
	// Quantile of the TTFT that Load reports. Default 0.9.
	Quantile float64
	// Client sends the requests. Default: a client with a 2s timeout.
	Client *http.Client
	// Clock drives the reads. Nil is the real clock.
	Clock clockwork.Clock
	// Logger receives failed reads at debug level. Nil discards.
	Logger *slog.Logger
}

// ReplicaScraper reads the replicas' /metrics every interval and keeps
// their sum. Run owns its goroutine; Load may be called from any.
type ReplicaScraper struct {
	opts ScraperOptions

	mu   sync.Mutex
	load ReplicaLoad
	prev map[string][]HistogramBucket // last TTFT histogram per target
}

// NewScraper returns a scraper; call Run to start reading.
func NewScraper(opts ScraperOptions) *ReplicaScraper {
	if opts.Interval <= 0 {
		opts.Interval = 5 * time.Second
	}
	if !(opts.Quantile > 0 && opts.Quantile < 1) {
		opts.Quantile = 0.9
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: 2 * time.Second}
	}
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &ReplicaScraper{opts: opts, prev: map[string][]HistogramBucket{}}
}

// Load is the sum of the last read.
func (s *ReplicaScraper) Load() ReplicaLoad {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.load
}

// Run reads at once and then every interval until ctx ends; it returns nil
// then.
func (s *ReplicaScraper) Run(ctx context.Context) error {
	t := s.opts.Clock.NewTicker(s.opts.Interval)
	defer t.Stop()
	for {
		s.Scrape(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.Chan():
		}
	}
}

// Scrape reads every target once, in parallel, and updates Load. A target
// that fails is left out of the sum.
func (s *ReplicaScraper) Scrape(ctx context.Context) ReplicaLoad {
	targets := s.opts.Targets()
	got := make([]*ReplicaMetrics, len(targets))
	var wg sync.WaitGroup
	for i, base := range targets {
		wg.Go(func() {
			m, err := s.read(ctx, base)
			if err != nil {
				s.opts.Logger.Debug("replica metrics not read", "replica", base, "err", err)
				return
			}
			got[i] = &m
		})
	}
	wg.Wait()

	s.mu.Lock()
	defer s.mu.Unlock()
	var load ReplicaLoad
	var delta []HistogramBucket
	seen := make(map[string]bool, len(targets))
	for i, m := range got {
		if m == nil {
			continue
		}
		load.Replicas++
		load.Running += m.Running
		load.Waiting += m.Waiting
		load.KVCache += m.KVCache
		seen[targets[i]] = true
		delta = addDelta(delta, m.TTFT, s.prev[targets[i]])
		s.prev[targets[i]] = m.TTFT
	}
	for t := range s.prev {
		if !seen[t] {
			delete(s.prev, t)
		}
	}
	if q, ok := histogramQuantile(s.opts.Quantile, delta); ok {
		load.TTFT = time.Duration(q * float64(time.Second))
	}
	s.load = load
	return load
}

// addDelta adds cur - prev (a replica's observations since the last read)
// into acc. A replica seen for the first time, or restarted (a count went
// down), contributes nothing this round: its history is not this interval's.
func addDelta(acc, cur, prev []HistogramBucket) []HistogramBucket {
	if len(prev) != len(cur) {
		return acc
	}
	d := make([]*dto.Bucket, len(cur))
	for i := range cur {
		if cur[i].UpperBound != prev[i].UpperBound || cur[i].Count < prev[i].Count {
			return acc
		}
		ub, n := cur[i].UpperBound, cur[i].Count-prev[i].Count
		d[i] = &dto.Bucket{UpperBound: &ub, CumulativeCount: &n}
	}
	return addBuckets(acc, d)
}

func (s *ReplicaScraper) read(ctx context.Context, base string) (ReplicaMetrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return ReplicaMetrics{}, err
	}
	resp, err := s.opts.Client.Do(req)
	if err != nil {
		return ReplicaMetrics{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ReplicaMetrics{}, fmt.Errorf("GET %s/metrics: status %d", base, resp.StatusCode)
	}
	return ParseReplicaMetrics(resp.Body)
}
