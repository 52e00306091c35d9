package balancer

import (
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
)

// DefaultTau is the PeakEWMA time constant NewPeakEWMA uses for tau <= 0.
const DefaultTau = 10 * time.Second

// PeakEWMA estimates a backend's latency as Finagle's and Linkerd's peak-EWMA
// does; each backend embeds one and reports Value as its Cost.
//
// A sample above the current estimate replaces it at once, so a replica that
// slows down is penalised on its first slow response. A sample below it is
// blended in with weight 1-exp(-Δt/τ), Δt being the time since the previous
// sample: the estimate is an average over roughly the last τ of wall time, not
// over a number of requests, so a busy replica and a quiet one age alike.
//
// Between samples the estimate decays toward zero as exp(-Δt/τ). An estimate
// that is not refreshed loses authority: a replica that was slow once and
// then lost every comparison is eventually tried again, and its next response
// restores a true estimate (at once, if it is still slow). Callers should pick
// τ well above a typical request's duration, or a replica's estimate sags
// noticeably while its requests are running.
//
// The zero estimate means no sample; p2c_ewma handles it (see P2CEWMA). Value
// is lock-free and Observe takes a mutex that only other Observes contend
// for; neither allocates. Use NewPeakEWMA: the zero value is not usable.
type PeakEWMA struct {
	clk  clockwork.Clock
	base time.Time // Now at construction; stamps are offsets from it (monotonic with a real clock)
	tau  float64   // nanoseconds

	mu sync.Mutex // serialises writers
	// seq is odd while a writer is storing cost and at; readers retry until
	// they see the same even seq before and after reading both (a seqlock).
	seq  atomic.Uint64
	cost atomic.Uint64 // math.Float64bits of the estimate at time at, in nanoseconds
	at   atomic.Int64  // nanoseconds after base of the latest sample
}

// NewPeakEWMA returns an estimator with no sample and time constant tau
// (DefaultTau if tau <= 0) that reads time from clk (the real clock if nil).
func NewPeakEWMA(tau time.Duration, clk clockwork.Clock) *PeakEWMA {
	if tau <= 0 {
		tau = DefaultTau
	}
	if clk == nil {
		clk = clockwork.NewRealClock()
	}
	return &PeakEWMA{clk: clk, base: clk.Now(), tau: float64(tau)}
}

// Observe adds one round-trip sample. Samples below 1ns count as 1ns, so an
// observed estimator never reads as unsampled until it has decayed.
func (e *PeakEWMA) Observe(rtt time.Duration) {
	now := int64(e.clk.Since(e.base))
	r := max(float64(rtt), 1)
	e.mu.Lock()
	defer e.mu.Unlock()
	at := e.at.Load()
	w := e.decay(now - at)
	cur := math.Float64frombits(e.cost.Load()) * w
	next := r
	if r <= cur {
		next = cur + r*(1-w)
	}
	e.seq.Add(1)
	e.cost.Store(math.Float64bits(next))
	// A sample taken before a concurrent one that locked first must not move
	// the stamp backwards.
	e.at.Store(max(now, at))
	e.seq.Add(1)
}

// Value returns the current estimate in nanoseconds, decayed for the time
// since the latest sample; 0 if there has been no sample.
func (e *PeakEWMA) Value() float64 {
	for {
		s := e.seq.Load()
		cost, at := e.cost.Load(), e.at.Load()
		if s&1 != 0 || e.seq.Load() != s {
			// A writer is mid-update; let it finish rather than spin
			// against it if it was preempted.
			runtime.Gosched()
			continue
		}
		if cost == 0 {
			return 0
		}
		return math.Float64frombits(cost) * e.decay(int64(e.clk.Since(e.base))-at)
	}
}

// decay returns exp(-dt/τ), 1 for dt <= 0.
func (e *PeakEWMA) decay(dt int64) float64 {
	if dt <= 0 {
		return 1
	}
	return math.Exp(-float64(dt) / e.tau)
}
