package balancer

import (
	"cmp"
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
)

// Interface guard.
var _ Balancer = (*ConsistentHash)(nil)

const (
	// LoadFactor is consistent_hash's c: a backend takes a request only while
	// its in-flight count stays within c times its fair share (SPEC: 1.25).
	// It is kept as the exact fraction loadNum/loadDen.
	LoadFactor = float64(loadNum) / loadDen
	loadNum    = 5
	loadDen    = 4

	// PointsPerWeight is how many ring points a backend has per unit of
	// weight. 160 (as in ketama) puts a backend's share of the ring within
	// about ±8% of fair (one standard deviation).
	PointsPerWeight = 160

	// MaxHashWeight caps the weight consistent_hash gives one backend, so
	// that a mistyped weight cannot make a ring of millions of points.
	MaxHashWeight = 100

	// resyncAfter is how many picks may find the candidates a strict subset
	// (or a reordering) of the ring's members before the ring is rebuilt from
	// the candidates alone. It keeps the rebuild rate low when backends drop
	// in and out at their caps, yet drops removed backends within a few
	// thousand requests, after which picks take the cheapest path again.
	resyncAfter = 1024
)

// ConsistentHash ("consistent_hash") maps each request key to a backend with
// consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam,
// 2016). Every backend owns PointsPerWeight × weight points on a 64-bit ring,
// placed by XXH64 of its Key; a request goes to the owner of the first point
// at or after XXH64 of its key. It stays there unless that backend is not a
// candidate (down, ejected, at its cap) or would exceed its bound,
//
//	in-flight + 1 <= ceil(c × (total in-flight + 1) × weight / total weight),
//
// totals over the candidates, c = LoadFactor; then the ring is walked to the
// next backend within its bound. Some candidate is always within its bound,
// since the bounds add up to more than the total. Adding or removing one of n
// backends moves about 1/n of the keys, and only keys of the backend that
// changed.
//
// XXH64 with seed 0 is fixed by its specification, so every gateway replica,
// on any platform and after any restart, builds the same ring and sends a key
// to the same backend; hash/maphash is randomly seeded per process and cannot
// do that, and FNV-1a mixes short, similar keys (URLs that differ in a port
// digit) poorly. A point's position depends only on its backend's Key and
// weight, never on the other backends, so skipping a member of the ring gives
// exactly the ring built without it.
//
// An empty key carries no affinity: such requests are balanced as by P2C.
//
// The ring is immutable and shared through an atomic pointer. It is rebuilt,
// under a mutex that only the rebuilding picks take, when a candidate is not
// on it (a new backend or a changed weight), or once resyncAfter picks have
// found the candidates different from its members. The zero value is ready to use and
// draws from the runtime's lock-free generator.
type ConsistentHash struct {
	p2c P2C // for requests without a key

	mu   sync.Mutex // serialises rebuilds
	ring atomic.Pointer[ring]
}

// NewConsistentHash returns a ConsistentHash whose keyless fallback draws
// from src; nil means the runtime's lock-free generator. A non-nil src (for
// reproducible tests) is used under a mutex.
func NewConsistentHash(src rand.Source) *ConsistentHash {
	h := &ConsistentHash{}
	h.p2c.rng.seed(src)
	return h
}

type ring struct {
	// members are the candidates the ring was built from, in their order,
	// then any retained members that were absent then.
	members []member
	index   map[string]int32 // Key → index in members
	points  []point          // sorted by hash, then by member key
	weight  int64            // sum of the members' weights
	// misses counts picks whose candidates differed from members.
	misses atomic.Int64
}

type member struct {
	key    string
	weight int64 // clamped to [1, MaxHashWeight]
}

type point struct {
	hash   uint64
	member int32
}

func hashWeight(b Backend) int64 {
	return int64(min(max(b.Weight(), 1), MaxHashWeight))
}

// Pick returns key's backend, or the next one on the ring within its bound.
func (h *ConsistentHash) Pick(cands []Backend, key string) Backend {
	if key == "" {
		return h.p2c.Pick(cands, key)
	}
	if len(cands) == 1 {
		return cands[0]
	}
	r := h.ring.Load()
	total, exact := r.load(cands)
	if !exact {
		switch {
		case !r.covers(cands):
			r = h.rebuild(r, cands, false)
			_, exact = r.load(cands)
		case r.misses.Add(1) >= resyncAfter:
			r = h.rebuild(r, cands, true)
			_, exact = r.load(cands)
		}
	}
	weights := r.weight
	if !exact {
		weights = 0
		for _, c := range cands {
			weights += hashWeight(c)
		}
	}

	// A member that is not a candidate, or is over its bound, is seen many
	// times on a walk (once per point); remember the first 512 to test each
	// once.
	var tested [8]uint64
	var first Backend
	pts := r.points
	at, _ := slices.BinarySearchFunc(pts, xxhash.Sum64String(key), func(p point, h uint64) int {
		return cmp.Compare(p.hash, h)
	})
	for n := range pts {
		m := pts[(at+n)%len(pts)].member
		if m < 512 {
			if tested[m/64]&(1<<(m%64)) != 0 {
				continue
			}
			tested[m/64] |= 1 << (m % 64)
		}
		b := r.candidate(cands, m, exact)
		if b == nil {
			continue
		}
		if first == nil {
			first = b
		}
		// in-flight + 1 <= ceil(x) holds exactly when in-flight < x for an
		// integer in-flight; cross-multiplied to stay in integers.
		if loadDen*weights*b.InFlight() < loadNum*(total+1)*r.members[m].weight {
			return b
		}
	}
	// Loads moved while we walked and every candidate is now at its bound:
	// keep the affinity.
	return first
}

// load returns the candidates' total in-flight count and whether they are
// exactly r's members, in order and with the same weights: the one pass over
// cands that a pick with a stable candidate set makes. A nil ring matches
// nothing.
func (r *ring) load(cands []Backend) (total int64, exact bool) {
	exact = r != nil && len(r.members) == len(cands)
	for i, c := range cands {
		total += c.InFlight()
		if exact {
			m := r.members[i]
			exact = m.key == c.Key() && m.weight == hashWeight(c)
		}
	}
	return total, exact
}

// covers reports whether every candidate is a member of r with its weight.
func (r *ring) covers(cands []Backend) bool {
	if r == nil {
		return false
	}
	for _, c := range cands {
		i, ok := r.index[c.Key()]
		if !ok || r.members[i].weight != hashWeight(c) {
			return false
		}
	}
	return true
}

// candidate returns the candidate that is member m, or nil. When cands
// matches the ring, member m is cands[m].
func (r *ring) candidate(cands []Backend, m int32, exact bool) Backend {
	if exact {
		return cands[m]
	}
	k := r.members[m].key
	for _, c := range cands {
		if c.Key() == k {
			return c
		}
	}
	return nil
}

// rebuild returns a ring that covers cands, replacing seen (the ring the
// caller found wanting) unless another pick already did. Without resync, the
// current ring's members that are not candidates are kept: a backend briefly
// at its cap should not cost two rebuilds.
func (h *ConsistentHash) rebuild(seen *ring, cands []Backend, resync bool) *ring {
	h.mu.Lock()
	defer h.mu.Unlock()
	cur := h.ring.Load()
	if cur != seen && cur.covers(cands) {
		return cur
	}
	r := &ring{index: make(map[string]int32, len(cands))}
	add := func(key string, weight int64) {
		if _, dup := r.index[key]; dup {
			return
		}
		r.index[key] = int32(len(r.members))
		r.members = append(r.members, member{key: key, weight: weight})
	}
	for _, c := range cands {
		add(c.Key(), hashWeight(c))
	}
	if !resync && cur != nil {
		for _, m := range cur.members {
			add(m.key, m.weight)
		}
	}

	for _, m := range r.members {
		r.weight += m.weight
	}
	r.points = make([]point, 0, r.weight*PointsPerWeight)
	var buf []byte
	for i, m := range r.members {
		for v := range m.weight * PointsPerWeight {
			buf = binary.LittleEndian.AppendUint32(append(buf[:0], m.key...), uint32(v))
			r.points = append(r.points, point{hash: xxhash.Sum64(buf), member: int32(i)})
		}
	}
	slices.SortFunc(r.points, func(a, b point) int {
		if c := cmp.Compare(a.hash, b.hash); c != 0 {
			return c
		}
		return cmp.Compare(r.members[a.member].key, r.members[b.member].key)
	})
	h.ring.Store(r)
	return r
}
