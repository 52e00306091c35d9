package cache

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
)

// Memcached limits and defaults.
const (
	// DefaultMemcachedItemLimit is memcached's own default item size
	// limit (its -I flag).
	DefaultMemcachedItemLimit = 1 << 20
	// memcachedKeyLimit is the protocol's longest key.
	memcachedKeyLimit = 250
	// memcachedItemOverhead is what memcached adds to key and value in an
	// item (header, CAS, terminators); an entry is skipped unless key,
	// value and this fit the item limit.
	memcachedItemOverhead = 96
	// memcachedRelativeLimit is the longest expiration memcached takes as
	// relative seconds; longer ones must be absolute Unix times.
	memcachedRelativeLimit = 30 * 24 * time.Hour
	defaultMemcachedPrefix = "sluice:cache:"
	memcachedIdleConns     = 64
)

// memcachedLevel keeps entries in Memcached. gomemcache takes no context:
// the client's socket timeout bounds every call instead.
type memcachedLevel struct {
	mc        *memcache.Client
	prefix    string
	itemLimit int
	clock     clockwork.Clock
	errs      *prometheus.CounterVec
}

var _ sharedLevel = (*memcachedLevel)(nil)

// newMemcachedLevel returns a level on the servers (host:port, or a
// socket path), with keys starting with prefix.
func newMemcachedLevel(servers []string, prefix string, itemLimit int, timeout time.Duration, clock clockwork.Clock, errs *prometheus.CounterVec) (*memcachedLevel, error) {
	if len(servers) == 0 {
		return nil, errors.New("cache: no memcached servers")
	}
	// Every key is the prefix and a 64-digit hex hash; the protocol
	// forbids spaces and control characters and allows 250 bytes.
	if len(prefix)+2*32 > memcachedKeyLimit {
		return nil, fmt.Errorf("cache: memcached prefix %q is longer than %d bytes", prefix, memcachedKeyLimit-64)
	}
	if strings.ContainsFunc(prefix, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return nil, fmt.Errorf("cache: memcached prefix %q holds a space or control character", prefix)
	}
	var list memcache.ServerList
	if err := list.SetServers(servers...); err != nil {
		return nil, fmt.Errorf("cache: memcached servers %v: %w", servers, err)
	}
	mc := memcache.NewFromSelector(&list)
	mc.Timeout = timeout
	mc.MaxIdleConns = memcachedIdleConns
	return &memcachedLevel{mc: mc, prefix: prefix, itemLimit: itemLimit, clock: clock, errs: errs}, nil
}

func (l *memcachedLevel) key(k Key) string               { return l.prefix + k.String() }
func (l *memcachedLevel) name() string                   { return "memcached" }
func (l *memcachedLevel) errors() *prometheus.CounterVec { return l.errs }

func (l *memcachedLevel) get(ctx context.Context, key string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	it, err := l.mc.Get(key)
	if errors.Is(err, memcache.ErrCacheMiss) {
		return nil, errAbsent
	}
	if err != nil {
		return nil, err
	}
	return it.Value, nil
}

func (l *memcachedLevel) set(ctx context.Context, key string, data []byte, ttl time.Duration) error {
	if len(key)+len(data)+memcachedItemOverhead > l.itemLimit {
		return errTooLarge
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return l.mc.Set(&memcache.Item{Key: key, Value: data, Expiration: l.expiration(ttl)})
}

// expiration converts ttl to memcached's form: whole seconds, rounded up
// (an entry carries its own expiry, checked on lookup), or an absolute Unix
// time beyond 30 days.
func (l *memcachedLevel) expiration(ttl time.Duration) int32 {
	if ttl > memcachedRelativeLimit {
		return int32(min(l.clock.Now().Add(ttl).Unix(), 1<<31-1))
	}
	return int32(max((ttl+time.Second-1)/time.Second, 1))
}
