package sim

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
)

// Latency is the pure part of the latency model: how long each step of a
// request takes, given the state of the batch. See the package comment.
// The fields mean what the Config fields of the same names do.
type Latency struct {
	TTFT            time.Duration // fixed part of a prefill
	PrefillPerToken time.Duration // prefill cost of each prompt token
	ITL             time.Duration // time per output token in a batch of one
	BatchPenalty    float64       // stretch of ITL by a full batch
	MaxRunning      int           // batch size; below 1 means 1
	Slowdown        float64       // multiplies every duration
}

// Prefill is the time from admission to the first output token of a prompt
// of which uncachedTokens tokens are not in the prefix cache (the cached
// ones cost nothing); embeddings and v2 inference cost one prefill.
func (l Latency) Prefill(uncachedTokens int) time.Duration {
	d := float64(l.TTFT) + float64(uncachedTokens)*float64(l.PrefillPerToken)
	return clampDuration(d * l.Slowdown)
}

// InterToken is the time to the next output token while running requests
// (this one included) share the batch.
func (l Latency) InterToken(running int) time.Duration {
	fill := 0.0
	if l.MaxRunning > 0 && running > 1 {
		fill = float64(running-1) / float64(l.MaxRunning)
	}
	return clampDuration(float64(l.ITL) * (1 + l.BatchPenalty*fill) * l.Slowdown)
}

func clampDuration(ns float64) time.Duration {
	if ns >= math.MaxInt64 {
		return math.MaxInt64
	}
	return time.Duration(ns)
}

// Timing is what one request went through in the engine.
type Timing struct {
	// Queued is the time spent waiting for a batch slot.
	Queued time.Duration
	// FirstToken is the time from arrival to the first output token (or to
	// the end of the prefill for embeddings and v2 inference).
	FirstToken time.Duration
	// Total is the time from arrival to the last output token.
	Total time.Duration
	// Tokens is the number of output tokens produced, fewer than asked when
	// the request was cancelled.
	Tokens int
	// CachedTokens is the number of prompt tokens found in the prefix
	// cache, which skipped the prefill.
	CachedTokens int
}

// Prompt is a generation's input as the engine sees it.
type Prompt struct {
	// Tokens is the prompt length in tokens.
	Tokens int
	// Blocks are the chained hashes of the prompt's full blocks of
	// Engine.BlockTokens tokens, first block first; nil when the prompt is
	// not to be looked up in the prefix cache.
	Blocks []uint64
}

// Engine is the simulated accelerator: a batch of at most MaxRunning
// requests, a FIFO of the requests waiting for a slot, a paged KV cache,
// and the clock that paces prefill and decode. It is safe for concurrent
// use.
//
// Lock order: Engine.mu and the KV cache's lock are never held together.
type Engine struct {
	lat   Latency
	clock clockwork.Clock
	kv    *kvCache

	mu      sync.Mutex
	running int
	head    *waiter // oldest waiting request
	tail    *waiter

	// Mirrors of the state above for lock-free reads by metrics and by the
	// per-token latency, written with mu held.
	nRunning atomic.Int64
	nWaiting atomic.Int64
	// kvTokens is the prompt and generated tokens of the running requests.
	kvTokens atomic.Int64
}

// waiter is a request in the FIFO queue. ready is closed when it is handed a
// batch slot; granted records that under Engine.mu.
type waiter struct {
	ready      chan struct{}
	granted    bool
	prev, next *waiter
}

// NewEngine returns an idle engine with an empty KV cache, pacing its
// requests on clock.
func NewEngine(lat Latency, kv KVCache, clock clockwork.Clock) *Engine {
	if lat.MaxRunning < 1 {
		lat.MaxRunning = 1
	}
	return &Engine{lat: lat, clock: clock, kv: newKVCache(kv)}
}

// BlockTokens is the number of tokens in one KV block.
func (e *Engine) BlockTokens() int { return e.kv.blockTokens }

// KVStats returns a snapshot of the KV cache.
func (e *Engine) KVStats() KVStats { return e.kv.stats() }

// Latency returns the engine's latency model.
func (e *Engine) Latency() Latency { return e.lat }

// Running is the number of requests in the batch.
func (e *Engine) Running() int { return int(e.nRunning.Load()) }

// Waiting is the number of requests waiting for a batch slot.
func (e *Engine) Waiting() int { return int(e.nWaiting.Load()) }

// KVTokens is the number of prompt and generated tokens of the running
// requests, the engine's notional KV-cache occupancy.
func (e *Engine) KVTokens() int64 { return e.kvTokens.Load() }

// Generate runs one text generation: it waits for a batch slot in FIFO order,
// takes the prompt's KV blocks (reusing the cached prefix), spends the
// prefill of the uncached prompt tokens, then produces outputTokens tokens,
// calling emit (if not nil) with each token's index as soon as the token is
// due. It returns early with ctx's error when ctx ends, or with emit's error;
// either way the batch slot and the blocks are freed before it returns.
func (e *Engine) Generate(ctx context.Context, p Prompt, outputTokens int, emit func(i int) error) (Timing, error) {
	var t Timing
	start := e.clock.Now()
	if err := e.acquire(ctx); err != nil {
		return t, err
	}
	admitted := e.clock.Now()
	t.Queued = admitted.Sub(start)
	var lease kvLease
	t.CachedTokens = e.kv.admit(&lease, p.Tokens, p.Blocks)
	kv := int64(p.Tokens)
	e.kvTokens.Add(kv)
	defer func() {
		e.kvTokens.Add(-kv)
		e.kv.release(&lease)
		e.release()
	}()

	pc := pacer{now: admitted}
	defer pc.stop()
	due := admitted.Add(e.lat.Prefill(p.Tokens - t.CachedTokens))
	for i := 0; i < outputTokens; i++ {
		if i > 0 {
			due = due.Add(e.lat.InterToken(e.Running()))
		}
		if err := pc.waitUntil(ctx, e.clock, due); err != nil {
			t.Total = e.clock.Since(start)
			return t, err
		}
		e.kvTokens.Add(1)
		kv++
		if kv%int64(e.kv.blockTokens) == 1 || e.kv.blockTokens == 1 {
			e.kv.grow(&lease)
		}
		t.Tokens++
		if i == 0 {
			t.FirstToken = e.clock.Since(start)
		}
		if emit != nil {
			if err := emit(i); err != nil {
				t.Total = e.clock.Since(start)
				return t, err
			}
		}
	}
	t.Total = e.clock.Since(start)
	return t, nil
}

// Encode runs one request that costs a single prefill over inputTokens, as
// an embedding or a non-generative v2 inference does.
func (e *Engine) Encode(ctx context.Context, inputTokens int) (Timing, error) {
	var t Timing
	start := e.clock.Now()
	if err := e.acquire(ctx); err != nil {
		return t, err
	}
	admitted := e.clock.Now()
	t.Queued = admitted.Sub(start)
	var lease kvLease
	e.kv.reserve(&lease, inputTokens)
	kv := int64(inputTokens)
	e.kvTokens.Add(kv)
	defer func() {
		e.kvTokens.Add(-kv)
		e.kv.release(&lease)
		e.release()
	}()
	p := pacer{now: admitted}
	defer p.stop()
	err := p.waitUntil(ctx, e.clock, admitted.Add(e.lat.Prefill(inputTokens)))
	t.Total = e.clock.Since(start)
	if err == nil {
		t.FirstToken = t.Total
	}
	return t, err
}

// acquire takes a batch slot, waiting behind earlier requests.
func (e *Engine) acquire(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	e.mu.Lock()
	if e.running < e.lat.MaxRunning && e.head == nil {
		e.running++
		e.nRunning.Store(int64(e.running))
		e.mu.Unlock()
		return nil
	}
	w := &waiter{ready: make(chan struct{})}
	e.pushLocked(w)
	e.mu.Unlock()

	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		e.mu.Lock()
		if w.granted {
			// The slot arrived as ctx ended: pass it on.
			e.releaseLocked()
		} else {
			e.removeLocked(w)
		}
		e.mu.Unlock()
		return ctx.Err()
	}
}

// release frees a batch slot, handing it to the oldest waiter if any.
func (e *Engine) release() {
	e.mu.Lock()
	e.releaseLocked()
	e.mu.Unlock()
}

func (e *Engine) releaseLocked() {
	if w := e.head; w != nil {
		e.removeLocked(w)
		w.granted = true
		close(w.ready)
		return
	}
	e.running--
	e.nRunning.Store(int64(e.running))
}

func (e *Engine) pushLocked(w *waiter) {
	w.prev = e.tail
	if e.tail != nil {
		e.tail.next = w
	} else {
		e.head = w
	}
	e.tail = w
	e.nWaiting.Add(1)
}

func (e *Engine) removeLocked(w *waiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		e.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		e.tail = w.prev
	}
	w.prev, w.next = nil, nil
	e.nWaiting.Add(-1)
}

// pacer sleeps a request until its deadlines on one lazily created timer.
// It remembers the latest time it has seen, so that a deadline already
// passed (every one of them when the latency is zero) costs no clock read.
type pacer struct {
	timer clockwork.Timer
	now   time.Time
}

// waitUntil returns when the clock reaches due, at once if it has, or with
// ctx's error when ctx ends first.
func (p *pacer) waitUntil(ctx context.Context, clock clockwork.Clock, due time.Time) error {
	if !due.After(p.now) {
		return ctx.Err()
	}
	p.now = clock.Now()
	d := due.Sub(p.now)
	if d <= 0 {
		return ctx.Err()
	}
	if p.timer == nil {
		p.timer = clock.NewTimer(d)
	} else {
		p.timer.Reset(d)
	}
	select {
	case <-p.timer.Chan():
		p.now = due
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *pacer) stop() {
	if p.timer != nil {
		p.timer.Stop()
	}
}
