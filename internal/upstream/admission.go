package upstream

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-ai/sluice/internal/balancer"
	"github.com/sluice-ai/sluice/internal/config"
)

// Admission errors: why a pool could not give a request a backend.
var (
	// ErrQueueFull means every backend is at its cap (or none is ready) and
	// the pool's queue holds queue.size requests already.
	ErrQueueFull = errors.New("queue full")
	// ErrQueueTimeout means the request waited queue.timeout without a
	// backend becoming free.
	ErrQueueTimeout = errors.New("timed out waiting in queue")
	// ErrNoCapacity means every backend is at its cap and the pool has no
	// queue (queue.size 0).
	ErrNoCapacity = errors.New("every backend is at max_concurrency")
)

// Priority orders requests waiting in a pool's queue.
type Priority uint8

// Priorities, from X-Sluice-Priority.
const (
	PriorityHigh Priority = iota
	PriorityNormal
	PriorityLow
	numPriorities
)

// ParsePriority reads an X-Sluice-Priority value; anything but high or low
// is normal.
func ParsePriority(s string) Priority {
	switch s {
	case "high":
		return PriorityHigh
	case "low":
		return PriorityLow
	}
	return PriorityNormal
}

func (p Priority) String() string {
	return [...]string{"high", "normal", "low"}[p]
}

// classWeights share dispatches among backlogged priority classes (smooth
// weighted round robin): high gets 8 of every 13, normal 4, low 1, so high
// waits least and low still moves under sustained saturation.
var classWeights = [numPriorities]int{8, 4, 1}

// waiter is a request waiting for a backend.
type waiter struct {
	key      string
	blocks   []uint64 // the prompt's blocks, for kv_aware
	exclude  *Backend
	ch       chan *Backend // receives the backend, already acquired for it
	done     bool          // delivered or given up; guarded by queue.mu
	enqueued time.Time
}

// queue holds a pool's waiting requests, FIFO within each priority.
type queue struct {
	mu      sync.Mutex
	classes [numPriorities][]*waiter
	credits [numPriorities]int
	n       atomic.Int64 // live waiters, readable without mu
}

// next removes and returns the waiter to serve now, or nil. Waiters that
// gave up are dropped on the way.
func (q *queue) nextLocked(peek bool) *waiter { return q.nextAllowedLocked(peek, true) }

// nextAllowedLocked is nextLocked, leaving out the low class unless low:
// a class left out neither is served nor earns credit.
func (q *queue) nextAllowedLocked(peek, low bool) *waiter {
	for {
		best, total := -1, 0
		for c := range q.classes {
			q.trimLocked(c)
			if len(q.classes[c]) == 0 || (!low && c == int(PriorityLow)) {
				continue
			}
			total += classWeights[c]
			if best < 0 || q.credits[c]+classWeights[c] > q.credits[best]+classWeights[best] {
				best = c
			}
		}
		if best < 0 {
			return nil
		}
		w := q.classes[best][0]
		if peek {
			return w
		}
		for c := range q.classes {
			if len(q.classes[c]) > 0 && (low || c != int(PriorityLow)) {
				q.credits[c] += classWeights[c]
			}
		}
		q.credits[best] -= total
		q.classes[best][0] = nil
		q.classes[best] = q.classes[best][1:]
		return w
	}
}

// trimLocked drops waiters at the head of class c that already gave up.
func (q *queue) trimLocked(c int) {
	cl := q.classes[c]
	for len(cl) > 0 && cl[0].done {
		cl[0] = nil
		cl = cl[1:]
	}
	if len(cl) == 0 {
		cl = cl[:0:0] // let the backing array go once drained
	}
	q.classes[c] = cl
}

// QueueDepth is the number of requests waiting in the pool's queue.
func (p *Pool) QueueDepth() int { return int(p.q.n.Load()) }

// Acquire returns a backend for a request and counts the request in flight
// on it; the caller must call Release when the request ends. It prefers a
// backend other than exclude (for retries). When no backend can take the
// request now — all at max_concurrency, or none ready — the request waits in
// the pool's queue, by priority, up to queue.timeout.
func (p *Pool) Acquire(ctx context.Context, key string, prio Priority, exclude *Backend) (*Backend, error) {
	return p.acquire(ctx, key, nil, prio, exclude)
}

// acquire is Acquire for a request with prompt blocks (kv_aware).
func (p *Pool) acquire(ctx context.Context, key string, blocks []uint64, prio Priority, exclude *Backend) (*Backend, error) {
	cfg := p.Config()
	// A low-priority request in a pool with a reserve checks the reserve
	// and takes its slot under the queue's lock, as dispatch does, so that
	// two of them cannot both take the last slot below it.
	reserved := prio == PriorityLow && hasReserve(cfg)
	if reserved {
		p.q.mu.Lock()
		b := p.tryAcquireLowLocked(cfg, key, blocks, exclude)
		p.q.mu.Unlock()
		if b != nil {
			return b, nil
		}
	} else if b := p.tryAcquire(key, blocks, exclude); b != nil {
		return b, nil
	}
	if p.Ready() == 0 && !p.replicasComing(cfg) {
		// Static backends that are all down: waiting would only delay the
		// 503 the client gets anyway.
		p.Metrics.QueueRejections.WithLabelValues("no_backend").Inc()
		return nil, ErrNoBackend
	}
	if cfg.Queue.Size <= 0 || cfg.Queue.Timeout <= 0 {
		if p.Ready() == 0 {
			return nil, ErrNoBackend
		}
		return nil, ErrNoCapacity
	}
	q := &p.q
	w := &waiter{key: key, blocks: blocks, exclude: exclude, ch: make(chan *Backend, 1), enqueued: p.opts.Clock.Now()}
	q.mu.Lock()
	// Check again under the lock: a release between the first try and here
	// dispatched to nobody.
	var b *Backend
	if reserved {
		b = p.tryAcquireLowLocked(cfg, key, blocks, exclude)
	} else {
		b = p.tryAcquire(key, blocks, exclude)
	}
	if b != nil {
		q.mu.Unlock()
		return b, nil
	}
	if int(q.n.Load()) >= cfg.Queue.Size {
		q.mu.Unlock()
		p.Metrics.QueueRejections.WithLabelValues("queue_full").Inc()
		return nil, ErrQueueFull
	}
	q.classes[prio] = append(q.classes[prio], w)
	q.n.Add(1)
	q.mu.Unlock()

	t := p.opts.Clock.NewTimer(cfg.Queue.Timeout.D())
	defer t.Stop()
	var err error
	select {
	case b := <-w.ch:
		p.Metrics.QueueWait.Observe(p.opts.Clock.Since(w.enqueued).Seconds())
		return b, nil
	case <-t.Chan():
		err = ErrQueueTimeout
	case <-ctx.Done():
		err = ctx.Err()
	}
	q.mu.Lock()
	if w.done { // a backend was handed over as we gave up: give it back
		q.mu.Unlock()
		p.Release(<-w.ch, 0)
		return nil, err
	}
	w.done = true
	q.n.Add(-1)
	q.mu.Unlock()
	if err == ErrQueueTimeout {
		p.Metrics.QueueRejections.WithLabelValues("queue_timeout").Inc()
	}
	return nil, err
}

// replicasComing reports whether a pool without ready backends may get one
// soon: its replicas are started by sluice or Kubernetes (scale from zero,
// a restart), or one is starting now.
func (p *Pool) replicasComing(cfg *config.Pool) bool {
	if cfg.Process != nil || cfg.Kubernetes != nil {
		return true
	}
	for _, b := range p.snap.Load().all {
		if b.State() == StateStarting {
			return true
		}
	}
	return false
}

// Release ends a request started with Acquire. rtt > 0 (time to response
// headers) feeds the backend's latency estimate. The freed slot goes to the
// head of the queue, if anyone waits.
func (p *Pool) Release(b *Backend, rtt time.Duration) {
	b.Release(rtt)
	p.dispatch()
}

// dispatch hands free capacity to waiting requests, in priority order;
// low-priority ones only while the pool's reserve allows (lowFits).
func (p *Pool) dispatch() {
	q := &p.q
	if q.n.Load() == 0 {
		return
	}
	cfg := p.Config()
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.n.Load() > 0 {
		low := p.lowFits(cfg)
		w := q.nextAllowedLocked(true, low)
		if w == nil {
			return
		}
		b := p.tryAcquire(w.key, w.blocks, w.exclude)
		if b == nil {
			return
		}
		q.nextAllowedLocked(false, low)
		w.done = true
		q.n.Add(-1)
		w.ch <- b
	}
}

// hasReserve reports whether cfg keeps capacity from low-priority
// requests: a queue.reserve and a max_concurrency to take it from.
func hasReserve(cfg *config.Pool) bool {
	return cfg.Queue.Reserve > 0 && cfg.MaxConcurrency > 0
}

// lowFits reports whether a low-priority request may start now. A pool
// keeps queue.reserve of its capacity (the ready backends' caps) for high
// and normal requests: low ones start only while the requests in flight on
// the ready backends are fewer than (1 - reserve) × capacity, while high
// and normal ones may use all of it. Low requests wait in the queue
// meanwhile, or fail at once without one.
func (p *Pool) lowFits(cfg *config.Pool) bool {
	if !hasReserve(cfg) {
		return true
	}
	limit := int64(cfg.MaxConcurrency)
	var capacity, inFlight int64
	for _, bb := range p.snap.Load().ready {
		b := bb.(*Backend)
		capacity += capOf(b, limit)
		inFlight += b.InFlight()
	}
	return float64(inFlight) < (1-cfg.Queue.Reserve)*float64(capacity)
}

// tryAcquireLowLocked is tryAcquire for a low-priority request, within
// the reserve. The caller holds p.q.mu.
func (p *Pool) tryAcquireLowLocked(cfg *config.Pool, key string, blocks []uint64, exclude *Backend) *Backend {
	if !p.lowFits(cfg) {
		return nil
	}
	return p.tryAcquire(key, blocks, exclude)
}

// scratch holds candidate slices, so filtering allocates nothing.
var scratch = sync.Pool{New: func() any { s := make([]balancer.Backend, 0, 16); return &s }}

// tryAcquire picks a ready backend with room and counts a request on it, or
// returns nil when none has room.
func (p *Pool) tryAcquire(key string, blocks []uint64, exclude *Backend) *Backend {
	snap := p.snap.Load()
	if len(snap.ready) == 0 {
		return nil
	}
	limit := int64(p.Config().MaxConcurrency)
	bal := p.bal.Load().b
	if limit == 0 && snap.special == 0 && (exclude == nil || len(snap.ready) == 1) {
		b := p.pick(bal, snap.ready, key, blocks)
		b.Acquire()
		return b
	}
	sp := scratch.Get().(*[]balancer.Backend)
	defer func() { clear(*sp); scratch.Put(sp) }()
	var now int64
	if snap.special > 0 {
		now = p.opts.Clock.Now().UnixNano()
	}
	for range 3 { // a lost race for a backend's last slot is retried
		cands := (*sp)[:0]
		for _, bb := range snap.ready {
			b := bb.(*Backend)
			if b == exclude && len(snap.ready) > 1 {
				continue
			}
			if b.InFlight() < capOf(b, limit) {
				cands = append(cands, b)
			}
		}
		*sp = cands
		if len(cands) == 0 {
			return nil
		}
		b := p.pick(bal, cands, key, blocks)
		// Slow start: a warming backend keeps a pick only with probability
		// equal to its ramp, so its share grows from 10% to full.
		if f := b.warmFactor(now, p.Config().SlowStart.D()); f < 1 && len(cands) > 1 && rand.Float64() > f {
			i := slices.Index(cands, balancer.Backend(b))
			cands[i] = cands[len(cands)-1]
			b = p.pick(bal, cands[:len(cands)-1], key, blocks)
		}
		if b.tryAcquire(capOf(b, limit)) {
			return b
		}
	}
	return nil
}

// capOf is the most requests b may have in flight: one probe at a time
// while its breaker is half-open, else the pool's max_concurrency (0 = no
// cap).
func capOf(b *Backend, limit int64) int64 {
	if b.halfOpen.Load() {
		return 1
	}
	if limit == 0 {
		return math.MaxInt64
	}
	return limit
}

// tryAcquire counts a request on b unless b already has limit in flight.
func (b *Backend) tryAcquire(limit int64) bool {
	for {
		cur := b.inFlight.Load()
		if cur >= limit {
			return false
		}
		if b.inFlight.CompareAndSwap(cur, cur+1) {
			return true
		}
	}
}

// warmFactor is b's slow-start share in [0.1, 1]: 1 once the window since
// it joined has passed.
func (b *Backend) warmFactor(now int64, window time.Duration) float64 {
	j := b.joinedAt.Load()
	if j == 0 || window <= 0 || now == 0 {
		return 1
	}
	f := float64(now-j) / float64(window)
	if f >= 1 {
		return 1
	}
	return max(f, 0.1)
}
