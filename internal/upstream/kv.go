package upstream

import (
	"context"
	"sync"

	"github.com/sluice-ai/sluice/internal/balancer"
	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/kvroute"
)

// A pool whose balancer is kv_aware routes through a kvroute.Router: the
// pool builds it on Prepare, swaps it in on Commit (or re-tunes the running
// one when only its weights changed), runs its scraper and index sharing
// from Start to Close, tells it when a backend leaves (Forget) and feeds it
// each attempt's time to first token.

// Prompt is a request's prompt, hashed into blocks once per request for the
// kv_aware balancer. Get one from Pool.HashPrompt and Release it when the
// request has ended.
type Prompt struct {
	// Blocks are the prompt's block hashes (kvroute.HashPrompt); empty when
	// the prompt could not be indexed.
	Blocks []uint64
	from   *sync.Pool
}

// Release returns the prompt's memory for reuse. Safe on nil.
func (pr *Prompt) Release() {
	if pr == nil || pr.from == nil {
		return
	}
	pr.Blocks = pr.Blocks[:0]
	pr.from.Put(pr)
}

// blocks returns pr's blocks; nil for a nil prompt.
func (pr *Prompt) blocks() []uint64 {
	if pr == nil {
		return nil
	}
	return pr.Blocks
}

// HashPrompt hashes a buffered request body into prompt blocks when the
// pool routes with kv_aware; otherwise, and for an empty body, it returns
// nil and costs nothing.
func (p *Pool) HashPrompt(body []byte) *Prompt {
	kv := p.kv.Load()
	if kv == nil || len(body) == 0 {
		return nil
	}
	pr, _ := p.prompts.Get().(*Prompt)
	if pr == nil {
		pr = &Prompt{Blocks: make([]uint64, 0, kv.Config().MaxBlocks), from: &p.prompts}
	}
	pr.Blocks = kv.HashPrompt(body, pr.Blocks[:0])
	return pr
}

// Router is the pool's kv_aware router, nil when its balancer is another.
func (p *Pool) Router() *kvroute.Router { return p.kv.Load() }

// KVStatus is the kv_aware router's state for /api/pools; nil when the
// pool's balancer is another.
func (p *Pool) KVStatus() *kvroute.Status {
	kv := p.kv.Load()
	if kv == nil {
		return nil
	}
	st := kv.Status()
	return &st
}

// pick chooses among cands: through the kv_aware router when the pool has
// one, else through its balancer.
func (p *Pool) pick(bal balancer.Balancer, cands []balancer.Backend, key string, blocks []uint64) *Backend {
	if kv := p.kv.Load(); kv != nil {
		return kv.Pick(cands, kvroute.Request{Blocks: blocks, Session: key}).(*Backend)
	}
	return bal.Pick(cands, key).(*Backend)
}

// prepareRouter builds the router cfg needs, when the current one cannot be
// re-tuned to it. It reports whether the pool's router changes at all.
func (p *Pool) prepareRouter(cfg *config.Pool) (next *kvroute.Router, change bool) {
	cur := p.kv.Load()
	if cfg.Balancer != "kv_aware" {
		return nil, cur != nil
	}
	kc := kvroute.FromPool(cfg)
	if cur != nil && cur.Fits(kc) {
		return nil, false
	}
	opts := kvroute.Options{Clock: p.opts.Clock, Logger: p.opts.Logger, Metrics: p.opts.KVMetrics}
	if cfg.KVAware.Share && p.opts.Redis != nil {
		opts.Redis = p.opts.Redis
	}
	return kvroute.New(kc, opts), true
}

// swapRouterLocked makes next the pool's router (nil: none) and starts it
// if the pool is running. It returns the router it replaced, which the
// caller closes once it no longer holds p.mu.
func (p *Pool) swapRouterLocked(next *kvroute.Router) (old *kvroute.Router) {
	old = p.kv.Swap(next)
	if next != nil {
		p.runRouterLocked(next)
	}
	return old
}

// runRouterLocked starts r's scraper and index sharing when the pool has
// started; Close (or a swap) stops them. The pool owns the goroutine.
func (p *Pool) runRouterLocked(r *kvroute.Router) {
	if !p.started || p.closed {
		return
	}
	p.running.Go(func() { _ = r.Run(context.Background()) })
}
