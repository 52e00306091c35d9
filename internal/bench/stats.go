package bench

import (
	"math"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Histograms record microseconds from 1µs to an hour with 3 significant
// digits: a percentile is within 0.1% of the recorded value.
const (
	histMin     = 1
	histMax     = int64(time.Hour / time.Microsecond)
	histSigFigs = 3
)

// newHistogram returns an empty histogram with bench's geometry.
func newHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(histMin, histMax, histSigFigs)
}

// Error kinds for requests that failed without an HTTP status, the keys of
// Result.FailedByKind.
const (
	// KindConnect is a failure to connect: refused, unreachable, DNS.
	KindConnect = "connect"
	// KindTimeout is a request not finished within Config.Timeout.
	KindTimeout = "timeout"
	// KindOther is any other failure: a connection reset mid-response, a
	// body that is not the expected JSON, a stream that reports an error or
	// ends without "data: [DONE]".
	KindOther = "other"
)

// Summary describes one latency distribution. Count, Min, Mean and Max are
// exact; the percentiles come from an HDR histogram and are within 0.1% of
// the recorded values (and never above Max). All are zero when Count is 0.
type Summary struct {
	Count int64
	Min   time.Duration
	Mean  time.Duration
	P50   time.Duration
	P90   time.Duration
	P99   time.Duration
	P999  time.Duration
	Max   time.Duration
}

// dist accumulates one distribution: a histogram for percentiles plus the
// exact count, sum, min and max.
type dist struct {
	hist     *hdrhistogram.Histogram
	count    int64
	sum      time.Duration
	min, max time.Duration
}

func newDist() dist { return dist{hist: newHistogram()} }

func (d *dist) record(v time.Duration) {
	v = max(v, 0)
	us := min(int64(v/time.Microsecond), histMax)
	// RecordValue fails only outside the histogram's range, excluded above.
	_ = d.hist.RecordValue(us)
	if d.count == 0 || v < d.min {
		d.min = v
	}
	d.max = max(d.max, v)
	d.count++
	d.sum += v
}

func (d *dist) merge(o *dist) {
	if o.count == 0 {
		return
	}
	d.hist.Merge(o.hist)
	if d.count == 0 || o.min < d.min {
		d.min = o.min
	}
	d.max = max(d.max, o.max)
	d.count += o.count
	d.sum += o.sum
}

func (d *dist) summary() Summary {
	if d.count == 0 {
		return Summary{}
	}
	at := func(q float64) time.Duration {
		v := time.Duration(d.hist.ValueAtQuantile(q)) * time.Microsecond
		return min(max(v, d.min), d.max)
	}
	return Summary{
		Count: d.count,
		Min:   d.min,
		Mean:  d.sum / time.Duration(d.count),
		P50:   at(50),
		P90:   at(90),
		P99:   at(99),
		P999:  at(99.9),
		Max:   d.max,
	}
}

// recorder collects outcomes. It is split into shards, each with its own
// lock, so concurrent requests rarely contend; shards are merged once at the
// end.
type recorder struct {
	shards []shard
	slo    SLO
}

type shard struct {
	mu                       sync.Mutex
	latency, ttft, itl, tpot dist
	byStatus                 map[int]int64
	byKind                   map[string]int64
	outTokens, inTokens      int64
	cachedTokens, good       int64
	replicas                 map[string]int64
	lastDone                 time.Time
}

func newShard() shard {
	return shard{
		latency: newDist(), ttft: newDist(), itl: newDist(), tpot: newDist(),
		byStatus: map[int]int64{}, byKind: map[string]int64{}, replicas: map[string]int64{},
	}
}

func newRecorder(n int, slo SLO) *recorder {
	r := &recorder{shards: make([]shard, max(n, 1)), slo: slo}
	for i := range r.shards {
		r.shards[i] = newShard()
	}
	return r
}

// record adds the outcome of measured request index.
func (r *recorder) record(index uint64, o *outcome) {
	s := &r.shards[index%uint64(len(r.shards))]
	s.mu.Lock()
	defer s.mu.Unlock()
	if o.done.After(s.lastDone) {
		s.lastDone = o.done
	}
	switch {
	case o.ok():
		s.latency.record(o.latency)
		if o.ttft >= 0 {
			s.ttft.record(o.ttft)
		}
		for _, gap := range o.itl {
			s.itl.record(gap)
		}
		mean := o.meanITL()
		if len(o.itl) > 0 {
			s.tpot.record(mean)
		}
		if !r.slo.IsZero() && r.slo.met(o.ttft, mean, o.latency) {
			s.good++
		}
		s.outTokens += o.outTokens
		s.inTokens += o.inTokens
		s.cachedTokens += o.cachedTokens
		if o.instance != "" {
			s.replicas[o.instance]++
		}
	case o.kind != "":
		s.byKind[o.kind]++
	default:
		s.byStatus[o.status]++
	}
}

// merged returns every shard folded into one.
func (r *recorder) merged() *shard {
	merged := newShard()
	m := &merged
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		m.latency.merge(&s.latency)
		m.ttft.merge(&s.ttft)
		m.itl.merge(&s.itl)
		m.tpot.merge(&s.tpot)
		m.cachedTokens += s.cachedTokens
		m.good += s.good
		for k, v := range s.replicas {
			m.replicas[k] += v
		}
		for k, v := range s.byStatus {
			m.byStatus[k] += v
		}
		for k, v := range s.byKind {
			m.byKind[k] += v
		}
		m.outTokens += s.outTokens
		m.inTokens += s.inTokens
		if s.lastDone.After(m.lastDone) {
			m.lastDone = s.lastDone
		}
		s.mu.Unlock()
	}
	return m
}

// perSecond is n per second over d, or 0 for an empty interval.
func perSecond(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	v := float64(n) / d.Seconds()
	if math.IsInf(v, 0) || math.IsNaN(v) {
		return 0
	}
	return v
}
