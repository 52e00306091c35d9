// Package balancer holds the algorithms that choose which replica of a pool
// serves a request: round_robin, weighted_round_robin, random, least_request,
// p2c, p2c_ewma (the default) and bounded-load consistent_hash, plus PeakEWMA,
// the latency estimator that p2c_ewma reads. kv_aware, which routes on the
// request's prompt, lives in internal/kvroute (see KVAware).
//
// A balancer sees only the replicas that may take the request now; health,
// ejection and concurrency caps are the pool's business. Every Pick is
// allocation-free once the candidate set is stable and takes no global lock.
// docs/balancing.md explains the choices.
package balancer

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
)

// Backend is what a balancer knows of a replica. Implementations are safe for concurrent use.
type Backend interface {
	Key() string     // stable identity (the URL); survives config reloads
	Weight() int     // >= 1
	InFlight() int64 // requests currently in flight to this backend
	Cost() float64   // peak-EWMA latency estimate in nanoseconds; 0 = no sample yet
}

// Balancer picks one of cands for a request.
//
// cands holds only backends that may take the request now (healthy, not
// ejected, under their cap); it is never empty, may differ from one call to
// the next in length, order and members, and is never modified. No
// implementation in this package keeps a reference to cands or to any Backend
// in it after Pick returns: the only things retained across calls are copies of
// Key() strings and Weight() values, used as per-backend state (the smooth
// weighted round robin counters, the consistent-hash ring). The result is one
// of cands.
//
// key is the request's hash key (used by consistent_hash only; "" when the
// pool has no hash_on value for this request).
//
// Implementations are safe for concurrent use.
type Balancer interface {
	Pick(cands []Backend, key string) Backend
}

// Default is the balancer a pool uses when its config names none.
const Default = "p2c_ewma"

// ErrUnknown is returned (wrapped) by New for a name it does not know.
var ErrUnknown = errors.New("unknown balancer")

var names = []string{
	"round_robin", "weighted_round_robin", "random", "least_request",
	"p2c", "p2c_ewma", "consistent_hash", "kv_aware",
}

// Names returns the balancer names New accepts, in the order SPEC lists them.
// The slice is the caller's.
func Names() []string {
	return append([]string(nil), names...)
}

// New returns a fresh balancer for the SPEC name; "" means Default. Balancers
// that draw random numbers use math/rand/v2's runtime generator, which has
// no lock.
func New(name string) (Balancer, error) {
	switch name {
	case "round_robin":
		return &RoundRobin{}, nil
	case "weighted_round_robin":
		return &WeightedRoundRobin{}, nil
	case "random":
		return &Random{}, nil
	case "least_request":
		return &LeastRequest{}, nil
	case "p2c":
		return &P2C{}, nil
	case "p2c_ewma", "":
		return &P2CEWMA{}, nil
	case "consistent_hash":
		return &ConsistentHash{}, nil
	case "kv_aware":
		return &KVAware{}, nil
	}
	return nil, fmt.Errorf("balancer %q: %w (want one of %s)", name, ErrUnknown, strings.Join(names, ", "))
}

// source draws the random numbers of one balancer. The zero value uses
// math/rand/v2's top-level functions, backed by a per-thread ChaCha8 generator
// with no lock. A seeded source (for reproducible tests) is a *rand.Rand,
// which is not safe for concurrent use, so it is guarded by a mutex that the
// zero value never touches.
type source struct {
	mu sync.Mutex
	r  *rand.Rand
}

func (s *source) seed(src rand.Source) {
	if src != nil {
		s.r = rand.New(src)
	}
}

// intN returns a uniform int in [0, n); n > 0.
func (s *source) intN(n int) int {
	if s.r == nil {
		return rand.IntN(n)
	}
	s.mu.Lock()
	v := s.r.IntN(n)
	s.mu.Unlock()
	return v
}

// two returns two distinct uniform indexes in [0, n), n >= 2, from one draw.
// The pair is ordered at random, so preferring the first on a tie is a fair
// coin toss.
func (s *source) two(n int) (int, int) {
	x := s.intN(n * (n - 1))
	i, j := x/(n-1), x%(n-1)
	if j >= i {
		j++
	}
	return i, j
}
