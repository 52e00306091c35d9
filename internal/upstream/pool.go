package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/sluice-ai/sluice/internal/balancer"
	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/kvroute"
	"github.com/sluice-ai/sluice/internal/metrics"
)

// ErrNoBackend means no backend of the pool may take a request now.
var ErrNoBackend = errors.New("no healthy backend")

// Options are the parts of a pool that come from its owner, not its config.
type Options struct {
	// Logger receives health transitions. Nil discards.
	Logger *slog.Logger
	// Clock drives health checks and latency estimates. Nil is the real clock.
	Clock clockwork.Clock
	// HealthClient sends health probes. Nil uses a client on the pool's
	// transport.
	HealthClient *http.Client
	// Metrics receives the pool's metrics. Nil uses a private registry.
	Metrics *metrics.Gateway
	// KVMetrics receives the kv_aware router's metrics. Nil uses a
	// private registry.
	KVMetrics *kvroute.Metrics
	// Redis shares a kv_aware pool's prefix index with the other gateways
	// when its kv_aware.share is set. Nil keeps every index local.
	Redis *redis.Client
}

// PoolMetrics are a pool's metric handles, resolved once so the request path
// does no label hashing.
type PoolMetrics struct {
	Requests        *metrics.CodeCounters
	Duration        prometheus.Observer
	TTFB            prometheus.Observer
	Retries         prometheus.Counter
	QueueWait       prometheus.Observer
	StreamErrors    *prometheus.CounterVec // curried with pool; label reason
	QueueRejections *prometheus.CounterVec // curried with pool; label reason
	Ejections       prometheus.Counter
}

// snapshot is an immutable view of a pool's backends, swapped atomically so
// the request path never takes a lock.
type snapshot struct {
	all   []*Backend
	ready []balancer.Backend // healthy backends, in config order
	// special counts ready backends that are warming up or half-open, which
	// sends Acquire down its filtering path.
	special int
}

// Pool is a set of backends serving the same models, with a balancer, a
// transport and health checks. Its identity survives reloads: Reconfigure
// changes it in place, keeping the state of backends that stay.
type Pool struct {
	name string
	opts Options

	cfg  atomic.Pointer[config.Pool]
	bal  atomic.Pointer[balancerBox]
	snap atomic.Pointer[snapshot]

	tr    atomic.Pointer[transports]
	retry atomic.Pointer[retryPolicy]
	hdr   atomic.Pointer[http.Header] // upstream_headers; nil map when none

	// active counts requests in flight through the pool and retrying the
	// retries among them; the retry budget (Flight) compares the two.
	active, retrying atomic.Int64

	// Metrics are the pool's metric handles.
	Metrics *PoolMetrics
	gm      *metrics.Gateway

	q queue

	kv      atomic.Pointer[kvroute.Router] // nil unless the balancer is kv_aware
	prompts sync.Pool                      // *Prompt, sized for kv's MaxBlocks

	mu      sync.Mutex // serializes Reconfigure and state refreshes; taken before q.mu
	checker *checker
	timers  map[clockwork.Timer]struct{} // ejection and slow-start timers, stopped by Close
	closed  bool                         // guarded by mu: no new timers
	started bool                         // guarded by mu: Start ran, routers run
	running sync.WaitGroup               // the routers' Run, waited for by Close
}

// transports are a pool's connection pools: one for http:// upstreams
// (h1Transport, which hands what it does not take to net/http's), one for
// https:// upstreams (HTTP/1.1 or HTTP/2), one for h2c:// upstreams. They
// are replaced only when the timeouts they enforce change.
type transports struct {
	http     *h1Transport
	h1, h2c  *http.Transport
	timeouts config.Timeouts
}

func newTransports(t config.Timeouts) *transports {
	h1 := newTransport(t, false)
	return &transports{
		http:     newH1Transport(h1, newDialer(t), t.FirstByte.D(), h1.IdleConnTimeout, h1.MaxIdleConnsPerHost),
		h1:       h1,
		h2c:      newTransport(t, true),
		timeouts: t,
	}
}

func (t *transports) closeIdle() {
	t.http.CloseIdleConnections() // h1's too
	t.h2c.CloseIdleConnections()
}

type balancerBox struct {
	name string
	b    balancer.Balancer
}

// NewPool builds a pool from cfg. Call Start to begin health checking and
// Close when done.
func NewPool(cfg *config.Pool, opts Options) (*Pool, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.NewGateway(prometheus.NewRegistry())
	}
	gm := opts.Metrics
	p := &Pool{name: cfg.Name, opts: opts, gm: gm, Metrics: &PoolMetrics{
		Requests:        metrics.NewCodeCounters(gm.Requests, cfg.Name),
		Duration:        gm.Duration.WithLabelValues(cfg.Name),
		TTFB:            gm.TTFB.WithLabelValues(cfg.Name),
		Retries:         gm.Retries.WithLabelValues(cfg.Name),
		QueueWait:       gm.QueueWait.WithLabelValues(cfg.Name),
		StreamErrors:    gm.StreamErrors.MustCurryWith(prometheus.Labels{"pool": cfg.Name}),
		QueueRejections: gm.QueueRejections.MustCurryWith(prometheus.Labels{"pool": cfg.Name}),
		Ejections:       gm.Ejections.WithLabelValues(cfg.Name),
	}}
	p.snap.Store(&snapshot{})
	p.timers = make(map[clockwork.Timer]struct{})
	if err := p.Reconfigure(cfg); err != nil {
		return nil, err
	}
	return p, nil
}

// newTransport returns a transport tuned for proxy load: a connection pool
// large enough that steady traffic reuses connections instead of dialing
// (Go's default keeps only 2 idle connections per host).
//
// timeouts.connect bounds dialing and timeouts.first_byte the wait for
// response headers, so neither costs a timer per request.
func newTransport(to config.Timeouts, h2c bool) *http.Transport {
	t := &http.Transport{
		Proxy:                 nil,
		DialContext:           newDialer(to).DialContext,
		MaxIdleConns:          4096,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   to.Connect.D(),
		ResponseHeaderTimeout: to.FirstByte.D(),
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true, // pass bodies through as they are
		ForceAttemptHTTP2:     true,
		WriteBufferSize:       32 << 10,
		ReadBufferSize:        32 << 10,
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
	}
	if h2c {
		t.Protocols = new(http.Protocols)
		t.Protocols.SetUnencryptedHTTP2(true)
	}
	return t
}

func newDialer(to config.Timeouts) *net.Dialer {
	return &net.Dialer{Timeout: to.Connect.D(), KeepAlive: 30 * time.Second}
}

// Name is the pool's name.
func (p *Pool) Name() string { return p.name }

// Config is the pool's current config.
func (p *Pool) Config() *config.Pool { return p.cfg.Load() }

// BalancerName is the name of the pool's balancer.
func (p *Pool) BalancerName() string { return p.bal.Load().name }

// Transport returns the transport for requests to b.
func (p *Pool) Transport(b *Backend) http.RoundTripper {
	t := p.tr.Load()
	switch {
	case b.h2c:
		return t.h2c
	case b.target.Scheme == "http":
		return t.http
	}
	return t.h1
}

// Backends returns the pool's backends in config order.
func (p *Pool) Backends() []*Backend { return p.snap.Load().all }

// Ready reports how many backends may take traffic.
func (p *Pool) Ready() int { return len(p.snap.Load().ready) }

// Reconfigure prepares cfg and commits it.
func (p *Pool) Reconfigure(cfg *config.Pool) error {
	c, err := p.Prepare(cfg)
	if err != nil {
		return err
	}
	c.Commit()
	return nil
}

// Change is a prepared reconfiguration of a pool. Prepare builds everything
// the new config needs and may fail without touching the pool; Commit
// applies it and cannot fail; Discard drops it. A reload prepares every pool
// before it commits any, so a config that fails leaves every pool as it was.
type Change struct {
	p     *Pool
	cfg   *config.Pool
	fresh map[string]*Backend // static backends new to the pool, by URL
	bal   *balancerBox        // nil: keep the balancer
	tr    *transports         // nil: keep the transports
	retry *retryPolicy
	hdr   http.Header
	// kv is the kv_aware router to swap in (nil with kvSwap: none) when
	// kvSwap is set; otherwise the running router, if any, is re-tuned.
	kv     *kvroute.Router
	kvSwap bool
}

// Prepare builds what cfg needs that the pool does not have yet: new
// static backends, a balancer if it changed, transports if the timeouts
// changed.
func (p *Pool) Prepare(cfg *config.Pool) (*Change, error) {
	c := &Change{p: p, cfg: cfg, fresh: make(map[string]*Backend), retry: compileRetry(cfg.Retry.On), hdr: upstreamHeaders(cfg.UpstreamHeaders, nil)}
	old := make(map[string]bool)
	for _, b := range p.snap.Load().all {
		old[b.key] = true
	}
	for _, bc := range cfg.Backends {
		if old[bc.URL] {
			continue
		}
		b, err := p.NewBackend(bc.URL, bc.Weight, StateHealthy)
		if err != nil {
			c.Discard()
			return nil, fmt.Errorf("pool %s: %w", cfg.Name, err)
		}
		c.fresh[bc.URL] = b
	}
	if cur := p.bal.Load(); cur == nil || cur.name != cfg.Balancer {
		b, err := balancer.New(cfg.Balancer)
		if err != nil {
			c.Discard()
			return nil, fmt.Errorf("pool %s: %w", cfg.Name, err)
		}
		c.bal = &balancerBox{name: cfg.Balancer, b: b}
	}
	if cur := p.tr.Load(); cur == nil || cur.timeouts != cfg.Timeouts {
		c.tr = newTransports(cfg.Timeouts)
	}
	c.kv, c.kvSwap = p.prepareRouter(cfg)
	return c, nil
}

// Discard drops a change that will not be committed.
func (c *Change) Discard() {
	if c.tr != nil {
		c.tr.closeIdle()
	}
	if c.kv != nil {
		c.kv.Close()
	}
	for _, b := range c.fresh {
		c.p.forgetMetrics(b)
	}
}

// Commit applies the change. Backends whose URL stays keep their load,
// latency and health state; new ones start healthy until checked; removed
// ones are dropped from selection (requests in flight to them finish).
func (c *Change) Commit() {
	p, cfg := c.p, c.cfg
	var oldKV *kvroute.Router
	defer func() {
		if oldKV != nil {
			oldKV.Close() // after p.mu is released: Close waits for its Run
		}
	}()
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.kvSwap {
		oldKV = p.swapRouterLocked(c.kv)
	} else if kv := p.kv.Load(); kv != nil {
		kv.Reconfigure(kvroute.FromPool(cfg))
	}
	cur := p.snap.Load().all
	byKey := make(map[string]*Backend, len(cur))
	for _, b := range cur {
		byKey[b.key] = b
	}
	all := make([]*Backend, 0, len(cfg.Backends))
	if cfg.Process != nil || cfg.Kubernetes != nil {
		// Replicas are added and removed by their supervisor, not the file.
		all = append(all, cur...)
	}
	kept := make(map[*Backend]bool)
	for _, bc := range cfg.Backends {
		b, ok := byKey[bc.URL]
		if !ok {
			b = c.fresh[bc.URL]
		}
		b.weight.Store(int32(max(bc.Weight, 1)))
		b.setHeaders(upstreamHeaders(cfg.UpstreamHeaders, bc.Headers), len(bc.Headers) > 0)
		kept[b] = true
		all = append(all, b)
	}
	if cfg.Process == nil && cfg.Kubernetes == nil {
		for _, b := range cur {
			if !kept[b] {
				p.forgetMetrics(b)
				p.forgetRouted(b.key)
			}
		}
	}
	if c.bal != nil {
		p.bal.Store(c.bal)
	}
	if c.tr != nil {
		if old := p.tr.Swap(c.tr); old != nil {
			old.closeIdle() // connections in use finish their requests
		}
	}
	p.retry.Store(c.retry)
	p.hdr.Store(&c.hdr)
	p.cfg.Store(cfg)
	p.storeLocked(all)
}

// Headers are the headers sent to backend b on every request: the pool's
// upstream_headers and b's own. The map is shared: do not modify it.
func (p *Pool) Headers(b *Backend) http.Header {
	if h := b.hdr.Load(); h != nil {
		return *h
	}
	if h := p.hdr.Load(); h != nil {
		return *h
	}
	return nil
}

// NewBackend creates a backend of this pool (not yet added to it).
func (p *Pool) NewBackend(rawURL string, weight int, state State) (*Backend, error) {
	b, err := newBackend(rawURL, weight, state, p.opts.Clock)
	if err != nil {
		return nil, err
	}
	b.Upstream = metrics.NewCodeCounters(p.gm.Upstream, p.name, rawURL)
	return b, nil
}

// forgetMetrics deletes b's per-backend metric series, so series do not
// pile up as replicas come and go.
func (p *Pool) forgetMetrics(b *Backend) {
	p.gm.Upstream.DeletePartialMatch(prometheus.Labels{"pool": p.name, "backend": b.key})
}

// forgetRouted tells the kv_aware router, if any, that the backend key
// left: what its cache held is gone with it.
func (p *Pool) forgetRouted(key string) {
	if kv := p.kv.Load(); kv != nil {
		kv.Forget(key)
	}
}

// AddBackend adds b (for replicas sluice starts or discovers).
func (p *Pool) AddBackend(b *Backend) {
	p.mu.Lock()
	defer p.mu.Unlock()
	all := slices.Clone(p.snap.Load().all)
	p.storeLocked(append(all, b))
}

// RemoveBackend drops the backend with key and its metric series; requests
// in flight finish.
func (p *Pool) RemoveBackend(key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	all := slices.DeleteFunc(slices.Clone(p.snap.Load().all), func(b *Backend) bool {
		if b.key == key {
			p.forgetMetrics(b)
			p.forgetRouted(key)
			return true
		}
		return false
	})
	p.storeLocked(all)
}

// SetBackendState moves b to s and updates the ready set.
func (p *Pool) SetBackendState(b *Backend, s State) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if b.State() == s {
		return
	}
	b.SetState(s)
	p.storeLocked(p.snap.Load().all)
}

func (p *Pool) storeLocked(all []*Backend) {
	prev := p.snap.Load()
	wasReady := make(map[*Backend]bool, len(prev.ready))
	for _, b := range prev.ready {
		wasReady[b.(*Backend)] = true
	}
	ready := make([]balancer.Backend, 0, len(all))
	special := 0
	for _, b := range all {
		if b.State() != StateHealthy {
			continue
		}
		if !wasReady[b] && len(prev.ready) > 0 {
			p.markJoinedLocked(b)
		}
		if b.joinedAt.Load() != 0 || b.halfOpen.Load() {
			special++
		}
		ready = append(ready, b)
	}
	p.snap.Store(&snapshot{all: all, ready: ready, special: special})
	if len(ready) > len(prev.ready) {
		p.dispatch() // new capacity for whoever waits (q.mu nests inside p.mu)
	}
}

// markJoinedLocked starts b's slow start: it joined a pool that was already
// serving, so it should not get a full share at once.
func (p *Pool) markJoinedLocked(b *Backend) {
	window := p.Config().SlowStart.D()
	if window <= 0 {
		return
	}
	b.joinedAt.Store(p.opts.Clock.Now().UnixNano())
	p.afterFuncLocked(window, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		b.joinedAt.Store(0)
		p.storeLocked(p.snap.Load().all)
	})
}

// afterFuncLocked runs f after d unless the pool closes first. The pool
// owns the timer: Close stops it.
func (p *Pool) afterFuncLocked(d time.Duration, f func()) {
	if p.closed {
		return
	}
	var t clockwork.Timer
	t = p.opts.Clock.AfterFunc(d, func() {
		p.mu.Lock()
		delete(p.timers, t)
		p.mu.Unlock()
		f()
	})
	p.timers[t] = struct{}{}
}

// Start begins active health checks (when the pool's health_check.path is
// set) and, for a kv_aware pool, the router's /metrics scraping and index
// sharing. It returns at once; Close stops them all.
func (p *Pool) Start(ctx context.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started || p.closed {
		return
	}
	p.started = true
	p.checker = startChecker(ctx, p)
	if kv := p.kv.Load(); kv != nil {
		p.runRouterLocked(kv)
	}
}

// Close stops health checks and closes idle upstream connections.
// Connections carrying requests are not cut.
func (p *Pool) Close() {
	p.mu.Lock()
	c := p.checker
	p.checker = nil
	p.closed = true
	for t := range p.timers {
		t.Stop()
	}
	clear(p.timers)
	kv := p.kv.Load()
	p.mu.Unlock()
	if c != nil {
		c.stop()
	}
	if kv != nil {
		kv.Close()
	}
	p.running.Wait()
	p.tr.Load().closeIdle()
}
