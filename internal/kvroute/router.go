// Package kvroute is the kv_aware balancer: it routes LLM requests to the
// replica that most likely holds the prompt's prefix in its KV cache,
// unless that replica is overloaded or slow.
//
// A Router scores each candidate replica as a weighted sum of scorers
// (Weights): prefix affinity from an approximate index of the prompt blocks
// the gateway sent to each replica (Index, fed by the Router's own picks
// and, with Options.Redis, by its peers' over SyncChannel), the engine's
// queue and KV-cache usage scraped from each replica's /metrics (ParseLoad
// reads vLLM, SGLang and TGI names), a first-token latency estimate the
// proxy feeds (ObserveTTFT), and optional session affinity. A replica over
// its load bound loses its prefix affinity, so a hot prefix spreads instead
// of melting one replica; when no replica holds the prefix, the load
// scorers alone decide; a replica several times slower than the others is
// not picked (SlowFactor). docs/balancing.md explains the design.
//
// Request bodies are hashed with HashPrompt; picks allocate nothing once
// the replicas are known.
package kvroute

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"

	"github.com/sluice-ai/sluice/internal/balancer"
	"github.com/sluice-ai/sluice/internal/config"
)

// Defaults of ScrapeConfig.
const (
	DefaultScrapePath       = "/metrics"
	DefaultScrapeInterval   = time.Second
	DefaultScrapeTimeout    = 500 * time.Millisecond
	DefaultScrapeMaxBytes   = 4 << 20
	DefaultScrapeStaleAfter = 3
)

// maxReplicas bounds the replicas a router tracks; peers' updates naming
// replicas beyond it are ignored.
const maxReplicas = 4096

// ScrapeConfig configures reading replicas' /metrics.
type ScrapeConfig struct {
	// Path is requested on each replica's URL. Default /metrics.
	Path string
	// Interval between scrapes of a replica. Default 1s; negative turns
	// scraping off (load is then the gateway's own in-flight counts).
	Interval time.Duration
	// Timeout of one scrape. Default 500ms; at most Interval.
	Timeout time.Duration
	// MaxBytes caps an exposition; a larger one is a failed scrape.
	// Default 4 MiB.
	MaxBytes int64
	// StaleAfter is how many intervals a scraped value is used for; an
	// older one is ignored. Default 3.
	StaleAfter int
}

// Config is one pool's kv_aware configuration. The zero value of every
// field means its default.
type Config struct {
	// Pool names the pool in metrics, logs and the sync channel.
	Pool string
	// Weights of the scorers. The zero Weights means DefaultWeights.
	Weights Weights
	// MaxBlocks is the most blocks a prompt is hashed into; a longer one is
	// routed by load. Default DefaultMaxBlocks.
	MaxBlocks int
	// IndexEntries bounds the prefix index in blocks. Default
	// DefaultIndexEntries.
	IndexEntries int
	// IndexTTL is how long a block is believed held without a refresh.
	// Default DefaultIndexTTL.
	IndexTTL time.Duration
	// LoadFactor is c: a replica whose outstanding requests + 1 exceed
	// ceil(c × (total + 1) / replicas) is skipped for affinity. Default
	// DefaultLoadFactor; values below 1 are taken as 1.
	LoadFactor float64
	// Scrape configures reading the replicas' load.
	Scrape ScrapeConfig
}

func (c *Config) fill() {
	if c.Weights == (Weights{}) {
		c.Weights = DefaultWeights
	}
	if c.MaxBlocks <= 0 {
		c.MaxBlocks = DefaultMaxBlocks
	}
	if c.LoadFactor == 0 {
		c.LoadFactor = DefaultLoadFactor
	}
	c.LoadFactor = max(c.LoadFactor, 1)
	s := &c.Scrape
	if s.Path == "" {
		s.Path = DefaultScrapePath
	}
	if s.Interval == 0 {
		s.Interval = DefaultScrapeInterval
	}
	if s.Timeout <= 0 {
		s.Timeout = DefaultScrapeTimeout
	}
	if s.Interval > 0 {
		s.Timeout = min(s.Timeout, s.Interval)
	}
	if s.MaxBytes <= 0 {
		s.MaxBytes = DefaultScrapeMaxBytes
	}
	if s.StaleAfter <= 0 {
		s.StaleAfter = DefaultScrapeStaleAfter
	}
}

// Options are the parts of a Router that come from its owner.
type Options struct {
	// Clock drives the index TTL, scrape staleness and the scrape ticker.
	// Nil is the real clock.
	Clock clockwork.Clock
	// Logger receives scrape failures (once per replica and reason) and,
	// at debug level, one line per pick. Nil discards.
	Logger *slog.Logger
	// HTTPClient scrapes /metrics. Nil uses a client of its own that
	// ignores proxy settings.
	HTTPClient *http.Client
	// Redis, when set, shares index updates with the other gateways of the
	// same pool name over pub/sub (see Sync). Nil keeps the index local.
	Redis redis.UniversalClient
	// Metrics receives the router's metrics. Nil uses a private registry.
	Metrics *Metrics
}

// Request is what a pick knows of a request.
type Request struct {
	// Blocks are the prompt's block hashes (HashPrompt); empty routes by
	// load alone.
	Blocks []uint64
	// Session is the session-affinity key (the pool's hash_on value); ""
	// for none.
	Session string
}

// Router is one pool's kv_aware balancer. Pick is safe for concurrent use
// and takes no lock shared by all picks; Run drives the scraper and the
// index sync, Close stops them.
type Router struct {
	cfg   Config // as built; Weights and LoadFactor are in tune
	tune  atomic.Pointer[tuning]
	clk   clockwork.Clock
	log   *slog.Logger
	hc    *http.Client
	ownHC bool // hc is the router's own: Close closes its connections
	index *Index
	m     *poolMetrics
	sync  *syncer // nil without Redis

	// reps maps replica key to its state; replaced whole under mu, read
	// without a lock.
	reps   atomic.Pointer[map[string]*replica]
	mu     sync.Mutex
	nextID uint32

	scratch sync.Pool

	runMu   sync.Mutex
	closed  bool
	quit    chan struct{}
	running sync.WaitGroup
}

// tuning is what Reconfigure changes without rebuilding the router.
type tuning struct {
	weights    Weights
	loadFactor float64
}

// replica is the Router's state for one replica key.
type replica struct {
	key        string
	id         uint32
	keyHash    uint64
	metricsURL string // "" if the key is not a URL

	// local is set once the replica was a candidate of this gateway's
	// picks: only those are scraped (peers may name replicas this gateway
	// does not serve).
	local    atomic.Bool
	inFlight atomic.Int64 // the gateway's in-flight count at its latest pick
	picks    atomic.Uint64
	ttft     *balancer.PeakEWMA
	load     atomic.Pointer[loadSample]
	// scrapeErr is the reason of the latest failed scrape, nil after a
	// good one: a failure is logged when the reason changes.
	scrapeErr atomic.Pointer[string]

	lastMu sync.Mutex
	last   Explain
	lastAt time.Time
}

// loadSample is one successful scrape.
type loadSample struct {
	Load
	at       time.Time
	inFlight int64 // the gateway's in-flight count when the scrape began
}

// New returns a router for cfg. Call Run to start scraping and syncing,
// and Close when done.
func New(cfg Config, opts Options) *Router {
	cfg.fill()
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	ownClient := opts.HTTPClient == nil
	if ownClient {
		opts.HTTPClient = &http.Client{Transport: &http.Transport{
			Proxy:               nil,
			MaxIdleConnsPerHost: 2,
			IdleConnTimeout:     90 * time.Second,
		}}
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil)
	}
	r := &Router{
		cfg:   cfg,
		clk:   opts.Clock,
		log:   opts.Logger.With("pool", cfg.Pool, "balancer", "kv_aware"),
		hc:    opts.HTTPClient,
		ownHC: ownClient,
		index: NewIndex(cfg.IndexEntries, cfg.IndexTTL, opts.Clock),
		m:     opts.Metrics.forPool(cfg.Pool),
		quit:  make(chan struct{}),
	}
	empty := map[string]*replica{}
	r.reps.Store(&empty)
	r.tune.Store(&tuning{weights: cfg.Weights, loadFactor: cfg.LoadFactor})
	r.scratch.New = func() any { return new(scratch) }
	if opts.Redis != nil {
		r.sync = newSyncer(r, opts.Redis)
	}
	return r
}

// Config is the router's configuration with defaults filled in.
func (r *Router) Config() Config {
	c := r.cfg
	t := r.tune.Load()
	c.Weights, c.LoadFactor = t.weights, t.loadFactor
	return c
}

// Reconfigure applies cfg to a running router when it differs from the
// current configuration only in Weights and LoadFactor, which take effect
// for the next pick; it reports false, changing nothing, when cfg needs a
// new router (another index size or TTL, scrape settings, prompt limit or
// pool name). A config reload can thus keep the index through a re-tuning.
func (r *Router) Reconfigure(cfg Config) bool {
	if !r.Fits(cfg) {
		return false
	}
	cfg.fill()
	r.tune.Store(&tuning{weights: cfg.Weights, loadFactor: cfg.LoadFactor})
	return true
}

// Fits reports whether Reconfigure would apply cfg to this router, without
// applying it: a reload can then decide, before it commits anything,
// whether it needs a new router.
func (r *Router) Fits(cfg Config) bool {
	cfg.fill()
	cur := r.cfg
	cur.Weights, cur.LoadFactor = cfg.Weights, cfg.LoadFactor
	return cur == cfg
}

// HashPrompt is HashPrompt with the router's MaxBlocks.
func (r *Router) HashPrompt(body []byte, dst []uint64) []uint64 {
	return HashPrompt(body, dst, r.cfg.MaxBlocks)
}

// replicaFor returns key's state, creating it. It returns nil only for a
// replica named by a peer when the router already tracks maxReplicas.
func (r *Router) replicaFor(key string, local bool) *replica {
	rep := (*r.reps.Load())[key]
	if rep == nil {
		rep = r.addReplica(key, local)
		if rep == nil {
			return nil
		}
	}
	if local && !rep.local.Load() {
		rep.local.Store(true)
	}
	return rep
}

func (r *Router) addReplica(key string, local bool) *replica {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := *r.reps.Load()
	if rep := cur[key]; rep != nil {
		return rep
	}
	if !local && len(cur) >= maxReplicas {
		return nil
	}
	r.nextID++
	rep := &replica{
		key:        key,
		id:         r.nextID,
		keyHash:    xxhash.Sum64String(key),
		metricsURL: metricsURL(key, r.cfg.Scrape.Path),
		ttft:       balancer.NewPeakEWMA(0, r.clk),
	}
	next := make(map[string]*replica, len(cur)+1)
	for k, v := range cur {
		next[k] = v
	}
	next[key] = rep
	r.reps.Store(&next)
	return rep
}

// metricsURL is where a replica with URL key serves path: h2c:// is
// scraped over http://. It is "" when key is not a URL.
func metricsURL(key, path string) string {
	u, err := url.Parse(key)
	if err != nil || u.Host == "" {
		return ""
	}
	switch u.Scheme {
	case "http", "https":
	case "h2c":
		u.Scheme = "http"
	default:
		return ""
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	u.RawQuery, u.Fragment = "", ""
	return u.String()
}

// Forget drops everything the router knows of the replica key: call it
// when the replica leaves the pool (removed, died, replaced). Its index
// entries become inert at once and age out; if the key comes back it
// starts with an empty record, as a restarted engine starts with an empty
// cache. A replica that only drains or fails health checks need not be
// forgotten: it is simply not a candidate.
func (r *Router) Forget(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := *r.reps.Load()
	if cur[key] == nil {
		return
	}
	next := make(map[string]*replica, len(cur))
	for k, v := range cur {
		if k != key {
			next[k] = v
		}
	}
	r.reps.Store(&next)
}

// TTFTUnitBlocks is the prompt size, in blocks (4 KiB, about a thousand
// tokens), that first-token latency samples are scaled to: a sample for a
// prompt of b blocks counts as d / max(1, b/TTFTUnitBlocks). Prefill time
// grows with the prompt, and without the scaling a replica that happened to
// get a long prompt would look slow to every later request.
const TTFTUnitBlocks = 32

// ObserveTTFT feeds replica key's first-token latency estimate with one
// request's time to first token — for a stream, the first content event;
// otherwise the first body byte; not the response headers, which engines
// send before the request leaves their queue — and the number of prompt
// blocks the request had (len(Request.Blocks); 0 if unknown).
func (r *Router) ObserveTTFT(key string, d time.Duration, blocks int) {
	if d <= 0 {
		return
	}
	if rep := (*r.reps.Load())[key]; rep != nil {
		rep.ttft.Observe(time.Duration(float64(d) / max(1, float64(blocks)/TTFTUnitBlocks)))
	}
}

// scratch is one pick's working memory, pooled.
type scratch struct {
	reps    []*replica
	ids     []uint32
	matched []int
	in      []inputs
	out     []Explain
	ttft    []float64
}

func (s *scratch) reset(n int) {
	if cap(s.reps) < n {
		s.reps = make([]*replica, n)
		s.ids = make([]uint32, n)
		s.matched = make([]int, n)
		s.in = make([]inputs, n)
		s.out = make([]Explain, n)
		s.ttft = make([]float64, n)
	}
	s.reps, s.ids, s.matched = s.reps[:n], s.ids[:n], s.matched[:n]
	s.in, s.out, s.ttft = s.in[:n], s.out[:n], s.ttft[:n]
}

// Pick returns the candidate with the highest score for req (near ties
// broken at random, see TieTolerance; slow replicas left out, see
// SlowFactor), then records req's blocks on it in the index (and
// publishes them to peers). cands is never empty and holds only replicas
// that may take the request now; it is not kept.
func (r *Router) Pick(cands []balancer.Backend, req Request) balancer.Backend {
	n := len(cands)
	sc := r.scratch.Get().(*scratch)
	sc.reset(n)
	now := r.clk.Now()
	stale := r.cfg.Scrape.Interval * time.Duration(r.cfg.Scrape.StaleAfter)
	var hs uint64
	tune := r.tune.Load()
	useSession := req.Session != "" && tune.weights.Session > 0
	if useSession {
		hs = xxhash.Sum64String(req.Session)
	}
	var bestHRW uint64
	sessionWinner := -1
	for j, b := range cands {
		rep := r.replicaFor(b.Key(), true)
		in := b.InFlight()
		rep.inFlight.Store(in)
		sc.reps[j], sc.ids[j] = rep, rep.id
		ls := rep.load.Load()
		if ls != nil && (r.cfg.Scrape.Interval < 0 || now.Sub(ls.at) > stale) {
			ls = nil
		}
		t := rep.ttft.Value()
		sc.in[j] = inputs{inFlight: in, load: ls, ttft: t}
		if useSession {
			if v := mix64(hs ^ rep.keyHash); sessionWinner < 0 || v > bestHRW {
				bestHRW, sessionWinner = v, j
			}
		}
	}
	if sessionWinner >= 0 {
		sc.in[sessionWinner].session = true
	}
	blocks := len(req.Blocks)
	if blocks > 0 {
		r.index.Match(req.Blocks, sc.ids, sc.matched)
		for j := range sc.in {
			sc.in[j].matched = sc.matched[j]
		}
	}
	score(tune.weights, tune.loadFactor, blocks, sc.in, sc.out, sc.ttft)

	best := choose(sc.out, tune.weights)
	chosen := sc.reps[best]
	chosen.picks.Add(1)
	for j, rep := range sc.reps {
		rep.lastMu.Lock()
		rep.last, rep.lastAt = sc.out[j], now
		rep.lastMu.Unlock()
	}
	r.account(sc, best, blocks)
	if blocks > 0 {
		r.index.Record(req.Blocks, chosen.id)
		if r.sync != nil {
			r.sync.publish(chosen.key, req.Blocks)
		}
	}
	if r.log.Enabled(context.Background(), slog.LevelDebug) {
		r.logPick(sc, best)
	}
	b := cands[best]
	clear(sc.reps) // do not keep replicas alive from the pool
	r.scratch.Put(sc)
	return b
}

// TieTolerance is the share of the weights' sum within which the best
// scores count as a tie, broken at random. Gateways that read the same
// scrape would otherwise all send a burst of misses to the same replica
// until the next scrape; a near-tie means the choice barely matters.
const TieTolerance = 0.02

// choose returns the index of the best candidate that is not slow: a
// uniform choice among those within the tie tolerance of the best total.
func choose(out []Explain, w Weights) int {
	top := math.Inf(-1)
	for j := range out {
		if !out[j].Slow {
			top = max(top, out[j].Total)
		}
	}
	floor := top - TieTolerance*(w.Prefix+w.Queue+w.KVCache+w.Latency+w.Session) - 1e-9
	best, ties := 0, 0 // 0 if every candidate were slow, which cannot be: the median's is not
	for j := range out {
		if out[j].Slow || out[j].Total < floor {
			continue
		}
		ties++
		if ties == 1 || rand.IntN(ties) == 0 {
			best = j
		}
	}
	return best
}

// account counts the pick's outcome.
func (r *Router) account(sc *scratch, best, blocks int) {
	if blocks == 0 {
		r.m.unindexed.Inc()
		return
	}
	// A capped holder that won on load still holds what it holds.
	m := sc.out[best].Matched
	r.m.blocksHit.Add(float64(m))
	r.m.blocksMiss.Add(float64(blocks - m))
	if m > 0 {
		r.m.hit.Inc()
		return
	}
	for j := range sc.out {
		if sc.out[j].Matched > 0 && (sc.out[j].Capped || sc.out[j].Slow) {
			r.m.capped.Inc()
			return
		}
	}
	r.m.miss.Inc()
}

func (r *Router) logPick(sc *scratch, best int) {
	var b strings.Builder
	for j, e := range sc.out {
		if j > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s total=%.3f prefix=%.2f(%d/%d%s) queue=%.2f(q=%.1f) kv=%.2f latency=%.2f(out=%.1f ttft=%.3fs) session=%.0f",
			sc.reps[j].key, e.Total, e.Prefix, e.Matched, e.Blocks, map[bool]string{true: " capped"}[e.Capped]+map[bool]string{true: " slow"}[e.Slow],
			e.QueueS, e.Queue, e.KVCache, e.Latency, e.Outstanding, e.TTFTSeconds, e.Session)
	}
	r.log.Debug("kv_aware pick", "replica", sc.reps[best].key, "scores", b.String())
}

// mix64 is SplitMix64's finaliser: rendezvous hashing needs a well-mixed
// function of (session, replica).
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// Status is a router's state for /api/pools.
type Status struct {
	Pool     string          `json:"pool"`
	Weights  Weights         `json:"weights"`
	Index    IndexStatus     `json:"index"`
	Replicas []ReplicaStatus `json:"replicas"`
	Sync     *SyncStatus     `json:"sync,omitempty"`
}

// IndexStatus is the prefix index's fill.
type IndexStatus struct {
	Entries    int     `json:"entries"`
	Capacity   int     `json:"capacity"`
	TTLSeconds float64 `json:"ttl_seconds"`
}

// ReplicaStatus is what the router knows of one replica: the inputs of its
// scorers now, and its latest scores.
type ReplicaStatus struct {
	Key   string `json:"key"`
	Picks uint64 `json:"picks"`
	// InFlight is the gateway's in-flight count at the latest pick.
	InFlight int64 `json:"in_flight"`
	// TTFTSeconds is the first-token latency estimate (0: no sample).
	TTFTSeconds float64 `json:"ttft_seconds"`
	// Load is the latest scraped load, LoadAgeSeconds its age and
	// LoadStale whether it is too old to be used; nil before any scrape.
	Load           *Load   `json:"load,omitempty"`
	LoadAgeSeconds float64 `json:"load_age_seconds,omitempty"`
	LoadStale      bool    `json:"load_stale,omitempty"`
	// ScrapeError is the reason the latest scrape failed, "" if it did not.
	ScrapeError string `json:"scrape_error,omitempty"`
	// Last is the replica's score in the latest pick it was a candidate
	// of, and LastAt when that was; nil if it never was.
	Last   *Explain   `json:"last,omitempty"`
	LastAt *time.Time `json:"last_at,omitempty"`
}

// Status returns the router's state, replicas sorted by key.
func (r *Router) Status() Status {
	now := r.clk.Now()
	stale := r.cfg.Scrape.Interval * time.Duration(r.cfg.Scrape.StaleAfter)
	st := Status{
		Pool:    r.cfg.Pool,
		Weights: r.tune.Load().weights,
		Index:   IndexStatus{Entries: r.index.Len(), Capacity: r.index.Cap(), TTLSeconds: float64(r.index.ttl)},
	}
	for _, rep := range *r.reps.Load() {
		if !rep.local.Load() {
			continue
		}
		rs := ReplicaStatus{
			Key:         rep.key,
			Picks:       rep.picks.Load(),
			InFlight:    rep.inFlight.Load(),
			TTFTSeconds: rep.ttft.Value() / 1e9,
		}
		if ls := rep.load.Load(); ls != nil {
			l := ls.Load
			rs.Load = &l
			rs.LoadAgeSeconds = now.Sub(ls.at).Seconds()
			rs.LoadStale = r.cfg.Scrape.Interval < 0 || now.Sub(ls.at) > stale
		}
		if e := rep.scrapeErr.Load(); e != nil {
			rs.ScrapeError = *e
		}
		rep.lastMu.Lock()
		if !rep.lastAt.IsZero() {
			e, at := rep.last, rep.lastAt
			rs.Last, rs.LastAt = &e, &at
		}
		rep.lastMu.Unlock()
		st.Replicas = append(st.Replicas, rs)
	}
	slices.SortFunc(st.Replicas, func(a, b ReplicaStatus) int { return strings.Compare(a.Key, b.Key) })
	if r.sync != nil {
		s := r.sync.status()
		st.Sync = &s
	}
	return st
}

// Run scrapes the replicas' /metrics every interval and, with Redis,
// exchanges index updates with peers, until ctx is done or Close is
// called. It returns nil then; it may be called once.
func (r *Router) Run(ctx context.Context) error {
	r.runMu.Lock()
	if r.closed {
		r.runMu.Unlock()
		return nil
	}
	r.running.Add(1)
	r.runMu.Unlock()
	defer r.running.Done()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var g sync.WaitGroup
	g.Go(func() {
		select {
		case <-r.quit:
			cancel()
		case <-ctx.Done():
		}
	})
	if r.cfg.Scrape.Interval > 0 {
		g.Go(func() { r.scrapeLoop(ctx) })
	}
	if r.sync != nil {
		g.Go(func() { r.sync.publishLoop(ctx) })
		g.Go(func() { r.sync.subscribeLoop(ctx) })
	}
	<-ctx.Done()
	g.Wait()
	return nil
}

// Close stops Run and waits for it to return. It is idempotent.
func (r *Router) Close() {
	r.runMu.Lock()
	if !r.closed {
		r.closed = true
		close(r.quit)
	}
	r.runMu.Unlock()
	r.running.Wait()
	if r.ownHC {
		r.hc.CloseIdleConnections()
	}
}

// FromPool returns the kv_aware Config of a validated pool. Whether to
// share the index (Options.Redis) is the caller's: p.KVAware.Share with
// redis.url set.
func FromPool(p *config.Pool) Config {
	w := p.ScorerWeights()
	k := p.KVAware
	interval := k.ScrapeInterval.D()
	if interval == 0 {
		interval = -1 // the config's 0 turns scraping off
	}
	return Config{
		Pool: p.Name,
		Weights: Weights{
			Prefix:  w["prefix"],
			Queue:   w["queue"],
			KVCache: w["kv_cache"],
			Latency: w["latency"],
			Session: w["session"],
		},
		MaxBlocks:    k.MaxBlocks,
		IndexEntries: k.IndexEntries,
		IndexTTL:     k.IndexTTL.D(),
		LoadFactor:   k.LoadFactor,
		Scrape: ScrapeConfig{
			Path:       k.MetricsPath,
			Interval:   interval,
			Timeout:    k.ScrapeTimeout.D(),
			MaxBytes:   int64(k.MaxMetricsSize),
			StaleAfter: k.StaleAfter,
		},
	}
}
