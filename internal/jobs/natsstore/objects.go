package natsstore

import "github.com/nats-io/nats.go/jetstream"

// JetStream returns the JetStream context the store works on, so that
// other durable data that belongs with the jobs (the Batch API's files and
// batch records) lives on the same engine, embedded or external. It is
// valid until the store is closed.
func (s *Store) JetStream() jetstream.JetStream { return s.js }

// Name is the store's name (Options.Name), the prefix of its streams and
// buckets.
func (s *Store) Name() string { return s.opt.Name }

// Replicas is the replication of the store's streams (Options.Replicas).
func (s *Store) Replicas() int { return s.opt.Replicas }
