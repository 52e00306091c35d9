package gateway

import (
	"context"
	"fmt"
	"reflect"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-ai/sluice/internal/auth"
	"github.com/sluice-ai/sluice/internal/cache"
	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/ratelimit"
)

// openShared opens what lives as long as the process rather than one config:
// the Redis client, the rate limiter and the response cache. A reload that
// changes redis.url or cache.memory takes effect at the next start.
func (s *Server) openShared(cfg *config.Config) error {
	if cfg.Redis.URL != "" {
		opts, err := redis.ParseURL(cfg.Redis.URL)
		if err != nil {
			return fmt.Errorf("redis.url: %w", err)
		}
		s.redis = redis.NewClient(opts)
	}
	var rdb redis.UniversalClient
	if s.redis != nil {
		rdb = s.redis
	}
	var err error
	if s.limiter, err = ratelimit.New(ratelimit.Options{Redis: rdb, Logger: s.logger, Registerer: s.reg}); err != nil {
		return fmt.Errorf("rate limiter: %w", err)
	}
	copts := cache.Options{MemoryBytes: int64(cfg.Cache.Memory), Registerer: s.reg, Logger: s.logger}
	if cfg.Cache.Redis && rdb != nil {
		copts.Redis = rdb
	}
	if cfg.Cache.Memcached != "" {
		for _, addr := range strings.Split(cfg.Cache.Memcached, ",") {
			copts.Memcached = append(copts.Memcached, strings.TrimSpace(addr))
		}
		copts.MemcachedItemLimit = int(cfg.Cache.MemcachedItemLimit)
	}
	if s.cache, err = cache.New(copts); err != nil {
		return fmt.Errorf("response cache: %w", err)
	}
	return nil
}

func (s *Server) closeShared() {
	if s.cache != nil {
		s.cache.Close()
	}
	if s.limiter != nil {
		s.limiter.Close()
	}
	if s.redis != nil {
		_ = s.redis.Close()
	}
}

// authenticatorFor returns the authenticator for cfg: the running one when
// the auth block did not change (so JWKS caches survive reloads), a new one
// when it did, nil for an open gateway.
func (s *Server) authenticatorFor(cfg *config.Config) (*auth.Authenticator, error) {
	if cfg.Auth == nil {
		return nil, nil
	}
	if old := s.table.Load(); old != nil && old.auth != nil && reflect.DeepEqual(old.cfg.Auth, cfg.Auth) {
		return old.auth, nil
	}
	a, err := auth.New(context.Background(), cfg.Auth, auth.Options{Logger: s.logger})
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	return a, nil
}
