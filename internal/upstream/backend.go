// Package upstream holds the replicas sluice forwards to: backends with their
// load and latency state, pools of backends with a balancer and a tuned
// transport, and the active health checks that decide who gets traffic.
package upstream

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/sluice-ai/sluice/internal/balancer"
	"github.com/sluice-ai/sluice/internal/metrics"
)

// State is a backend's place in its pool's life cycle.
type State int32

// Backend states, as /api/pools shows them.
const (
	StateHealthy State = iota
	StateUnhealthy
	StateEjected
	StateDraining
	StateStarting
)

var stateNames = [...]string{"healthy", "unhealthy", "ejected", "draining", "starting"}

func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", int32(s))
}

// ewmaTau is the decay time constant of the peak-EWMA latency estimate: long
// enough to ride out one slow request, short enough to notice a replica that
// degraded within seconds.
const ewmaTau = 10 * time.Second

// Backend is one replica. Its counters and state survive config reloads as
// long as its URL stays in the pool.
type Backend struct {
	key    string
	target *url.URL // scheme rewritten to http for h2c
	h2c    bool
	weight atomic.Int32

	inFlight atomic.Int64
	ewma     *balancer.PeakEWMA
	state    atomic.Int32

	// Upstream counts attempts to this backend by outcome. Set by
	// Pool.NewBackend; nil for a bare backend.
	Upstream *metrics.CodeCounters

	// joinedAt is when the backend (re)joined a serving pool (unix ns), for
	// slow start; 0 when it is not warming.
	joinedAt atomic.Int64
	// halfOpen is set while the backend's breaker lets one probe through
	// after an ejection.
	halfOpen atomic.Bool
	// out is the passive health state (outlier detection).
	out outlierState

	// hdr are the headers sent on every request when the backend has its
	// own (merged over the pool's); nil uses the pool's.
	hdr atomic.Pointer[http.Header]

	// Health-check streaks; written only by the pool's checker goroutine.
	okStreak, failStreak int
	lastCheckErr         atomic.Pointer[string]
}

var _ balancer.Backend = (*Backend)(nil)

// newBackend parses rawURL (http, https or h2c) and returns a backend in
// state (StateHealthy for static backends that have not been checked yet:
// traffic flows until a check says otherwise).
func newBackend(rawURL string, weight int, state State, clk clockwork.Clock) (*Backend, error) {
	u, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	b := &Backend{key: rawURL, target: u, h2c: strings.HasPrefix(rawURL, "h2c://"), ewma: balancer.NewPeakEWMA(ewmaTau, clk)}
	if weight < 1 {
		weight = 1
	}
	b.weight.Store(int32(weight))
	b.state.Store(int32(state))
	return b, nil
}

// ParseURL parses a backend URL. h2c://host:port becomes http://host:port
// (the transport, not the scheme, selects HTTP/2).
func ParseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("backend url %q: %w", raw, err)
	}
	switch u.Scheme {
	case "http", "https":
	case "h2c":
		u.Scheme = "http"
	default:
		return nil, fmt.Errorf("backend url %q: scheme must be http, https or h2c", raw)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("backend url %q: missing host", raw)
	}
	if _, _, err := net.SplitHostPort(u.Host); err != nil {
		return nil, fmt.Errorf("backend url %q: want host:port", raw)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return u, nil
}

func (b *Backend) setHeaders(h http.Header, own bool) {
	if !own {
		b.hdr.Store(nil)
		return
	}
	b.hdr.Store(&h)
}

// Key is the backend's URL as configured.
func (b *Backend) Key() string { return b.key }

// Target is the URL requests are sent to.
func (b *Backend) Target() *url.URL { return b.target }

// H2C reports whether the backend speaks HTTP/2 over cleartext.
func (b *Backend) H2C() bool { return b.h2c }

// Weight is the backend's weighted_round_robin weight (>= 1).
func (b *Backend) Weight() int { return int(b.weight.Load()) }

// InFlight is the number of requests in flight to the backend.
func (b *Backend) InFlight() int64 { return b.inFlight.Load() }

// Cost is the peak-EWMA latency estimate in nanoseconds.
func (b *Backend) Cost() float64 { return b.ewma.Value() }

// State is the backend's current state.
func (b *Backend) State() State { return State(b.state.Load()) }

// SetState moves the backend to s.
func (b *Backend) SetState(s State) { b.state.Store(int32(s)) }

// Acquire counts a request in flight. Every Acquire is paired with Release.
func (b *Backend) Acquire() { b.inFlight.Add(1) }

// Release ends a request started with Acquire; rtt > 0 (time to response
// headers) feeds the latency estimate.
func (b *Backend) Release(rtt time.Duration) {
	b.inFlight.Add(-1)
	if rtt > 0 {
		b.ewma.Observe(rtt)
	}
}

// LastCheckError is the last failed health check's error, or "".
func (b *Backend) LastCheckError() string {
	if p := b.lastCheckErr.Load(); p != nil {
		return *p
	}
	return ""
}
