package main

import (
	"context"
	"math"
	"testing"
)

// TestFrontierSearch runs the search against targets whose frontiers are
// known: target t is within bound b at grid point k when k ≤ limit[t][b].
func TestFrontierSearch(t *testing.T) {
	const steps, kMin, kMax = 8, -16, 48
	limits := [][]int{
		{30, 30},         // within both up to 30 (the direct row's ceiling)
		{5, 11},          // a bracket between doublings for each bound
		{kMin - 1, 3},    // never within the first bound, not even at kMin
		{kMax, kMax},     // within both up to the top of the grid
		{-3, 0},          // below the first rate for one bound, at it for the other
		{kMin, kMin + 1}, // just at the bottom of the grid
	}
	targets := []int{0, 1, 2, 3, 4, 5}
	looks := map[[2]int]int{}
	measure := func(k int, ts []int, retry bool) [][]bool {
		out := make([][]bool, len(ts))
		for i, tg := range ts {
			looks[[2]int{tg, k}]++
			out[i] = []bool{k <= limits[tg][0], k <= limits[tg][1]}
		}
		return out
	}
	f := newFrontierSearch(len(limits), 2, steps, kMin, kMax, 2)
	f.run(context.Background(), targets, measure)
	for tg, lim := range limits {
		for b, want := range lim {
			lo, hi := f.bracket(tg, b)
			wantHi := want + 1
			if want >= kMax {
				wantHi = kMax + 1
			}
			if lo != want || hi != wantHi {
				t.Errorf("target %d bound %d: bracket [%d, %d), want [%d, %d)", tg, b, lo, hi, want, wantHi)
			}
		}
	}
	for key, n := range looks {
		if n > 2 {
			t.Errorf("target %d measured %d times at %d, want at most 2 (tries)", key[0], n, key[1])
		}
	}
}

// TestFrontierSearchRetry checks that a target seen outside a bound once,
// by bad luck, is looked at again and counts as within when the second
// look is.
func TestFrontierSearchRetry(t *testing.T) {
	unlucky := map[int]bool{8: true, 12: true}
	measure := func(k int, ts []int, retry bool) [][]bool {
		out := make([][]bool, len(ts))
		for i := range ts {
			ok := k <= 14 && !(unlucky[k] && !retry)
			out[i] = []bool{ok}
		}
		return out
	}
	for _, tc := range []struct {
		tries, want int
	}{{1, 7}, {2, 14}} {
		f := newFrontierSearch(1, 1, 8, -16, 40, tc.tries)
		f.run(context.Background(), []int{0}, measure)
		if lo, _ := f.bracket(0, 0); lo != tc.want {
			t.Errorf("tries %d: frontier at %d, want %d", tc.tries, lo, tc.want)
		}
	}
}

func TestFrontierCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	f := newFrontierSearch(1, 1, 8, -16, 40, 3)
	f.run(ctx, []int{0}, func(k int, ts []int, retry bool) [][]bool {
		calls++
		cancel()
		return [][]bool{{true}}
	})
	if calls != 1 {
		t.Errorf("%d measurements after the cancellation, want 1", calls)
	}
}

func TestFrontierPoint(t *testing.T) {
	tests := []struct {
		name   string
		p      frontierPoint
		direct bool
		within bool
		why    string
	}{
		{"within", frontierPoint{Rate: 1000, Achieved: 995, AddedP99: 0.8, DirectSustained: true}, false, true, "within"},
		{"over the bound", frontierPoint{Rate: 1000, Achieved: 1000, AddedP99: 1.25, DirectSustained: true}, false, false, "added p99 1.25 ms"},
		{"fell behind", frontierPoint{Rate: 1000, Achieved: 980, DirectSustained: true}, false, false, "answered 98.0%"},
		{"errors", frontierPoint{Rate: 1000, Achieved: 1000, Errors: 3, FirstError: "status 502", DirectSustained: true}, false, false, "3 failed (status 502)"},
		{"direct fell behind", frontierPoint{Rate: 1000, Achieved: 1000}, false, false, "direct did not sustain it"},
		{"direct row needs only to keep up", frontierPoint{Rate: 1000, Achieved: 1000, AddedP99: 0}, true, true, "-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.within(tt.direct, 1); got != tt.within {
				t.Errorf("within = %v, want %v", got, tt.within)
			}
			if got := tt.p.why(tt.direct, 1); got != tt.why {
				t.Errorf("why = %q, want %q", got, tt.why)
			}
		})
	}
}

func TestSummarizeFrontier(t *testing.T) {
	res := &frontierResult{BoundsMS: []float64{1, 5}, Base: 1000, Steps: 4, KMin: -8, KMax: 16}
	pt := func(k int, added float64) frontierPoint {
		r := res.rate(k)
		return frontierPoint{K: k, Rate: r, Achieved: r, AddedP99: added, DirectSustained: true}
	}
	res.Rows = []*frontierRow{{Target: "sluice", Points: []frontierPoint{pt(0, 0.5), pt(4, 3), pt(4, 2), pt(5, 9), pt(5, 7)}}}
	f := newFrontierSearch(1, 2, 4, -8, 16, 2)
	f.lo[0], f.hi[0] = []int{0, 4}, []int{1, 5}
	summarizeFrontier(res, f)
	e1, e5 := res.Rows[0].edge(1), res.Rows[0].edge(5)
	if e1 == nil || e5 == nil {
		t.Fatalf("edges %+v", res.Rows[0].Edges)
	}
	if e1.Rate != 1000 || math.Abs(e1.Next-res.rate(1)) > 0 || e1.NextAt != nil {
		t.Errorf("1 ms edge %+v", e1)
	}
	if e5.Rate != 2000 || e5.At.AddedP99 != 2 || e5.NextAt.AddedP99 != 7 {
		t.Errorf("5 ms edge %+v (at %+v, next %+v)", e5, e5.At, e5.NextAt)
	}
	if got := res.rate(-2); got != 707 {
		t.Errorf("rate(-2) = %v, want 707", got)
	}
}

func TestDirectSpread(t *testing.T) {
	res := &frontierResult{Rows: []*frontierRow{
		{Target: "direct", Points: []frontierPoint{{Rate: 500, DirectP99: 2, DirectSustained: true}}},
		{Target: "sluice", Points: []frontierPoint{
			{Rate: 500, DirectP99: 2, DirectSustained: true}, // the same round as the direct row's
			{Rate: 1000, DirectP99: 6, DirectSustained: true},
			{Rate: 2000, DirectP99: 90}, // the direct measurement fell behind
		}},
		{Target: "nginx", Points: []frontierPoint{{Rate: 1000, DirectP99: 3, DirectSustained: true}}},
	}}
	lo, mid, hi, n := res.directSpread()
	if lo != 2 || mid != 3 || hi != 6 || n != 3 {
		t.Errorf("spread %v %v %v over %d, want 2 3 6 over 3", lo, mid, hi, n)
	}
}
