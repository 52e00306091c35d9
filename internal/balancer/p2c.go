package balancer

import (
	"math"
	"math/rand/v2"
	"sync/atomic"
)

// Interface guards.
var (
	_ Balancer = (*P2C)(nil)
	_ Balancer = (*P2CEWMA)(nil)
)

// P2C ("p2c") is the power of two choices: it draws two distinct candidates at
// random and picks the one with fewer requests in flight, either on a tie.
// Unlike least_request it needs no scan of the whole set, and gateway replicas
// that see the same loads do not all pile onto the same backend. The zero
// value is ready to use and draws from the runtime's lock-free generator.
type P2C struct {
	rng source
}

// NewP2C returns a P2C that draws from src; nil means the runtime's lock-free
// generator. A non-nil src (for reproducible tests) is used under a mutex.
func NewP2C(src rand.Source) *P2C {
	p := &P2C{}
	p.rng.seed(src)
	return p
}

// Pick returns the less loaded of two distinct random candidates.
func (p *P2C) Pick(cands []Backend, _ string) Backend {
	if len(cands) == 1 {
		return cands[0]
	}
	i, j := p.rng.two(len(cands))
	a, b := cands[i], cands[j]
	if b.InFlight() < a.InFlight() {
		return b
	}
	return a
}

// P2CEWMA ("p2c_ewma", the default) draws two distinct candidates at random
// and picks the one with the lower Cost() × (InFlight()+1): the latency a new
// request can expect there, as in Finagle's and Linkerd's peak-EWMA
// balancers. A replica that slows down (a noisy neighbour, a long prompt, a
// cold cache) is avoided within one response, not after its queue has built.
//
// A backend with no latency sample (Cost() == 0: new, or idle so long that its
// estimate decayed to nothing) is scored with the other pick's cost, so it
// competes on in-flight count alone: it is tried at once but never takes more
// than its rival has in flight until its first sample arrives. When neither
// pick has a sample the fewer in flight wins, as in P2C. The zero value is
// ready to use and draws from the runtime's lock-free generator.
type P2CEWMA struct {
	rng source
	// median caches medianCost (math.Float64bits), refreshed on one pick
	// in medianEvery so that a pick reads one atomic instead of every
	// candidate's estimate.
	median atomic.Uint64
}

// medianEvery is how often, in picks, P2CEWMA recomputes the candidates'
// median estimate (at random, so concurrent picks share no counter).
const medianEvery = 16

// NewP2CEWMA returns a P2CEWMA that draws from src; nil means the runtime's
// lock-free generator. A non-nil src (for reproducible tests) is used under a
// mutex.
func NewP2CEWMA(src rand.Source) *P2CEWMA {
	p := &P2CEWMA{}
	p.rng.seed(src)
	return p
}

// SlowFactor marks a slow replica for p2c_ewma: a candidate whose latency
// estimate is more than SlowFactor times the median of the candidates'
// sampled estimates is left out while a candidate that is not slow remains.
// Without the rule p2c_ewma keeps trickling requests to a replica several
// times slower than the rest whenever its rival happens to have more in
// flight: with long streams the healthy replicas always do, and one request
// in a hundred sent to an 8× slower replica is the whole p99. The median,
// not the fastest, is the reference, so one fast replica does not make the
// others look slow. The rule needs three sampled candidates: with two there
// is no majority to say which one is out of line.
const SlowFactor = 3

// maxMedian bounds the candidates whose estimates form the median: the
// scratch lives on the stack, so a pick allocates nothing.
const maxMedian = 64

// Pick returns the cheaper of two distinct random candidates, leaving out
// slow ones (see SlowFactor).
func (p *P2CEWMA) Pick(cands []Backend, _ string) Backend {
	if len(cands) == 1 {
		return cands[0]
	}
	i, j := p.rng.two(len(cands))
	a, b := cands[i], cands[j]
	ca, cb := a.Cost(), b.Cost()
	if len(cands) >= 3 {
		if limit := SlowFactor * p.medianOf(cands); limit > 0 {
			slowA, slowB := ca > limit, cb > limit
			switch {
			case slowA && slowB:
				if c := p.pickFast(cands, limit); c != nil {
					return c
				}
			case slowA:
				return b
			case slowB:
				return a
			}
		}
	}
	switch {
	case ca == 0 && cb == 0:
		ca, cb = 1, 1
	case ca == 0:
		ca = cb
	case cb == 0:
		cb = ca
	}
	if cb*float64(b.InFlight()+1) < ca*float64(a.InFlight()+1) {
		return b
	}
	return a
}

// medianOf returns the cached median estimate of cands, recomputing it now
// and then and whenever none is cached.
func (p *P2CEWMA) medianOf(cands []Backend) float64 {
	m := math.Float64frombits(p.median.Load())
	if m == 0 || p.rng.intN(medianEvery) == 0 {
		m = medianCost(cands)
		p.median.Store(math.Float64bits(m))
	}
	return m
}

// pickFast returns the candidate with the fewest requests in flight among
// those whose estimate is at most limit (ties to the first seen from a
// random start), or nil when every candidate is slow.
func (p *P2CEWMA) pickFast(cands []Backend, limit float64) Backend {
	var best Backend
	start := p.rng.intN(len(cands))
	for k := range cands {
		c := cands[(start+k)%len(cands)]
		if c.Cost() > limit {
			continue
		}
		if best == nil || c.InFlight() < best.InFlight() {
			best = c
		}
	}
	return best
}

// medianCost is the median of the candidates' sampled latency estimates
// (the lower middle one for an even count), or 0 when fewer than three
// have a sample. Only the first maxMedian candidates are read.
func medianCost(cands []Backend) float64 {
	var buf [maxMedian]float64
	n := 0
	for _, c := range cands {
		if n == len(buf) {
			break
		}
		if v := c.Cost(); v > 0 {
			buf[n] = v
			n++
		}
	}
	if n < 3 {
		return 0
	}
	return selectNth(buf[:n], (n-1)/2)
}

// selectNth reorders s and returns its k-th smallest element (Hoare's
// quickselect with a middle pivot; s is small).
func selectNth(s []float64, k int) float64 {
	lo, hi := 0, len(s)-1
	for lo < hi {
		pivot := s[(lo+hi)/2]
		i, j := lo, hi
		for i <= j {
			for s[i] < pivot {
				i++
			}
			for s[j] > pivot {
				j--
			}
			if i <= j {
				s[i], s[j] = s[j], s[i]
				i++
				j--
			}
		}
		switch {
		case k <= j:
			hi = j
		case k >= i:
			lo = i
		default:
			return s[k]
		}
	}
	return s[k]
}
