package main

import (
	"math"
	"slices"
	"testing"
	"time"
)

func TestArrivalsFollowPhases(t *testing.T) {
	phases := []phase{
		{Duration: 10 * time.Second, Rate: 500},
		{Duration: 5 * time.Second, Rate: 0},
		{Duration: 10 * time.Second, Rate: 2000},
	}
	at := arrivals(phases, 7)
	if !slices.IsSorted(at) {
		t.Fatal("arrivals are not in order")
	}
	if !slices.Equal(at, arrivals(phases, 7)) {
		t.Fatal("the same seed gave different arrivals")
	}
	if slices.Equal(at, arrivals(phases, 8)) {
		t.Fatal("different seeds gave the same arrivals")
	}
	counts := make([]int, len(phases))
	for _, a := range at {
		switch {
		case a < 0:
			t.Fatalf("arrival at %v before the start", a)
		case a < 10*time.Second:
			counts[0]++
		case a < 15*time.Second:
			counts[1]++
		case a < 25*time.Second:
			counts[2]++
		default:
			t.Fatalf("arrival at %v after the end", a)
		}
	}
	// A Poisson count has standard deviation √n; six of them is a bound a
	// correct implementation crosses about once in 10⁹ runs.
	for i, want := range []float64{5000, 0, 20000} {
		if got := float64(counts[i]); math.Abs(got-want) > 6*math.Sqrt(want) {
			t.Errorf("phase %d: %v arrivals, want %v ± %.0f", i, got, want, 6*math.Sqrt(want))
		}
	}
}

func TestArrivalsGapsAreExponential(t *testing.T) {
	// The mean and the standard deviation of exponential gaps are both
	// 1/rate; a constant or uniform spacing would fail the second.
	const rate = 1000.0
	at := arrivals([]phase{{Duration: 50 * time.Second, Rate: rate}}, 3)
	var sum, sq float64
	prev := time.Duration(0)
	for _, a := range at {
		g := (a - prev).Seconds()
		prev = a
		sum += g
		sq += g * g
	}
	n := float64(len(at))
	mean := sum / n
	sd := math.Sqrt(sq/n - mean*mean)
	if math.Abs(mean*rate-1) > 0.03 || math.Abs(sd*rate-1) > 0.05 {
		t.Fatalf("gap mean %.5fs, sd %.5fs; want both ≈ %.5fs", mean, sd, 1/rate)
	}
}

func TestScheduleHelpers(t *testing.T) {
	tr := burstyTrace(10, 1)
	if got := totalDuration(tr); got != 75*time.Second {
		t.Errorf("trace lasts %v, want 75s", got)
	}
	if got := peakRate(tr); got != 40 {
		t.Errorf("peak %v, want 40", got)
	}
	if got, want := meanRate(tr), 10*131.0/75; math.Abs(got-want) > 1e-9 {
		t.Errorf("mean %v, want %v", got, want)
	}
	for _, tc := range []struct {
		at   time.Duration
		want float64
	}{
		{-time.Second, 0},
		{0, 10},
		{9999 * time.Millisecond, 10},
		{10 * time.Second, 40},
		{24 * time.Second, 40},
		{25 * time.Second, 10},
		{42 * time.Second, 40},
		{60 * time.Second, 0},
		{74 * time.Second, 10},
		{75 * time.Second, 0},
	} {
		if got := rateAt(tr, tc.at); got != tc.want {
			t.Errorf("rateAt(%v) = %v, want %v", tc.at, got, tc.want)
		}
	}
	half := burstyTrace(10, 0.5)
	if got := totalDuration(half); got != 37500*time.Millisecond {
		t.Errorf("half-scale trace lasts %v, want 37.5s", got)
	}
	if meanRate(nil) != 0 || peakRate(nil) != 0 || totalDuration(nil) != 0 {
		t.Error("an empty schedule has a rate or a length")
	}
}
