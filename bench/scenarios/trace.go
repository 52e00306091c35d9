package main

import (
	"encoding/json"
	"math/rand/v2"
	"time"
)

// phase is a stretch of load at one arrival rate.
type phase struct {
	Duration time.Duration
	// Rate is in requests per second; 0 is an idle gap.
	Rate float64
}

// MarshalJSON writes the phase as {"seconds", "rate"}.
func (p phase) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Seconds float64 `json:"seconds"`
		Rate    float64 `json:"rate"`
	}{p.Duration.Seconds(), p.Rate})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (p *phase) UnmarshalJSON(b []byte) error {
	var v struct {
		Seconds float64 `json:"seconds"`
		Rate    float64 `json:"rate"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*p = phase{Duration: time.Duration(v.Seconds * float64(time.Second)), Rate: v.Rate}
	return nil
}

// arrivals draws the send times of a Poisson process whose rate is constant
// within each phase, as offsets from the start of the first phase. The
// gaps are exponential with the current phase's rate; a gap that crosses
// into the next phase is redrawn from that phase's start, which is exact
// because the exponential distribution is memoryless. The same phases and
// seed always give the same times.
func arrivals(phases []phase, seed uint64) []time.Duration {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	var out []time.Duration
	start := 0.0 // seconds
	for _, ph := range phases {
		end := start + ph.Duration.Seconds()
		if ph.Rate > 0 {
			for t := start + rng.ExpFloat64()/ph.Rate; t < end; t += rng.ExpFloat64() / ph.Rate {
				out = append(out, time.Duration(t*float64(time.Second)))
			}
		}
		start = end
	}
	return out
}

// totalDuration is the length of a schedule.
func totalDuration(phases []phase) time.Duration {
	var d time.Duration
	for _, ph := range phases {
		d += ph.Duration
	}
	return d
}

// rateAt is the schedule's rate at offset t; 0 outside it.
func rateAt(phases []phase, t time.Duration) float64 {
	if t < 0 {
		return 0
	}
	for _, ph := range phases {
		if t < ph.Duration {
			return ph.Rate
		}
		t -= ph.Duration
	}
	return 0
}

// meanRate is the schedule's time-weighted mean rate.
func meanRate(phases []phase) float64 {
	total := totalDuration(phases)
	if total <= 0 {
		return 0
	}
	var sum float64
	for _, ph := range phases {
		sum += ph.Rate * ph.Duration.Seconds()
	}
	return sum / total.Seconds()
}

// peakRate is the schedule's highest rate.
func peakRate(phases []phase) float64 {
	var peak float64
	for _, ph := range phases {
		peak = max(peak, ph.Rate)
	}
	return peak
}

// burstyTrace is the autoscaling scenario's trace, in units of the base
// rate: a steady load, a burst to 4× for 15s, back to the base, a second,
// shorter burst, an idle gap, and the base again. scale stretches or
// shrinks every phase (1 is 75s in all).
func burstyTrace(base float64, scale float64) []phase {
	shape := []struct {
		seconds float64
		mult    float64
	}{
		{10, 1}, {15, 4}, {15, 1}, {7, 4}, {8, 1}, {10, 0}, {10, 1},
	}
	out := make([]phase, len(shape))
	for i, s := range shape {
		out[i] = phase{Duration: time.Duration(s.seconds * scale * float64(time.Second)), Rate: base * s.mult}
	}
	return out
}
