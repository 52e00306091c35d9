package balancer

import (
	"math"
	"strings"
	"testing"
)

// weighted returns backends named a, b, c, ... with the given weights.
func weighted(weights ...int) []*fake {
	fs := make([]*fake, len(weights))
	for i, w := range weights {
		fs[i] = &fake{key: string(rune('a' + i)), weight: w}
	}
	return fs
}

func sequence(b Balancer, cands []Backend, n int) string {
	var sb strings.Builder
	for range n {
		sb.WriteString(b.Pick(cands, "").Key())
	}
	return sb.String()
}

func TestWeightedRoundRobinNGINXSequence(t *testing.T) {
	// The example in NGINX's commit introducing smooth weighted round robin.
	got := sequence(&WeightedRoundRobin{}, backends(weighted(5, 1, 1)), 21)
	if want := strings.Repeat("aabacaa", 3); got != want {
		t.Errorf("weights 5,1,1: %s, want %s", got, want)
	}
}

func TestWeightedRoundRobinSmooth(t *testing.T) {
	tests := [][]int{
		{1}, {1, 1}, {4, 4}, {5, 1, 1}, {3, 2, 1}, {1, 2, 3, 4}, {10, 10, 1},
		{1, 1, 20}, {7, 3, 9, 2, 5}, {100, 1},
	}
	for _, weights := range tests {
		total := 0
		for _, w := range weights {
			total += w
		}
		const cycles = 3
		seq := sequence(&WeightedRoundRobin{}, backends(weighted(weights...)), cycles*total)

		// Every window of sum(weights) consecutive picks holds each backend
		// exactly its weight times.
		for start := 0; start+total <= len(seq); start++ {
			window := seq[start : start+total]
			for i, w := range weights {
				if n := strings.Count(window, string(rune('a'+i))); n != w {
					t.Fatalf("weights %v: window %d..%d has %c %d times, want %d (sequence %s)", weights, start, start+total, 'a'+i, n, w, seq)
				}
			}
		}

		// No burst: after every prefix each backend's count stays within 2 of
		// its exact share. Plain WRR (each backend weight times in a row)
		// misses this for weights 4,4 and worse ones.
		seen := make([]int, len(weights))
		for k := range len(seq) {
			seen[seq[k]-'a']++
			for i, w := range weights {
				ideal := float64((k+1)*w) / float64(total)
				if d := math.Abs(float64(seen[i]) - ideal); d >= 2 {
					t.Fatalf("weights %v: after %d picks %c has %d, ideal %.2f (sequence %s)", weights, k+1, 'a'+i, seen[i], ideal, seq)
				}
			}
		}
	}
}

func TestWeightedRoundRobinChangingCandidates(t *testing.T) {
	fs := weighted(3, 2, 1, 4)
	a, b, c, d := fs[0], fs[1], fs[2], fs[3]
	w := &WeightedRoundRobin{}
	sequence(w, []Backend{a, b, c}, 4) // mid-cycle, counters non-zero

	shares := func(cands []Backend, cycles int) map[string]int {
		total := 0
		for _, c := range cands {
			total += c.Weight()
		}
		got := make(map[string]int)
		for range cycles * total {
			p := w.Pick(cands, "")
			if !containsBackend(cands, p) {
				t.Fatalf("picked %s, not a candidate", p.Key())
			}
			got[p.Key()]++
		}
		return got
	}
	// Counters follow keys, not positions: reordering, removing and adding
	// candidates keeps each backend's long-run share exactly its weight. A
	// backend's counter carried over from before a change may shift its count
	// by one.
	steps := []struct {
		name  string
		cands []Backend
	}{
		{"b removed", []Backend{a, c}},
		{"reordered", []Backend{c, a}},
		{"b back", []Backend{b, c, a}},
		{"d added", []Backend{a, b, c, d}},
		{"a removed, order changed", []Backend{d, c, b}},
	}
	for _, s := range steps {
		const cycles = 50
		got := shares(s.cands, cycles)
		for _, c := range s.cands {
			if want := cycles * c.Weight(); got[c.Key()] < want-1 || got[c.Key()] > want+1 {
				t.Errorf("%s: %s picked %d times, want %d±1", s.name, c.Key(), got[c.Key()], want)
			}
		}
	}

	// Shuffled every call: still exact shares over whole cycles.
	all := []Backend{a, b, c, d}
	got := make(map[string]int)
	for i := range 100 * 10 {
		rot := append(append([]Backend(nil), all[i%4:]...), all[:i%4]...)
		got[w.Pick(rot, "").Key()]++
	}
	for _, c := range all {
		if want := 100 * c.Weight(); got[c.Key()] < want-1 || got[c.Key()] > want+1 {
			t.Errorf("rotating order: %s picked %d times, want %d±1", c.Key(), got[c.Key()], want)
		}
	}
}

func TestWeightedRoundRobinForgetsVanishedKeys(t *testing.T) {
	fs := weighted(1, 1, 1, 1)
	w := &WeightedRoundRobin{}
	w.Pick(backends(fs), "")
	held := w.state["d"]
	sequence(w, backends(fs[:3]), wrrForget-1)
	w.Pick(backends(fs[1:3]), "") // any change sweeps
	if w.state["d"] != held {
		t.Fatalf("d's counter dropped after %d picks of absence, want kept for %d", wrrForget-1, wrrForget)
	}
	sequence(w, backends(fs[:3]), 2)
	w.Pick(backends(fs[:2]), "")
	if _, ok := w.state["d"]; ok {
		t.Errorf("d's counter kept after more than %d picks of absence", wrrForget)
	}
	if len(w.state) != 3 {
		t.Errorf("%d counters, want 3 (a, b, c)", len(w.state))
	}
}

func containsBackend(cands []Backend, b Backend) bool {
	for _, c := range cands {
		if c == b {
			return true
		}
	}
	return false
}
