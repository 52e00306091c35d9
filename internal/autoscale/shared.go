package autoscale

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"
)

// SharedOptions configure a SharedDemand.
type SharedOptions struct {
	// ID names this gateway among those sharing the Redis (its pod name, or
	// host:port). Required and unique.
	ID string
	// Prefix starts every key. Default "sluice:autoscale:demand:"; the pool
	// name follows.
	Prefix string
	// TTL is how long a gateway's last report counts: a gateway that stops
	// reporting (it died, or lost Redis) drops out of the sum after it.
	// Longer than the publishing interval plus the clock skew between
	// gateways. Default 10s.
	TTL time.Duration
	// Clock stamps reports and drives Run. Nil is the real clock.
	Clock clockwork.Clock
	// Logger receives failed publishes (once per failure streak). Nil
	// discards.
	Logger *slog.Logger
}

// SharedDemand lets several gateways in front of one pool act as one: each
// publishes what it sees of the pool's load (its Inputs) in a Redis hash
// per pool, one field per gateway, and the one that scales (the lease
// holder) sizes the pool for the sum. Without it the lease holder sees only
// its own share — a third of the demand behind three gateways.
//
// Requests in flight and tokens are summed. Pending jobs are not: a shared
// job store (Redis, NATS) shows every gateway the same queue, so the
// largest report counts. The replicas' own /metrics are read by the lease
// holder alone and never summed.
type SharedDemand struct {
	rdb  redis.UniversalClient
	opts SharedOptions
}

// report is one gateway's entry in a pool's hash.
type report struct {
	At     int64 `json:"at"` // unix milliseconds
	Active int64 `json:"active"`
	Jobs   int64 `json:"jobs"`
	Tokens int64 `json:"tokens"`
}

// NewSharedDemand returns a SharedDemand on rdb.
func NewSharedDemand(rdb redis.UniversalClient, opts SharedOptions) (*SharedDemand, error) {
	if rdb == nil || opts.ID == "" {
		return nil, fmt.Errorf("autoscale: shared demand needs a Redis client and an ID")
	}
	if opts.Prefix == "" {
		opts.Prefix = "sluice:autoscale:demand:"
	}
	if opts.TTL <= 0 {
		opts.TTL = 10 * time.Second
	}
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &SharedDemand{rdb: rdb, opts: opts}, nil
}

func (s *SharedDemand) key(pool string) string { return s.opts.Prefix + pool }

// Publish records this gateway's inputs for pool. The hash expires after
// three TTLs without any gateway publishing, so a removed pool leaves
// nothing behind.
func (s *SharedDemand) Publish(ctx context.Context, pool string, in Inputs) error {
	b, _ := json.Marshal(report{At: s.opts.Clock.Now().UnixMilli(), Active: in.Active, Jobs: in.PendingJobs, Tokens: in.TokensInFlight})
	pipe := s.rdb.TxPipeline()
	pipe.HSet(ctx, s.key(pool), s.opts.ID, b)
	pipe.PExpire(ctx, s.key(pool), 3*s.opts.TTL)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("publish demand of pool %s: %w", pool, err)
	}
	return nil
}

// Sum returns local (this gateway's inputs now, which replace its own
// published entry) plus the fresh reports of the other gateways, and how
// many gateways that is. Reports older than TTL are left out and deleted.
// On a Redis error it returns local alone with the error: scaling for one
// gateway's share beats not scaling.
func (s *SharedDemand) Sum(ctx context.Context, pool string, local Inputs) (Inputs, int, error) {
	all, err := s.rdb.HGetAll(ctx, s.key(pool)).Result()
	if err != nil {
		return local, 1, fmt.Errorf("read demand of pool %s: %w", pool, err)
	}
	now := s.opts.Clock.Now()
	sum, n := local, 1
	var stale []string
	for id, v := range all {
		if id == s.opts.ID {
			continue
		}
		var r report
		if json.Unmarshal([]byte(v), &r) != nil || now.Sub(time.UnixMilli(r.At)) > s.opts.TTL {
			stale = append(stale, id)
			continue
		}
		sum.Active += max(r.Active, 0)
		sum.TokensInFlight += max(r.Tokens, 0)
		sum.PendingJobs = max(sum.PendingJobs, r.Jobs)
		n++
	}
	if len(stale) > 0 {
		// Best effort: another lease holder may clean up as well.
		_ = s.rdb.HDel(ctx, s.key(pool), stale...).Err()
	}
	return sum, n, nil
}

// Run publishes every tick, for each pool inputs returns, until ctx ends;
// it returns nil then. A failed publish is logged once per failure streak
// and tried again at the next tick.
func (s *SharedDemand) Run(ctx context.Context, tick time.Duration, inputs func() map[string]Inputs) error {
	if tick <= 0 {
		tick = DefaultTick
	}
	t := s.opts.Clock.NewTicker(tick)
	defer t.Stop()
	failing := false
	for {
		var firstErr error
		for pool, in := range inputs() {
			cctx, cancel := context.WithTimeout(ctx, tick)
			if err := s.Publish(cctx, pool, in); err != nil && firstErr == nil {
				firstErr = err
			}
			cancel()
		}
		switch {
		case firstErr != nil && !failing && ctx.Err() == nil:
			s.opts.Logger.Warn("autoscale: demand not shared; the lease holder sees only its own until Redis is back", "err", firstErr)
			failing = true
		case firstErr == nil && failing:
			s.opts.Logger.Info("autoscale: demand shared again")
			failing = false
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.Chan():
		}
	}
}
