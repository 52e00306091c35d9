package redisstore

import "github.com/redis/go-redis/v9"

// Client returns the Redis client the store works on, so that other
// durable data that belongs with the jobs (the Batch API's files and batch
// records) lives on the same server. It is valid until the store is
// closed.
func (s *Store) Client() redis.UniversalClient { return s.rdb }

// Prefix is the store's key prefix (Options.Prefix), without braces.
func (s *Store) Prefix() string { return s.opt.Prefix }
