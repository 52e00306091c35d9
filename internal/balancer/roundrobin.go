package balancer

import (
	"sync"
	"sync/atomic"
)

// Interface guards.
var (
	_ Balancer = (*RoundRobin)(nil)
	_ Balancer = (*WeightedRoundRobin)(nil)
)

// RoundRobin ("round_robin") hands requests to the candidates in turn. With a
// stable candidate set, N picks over k backends give each exactly N/k. The
// zero value is ready to use.
type RoundRobin struct {
	next atomic.Uint64
}

// Pick returns the next candidate in turn.
func (r *RoundRobin) Pick(cands []Backend, _ string) Backend {
	n := r.next.Add(1) - 1
	return cands[n%uint64(len(cands))]
}

// wrrForget is how many picks a key may be absent from the candidates before
// WeightedRoundRobin drops its counter. Absences shorter than this (a backend
// briefly at its cap) keep the backend's place in the cycle.
const wrrForget = 1024

// WeightedRoundRobin ("weighted_round_robin") is NGINX's smooth weighted round
// robin: each pick adds every candidate's weight to its counter, picks the
// highest counter (the first on a tie) and subtracts the candidates' total
// weight from it. Over any sum(weights) consecutive picks of a stable set each
// backend is picked exactly its weight times, interleaved rather than in
// bursts: weights 5,1,1 give a a b a c a a.
//
// Counters are kept by Key(), so a changing candidate set (a backend down, at
// its cap, added or removed) never confuses one backend with another; only the
// present candidates take part in a pick, as in NGINX. A counter is dropped
// once its key has been absent for more than 1024 picks.
//
// Every pick reads and writes every counter, so a pick holds a per-balancer
// mutex for O(len(cands)) work; a lock-free version would need to swap the
// whole counter vector atomically, costing an allocation per pick. The zero
// value is ready to use.
type WeightedRoundRobin struct {
	mu    sync.Mutex
	picks uint64
	state map[string]*wrrCounter
	// order holds the counters of the previous call's cands, index-aligned, so
	// that a repeated candidate set costs no map lookups.
	order []*wrrCounter
}

type wrrCounter struct {
	key     string
	current int64
	seen    uint64 // the last pick at which the key was among the candidates
}

// Pick returns the candidate with the highest smooth-WRR counter.
func (w *WeightedRoundRobin) Pick(cands []Backend, _ string) Backend {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.picks++
	if !w.sameOrderLocked(cands) {
		w.resyncLocked(cands)
	}
	var total int64
	best := 0
	for i, c := range cands {
		wt := int64(max(c.Weight(), 1))
		s := w.order[i]
		s.current += wt
		total += wt
		if s.current > w.order[best].current {
			best = i
		}
	}
	w.order[best].current -= total
	return cands[best]
}

func (w *WeightedRoundRobin) sameOrderLocked(cands []Backend) bool {
	if len(cands) != len(w.order) {
		return false
	}
	for i, c := range cands {
		if c.Key() != w.order[i].key {
			return false
		}
	}
	return true
}

// resyncLocked points order at the counters of cands, creating counters for
// new keys and dropping those absent for more than wrrForget picks.
func (w *WeightedRoundRobin) resyncLocked(cands []Backend) {
	if w.state == nil {
		w.state = make(map[string]*wrrCounter, len(cands))
	}
	// The previous candidates were present up to the previous pick: the fast
	// path does not stamp them.
	for _, s := range w.order {
		s.seen = w.picks - 1
	}
	w.order = w.order[:0]
	for _, c := range cands {
		k := c.Key()
		s := w.state[k]
		if s == nil {
			s = &wrrCounter{key: k}
			w.state[k] = s
		}
		s.seen = w.picks
		w.order = append(w.order, s)
	}
	for k, s := range w.state {
		if w.picks-s.seen > wrrForget {
			delete(w.state, k)
		}
	}
}
