package cache

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// sharedLevel is the second level of the cache, shared by every gateway
// replica that uses it: Redis or Memcached. It keeps encoded entries
// (encodeEntry) by key.
type sharedLevel interface {
	// key is where the entry for k is kept.
	key(k Key) string
	// get returns the value kept under key, or errAbsent.
	get(ctx context.Context, key string) ([]byte, error)
	// set keeps data under key for ttl. A value the level cannot hold
	// returns errTooLarge without contacting the server.
	set(ctx context.Context, key string, data []byte, ttl time.Duration) error
	// name is the level's name in log lines.
	name() string
	// errors counts the level's failures by operation.
	errors() *prometheus.CounterVec
}

// Errors of sharedLevel implementations.
var (
	errAbsent   = errors.New("no entry")
	errTooLarge = errors.New("entry larger than the shared level's item limit")
)

// sharedWrite is one entry waiting to be written to the shared level.
type sharedWrite struct {
	key  string
	data []byte
	ttl  time.Duration
}

// redisLevel keeps entries in Redis.
type redisLevel struct {
	rdb    redis.UniversalClient
	prefix string
	errs   *prometheus.CounterVec
}

var _ sharedLevel = (*redisLevel)(nil)

func (l *redisLevel) key(k Key) string               { return l.prefix + k.String() }
func (l *redisLevel) name() string                   { return "redis" }
func (l *redisLevel) errors() *prometheus.CounterVec { return l.errs }

func (l *redisLevel) get(ctx context.Context, key string) ([]byte, error) {
	data, err := l.rdb.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, errAbsent
	}
	return data, err
}

func (l *redisLevel) set(ctx context.Context, key string, data []byte, ttl time.Duration) error {
	return l.rdb.Set(ctx, key, data, ttl).Err()
}

// lookupRedis returns the entry the shared level (Redis or Memcached)
// holds for k, or nil. Errors and timeouts are misses.
func (c *Cache) lookupRedis(ctx context.Context, k Key) *entry {
	if c.l2 == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.l2Timeout)
	defer cancel()
	data, err := c.l2.get(ctx, c.l2.key(k))
	if err != nil {
		if !errors.Is(err, errAbsent) {
			c.sharedError("get", err)
		}
		return nil
	}
	e, err := decodeEntry(data)
	if err != nil {
		c.sharedError("decode", err)
		return nil
	}
	now := c.clock.Now().UnixNano()
	if e.expires <= now {
		return nil
	}
	e.ttl = time.Duration(e.expires - now)
	return e
}

// storeRedis queues e for the shared level (Redis or Memcached) without
// blocking; a full queue drops it.
func (c *Cache) storeRedis(k Key, e *entry) {
	if c.l2 == nil {
		return
	}
	w := sharedWrite{key: c.l2.key(k), data: encodeEntry(e), ttl: e.ttl}
	select {
	case c.writes <- w:
	default:
		c.l2.errors().WithLabelValues("queue_full").Inc()
	}
}

// writeLoop writes queued entries to the shared level until ctx ends, then
// sends what is still queued.
func (c *Cache) writeLoop(ctx context.Context) {
	defer close(c.done)
	for {
		select {
		case w := <-c.writes:
			c.write(ctx, w)
		case <-ctx.Done():
			drain, cancel := context.WithTimeout(context.Background(), redisWriteTimeout)
			defer cancel()
			for {
				select {
				case w := <-c.writes:
					c.write(drain, w)
				default:
					return
				}
			}
		}
	}
}

func (c *Cache) write(ctx context.Context, w sharedWrite) {
	ctx, cancel := context.WithTimeout(ctx, redisWriteTimeout)
	defer cancel()
	err := c.l2.set(ctx, w.key, w.data, w.ttl)
	switch {
	case errors.Is(err, errTooLarge):
		// Not a failure: the entry stays in memory only.
		c.l2.errors().WithLabelValues("too_large").Inc()
	case err != nil:
		c.sharedError("set", err)
	}
}

// sharedError counts a failure of the shared level and logs it at most
// once per redisErrorLogEvery.
func (c *Cache) sharedError(op string, err error) {
	c.l2.errors().WithLabelValues(op).Inc()
	c.errMu.Lock()
	now := c.clock.Now()
	if !c.lastErrLog.IsZero() && now.Sub(c.lastErrLog) < redisErrorLogEvery {
		c.errMu.Unlock()
		return
	}
	c.lastErrLog = now
	c.errMu.Unlock()
	c.log.Warn("response cache: "+c.l2.name()+" "+op+" failed; serving from memory and upstream", "err", err)
}

// The shared-level form of an entry: a version byte, then uvarints and
// length-prefixed bytes:
//
//	version status expires(Unix ns)
//	nheaders { key nvalues { value } }
//	nevents { event length }
//	body
const entryVersion = 1

func encodeEntry(e *entry) []byte {
	b := make([]byte, 0, e.size+64)
	b = append(b, entryVersion)
	b = binary.AppendUvarint(b, uint64(e.status))
	b = binary.AppendUvarint(b, uint64(e.expires))
	b = binary.AppendUvarint(b, uint64(len(e.header)))
	for k, vs := range e.header {
		b = appendBytes(b, k)
		b = binary.AppendUvarint(b, uint64(len(vs)))
		for _, v := range vs {
			b = appendBytes(b, v)
		}
	}
	if e.events == nil {
		b = binary.AppendUvarint(b, 0)
	} else {
		b = binary.AppendUvarint(b, uint64(len(e.events))+1)
		prev := int32(0)
		for _, end := range e.events {
			b = binary.AppendUvarint(b, uint64(end-prev))
			prev = end
		}
	}
	return appendBytes(b, e.body)
}

func appendBytes[S string | []byte](b []byte, s S) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

var errCorrupt = errors.New("corrupt cache entry")

// decodeEntry parses encodeEntry's output. Anything else, whatever it
// contains, is an error, never a panic.
func decodeEntry(data []byte) (*entry, error) {
	d := decoder{data: data}
	if v := d.byte(); v != entryVersion {
		return nil, fmt.Errorf("cache entry version %d: %w", v, errCorrupt)
	}
	e := &entry{}
	e.status = int(d.uint(999))
	e.expires = int64(d.uint(1<<63 - 1))
	nh := d.uint(uint64(len(data)))
	e.header = make(http.Header, min(nh, 64))
	for range nh {
		k := string(d.bytes())
		nv := d.uint(uint64(len(data)))
		vs := make([]string, 0, min(nv, 16))
		for range nv {
			vs = append(vs, string(d.bytes()))
		}
		if d.err != nil {
			break
		}
		e.header[k] = slices.Clip(vs)
	}
	if ne := d.uint(uint64(len(data)) + 1); ne > 0 {
		e.events = make([]int32, 0, min(ne-1, uint64(len(data))))
		end := uint64(0)
		for range ne - 1 {
			end += d.uint(uint64(len(data)))
			e.events = append(e.events, int32(min(end, uint64(len(data)))))
		}
	}
	e.body = d.bytes()
	if d.err != nil || len(d.data) != 0 || e.status < 100 {
		return nil, errCorrupt
	}
	if len(e.events) > 0 && int(e.events[len(e.events)-1]) != len(e.body) {
		return nil, errCorrupt
	}
	e.computeSize()
	return e, nil
}

type decoder struct {
	data []byte
	err  error
}

func (d *decoder) byte() byte {
	if len(d.data) == 0 {
		d.err = errCorrupt
		return 0
	}
	b := d.data[0]
	d.data = d.data[1:]
	return b
}

// uint reads a uvarint no larger than limit.
func (d *decoder) uint(limit uint64) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.data)
	if n <= 0 || v > limit {
		d.err = errCorrupt
		return 0
	}
	d.data = d.data[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uint(uint64(len(d.data)))
	if d.err != nil || n > uint64(len(d.data)) {
		d.err = errCorrupt
		return nil
	}
	b := d.data[:n:n]
	d.data = d.data[n:]
	return b
}
