package kvroute

import (
	"math/bits"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
)

const (
	// DefaultIndexEntries is the index's default capacity in blocks: about
	// 32 MiB of distinct prompt text (8M tokens), more than the KV caches of
	// a pool of eight large replicas hold, in about 20 MiB of memory (76
	// bytes per entry, measured by TestIndexMemory).
	DefaultIndexEntries = 1 << 18
	// DefaultIndexTTL is how long a replica is believed to hold a block it
	// was sent, unless a later request refreshes it. Engines evict under
	// pressure long before that on a busy pool; the LRU-ish eviction and
	// the load scorers cover that, the TTL bounds a belief no one refreshes.
	DefaultIndexTTL = 10 * time.Minute

	// holdersPerBlock is how many replicas an entry remembers for one
	// block; a fifth replica replaces the one seen longest ago. A block
	// that many replicas hold is a hot prefix, for which affinity to any
	// one of them matters little.
	holdersPerBlock = 4
	// evictSample is how many slots an insertion into a full shard
	// compares, evicting the one seen longest ago (sampled LRU, as Redis
	// does): near-LRU quality at O(1) cost and no list pointers.
	evictSample = 8
	maxShards   = 64
	minPerShard = 256
)

// Index is an approximate map from prompt block hash to the replicas that
// were recently sent a prompt containing that block, with when. It is
// built from the gateway's own routing decisions (and its peers', see
// Sync): a replica that was sent a block most likely still holds it in its
// prefix cache, until a TTL or the index's own capacity says otherwise.
//
// Replicas are small integer ids (the Router maps replica keys to ids and
// never reuses one, so a replica that is forgotten and comes back starts
// with an empty record, as a restarted engine starts with an empty cache).
//
// Memory is bounded: the index holds at most its capacity in entries, in
// preallocated shards (see BytesPerEntry), and never grows. Each shard has
// its own lock, chosen by the block hash, so concurrent requests contend
// only when they touch the same blocks. Safe for concurrent use.
type Index struct {
	clk    clockwork.Clock
	base   time.Time
	ttl    uint32 // seconds
	mask   uint64
	shards []shard
}

// shard is one lock's worth of the index: a fixed slot array and a map
// from block hash to slot.
type shard struct {
	mu    sync.RWMutex
	slots []slot
	pos   map[uint64]uint32
	hand  uint32   // where the next eviction sample starts
	used  uint32   // slots filled so far (slots[:used])
	_     [40]byte // keeps neighbouring shards' locks off one cache line
}

type slot struct {
	key     uint64
	holders [holdersPerBlock]holder
}

type holder struct {
	id   uint32 // replica id; 0 = empty
	seen uint32 // seconds after the index's base, plus one
}

// NewIndex returns an index of at most entries blocks (DefaultIndexEntries
// if <= 0) that forgets a holder not refreshed for ttl (DefaultIndexTTL if
// <= 0; rounded up to whole seconds), reading time from clk (the real clock
// if nil). It allocates all its memory at once.
func NewIndex(entries int, ttl time.Duration, clk clockwork.Clock) *Index {
	if entries <= 0 {
		entries = DefaultIndexEntries
	}
	if ttl <= 0 {
		ttl = DefaultIndexTTL
	}
	if clk == nil {
		clk = clockwork.NewRealClock()
	}
	n := maxShards
	for n > 1 && entries/n < minPerShard {
		n /= 2
	}
	per := (entries + n - 1) / n
	x := &Index{
		clk:    clk,
		base:   clk.Now(),
		ttl:    uint32(min((ttl+time.Second-1)/time.Second, 1<<31)),
		mask:   uint64(n - 1),
		shards: make([]shard, n),
	}
	for i := range x.shards {
		x.shards[i].slots = make([]slot, per)
		x.shards[i].pos = make(map[uint64]uint32, per)
	}
	return x
}

// Cap is the most entries the index holds.
func (x *Index) Cap() int { return len(x.shards) * len(x.shards[0].slots) }

// Len is the number of entries held now, expired ones included until they
// are evicted.
func (x *Index) Len() int {
	n := 0
	for i := range x.shards {
		s := &x.shards[i]
		s.mu.RLock()
		n += int(s.used)
		s.mu.RUnlock()
	}
	return n
}

// now is the current time in the index's unit: whole seconds after base,
// plus one, so that 0 means never.
func (x *Index) now() uint32 {
	return uint32(x.clk.Since(x.base)/time.Second) + 1
}

func (x *Index) shard(h uint64) *shard {
	// The low bits pick the shard; the map hashes the whole key anyway.
	return &x.shards[bits.RotateLeft64(h, 17)&x.mask]
}

// Match sets matched[j] to the number of leading blocks of blocks that the
// replica ids[j] is believed to hold: the length of the longest prefix of
// the prompt that was sent to it within the TTL. It stops at the first
// block no candidate holds. len(matched) >= len(ids); no allocation.
func (x *Index) Match(blocks []uint64, ids []uint32, matched []int) {
	matched = matched[:len(ids)]
	clear(matched)
	if len(blocks) == 0 || len(ids) == 0 {
		return
	}
	now := x.now()
	for i, h := range blocks {
		s := x.shard(h)
		hit := false
		s.mu.RLock()
		if p, ok := s.pos[h]; ok {
			sl := &s.slots[p]
			for j, id := range ids {
				if matched[j] != i {
					continue // its prefix ended earlier
				}
				for _, hd := range sl.holders {
					if hd.id == id && x.fresh(hd.seen, now) {
						matched[j]++
						hit = true
						break
					}
				}
			}
		}
		s.mu.RUnlock()
		if !hit {
			return
		}
	}
}

func (x *Index) fresh(seen, now uint32) bool {
	return seen != 0 && now-seen < x.ttl
}

// Record notes that the replica id was sent every block of blocks now.
func (x *Index) Record(blocks []uint64, id uint32) {
	if id == 0 {
		return
	}
	now := x.now()
	for _, h := range blocks {
		s := x.shard(h)
		// Most records of a hot prefix find it already stamped this
		// second: check under the read lock first.
		s.mu.RLock()
		if p, ok := s.pos[h]; ok && s.slots[p].stamped(id, now) {
			s.mu.RUnlock()
			continue
		}
		s.mu.RUnlock()
		s.mu.Lock()
		s.recordLocked(h, id, now, x)
		s.mu.Unlock()
	}
}

func (sl *slot) stamped(id, now uint32) bool {
	for _, hd := range sl.holders {
		if hd.id == id {
			return hd.seen == now
		}
	}
	return false
}

func (s *shard) recordLocked(h uint64, id, now uint32, x *Index) {
	p, ok := s.pos[h]
	if !ok {
		p = s.allocLocked(now, x)
		s.slots[p] = slot{key: h}
		s.pos[h] = p
	}
	sl := &s.slots[p]
	oldest := 0
	for k, hd := range sl.holders {
		if hd.id == id || hd.id == 0 {
			sl.holders[k] = holder{id: id, seen: now}
			return
		}
		if hd.seen < sl.holders[oldest].seen {
			oldest = k
		}
	}
	sl.holders[oldest] = holder{id: id, seen: now}
}

// allocLocked returns a free slot, evicting the least recently seen of a
// sample of slots when the shard is full.
func (s *shard) allocLocked(now uint32, x *Index) uint32 {
	if int(s.used) < len(s.slots) {
		s.used++
		return s.used - 1
	}
	n := uint32(len(s.slots))
	victim, best := s.hand%n, ^uint32(0)
	for k := uint32(0); k < evictSample && k < n; k++ {
		p := (s.hand + k) % n
		seen := s.slots[p].lastSeen()
		if !x.fresh(seen, now) {
			victim = p
			break
		}
		if seen < best {
			victim, best = p, seen
		}
	}
	s.hand = (s.hand + evictSample) % n
	delete(s.pos, s.slots[victim].key)
	return victim
}

func (sl *slot) lastSeen() uint32 {
	var m uint32
	for _, hd := range sl.holders {
		m = max(m, hd.seen)
	}
	return m
}
