package balancer

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

func hashKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("session-%d", i)
	}
	return keys
}

// assign maps every key with idle backends.
func assign(h *ConsistentHash, cands []Backend, keys []string) map[string]string {
	m := make(map[string]string, len(keys))
	for _, k := range keys {
		m[k] = h.Pick(cands, k).Key()
	}
	return m
}

func TestConsistentHashStable(t *testing.T) {
	fs := fakes(10)
	cands := backends(fs)
	keys := hashKeys(10000)
	h := &ConsistentHash{}
	first := assign(h, cands, keys)
	if again := assign(h, cands, keys); !mapsEqual(first, again) {
		t.Fatal("a key moved between two identical passes")
	}

	// Another gateway replica, seeing the backends in another order, agrees.
	reversed := slices.Clone(cands)
	slices.Reverse(reversed)
	if other := assign(&ConsistentHash{}, reversed, keys); !mapsEqual(first, other) {
		t.Error("two balancers disagree on the mapping")
	}

	// Each backend gets close to a fair share of the keys.
	per := make(map[string]int)
	for _, b := range first {
		per[b]++
	}
	for _, f := range fs {
		if n := per[f.key]; n < 750 || n > 1250 {
			t.Errorf("%s has %d of 10000 keys, want 1000±25%%", f.key, n)
		}
	}
}

// TestConsistentHashGolden pins the ring layout: gateway replicas of
// different versions must agree on where a key goes, and changing the hash
// or the point layout remaps every session in a rolling upgrade.
func TestConsistentHashGolden(t *testing.T) {
	cands := backends(fakes(5))
	h := &ConsistentHash{}
	want := map[string]string{
		"session-0":  "http://10.0.0.3:8000",
		"session-1":  "http://10.0.0.2:8000",
		"user-42":    "http://10.0.0.5:8000",
		"10.1.2.3":   "http://10.0.0.2:8000",
		"tenant-a/x": "http://10.0.0.2:8000",
	}
	for k, b := range want {
		if got := h.Pick(cands, k).Key(); got != b {
			t.Errorf("%q → %s, want %s as in earlier releases", k, got, b)
		}
	}
}

func TestConsistentHashMinimalMovement(t *testing.T) {
	fs := fakes(11)
	keys := hashKeys(10000)
	ten := backends(fs[:10])
	before := assign(&ConsistentHash{}, ten, keys)

	t.Run("add", func(t *testing.T) {
		after := assign(&ConsistentHash{}, backends(fs), keys)
		moved := 0
		for k, b := range after {
			if b != before[k] {
				moved++
				if b != fs[10].key {
					t.Fatalf("%s moved from %s to %s, not to the new backend", k, before[k], b)
				}
			}
		}
		checkFraction(t, moved, len(keys), 1.0/11)
	})
	t.Run("remove", func(t *testing.T) {
		gone := fs[3].key
		rest := backends(slices.Delete(slices.Clone(fs[:10]), 3, 4))
		after := assign(&ConsistentHash{}, rest, keys)
		moved := 0
		for k, b := range after {
			if b != before[k] {
				moved++
				if before[k] != gone {
					t.Fatalf("%s moved from %s to %s, though %s is still there", k, before[k], b, before[k])
				}
			}
		}
		checkFraction(t, moved, len(keys), 1.0/10)
	})
}

// checkFraction allows a ring share ±35% off fair: 160 points per backend
// put shares within about ±8% (one standard deviation).
func checkFraction(t *testing.T, moved, total int, want float64) {
	t.Helper()
	got := float64(moved) / float64(total)
	if got < 0.65*want || got > 1.35*want {
		t.Errorf("%d of %d keys moved (%.3f), want about %.3f", moved, total, got, want)
	}
	t.Logf("%.3f of keys moved (1/n = %.3f)", got, want)
}

func TestConsistentHashWeights(t *testing.T) {
	fs := weighted(1, 2, 3, 200)
	keys := hashKeys(30000)
	per := make(map[string]int)
	for _, b := range assign(&ConsistentHash{}, backends(fs[:3]), keys) {
		per[b]++
	}
	for _, f := range fs[:3] {
		want := float64(len(keys)) * float64(f.weight) / 6
		if got := float64(per[f.key]); got < 0.8*want || got > 1.2*want {
			t.Errorf("weight %d: %.0f keys, want %.0f±20%%", f.weight, got, want)
		}
	}
	// A weight above MaxHashWeight counts as MaxHashWeight.
	h := &ConsistentHash{}
	h.Pick(backends(fs), "k")
	if got, want := len(h.ring.Load().points), (1+2+3+MaxHashWeight)*PointsPerWeight; got != want {
		t.Errorf("ring has %d points, want %d", got, want)
	}
}

func TestConsistentHashDownBackend(t *testing.T) {
	fs := fakes(6)
	all := backends(fs)
	keys := hashKeys(2000)
	h := &ConsistentHash{}
	before := assign(h, all, keys)

	// fs[2] leaves the candidates (unhealthy, ejected or at its cap): its
	// keys go where a ring without it would send them; the rest stay.
	down := backends(slices.Delete(slices.Clone(fs), 2, 3))
	during := assign(h, down, keys)
	without := assign(&ConsistentHash{}, down, keys)
	for _, k := range keys {
		if during[k] != without[k] {
			t.Fatalf("%s: %s while %s is down, a ring without it says %s", k, during[k], fs[2].key, without[k])
		}
		if before[k] != fs[2].key && during[k] != before[k] {
			t.Fatalf("%s moved from %s, which is up", k, before[k])
		}
	}
	if after := assign(h, all, keys); !mapsEqual(before, after) {
		t.Error("keys did not return when the backend came back")
	}
}

func TestConsistentHashOverBoundMovesAndReturns(t *testing.T) {
	fs := fakes(4)
	cands := backends(fs)
	h := &ConsistentHash{}
	const key = "session-7"
	home := h.Pick(cands, key).(*fake)

	// Over its bound: in-flight+1 > ceil(1.25 × (total+1) / 4).
	home.inFlight.Store(3)
	for _, f := range fs {
		if f != home {
			f.inFlight.Store(1)
		}
	}
	// total = 6: bound = ceil(1.25 × 7 / 4) = 3, home would be at 4.
	moved := h.Pick(cands, key)
	if moved == Backend(home) {
		t.Fatalf("%s stayed on %s with 3 in flight, bound 3", key, home.key)
	}
	// It moves to the next backend on the ring: where it would go without home.
	var rest []Backend
	for _, c := range cands {
		if c != Backend(home) {
			rest = append(rest, c)
		}
	}
	if next := (&ConsistentHash{}).Pick(rest, key); moved != next {
		t.Errorf("moved to %s, want the ring's next backend %s", moved.Key(), next.Key())
	}

	home.inFlight.Store(2) // total 5: bound ceil(1.25 × 6 / 4) = 2, home would be at 3
	if got := h.Pick(cands, key); got == Backend(home) {
		t.Errorf("stayed on %s with 2 in flight, bound 2", home.key)
	}
	// Back once it would be within the bound again, even at its edge.
	home.inFlight.Store(1) // total 4: bound ceil(1.25 × 5 / 4) = 2, home would be at 2
	if got := h.Pick(cands, key); got != Backend(home) {
		t.Errorf("picked %s, want %s back once its load dropped", got.Key(), home.key)
	}
}

// TestConsistentHashBoundedLoad replays a skewed stream of requests, with
// random completions, and checks after every pick that no backend exceeds
// ceil(1.25 × (in-flight + 1) / n).
func TestConsistentHashBoundedLoad(t *testing.T) {
	const n = 8
	fs := fakes(n)
	cands := backends(fs)
	h := NewConsistentHash(seeded())
	rng := rand.New(rand.NewPCG(3, 4))
	zipf := rand.NewZipf(rng, 1.2, 1, 200) // a few hot sessions
	idle := backends(fakes(n))             // same keys, never loaded: the unbounded mapping
	home := &ConsistentHash{}

	var running []*fake
	diverted, stayed := 0, 0
	for range 20000 {
		if len(running) > 0 && rng.IntN(100) < 48 {
			i := rng.IntN(len(running))
			running[i].inFlight.Add(-1)
			running = slices.Delete(running, i, i+1)
			continue
		}
		key := fmt.Sprintf("session-%d", zipf.Uint64())
		var total int64
		for _, f := range fs {
			total += f.inFlight.Load()
		}
		bound := (5*(total+1) + 4*n - 1) / (4 * n) // ceil(1.25 × (total+1) / n)
		got := h.Pick(cands, key).(*fake)
		if load := got.inFlight.Add(1); load > bound {
			t.Fatalf("%s has %d in flight, bound %d (total %d)", got.key, load, bound, total+1)
		}
		running = append(running, got)
		if got.key == home.Pick(idle, key).Key() {
			stayed++
		} else {
			diverted++
		}
	}
	t.Logf("%d requests stayed on their backend, %d were diverted", stayed, diverted)
	if diverted == 0 || stayed < diverted {
		t.Errorf("stayed %d, diverted %d: the stream should test the bound yet keep most affinity", stayed, diverted)
	}
}

func TestConsistentHashWithoutKey(t *testing.T) {
	fs := fakes(4)
	fs[3].inFlight.Store(10)
	got := make(map[string]int)
	h := NewConsistentHash(seeded())
	for range 4000 {
		got[h.Pick(backends(fs), "").Key()]++
	}
	if got[fs[3].key] != 0 {
		t.Errorf("keyless requests reached the loaded backend %d times; want p2c, which never picks it", got[fs[3].key])
	}
	if x := chiSquare([]int{got[fs[0].key], got[fs[1].key], got[fs[2].key]}); x > chiSquareCritical999[2] {
		t.Errorf("keyless requests not spread: %v", got)
	}
	if h.ring.Load() != nil {
		t.Error("keyless requests built a ring")
	}
}

func TestConsistentHashRingRebuilds(t *testing.T) {
	fs := fakes(5)
	all := backends(fs)
	h := &ConsistentHash{}
	h.Pick(all, "k")
	r := h.ring.Load()

	h.Pick(all, "k")
	if h.ring.Load() != r {
		t.Fatal("same candidates rebuilt the ring")
	}
	// A backend out of the candidates does not rebuild it...
	some := all[:4]
	h.Pick(some, "k")
	if h.ring.Load() != r {
		t.Fatal("a missing candidate rebuilt the ring")
	}
	// ...until the candidates have differed from its members for a while.
	for range resyncAfter {
		h.Pick(some, "k")
	}
	pruned := h.ring.Load()
	if pruned == r || len(pruned.members) != 4 {
		t.Fatalf("after %d picks without a backend the ring has %d members, want 4", resyncAfter, len(pruned.members))
	}
	// A new backend or a changed weight rebuilds at once, keeping members
	// that are absent now.
	h.Pick(all[1:], "k")
	grown := h.ring.Load()
	if grown == pruned || len(grown.members) != 5 {
		t.Fatalf("a new backend: ring has %d members, want 5", len(grown.members))
	}
	fs[1].weight = 2
	h.Pick(all, "k")
	if w := h.ring.Load(); w == grown || w.members[w.index[fs[1].key]].weight != 2 {
		t.Fatal("a changed weight did not rebuild the ring")
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// FuzzConsistentHash checks, for any request key (clients choose it) and any
// subset of backends and loads, that the pick is a candidate within its
// bound and that a fresh balancer given the candidates in another order
// agrees.
func FuzzConsistentHash(f *testing.F) {
	f.Add("session-1", uint16(0xfff), uint64(0))
	f.Add("", uint16(1), uint64(7))
	f.Add("\x00\xff", uint16(0x0a5), uint64(0x0123456789abcdef))
	fs := fakes(12)
	for i, b := range fs {
		b.weight = 1 + i%3
	}
	h := &ConsistentHash{}
	f.Fuzz(func(t *testing.T, key string, present uint16, loads uint64) {
		var cands []Backend
		var total, weights int64
		for i, b := range fs {
			b.inFlight.Store(int64(loads>>(4*(i%16))) & 0xf)
			if present&(1<<i) != 0 {
				cands = append(cands, b)
				total += b.inFlight.Load()
				weights += int64(b.weight)
			}
		}
		if len(cands) == 0 {
			return
		}
		got := h.Pick(cands, key)
		if !containsBackend(cands, got) {
			t.Fatalf("picked %s, not a candidate", got.Key())
		}
		if key == "" {
			return
		}
		if load, w := got.InFlight(), int64(got.Weight()); 4*weights*load >= 5*(total+1)*w {
			t.Fatalf("picked %s with %d in flight, over its bound (total %d)", got.Key(), load, total)
		}
		rev := slices.Clone(cands)
		slices.Reverse(rev)
		if other := (&ConsistentHash{}).Pick(rev, key); other != got {
			t.Fatalf("a fresh balancer picked %s, this one %s", other.Key(), got.Key())
		}
	})
}
