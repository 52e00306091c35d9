package cache

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisWrite is one entry waiting to be written to Redis.
type redisWrite struct {
	key  string
	data []byte
	ttl  time.Duration
}

func (c *Cache) redisKey(k Key) string { return c.redisPrefix + k.String() }

// lookupRedis returns the entry Redis holds for k, or nil. Errors and
// timeouts are misses.
func (c *Cache) lookupRedis(ctx context.Context, k Key) *entry {
	if c.rdb == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.redisTimeout)
	defer cancel()
	data, err := c.rdb.Get(ctx, c.redisKey(k)).Bytes()
	if err != nil {
		if !errors.Is(err, redis.Nil) {
			c.redisError("get", err)
		}
		return nil
	}
	e, err := decodeEntry(data)
	if err != nil {
		c.redisError("decode", err)
		return nil
	}
	now := c.clock.Now().UnixNano()
	if e.expires <= now {
		return nil
	}
	e.ttl = time.Duration(e.expires - now)
	return e
}

// storeRedis queues e for Redis without blocking; a full queue drops it.
func (c *Cache) storeRedis(k Key, e *entry) {
	if c.rdb == nil {
		return
	}
	w := redisWrite{key: c.redisKey(k), data: encodeEntry(e), ttl: e.ttl}
	select {
	case c.writes <- w:
	default:
		c.m.redisErrors.WithLabelValues("queue_full").Inc()
	}
}

// writeLoop writes queued entries to Redis until ctx ends, then sends what
// is still queued.
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

func (c *Cache) write(ctx context.Context, w redisWrite) {
	ctx, cancel := context.WithTimeout(ctx, redisWriteTimeout)
	defer cancel()
	if err := c.rdb.Set(ctx, w.key, w.data, w.ttl).Err(); err != nil {
		c.redisError("set", err)
	}
}

// redisError counts a Redis failure and logs it at most once per
// redisErrorLogEvery.
func (c *Cache) redisError(op string, err error) {
	c.m.redisErrors.WithLabelValues(op).Inc()
	c.errMu.Lock()
	now := c.clock.Now()
	if !c.lastErrLog.IsZero() && now.Sub(c.lastErrLog) < redisErrorLogEvery {
		c.errMu.Unlock()
		return
	}
	c.lastErrLog = now
	c.errMu.Unlock()
	c.log.Warn("response cache: redis "+op+" failed; serving from memory and upstream", "err", err)
}

// The Redis form of an entry: a version byte, then uvarints and
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
