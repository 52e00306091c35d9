package main

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// frontierBounds are the added-p99 bounds, in ms, the frontier scenario
// finds each proxy's highest sustained rate within.
var frontierBounds = []float64{1, 5}

// frontierSustained is the share of the offered rate a target must answer
// for the rate to count as sustained.
const frontierSustained = 0.99

// frontierResult is the frontier scenario: the highest constant request
// rate each proxy sustains with its p99 no more than each bound above the
// backend's own p99 at the same rate.
type frontierResult struct {
	BoundsMS []float64 `json:"bounds_ms"`
	// The grid of offered rates: Base × 2^(k/Steps) for k from KMin to
	// KMax.
	Base     float64        `json:"base_rate"`
	Steps    int            `json:"steps_per_doubling"`
	KMin     int            `json:"k_min"`
	KMax     int            `json:"k_max"`
	Duration string         `json:"duration"`
	Warmup   string         `json:"warmup"`
	Tries    int            `json:"tries"`
	Conns    int            `json:"connections"`
	Rows     []*frontierRow `json:"rows"`
	Measured int            `json:"measurements"`
	Error    string         `json:"error,omitempty"`
}

// frontierRow is one target; the first row is the backend directly.
type frontierRow struct {
	Target string `json:"target"`
	Error  string `json:"error,omitempty"`
	// Points are every measurement of the target, in order.
	Points []frontierPoint `json:"points"`
	// Edges are the frontier for each bound (for the direct row, the same
	// ceiling for each).
	Edges []frontierEdge `json:"frontier"`

	url string
}

// frontierPoint is one measurement of a target at one offered rate, next to
// the direct measurement of the same round.
type frontierPoint struct {
	K        int     `json:"k"`
	Rate     float64 `json:"offered"`
	Retry    bool    `json:"retry,omitempty"`
	Achieved float64 `json:"achieved"`
	Errors   int64   `json:"errors"`
	P50      float64 `json:"p50_ms"`
	P99      float64 `json:"p99_ms"`
	// DirectP99 is the direct measurement's p99 in the same round and
	// AddedP99 this one's p99 minus it (zero for the direct row).
	DirectP99 float64 `json:"direct_p99_ms"`
	AddedP99  float64 `json:"added_p99_ms"`
	// DirectSustained is whether the direct measurement of the round
	// sustained the rate; without it the added latency means nothing.
	DirectSustained bool   `json:"direct_sustained"`
	Error           string `json:"error,omitempty"`
	// FirstError is the first failed request's error.
	FirstError string `json:"first_error,omitempty"`
}

// sustained reports whether the target answered the offered rate: at
// least frontierSustained of it, without an error.
func (p *frontierPoint) sustained() bool {
	return p.Error == "" && p.Errors == 0 && p.Achieved >= frontierSustained*p.Rate
}

// within reports whether the point counts for bound: sustained, next to a
// direct measurement that sustained it too, with the added p99 within
// bound. The direct row's points need only be sustained.
func (p *frontierPoint) within(direct bool, bound float64) bool {
	if direct {
		return p.sustained()
	}
	return p.sustained() && p.DirectSustained && p.AddedP99 <= bound
}

// why says what kept the point from bound, for the tables.
func (p *frontierPoint) why(direct bool, bound float64) string {
	switch {
	case p.Error != "":
		return "error: " + cell(p.Error)
	case p.Errors > 0:
		return fmt.Sprintf("%d failed (%s)", p.Errors, cell(p.FirstError))
	case p.Achieved < frontierSustained*p.Rate:
		return fmt.Sprintf("answered %.1f%%", 100*p.Achieved/p.Rate)
	case direct:
		return "-"
	case !p.DirectSustained:
		return "direct did not sustain it"
	case p.AddedP99 > bound:
		return fmt.Sprintf("added p99 %.2f ms", p.AddedP99)
	}
	return "within"
}

// frontierEdge is a target's frontier for one bound: the highest grid rate
// within it and the grid rate above, at which it was not.
type frontierEdge struct {
	BoundMS float64 `json:"bound_ms"`
	// Rate is the highest rate within the bound; 0 when not even the
	// grid's lowest rate was.
	Rate float64 `json:"rate"`
	// Next is the rate at which the target was measured outside the bound;
	// 0 when it never was up to the grid's highest rate.
	Next float64 `json:"next"`
	// At and NextAt are the best measurements at Rate and Next.
	At     *frontierPoint `json:"at,omitempty"`
	NextAt *frontierPoint `json:"next_at,omitempty"`
}

// rate is grid point k's offered rate, rounded to a whole request a second.
func (r *frontierResult) rate(k int) float64 {
	return math.Round(r.Base * math.Pow(2, float64(k)/float64(r.Steps)))
}

// frontier measures, for the backend directly and through each proxy, the
// highest constant rate each sustains within each bound of added p99.
func (s *suite) frontier(ctx context.Context) *frontierResult {
	o := s.opts
	res := &frontierResult{
		BoundsMS: frontierBounds, Base: o.frontierBase, Steps: o.frontierSteps,
		KMin: -2 * o.frontierSteps, KMax: int(math.Floor(float64(o.frontierSteps) * math.Log2(o.frontierMax/o.frontierBase))),
		Duration: o.frontierDuration.String(), Warmup: o.frontierWarmup.String(), Tries: o.frontierTries, Conns: o.frontierConns,
	}
	backend, err := s.startBackend(ctx)
	if err != nil {
		res.Error = s.scenarioFailed(ctx, "frontier", err)
		return res
	}
	defer backend.stop(s)
	res.Rows = append(res.Rows, &frontierRow{Target: "direct", url: backend.URL})
	for _, p := range s.enabledProxies() {
		row := &frontierRow{Target: p.Name}
		res.Rows = append(res.Rows, row)
		in, err := s.startProxy(ctx, p, p.Default, []string{backend.host()}, "warn")
		if err != nil {
			row.Error = s.scenarioFailed(ctx, "frontier", err)
			continue
		}
		defer in.stop(s)
		row.url = in.URL
	}
	var targets []int
	for t, row := range res.Rows {
		if row.url != "" {
			targets = append(targets, t)
		}
	}
	search := newFrontierSearch(len(res.Rows), len(res.BoundsMS), res.Steps, res.KMin, res.KMax, o.frontierTries)
	round := 0
	search.run(ctx, targets, func(k int, ts []int, retry bool) [][]bool {
		round++
		return s.frontierRound(ctx, res, k, ts, retry, round)
	})
	if ctx.Err() != nil {
		res.Error = ctx.Err().Error()
	}
	summarizeFrontier(res, search)
	return res
}

// frontierRound measures the direct row and the rows ts at grid point k,
// in an order that rotates from round to round, and returns whether each
// of ts was within each bound.
func (s *suite) frontierRound(ctx context.Context, res *frontierResult, k int, ts []int, retry bool, round int) [][]bool {
	o := s.opts
	rate := res.rate(k)
	order := []int{0}
	for _, t := range ts {
		if t != 0 {
			order = append(order, t)
		}
	}
	points := map[int]*frontierPoint{}
	for _, t := range rotate(order, round) {
		if ctx.Err() != nil {
			break
		}
		row := res.Rows[t]
		s.logf("frontier: %.0f req/s constant %v -> %s%s", rate, o.frontierDuration, row.Target, map[bool]string{true: " (again)"}[retry])
		p := &frontierPoint{K: k, Rate: rate, Retry: retry}
		load := &constLoad{
			Addr: strings.TrimPrefix(row.url, "http://"), Request: smallChat,
			Rate: rate, Conns: o.frontierConns,
			Warmup: o.frontierWarmup, Duration: o.frontierDuration, Timeout: 5 * time.Second,
		}
		r, err := load.run(ctx)
		res.Measured++
		if err != nil {
			p.Error = err.Error()
		} else {
			p.Achieved = r.Achieved()
			p.Errors = r.Failed
			p.P50, p.P99 = r.Percentile(50), r.Percentile(99)
			if r.FirstError != nil {
				p.FirstError = r.FirstError.Error()
			}
		}
		points[t] = p
	}
	direct := points[0]
	out := make([][]bool, len(ts))
	for t, p := range points {
		if direct != nil {
			p.DirectP99 = direct.P99
			p.DirectSustained = direct.sustained()
			if t != 0 {
				p.AddedP99 = p.P99 - direct.P99
			}
		}
	}
	for _, t := range order {
		if p := points[t]; p != nil && (t != 0 || slices.Contains(ts, 0)) {
			res.Rows[t].Points = append(res.Rows[t].Points, *p)
		}
	}
	for i, t := range ts {
		out[i] = make([]bool, len(res.BoundsMS))
		if p := points[t]; p != nil {
			for b, bound := range res.BoundsMS {
				out[i][b] = p.within(t == 0, bound)
			}
		}
	}
	return out
}

// summarizeFrontier fills each row's edges from the search.
func summarizeFrontier(res *frontierResult, search *frontierSearch) {
	for t, row := range res.Rows {
		if len(row.Points) == 0 {
			continue
		}
		row.Edges = nil
		for b, bound := range res.BoundsMS {
			lo, hi := search.bracket(t, b)
			e := frontierEdge{BoundMS: bound}
			if lo >= res.KMin {
				e.Rate = res.rate(lo)
				e.At = row.best(lo, t == 0, bound)
			}
			if hi <= res.KMax {
				e.Next = res.rate(hi)
				e.NextAt = row.best(hi, t == 0, bound)
			}
			row.Edges = append(row.Edges, e)
		}
	}
}

// best returns the row's best measurement at grid point k: one within
// bound, with the lowest added p99, if there is one; else the one with the
// lowest added p99.
func (r *frontierRow) best(k int, direct bool, bound float64) *frontierPoint {
	var best *frontierPoint
	for i := range r.Points {
		p := &r.Points[i]
		if p.K != k {
			continue
		}
		if best == nil {
			best = p
			continue
		}
		pin, bin := p.within(direct, bound), best.within(direct, bound)
		if pin && !bin || pin == bin && p.AddedP99 < best.AddedP99 {
			best = p
		}
	}
	if best == nil {
		return nil
	}
	c := *best
	return &c
}

// row returns the row of target, or nil.
func (r *frontierResult) row(target string) *frontierRow {
	if r == nil {
		return nil
	}
	for _, row := range r.Rows {
		if row.Target == target {
			return row
		}
	}
	return nil
}

// edge returns the row's edge for bound, or nil.
func (r *frontierRow) edge(bound float64) *frontierEdge {
	if r == nil {
		return nil
	}
	for i := range r.Edges {
		if r.Edges[i].BoundMS == bound {
			return &r.Edges[i]
		}
	}
	return nil
}

// frontierSearch finds, for several targets and bounds, the highest point
// of a geometric grid of rates at which each target is within each bound,
// taking the bound as monotonic in the rate: within at a rate, within at
// every lower one. Grid point k is the rate Base × 2^(k/Steps).
type frontierSearch struct {
	steps, kMin, kMax int
	// tries is how many looks a target gets at a grid point before it
	// counts as outside a bound there.
	tries int
	// lo[t][b] is the highest grid point at which target t was seen within
	// bound b (kMin−1 for none yet), hi[t][b] the lowest at which it was
	// not (kMax+1 for none yet): the frontier lies in [lo, hi).
	lo, hi [][]int
	// seen holds each target's verdicts by grid point, so a point measured
	// for one bound answers the others.
	seen []map[int][]bool
}

func newFrontierSearch(targets, bounds, steps, kMin, kMax, tries int) *frontierSearch {
	f := &frontierSearch{steps: steps, kMin: kMin, kMax: kMax, tries: max(tries, 1)}
	for range targets {
		lo, hi := make([]int, bounds), make([]int, bounds)
		for b := range bounds {
			lo[b], hi[b] = kMin-1, kMax+1
		}
		f.lo, f.hi = append(f.lo, lo), append(f.hi, hi)
		f.seen = append(f.seen, map[int][]bool{})
	}
	return f
}

// bracket returns target t's bracket for bound b.
func (f *frontierSearch) bracket(t, b int) (lo, hi int) { return f.lo[t][b], f.hi[t][b] }

// open reports whether a verdict of target t at grid point k would narrow
// one of its brackets.
func (f *frontierSearch) open(t, k int) bool {
	for b := range f.lo[t] {
		if f.lo[t][b] < k && k < f.hi[t][b] {
			return true
		}
	}
	return false
}

// record narrows target t's brackets with its verdicts at k.
func (f *frontierSearch) record(t, k int, within []bool) {
	f.seen[t][k] = within
	for b, ok := range within {
		if f.lo[t][b] < k && k < f.hi[t][b] {
			if ok {
				f.lo[t][b] = k
			} else {
				f.hi[t][b] = k
			}
		}
	}
}

// measureFunc measures targets ts at grid point k in one round and returns
// whether each was within each bound; retry marks a second look at targets
// that were not.
type measureFunc func(k int, ts []int, retry bool) [][]bool

// run searches targets: up from grid point 0 a doubling at a time while
// some target has a bound it was not yet seen outside, then by bisecting
// each bracket down to one grid step (down to kMin for a target outside a
// bound already at point 0). A target seen outside a bound it is being
// measured for is measured once more in a round of its own, and counts as
// within if either look was: other work on the machine only ever makes a
// measurement worse.
func (f *frontierSearch) run(ctx context.Context, targets []int, measure measureFunc) {
	look := func(k int, ts []int) {
		v := measure(k, ts, false)
		for range f.tries - 1 {
			var again []int
			for i, t := range ts {
				for b, ok := range v[i] {
					if !ok && f.lo[t][b] < k && k < f.hi[t][b] {
						again = append(again, t)
						break
					}
				}
			}
			if len(again) == 0 || ctx.Err() != nil {
				break
			}
			w := measure(k, again, true)
			for j, t := range again {
				i := slices.Index(ts, t)
				for b := range v[i] {
					v[i][b] = v[i][b] || w[j][b]
				}
			}
		}
		if ctx.Err() != nil {
			return
		}
		for i, t := range ts {
			f.record(t, k, v[i])
		}
	}
	for k := 0; k <= f.kMax && ctx.Err() == nil; k += f.steps {
		var ts []int
		for _, t := range targets {
			if f.open(t, k) {
				ts = append(ts, t)
			}
		}
		if len(ts) == 0 {
			break
		}
		look(k, ts)
	}
	for ctx.Err() == nil {
		want := map[int][]int{}
		narrowed := false
		for _, t := range targets {
			for b := range f.lo[t] {
				lo, hi := f.lo[t][b], f.hi[t][b]
				if hi-lo <= 1 {
					continue
				}
				mid := lo + (hi-lo)/2
				if v, ok := f.seen[t][mid]; ok {
					f.record(t, mid, v)
					narrowed = true
					continue
				}
				if !slices.Contains(want[mid], t) {
					want[mid] = append(want[mid], t)
				}
			}
		}
		if len(want) == 0 {
			if narrowed {
				continue
			}
			return
		}
		ks := make([]int, 0, len(want))
		for k := range want {
			ks = append(ks, k)
		}
		slices.Sort(ks)
		for _, k := range ks {
			if ctx.Err() != nil {
				return
			}
			// A look at a lower point of this pass may have closed a
			// bracket this one was for.
			ts := slices.DeleteFunc(want[k], func(t int) bool { return !f.open(t, k) })
			if len(ts) > 0 {
				look(k, ts)
			}
		}
	}
}
