package balancer

import "math/rand/v2"

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
}

// NewP2CEWMA returns a P2CEWMA that draws from src; nil means the runtime's
// lock-free generator. A non-nil src (for reproducible tests) is used under a
// mutex.
func NewP2CEWMA(src rand.Source) *P2CEWMA {
	p := &P2CEWMA{}
	p.rng.seed(src)
	return p
}

// Pick returns the cheaper of two distinct random candidates.
func (p *P2CEWMA) Pick(cands []Backend, _ string) Backend {
	if len(cands) == 1 {
		return cands[0]
	}
	i, j := p.rng.two(len(cands))
	a, b := cands[i], cands[j]
	ca, cb := a.Cost(), b.Cost()
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
