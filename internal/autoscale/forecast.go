package autoscale

import (
	"math"
	"time"
)

// maxSlots bounds the seasonal model's memory: a 24h season is kept at
// one-minute resolution (1440 slots, about 13 KiB), which resolves a daily
// peak's start to well under the start time of a model replica.
const maxSlots = 1440

// Holt-Winters smoothing factors. Level and season adapt within a few
// seasons; the trend is learned slowly and damped in forecasts, because a
// trend extrapolated over a lead of minutes from one-minute slots mostly
// repeats noise.
const (
	hwAlpha = 0.2  // level
	hwBeta  = 0.01 // trend
	hwGamma = 0.3  // season
	hwPhi   = 0.9  // trend damping per slot of forecast horizon
)

// Forecast is an online additive Holt-Winters model of demand with one
// season. Samples are averaged per slot (season/1440, at least the sampling
// tick); each finished slot updates level, trend and that slot's seasonal
// offset. It forecasts nothing until one whole season has been seen.
// The zero value is not usable; use NewForecast. Not safe for concurrent use.
type Forecast struct {
	slot time.Duration
	m    int

	cur      int64 // absolute slot being accumulated; -1 before the first sample
	sum      float64
	n        int
	last     int64 // last absolute slot folded into the model
	first    int64 // first absolute slot seen
	ready    bool
	level    float64
	trend    float64
	season   []float64
	seen     []bool
	observed int // slots seen before the model was initialized
}

// NewForecast returns a model of a season of the given length, sampled every
// tick (the slot is never shorter than the tick).
func NewForecast(season, tick time.Duration) *Forecast {
	if tick <= 0 {
		tick = time.Second
	}
	slot := max(season/maxSlots, tick)
	m := max(int(season/slot), 1)
	return &Forecast{slot: slot, m: m, cur: -1, season: make([]float64, m), seen: make([]bool, m)}
}

// Slot is the model's time resolution.
func (f *Forecast) Slot() time.Duration { return f.slot }

// Ready reports whether a whole season has been seen, so Peak forecasts.
func (f *Forecast) Ready() bool { return f.ready }

func (f *Forecast) slotOf(t time.Time) int64 { return t.UnixNano() / int64(f.slot) }

// Observe adds a demand sample taken at t. Samples must come in time order;
// an older one is folded into the current slot.
func (f *Forecast) Observe(t time.Time, y float64) {
	k := f.slotOf(t)
	switch {
	case f.cur < 0:
		f.cur, f.first, f.last = k, k, k-1
	case k > f.cur:
		f.fold(f.cur, f.sum/float64(f.n))
		f.cur, f.sum, f.n = k, 0, 0
	}
	f.sum += y
	f.n++
}

// fold feeds the mean y of absolute slot k into the model.
func (f *Forecast) fold(k int64, y float64) {
	i := int(mod(k, int64(f.m)))
	if !f.ready {
		f.season[i] = y
		if !f.seen[i] {
			f.seen[i] = true
			f.observed++
		}
		f.last = k
		if k-f.first+1 >= int64(f.m) {
			f.initialize()
		}
		return
	}
	// Slots without samples (sluice was busy elsewhere, or the clock jumped)
	// advance the level along the trend; their seasonal offsets stay.
	for gap := min(k-f.last-1, int64(f.m)); gap > 0; gap-- {
		f.level += hwPhi * f.trend
		f.trend *= hwPhi
	}
	prev := f.level
	s := f.season[i]
	f.level = hwAlpha*(y-s) + (1-hwAlpha)*(f.level+hwPhi*f.trend)
	f.trend = hwBeta*(f.level-prev) + (1-hwBeta)*hwPhi*f.trend
	f.season[i] = hwGamma*(y-f.level) + (1-hwGamma)*s
	f.last = k
}

// initialize turns the first season's slot means into level and seasonal
// offsets (classical decomposition with a flat trend).
func (f *Forecast) initialize() {
	var sum float64
	for i, ok := range f.seen {
		if ok {
			sum += f.season[i]
		}
	}
	f.level = sum / float64(max(f.observed, 1))
	for i, ok := range f.seen {
		if ok {
			f.season[i] -= f.level
		}
	}
	f.ready = true
}

// Peak is the highest demand forecast for any slot from the one holding now
// through the one holding now+lead, never below zero; ok is false until the
// model has seen a season.
func (f *Forecast) Peak(now time.Time, lead time.Duration) (peak float64, ok bool) {
	if !f.ready {
		return 0, false
	}
	from, to := f.slotOf(now), f.slotOf(now.Add(max(lead, 0)))
	to = min(to, from+int64(f.m)-1)
	peak = math.Inf(-1)
	for k := from; k <= to; k++ {
		peak = max(peak, f.at(k))
	}
	return max(peak, 0), true
}

// at forecasts absolute slot k (after the last folded slot).
func (f *Forecast) at(k int64) float64 {
	h := max(k-f.last, 1)
	// Damped trend: phi + phi^2 + ... + phi^h.
	damp := hwPhi * (1 - math.Pow(hwPhi, float64(h))) / (1 - hwPhi)
	return f.level + damp*f.trend + f.season[int(mod(k, int64(f.m)))]
}
