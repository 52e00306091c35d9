package main

import (
	"encoding/json"
	"math"
	"slices"
	"time"
)

// dist summarizes a set of latencies. Percentiles are exact (nearest rank
// over the sorted samples): a scenario keeps every record, so there is no
// need to bucket them.
type dist struct {
	Count              int
	P50, P90, P99, Max time.Duration
}

// distOf summarizes ds; it does not modify ds.
func distOf(ds []time.Duration) dist {
	if len(ds) == 0 {
		return dist{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return dist{
		Count: len(s),
		P50:   quantile(s, 0.50),
		P90:   quantile(s, 0.90),
		P99:   quantile(s, 0.99),
		Max:   s[len(s)-1],
	}
}

// quantile is the nearest-rank q-quantile of sorted: the smallest value
// with at least q of the samples at or below it. 0 for no samples.
func quantile(sorted []time.Duration, q float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(n))) - 1
	return sorted[min(max(i, 0), n-1)]
}

// MarshalJSON writes the percentiles in milliseconds.
func (d dist) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Count int     `json:"count"`
		P50   float64 `json:"p50_ms"`
		P90   float64 `json:"p90_ms"`
		P99   float64 `json:"p99_ms"`
		Max   float64 `json:"max_ms"`
	}{d.Count, ms(d.P50), ms(d.P90), ms(d.P99), ms(d.Max)})
}

// ms converts to milliseconds for reports.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// latencies returns the latency of every record keep accepts.
func latencies(recs []record, keep func(*record) bool) []time.Duration {
	var out []time.Duration
	for i := range recs {
		if keep(&recs[i]) {
			out = append(out, recs[i].Latency)
		}
	}
	return out
}

// count counts the records keep accepts.
func count(recs []record, keep func(*record) bool) int {
	n := 0
	for i := range recs {
		if keep(&recs[i]) {
			n++
		}
	}
	return n
}

// completionRate is the number of successful requests that finished within
// [from, to), per second: the throughput the clients saw in that window,
// whenever the requests were sent.
func completionRate(recs []record, from, to time.Duration) float64 {
	if to <= from {
		return 0
	}
	n := count(recs, func(r *record) bool { return r.ok() && r.end() >= from && r.end() < to })
	return float64(n) / (to - from).Seconds()
}

// sloAttainment is the share of records that succeeded within slo; a
// failed request misses the objective.
func sloAttainment(recs []record, slo time.Duration) float64 {
	if len(recs) == 0 {
		return 0
	}
	n := count(recs, func(r *record) bool { return r.ok() && r.Latency <= slo })
	return float64(n) / float64(len(recs))
}

// sentIn reports whether a record's intended send time is within [from, to).
func sentIn(from, to time.Duration) func(*record) bool {
	return func(r *record) bool { return r.At >= from && r.At < to }
}

// and combines record filters.
func and(fs ...func(*record) bool) func(*record) bool {
	return func(r *record) bool {
		for _, f := range fs {
			if !f(r) {
				return false
			}
		}
		return true
	}
}

func isOK(r *record) bool { return r.ok() }

// integrate is the time integral of value over [from, to), holding each
// sample's value until the next sample (the first one also before it).
// With replica counts it gives replica-seconds.
func integrate(samples []sample, value func(sample) float64, from, to time.Duration) float64 {
	if len(samples) == 0 || to <= from {
		return 0
	}
	var sum float64
	for i, s := range samples {
		lo := s.At
		if i == 0 {
			lo = from
		}
		hi := to
		if i+1 < len(samples) {
			hi = samples[i+1].At
		}
		lo, hi = max(lo, from), min(hi, to)
		if hi > lo {
			sum += value(s) * (hi - lo).Seconds()
		}
	}
	return sum
}

// maxOf is the largest value over the samples taken within [from, to).
func maxOf(samples []sample, value func(sample) float64, from, to time.Duration) float64 {
	var m float64
	for _, s := range samples {
		if s.At >= from && s.At < to {
			m = max(m, value(s))
		}
	}
	return m
}

// point is one value of a time series.
type point struct {
	T, V float64 // seconds, value
}

// bucketQuantile is the q-quantile of the latency of the records keep
// accepts, per width-long bucket of send time over [0, total). A bucket
// with no records has no point. A failed record counts as +Inf, so a
// bucket of failures shows as off the chart rather than as fast.
func bucketQuantile(recs []record, keep func(*record) bool, q float64, width, total time.Duration) []point {
	n := int((total + width - 1) / width)
	buckets := make([][]time.Duration, n)
	for i := range recs {
		r := &recs[i]
		if !keep(r) || r.At < 0 || r.At >= total {
			continue
		}
		lat := r.Latency
		if !r.ok() {
			lat = math.MaxInt64
		}
		b := int(r.At / width)
		buckets[b] = append(buckets[b], lat)
	}
	var out []point
	for i, b := range buckets {
		if len(b) == 0 {
			continue
		}
		slices.Sort(b)
		v := quantile(b, q)
		t := (time.Duration(i)*width + width/2).Seconds()
		if v == math.MaxInt64 {
			out = append(out, point{t, math.Inf(1)})
			continue
		}
		out = append(out, point{t, ms(v)})
	}
	return out
}

// ratio is a/b, or NaN when b is 0; reports write NaN as "n/a".
func ratio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

// num is a float64 that JSON writes as null when it is NaN or infinite,
// which encoding/json refuses to write.
type num float64

// MarshalJSON implements json.Marshaler.
func (n num) MarshalJSON() ([]byte, error) {
	f := float64(n)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return []byte("null"), nil
	}
	return json.Marshal(f)
}

// UnmarshalJSON implements json.Unmarshaler: null reads as NaN.
func (n *num) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*n = num(math.NaN())
		return nil
	}
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	*n = num(f)
	return nil
}

// UnmarshalJSON reads what MarshalJSON writes.
func (d *dist) UnmarshalJSON(b []byte) error {
	var v struct {
		Count int     `json:"count"`
		P50   float64 `json:"p50_ms"`
		P90   float64 `json:"p90_ms"`
		P99   float64 `json:"p99_ms"`
		Max   float64 `json:"max_ms"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*d = dist{Count: v.Count, P50: fromMs(v.P50), P90: fromMs(v.P90), P99: fromMs(v.P99), Max: fromMs(v.Max)}
	return nil
}

func fromMs(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }

// MarshalJSON writes a point as [seconds, value], the value null when it
// is not finite (a bucket whose quantile request failed).
func (p point) MarshalJSON() ([]byte, error) {
	return json.Marshal([2]num{num(p.T), num(p.V)})
}

// UnmarshalJSON reads what MarshalJSON writes; null reads as +Inf.
func (p *point) UnmarshalJSON(b []byte) error {
	var v [2]*float64
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*p = point{T: 0, V: math.Inf(1)}
	if v[0] != nil {
		p.T = *v[0]
	}
	if v[1] != nil {
		p.V = *v[1]
	}
	return nil
}
