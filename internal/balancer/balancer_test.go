package balancer

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"sync/atomic"
	"testing"
)

// fake is a Backend whose load and cost a test sets.
type fake struct {
	key      string
	weight   int
	inFlight atomic.Int64
	cost     atomic.Uint64 // math.Float64bits
}

func (f *fake) Key() string       { return f.key }
func (f *fake) Weight() int       { return f.weight }
func (f *fake) InFlight() int64   { return f.inFlight.Load() }
func (f *fake) Cost() float64     { return math.Float64frombits(f.cost.Load()) }
func (f *fake) setCost(c float64) { f.cost.Store(math.Float64bits(c)) }

// fakes returns n weight-1 backends keyed like pool URLs.
func fakes(n int) []*fake {
	fs := make([]*fake, n)
	for i := range fs {
		fs[i] = &fake{key: fmt.Sprintf("http://10.0.0.%d:8000", i+1), weight: 1}
	}
	return fs
}

func backends(fs []*fake) []Backend {
	bs := make([]Backend, len(fs))
	for i, f := range fs {
		bs[i] = f
	}
	return bs
}

// counts picks n times and returns how often each key was picked.
func counts(b Balancer, cands []Backend, n int) map[string]int {
	got := make(map[string]int)
	for range n {
		got[b.Pick(cands, "").Key()]++
	}
	return got
}

// chiSquare returns Pearson's statistic for observed counts against equal
// expected counts.
func chiSquare(observed []int) float64 {
	total := 0
	for _, o := range observed {
		total += o
	}
	want := float64(total) / float64(len(observed))
	var x float64
	for _, o := range observed {
		d := float64(o) - want
		x += d * d / want
	}
	return x
}

// chiSquareCritical999 is the 0.999 quantile of the chi-square distribution
// by degrees of freedom: a fair sampler exceeds it one time in a thousand,
// and the tests' seeds are fixed, so a pass is reproducible.
var chiSquareCritical999 = map[int]float64{1: 10.83, 2: 13.82, 3: 16.27, 5: 20.52, 7: 24.32, 11: 31.26, 19: 43.82}

func seeded() rand.Source { return rand.NewPCG(1, 2) }

func TestNew(t *testing.T) {
	tests := []struct {
		name string
		want Balancer
	}{
		{"round_robin", &RoundRobin{}},
		{"weighted_round_robin", &WeightedRoundRobin{}},
		{"random", &Random{}},
		{"least_request", &LeastRequest{}},
		{"p2c", &P2C{}},
		{"p2c_ewma", &P2CEWMA{}},
		{"consistent_hash", &ConsistentHash{}},
		{"kv_aware", &KVAware{}},
		{"", &P2CEWMA{}},
	}
	for _, tt := range tests {
		got, err := New(tt.name)
		if err != nil {
			t.Fatalf("New(%q): %v", tt.name, err)
		}
		if reflect.TypeOf(got) != reflect.TypeOf(tt.want) {
			t.Errorf("New(%q) = %T, want %T", tt.name, got, tt.want)
		}
		if tt.name != "" && !slices.Contains(Names(), tt.name) {
			t.Errorf("Names() lacks %q", tt.name)
		}
	}
	if len(Names()) != len(tests)-1 {
		t.Errorf("Names() = %v, want the %d names above", Names(), len(tests)-1)
	}
	if _, err := New(Default); err != nil {
		t.Errorf("New(Default): %v", err)
	}
	for _, bad := range []string{"roundrobin", "P2C", "least_conn", " p2c"} {
		if _, err := New(bad); !errors.Is(err, ErrUnknown) {
			t.Errorf("New(%q) error = %v, want ErrUnknown", bad, err)
		}
	}
}

func TestSourceTwoDistinctUniform(t *testing.T) {
	for _, n := range []int{2, 3, 4, 5} {
		var s source
		s.seed(seeded())
		pairs := make([]int, n*n)
		for range 20000 * n {
			i, j := s.two(n)
			if i == j || i < 0 || j < 0 || i >= n || j >= n {
				t.Fatalf("two(%d) = %d, %d", n, i, j)
			}
			pairs[i*n+j]++
		}
		var offDiagonal []int
		for i := range n {
			for j := range n {
				if i != j {
					offDiagonal = append(offDiagonal, pairs[i*n+j])
				}
			}
		}
		df := len(offDiagonal) - 1
		if x := chiSquare(offDiagonal); x > chiSquareCritical999[df] {
			t.Errorf("two(%d): ordered pairs not uniform: chi2 = %.1f > %.1f (df %d): %v", n, x, chiSquareCritical999[df], df, offDiagonal)
		}
	}
}

func TestRoundRobinExactShares(t *testing.T) {
	for _, k := range []int{1, 2, 3, 4, 7} {
		cands := backends(fakes(k))
		const rounds = 1000
		got := counts(&RoundRobin{}, cands, rounds*k)
		for _, c := range cands {
			if got[c.Key()] != rounds {
				t.Errorf("k=%d: %s picked %d times, want %d", k, c.Key(), got[c.Key()], rounds)
			}
		}
	}
}

func TestRandomUniform(t *testing.T) {
	cands := backends(fakes(8))
	got := counts(NewRandom(seeded()), cands, 100000)
	observed := make([]int, len(cands))
	for i, c := range cands {
		observed[i] = got[c.Key()]
	}
	if x := chiSquare(observed); x > chiSquareCritical999[7] {
		t.Errorf("chi2 = %.1f > %.2f: %v", x, chiSquareCritical999[7], observed)
	}
}

func TestLeastRequestPicksAMinimum(t *testing.T) {
	tests := []struct {
		loads []int64
		want  []int // indexes of the least loaded
	}{
		{[]int64{3}, []int{0}},
		{[]int64{3, 1, 2}, []int{1}},
		{[]int64{0, 5, 0, 5}, []int{0, 2}},
		{[]int64{7, 7, 7, 7}, []int{0, 1, 2, 3}},
		{[]int64{9, 8, 7, 6, 5, 4, 3, 2, 1, 1}, []int{8, 9}},
	}
	for _, tt := range tests {
		fs := fakes(len(tt.loads))
		for i, l := range tt.loads {
			fs[i].inFlight.Store(l)
		}
		cands := backends(fs)
		got := counts(NewLeastRequest(seeded()), cands, 1000*len(tt.want))
		for i, f := range fs {
			if !slices.Contains(tt.want, i) && got[f.key] > 0 {
				t.Errorf("loads %v: picked index %d (load %d) %d times", tt.loads, i, tt.loads[i], got[f.key])
			}
		}
		if len(tt.want) < 2 {
			continue
		}
		observed := make([]int, len(tt.want))
		for i, w := range tt.want {
			observed[i] = got[fs[w].key]
		}
		df := len(observed) - 1
		if x := chiSquare(observed); x > chiSquareCritical999[df] {
			t.Errorf("loads %v: ties not spread evenly: %v (chi2 %.1f)", tt.loads, observed, x)
		}
	}
}

func TestLeastRequestUsesOnlyTheCurrentCandidates(t *testing.T) {
	l := NewLeastRequest(seeded())
	old := fakes(3) // idle, but no longer candidates
	cur := fakes(6)[3:]
	for i, f := range cur {
		f.inFlight.Store(int64(10 + i))
	}
	l.Pick(backends(old), "")
	for range 100 {
		if got := l.Pick(backends(cur), ""); got != Backend(cur[0]) {
			t.Fatalf("picked %s, want %s, the least loaded current candidate", got.Key(), cur[0].key)
		}
	}
}

func TestP2C(t *testing.T) {
	t.Run("the less loaded of two always wins", func(t *testing.T) {
		fs := fakes(2)
		fs[0].inFlight.Store(5)
		fs[1].inFlight.Store(4)
		p := NewP2C(seeded())
		for _, cands := range [][]Backend{{fs[0], fs[1]}, {fs[1], fs[0]}} {
			if got := counts(p, cands, 1000); got[fs[1].key] != 1000 {
				t.Errorf("order %s,%s: %v, want every pick on %s", cands[0].Key(), cands[1].Key(), got, fs[1].key)
			}
		}
	})
	t.Run("the most loaded of several never wins", func(t *testing.T) {
		fs := fakes(4)
		fs[3].inFlight.Store(10)
		got := counts(NewP2C(seeded()), backends(fs), 10000)
		if got[fs[3].key] != 0 {
			t.Errorf("loaded backend picked %d times, want 0", got[fs[3].key])
		}
		observed := []int{got[fs[0].key], got[fs[1].key], got[fs[2].key]}
		if x := chiSquare(observed); x > chiSquareCritical999[2] {
			t.Errorf("idle backends not picked evenly: %v (chi2 %.1f)", observed, x)
		}
	})
	t.Run("a tie is a coin toss", func(t *testing.T) {
		fs := fakes(2)
		got := counts(NewP2C(seeded()), backends(fs), 10000)
		if x := chiSquare([]int{got[fs[0].key], got[fs[1].key]}); x > chiSquareCritical999[1] {
			t.Errorf("tied pair split %v (chi2 %.1f)", got, x)
		}
	})
}

func TestP2CEWMAScore(t *testing.T) {
	type side struct {
		cost     float64
		inFlight int64
	}
	tests := []struct {
		name string
		a, b side
		want int // 0: a, 1: b, -1: either (a tie)
	}{
		{"lower cost wins", side{100, 0}, side{200, 0}, 0},
		{"cost times in-flight+1", side{100, 2}, side{300, 0}, -1},
		{"queue outweighs speed", side{100, 3}, side{300, 0}, 1},
		{"speed outweighs queue", side{100, 1}, side{300, 0}, 0},
		{"unsampled and idle is tried", side{0, 0}, side{50, 1}, 0},
		{"unsampled competes on in-flight", side{0, 2}, side{50, 1}, 1},
		{"unsampled is not flooded", side{0, 3}, side{1e9, 2}, 1},
		{"neither sampled: fewer in flight", side{0, 2}, side{0, 1}, 1},
		{"neither sampled, tied", side{0, 1}, side{0, 1}, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := fakes(2)
			fs[0].setCost(tt.a.cost)
			fs[0].inFlight.Store(tt.a.inFlight)
			fs[1].setCost(tt.b.cost)
			fs[1].inFlight.Store(tt.b.inFlight)
			got := counts(NewP2CEWMA(seeded()), backends(fs), 2000)
			switch tt.want {
			case -1:
				if x := chiSquare([]int{got[fs[0].key], got[fs[1].key]}); x > chiSquareCritical999[1] {
					t.Errorf("tie split %v (chi2 %.1f)", got, x)
				}
			default:
				if got[fs[tt.want].key] != 2000 {
					t.Errorf("picks %v, want all on %s", got, fs[tt.want].key)
				}
			}
		})
	}
}
