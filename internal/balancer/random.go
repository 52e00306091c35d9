package balancer

import "math/rand/v2"

// Interface guards.
var (
	_ Balancer = (*Random)(nil)
	_ Balancer = (*LeastRequest)(nil)
)

// Random ("random") picks a candidate uniformly at random. The zero value is
// ready to use and draws from the runtime's lock-free generator.
type Random struct {
	rng source
}

// NewRandom returns a Random that draws from src; nil means the runtime's
// lock-free generator. A non-nil src (for reproducible tests) is used under a
// mutex.
func NewRandom(src rand.Source) *Random {
	r := &Random{}
	r.rng.seed(src)
	return r
}

// Pick returns a uniformly random candidate.
func (r *Random) Pick(cands []Backend, _ string) Backend {
	if len(cands) == 1 {
		return cands[0]
	}
	return cands[r.rng.intN(len(cands))]
}

// LeastRequest ("least_request") picks a candidate with the fewest requests in
// flight, uniformly at random among those tied. Taking the first of the tied
// instead would send every request of an idle pool to the same backend. It
// keeps no state between calls, so it never picks from a stale candidate set.
// The zero value is ready to use and draws from the runtime's lock-free
// generator.
type LeastRequest struct {
	rng source
}

// NewLeastRequest returns a LeastRequest that breaks ties with src; nil means
// the runtime's lock-free generator. A non-nil src (for reproducible tests) is
// used under a mutex.
func NewLeastRequest(src rand.Source) *LeastRequest {
	l := &LeastRequest{}
	l.rng.seed(src)
	return l
}

// Pick returns a least-loaded candidate. Each candidate's InFlight is read
// once; ties are broken by reservoir sampling, one draw per tie.
func (l *LeastRequest) Pick(cands []Backend, _ string) Backend {
	best := cands[0]
	least := best.InFlight()
	ties := 1
	for _, c := range cands[1:] {
		switch n := c.InFlight(); {
		case n < least:
			best, least, ties = c, n, 1
		case n == least:
			ties++
			if l.rng.intN(ties) == 0 {
				best = c
			}
		}
	}
	return best
}
