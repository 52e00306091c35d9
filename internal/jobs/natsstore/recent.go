package natsstore

import (
	"context"
	"sync"

	"github.com/sluice-ai/sluice/internal/jobs"
)

// recentSize bounds the records a store remembers (see recent), and
// recentMax the size of one: at most 16 MiB in all.
const (
	recentSize = 1024
	recentMax  = 16 << 10
)

// recent remembers the records this store wrote last, by key, so that a
// dispatcher on the gateway that submitted a job takes it without reading
// its record back. A record that another gateway changed since is stale
// here: the dispatcher's compare-and-set on it then fails, and the
// dispatcher reads the record (jobs.ErrConflict). An entry is used once.
type recent struct {
	mu   sync.Mutex
	m    map[string]recentRecord
	ring [recentSize]string // keys in insertion order, for eviction
	next int
}

type recentRecord struct {
	val []byte
	rev uint64
}

// put remembers key's record. With replace it only replaces a remembered
// one (an update of a record a dispatcher has not taken yet).
func (r *recent) put(key string, val []byte, rev uint64, replace bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(val) > recentMax {
		delete(r.m, key)
		return
	}
	if _, ok := r.m[key]; ok || !replace {
		if r.m == nil {
			r.m = make(map[string]recentRecord)
		}
		if !ok {
			delete(r.m, r.ring[r.next])
			r.ring[r.next] = key
			r.next = (r.next + 1) % recentSize
		}
		r.m[key] = recentRecord{val: val, rev: rev}
	}
}

// forget drops key's record.
func (r *recent) forget(key string) {
	r.mu.Lock()
	delete(r.m, key)
	r.mu.Unlock()
}

// take returns and forgets key's record, or nil.
func (r *recent) take(key string) *recentRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.m[key]
	if !ok {
		return nil
	}
	delete(r.m, key)
	return &e
}

// recentJob is the job of a remembered record, or nil.
func (s *Store) recentJob(ctx context.Context, key string) *jobs.Job {
	e := s.recent.take(key)
	if e == nil {
		return nil
	}
	j, _, err := s.decode(ctx, e.val, true)
	if err != nil {
		return nil // read it from the bucket instead
	}
	j.Revision = e.rev
	return j
}
