// Package cache is sluice's response cache: complete, successful responses
// of pools that enable caching, kept in memory (bounded by bytes) and,
// optionally, in Redis shared by every gateway replica. Identical requests
// that miss at the same time make one upstream call between them, and a
// streamed response is recorded event by event and replayed as the same
// server-sent events.
//
// The gateway builds a Key with KeyFor and hands each cacheable request to
// Cache.Serve together with the handler that would otherwise answer it.
package cache

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/maypok86/otter/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Options configure a Cache.
type Options struct {
	// MemoryBytes bounds the in-memory level (cache.memory, whose default
	// is 256 MiB). 0 keeps nothing in memory: every hit then comes from
	// Redis or Memcached, one of which must be set.
	MemoryBytes int64
	// MaxEntryBytes is the largest response stored; larger ones pass
	// through uncached. Default 8 MiB, and never more than a quarter of a
	// non-zero MemoryBytes.
	MaxEntryBytes int64
	// Redis, when set, is a second level shared by every gateway using it
	// (cache.redis). Nil keeps the cache in this process. The Cache does
	// not close it.
	Redis redis.UniversalClient
	// RedisPrefix starts every Redis key. Default "sluice:cache:".
	RedisPrefix string
	// RedisTimeout bounds one Redis (or Memcached) lookup; a lookup that
	// fails or takes longer is a miss. Default 250ms.
	RedisTimeout time.Duration
	// Memcached, when set, lists Memcached servers (host:port, keys spread
	// over them by hash) that are a second level shared by every gateway
	// using them (cache.memcached), instead of Redis. Nil: none. Setting
	// both Redis and Memcached is an error.
	Memcached []string
	// MemcachedPrefix starts every Memcached key. Default "sluice:cache:".
	MemcachedPrefix string
	// MemcachedItemLimit is the servers' item size limit (memcached -I);
	// larger entries are kept in memory only. Default 1 MiB, memcached's
	// default.
	MemcachedItemLimit int
	// Registerer receives the cache's metrics. Nil registers none.
	Registerer prometheus.Registerer
	// Clock is the time source for expiry. Nil uses the real clock.
	Clock clockwork.Clock
	// Logger receives Redis errors (at most one line per 30s). Nil
	// discards them.
	Logger *slog.Logger
}

const (
	defaultMaxEntry     = 8 << 20
	defaultRedisPrefix  = "sluice:cache:"
	defaultRedisTimeout = 250 * time.Millisecond
	redisWriteQueue     = 256
	redisWriteTimeout   = 2 * time.Second
	redisErrorLogEvery  = 30 * time.Second
	headerXSluiceCache  = "X-Sluice-Cache"
	resultHit           = "hit"
	resultMiss          = "miss"
	resultBypass        = "bypass"
	entryOverheadBytes  = 256
	headerOverheadBytes = 32
)

// The X-Sluice-Cache values, shared read-only: cap == len, so an append by
// anyone later copies.
var (
	valueHit    = []string{resultHit}
	valueMiss   = []string{resultMiss}
	valueBypass = []string{resultBypass}
)

// Cache is a response cache. It is safe for concurrent use. Close it to
// stop its background work.
type Cache struct {
	mem      *otter.Cache[[32]byte, *entry]
	flights  sync.Map // [32]byte → *flight
	maxEntry int64
	clock    clockwork.Clock
	log      *slog.Logger
	m        *metrics

	l2         sharedLevel // Redis or Memcached; nil: none
	l2Timeout  time.Duration
	writes     chan sharedWrite
	errMu      sync.Mutex
	lastErrLog time.Time

	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
}

// New returns a Cache. With Redis or Memcached set it starts one goroutine
// that writes entries to it in the background; Close stops it.
func New(opts Options) (*Cache, error) {
	if opts.MemoryBytes < 0 || (opts.MemoryBytes == 0 && opts.Redis == nil && len(opts.Memcached) == 0) {
		return nil, fmt.Errorf("cache: no memory, Redis or Memcached to keep responses in")
	}
	if opts.Redis != nil && len(opts.Memcached) > 0 {
		return nil, fmt.Errorf("cache: Redis and Memcached are both set; choose one shared level")
	}
	if opts.MaxEntryBytes <= 0 {
		opts.MaxEntryBytes = defaultMaxEntry
	}
	opts.MaxEntryBytes = min(opts.MaxEntryBytes, 1<<31-1)
	if opts.MemoryBytes > 0 {
		opts.MaxEntryBytes = min(opts.MaxEntryBytes, opts.MemoryBytes/4)
	}
	if opts.RedisPrefix == "" {
		opts.RedisPrefix = defaultRedisPrefix
	}
	if opts.RedisTimeout <= 0 {
		opts.RedisTimeout = defaultRedisTimeout
	}
	if opts.MemcachedPrefix == "" {
		opts.MemcachedPrefix = defaultMemcachedPrefix
	}
	if opts.MemcachedItemLimit <= 0 {
		opts.MemcachedItemLimit = DefaultMemcachedItemLimit
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	var mem *otter.Cache[[32]byte, *entry]
	if opts.MemoryBytes > 0 {
		if mem, err = newMemory(opts); err != nil {
			return nil, err
		}
	}
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	c := &Cache{
		mem:       mem,
		maxEntry:  opts.MaxEntryBytes,
		clock:     opts.Clock,
		log:       opts.Logger,
		m:         m,
		l2Timeout: opts.RedisTimeout,
		done:      make(chan struct{}),
	}
	switch {
	case opts.Redis != nil:
		c.l2 = &redisLevel{rdb: opts.Redis, prefix: opts.RedisPrefix, errs: m.redisErrors}
	case len(opts.Memcached) > 0:
		l, err := newMemcachedLevel(opts.Memcached, opts.MemcachedPrefix, opts.MemcachedItemLimit, opts.RedisTimeout, opts.Clock, m.mcErrors)
		if err != nil {
			if mem != nil {
				mem.StopAllGoroutines()
			}
			return nil, err
		}
		c.l2 = l
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	if c.l2 != nil {
		c.writes = make(chan sharedWrite, redisWriteQueue)
		go c.writeLoop(ctx)
	} else {
		close(c.done)
	}
	return c, nil
}

// newMemory builds the in-memory level: otter, bounded by the entries'
// sizes, each entry expiring after its own TTL.
func newMemory(opts Options) (*otter.Cache[[32]byte, *entry], error) {
	mopts := &otter.Options[[32]byte, *entry]{
		MaximumWeight: uint64(opts.MemoryBytes),
		Weigher:       func(_ [32]byte, e *entry) uint32 { return uint32(e.size) },
		ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[[32]byte, *entry]) time.Duration {
			return e.Value.ttl
		}),
		Logger: otterLogger{opts.Logger},
	}
	if opts.Clock != nil {
		mopts.Clock = otterClock{opts.Clock}
	}
	mem, err := otter.New(mopts)
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	return mem, nil
}

// memGet returns the in-memory entry for k.
func (c *Cache) memGet(k Key) (*entry, bool) {
	if c.mem == nil {
		return nil, false
	}
	return c.mem.GetIfPresent(k.sum)
}

// memSet keeps e in memory.
func (c *Cache) memSet(k Key, e *entry) {
	if c.mem != nil {
		c.mem.Set(k.sum, e)
	}
}

// Close stops the cache's goroutines, after queued Redis writes have been
// sent (for at most a few seconds). It is safe to call more than once.
func (c *Cache) Close() {
	c.closeOnce.Do(func() {
		c.cancel()
		<-c.done
		if c.mem != nil {
			c.mem.StopAllGoroutines()
		}
	})
}

// Fetch forwards a request upstream and writes the response to w. It
// reports whether the response it wrote is complete; one cut short after
// it began (a broken upstream body) is neither stored nor shared.
type Fetch func(w http.ResponseWriter) (complete bool)

// Outcome is how Serve answered a request.
type Outcome uint8

const (
	// Fetched means Serve called fetch (a miss, or a bypass).
	Fetched Outcome = iota
	// Hit means the answer came from the cache: no model ran.
	Hit
	// Gone means the client left while waiting for an identical request's
	// upstream call; nothing was written.
	Gone
)

// Serve answers r from the cache or through fetch. ttl is how long a
// response is kept (the pool's cache.ttl); Serve calls fetch straight away
// when ttl <= 0 or the method is not POST (KeyFor does not include the
// method).
//
// What happens:
//
//   - Request "Cache-Control: no-store": straight to fetch, nothing stored
//     (X-Sluice-Cache: bypass).
//   - "Cache-Control: no-cache": no lookup; fetch's response is stored
//     (bypass). It may share an upstream call already under way, whose
//     response is as fresh as it asks for.
//   - A fresh entry: replayed without calling fetch (hit).
//   - Otherwise the first request for the key calls fetch (miss) while its
//     response is written to its client and recorded at once; identical
//     requests arriving meanwhile wait for it and are answered from the
//     recording (hit). If the response cannot be stored (not a 200,
//     incomplete, too large, upstream "Cache-Control: no-store" or
//     "private", Set-Cookie, Vary or Content-Encoding), they call fetch
//     themselves (miss): they never receive a failure that was the first
//     request's.
//
// A response whose client went away is not stored either.
func (c *Cache) Serve(w http.ResponseWriter, r *http.Request, key Key, ttl time.Duration, fetch Fetch) Outcome {
	if ttl <= 0 || r.Method != http.MethodPost {
		fetch(w)
		return Fetched
	}
	noCache, noStore := requestDirectives(r.Header)
	if noStore {
		c.m.requests(key.pool).bypass.Inc()
		w.Header()[headerXSluiceCache] = valueBypass
		fetch(w)
		return Fetched
	}
	if !noCache {
		if e, ok := c.memGet(key); ok {
			c.m.requests(key.pool).hit.Inc()
			e.replay(w, valueHit)
			return Hit
		}
	}
	f := &flight{done: make(chan struct{})}
	if v, loaded := c.flights.LoadOrStore(key.sum, f); loaded {
		return c.follow(w, r, key, ttl, fetch, v.(*flight), noCache)
	}
	return c.lead(w, r, key, ttl, fetch, f, noCache)
}

// flight is one upstream call that identical requests wait for.
type flight struct {
	done  chan struct{} // closed when entry is final
	entry *entry        // the response to replay; nil if none
	// fresh: entry came from upstream during the flight, not from Redis,
	// so it may answer a request with Cache-Control: no-cache.
	fresh   bool
	waiters atomic.Int32 // requests that joined: observability and tests
}

// lead makes the one upstream call for key and shares its response. A
// no-cache request leads too (the response it fetches is as fresh as it
// asked for, and others may share it), but skips the Redis lookup.
func (c *Cache) lead(w http.ResponseWriter, r *http.Request, key Key, ttl time.Duration, fetch Fetch, f *flight, noCache bool) Outcome {
	// Release the followers however this ends, a panic included. The
	// entry is in memory before the flight disappears, so a request that
	// arrives in between finds one or the other.
	defer func() {
		c.flights.Delete(key.sum)
		close(f.done)
	}()
	if !noCache {
		if e := c.lookupRedis(r.Context(), key); e != nil {
			c.memSet(key, e)
			f.entry = e
			c.m.requests(key.pool).hit.Inc()
			e.replay(w, valueHit)
			return Hit
		}
	}
	result := valueMiss
	if noCache {
		result = valueBypass
		c.m.requests(key.pool).bypass.Inc()
	} else {
		c.m.requests(key.pool).miss.Inc()
	}
	f.entry = c.fetch(w, r, key, ttl, fetch, result)
	f.fresh = true
	return Fetched
}

// follow waits for another request's upstream call.
func (c *Cache) follow(w http.ResponseWriter, r *http.Request, key Key, ttl time.Duration, fetch Fetch, f *flight, noCache bool) Outcome {
	f.waiters.Add(1)
	select {
	case <-f.done:
	case <-r.Context().Done():
		return Gone // the client is gone; there is no one to answer
	}
	pc := c.m.requests(key.pool)
	if f.entry != nil && (f.fresh || !noCache) {
		result := valueHit
		if noCache {
			result = valueBypass
			pc.bypass.Inc()
		} else {
			pc.hit.Inc()
		}
		f.entry.replay(w, result)
		return Hit
	}
	result := valueMiss
	if noCache {
		result = valueBypass
		pc.bypass.Inc()
	} else {
		pc.miss.Inc()
	}
	c.fetch(w, r, key, ttl, fetch, result)
	return Fetched
}

// fetch calls fetch, writing its response through to w while recording
// it, and stores the response if it may be. It returns the stored entry, or
// nil.
func (c *Cache) fetch(w http.ResponseWriter, r *http.Request, key Key, ttl time.Duration, fetch Fetch, result []string) *entry {
	w.Header()[headerXSluiceCache] = result
	rec := newRecorder(w, c.maxEntry)
	if !fetch(rec) || r.Context().Err() != nil {
		return nil
	}
	e := rec.entry(ttl, c.clock.Now())
	if e == nil {
		return nil
	}
	c.memSet(key, e)
	c.storeRedis(key, e)
	return e
}

// requestDirectives reads the request's Cache-Control.
func requestDirectives(h http.Header) (noCache, noStore bool) {
	for _, v := range h.Values("Cache-Control") {
		for d := range strings.SplitSeq(v, ",") {
			d = strings.TrimSpace(d)
			switch {
			case strings.EqualFold(d, "no-store"):
				noStore = true
			case strings.EqualFold(d, "no-cache"), strings.EqualFold(d, "max-age=0"):
				noCache = true
			}
		}
	}
	return noCache, noStore
}

// otterClock gives otter the Cache's clock.
type otterClock struct{ c clockwork.Clock }

func (o otterClock) NowNano() int64 { return o.c.Now().UnixNano() }

// Tick returns the ticks otter's periodic clean-up runs on. The ticker is
// not stopped: a fake clock's ticker holds no resources, and the real clock
// does not use this adapter.
func (o otterClock) Tick(d time.Duration) <-chan time.Time { return o.c.NewTicker(d).Chan() }

// otterLogger sends otter's warnings to the Cache's logger.
type otterLogger struct{ l *slog.Logger }

func (o otterLogger) Warn(ctx context.Context, msg string, err error) {
	o.l.WarnContext(ctx, msg, "err", err)
}

func (o otterLogger) Error(ctx context.Context, msg string, err error) {
	o.l.ErrorContext(ctx, msg, "err", err)
}
