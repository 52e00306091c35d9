package autoscale

import (
	"math"
	"time"
)

// window aggregates values over the last span of time in buckets of one
// granularity each, like Knative's timed buckets: a value lands in the bucket
// of its time, and a bucket older than the span no longer counts. Memory is
// fixed at span/granularity buckets whatever the sampling rate.
type window struct {
	g       time.Duration
	buckets []bucket
}

type bucket struct {
	k   int64 // absolute bucket number (unix nanoseconds / g); 0 means unused
	sum float64
	n   int
	max float64
}

// newWindow returns a window over span with buckets of granularity g. A span
// shorter than g keeps one bucket.
func newWindow(span, g time.Duration) *window {
	if g <= 0 {
		g = time.Second
	}
	n := max(int((span+g-1)/g), 1)
	return &window{g: g, buckets: make([]bucket, n)}
}

func (w *window) index(t time.Time) int64 { return t.UnixNano() / int64(w.g) }

// add records v at t.
func (w *window) add(t time.Time, v float64) {
	k := w.index(t)
	b := &w.buckets[int(mod(k, int64(len(w.buckets))))]
	if b.k != k {
		*b = bucket{k: k, max: math.Inf(-1)}
	}
	b.sum += v
	b.n++
	b.max = max(b.max, v)
}

// live reports whether b counts at bucket number now.
func (w *window) live(b *bucket, now int64) bool {
	return b.n > 0 && b.k <= now && b.k > now-int64(len(w.buckets))
}

// avg is the mean of the values recorded within the span before t, and
// whether there were any.
func (w *window) avg(t time.Time) (float64, bool) {
	now := w.index(t)
	var sum float64
	var n int
	for i := range w.buckets {
		if b := &w.buckets[i]; w.live(b, now) {
			sum += b.sum
			n += b.n
		}
	}
	if n == 0 {
		return 0, false
	}
	return sum / float64(n), true
}

// max is the largest value recorded within the span before t, and whether
// there was any.
func (w *window) max(t time.Time) (float64, bool) {
	now := w.index(t)
	m, ok := math.Inf(-1), false
	for i := range w.buckets {
		if b := &w.buckets[i]; w.live(b, now) {
			m, ok = max(m, b.max), true
		}
	}
	return m, ok
}

func mod(a, n int64) int64 {
	r := a % n
	if r < 0 {
		r += n
	}
	return r
}
