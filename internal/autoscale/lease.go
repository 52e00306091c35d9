package autoscale

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"
)

// LeaseOptions configure a RedisLease.
type LeaseOptions struct {
	// ID names this gateway among those competing. Required and unique.
	ID string
	// TTL is how long a holder keeps the lease without renewing it: after
	// a holder dies, another takes over within TTL. Default 15s.
	TTL time.Duration
	// Clock drives the renewals. Nil is the real clock.
	Clock clockwork.Clock
	// Logger receives gained and lost leases. Nil discards.
	Logger *slog.Logger
}

// RedisLease elects one gateway among those sharing a Redis to scale a pool
// whose replicas sluice does not run (an actuator pool): the one holding
// the key runs the autoscaler, the others only publish their demand. It is
// the Redis counterpart of the Kubernetes Lease that kubernetes pools use.
//
// The key holds the holder's ID with a TTL; the holder renews it every
// TTL/3 and gives the lease up when a renewal fails, before the key can
// expire, so two gateways never lead at once while their clocks agree on
// the TTL.
type RedisLease struct {
	rdb  redis.UniversalClient
	key  string
	opts LeaseOptions
}

// renew extends the lease if this gateway still holds it.
var renew = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0`)

// release drops the lease if this gateway holds it.
var release = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0`)

// NewRedisLease returns the lease stored at key.
func NewRedisLease(rdb redis.UniversalClient, key string, opts LeaseOptions) (*RedisLease, error) {
	if rdb == nil || key == "" || opts.ID == "" {
		return nil, errors.New("autoscale: a lease needs a Redis client, a key and an ID")
	}
	if opts.TTL <= 0 {
		opts.TTL = 15 * time.Second
	}
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &RedisLease{rdb: rdb, key: key, opts: opts}, nil
}

// Run competes for the lease until ctx ends, and calls lead with a context
// that ends when the lease is lost (or ctx ends) each time it is gained.
// It returns nil when ctx ends.
func (l *RedisLease) Run(ctx context.Context, lead func(ctx context.Context)) error {
	every := l.opts.TTL / 3
	for {
		ok, err := l.rdb.SetNX(ctx, l.key, l.opts.ID, l.opts.TTL).Result()
		if err == nil && ok {
			l.hold(ctx, lead)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-l.opts.Clock.After(every):
		}
	}
}

// hold runs lead while renewals succeed, then releases the lease.
func (l *RedisLease) hold(ctx context.Context, lead func(ctx context.Context)) {
	l.opts.Logger.Info("autoscale: leading", "lease", l.key, "id", l.opts.ID)
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		lead(lctx)
	}()
	t := l.opts.Clock.NewTicker(l.opts.TTL / 3)
	defer t.Stop()
	for lost := false; !lost; {
		select {
		case <-ctx.Done():
			lost = true
		case <-done:
			lost = true // lead returned on its own; keep competing
		case <-t.Chan():
			if err := l.renew(ctx); err != nil {
				l.opts.Logger.Warn("autoscale: lease lost", "lease", l.key, "id", l.opts.ID, "err", err)
				lost = true
			}
		}
	}
	cancel()
	<-done
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer rcancel()
	_ = release.Run(rctx, l.rdb, []string{l.key}, l.opts.ID).Err()
}

func (l *RedisLease) renew(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, l.opts.TTL/3)
	defer cancel()
	n, err := renew.Run(rctx, l.rdb, []string{l.key}, l.opts.ID, l.opts.TTL.Milliseconds()).Int()
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("held by another gateway")
	}
	return nil
}

// Holder is the ID of the gateway holding the lease, "" if none.
func (l *RedisLease) Holder(ctx context.Context) string {
	id, _ := l.rdb.Get(ctx, l.key).Result()
	return id
}
