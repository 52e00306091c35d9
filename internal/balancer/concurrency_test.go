package balancer

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestConcurrentPick hammers every balancer from many goroutines while the
// candidate set changes from call to call and loads move; run it with -race.
func TestConcurrentPick(t *testing.T) {
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			b, err := New(name)
			if err != nil {
				t.Fatal(err)
			}
			fs := fakes(16)
			for i, f := range fs {
				f.weight = 1 + i%3
			}
			all := backends(fs)
			shuffled := slices.Clone(all)
			rand.New(rand.NewPCG(5, 6)).Shuffle(len(shuffled), func(i, j int) {
				shuffled[i], shuffled[j] = shuffled[j], shuffled[i]
			})
			sets := [][]Backend{all, all[:8], all[5:], shuffled, shuffled[3:11], all[15:], {all[0], all[7], all[15]}}
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Go(func() {
					for i := range 2000 {
						cands := sets[(g+i)%len(sets)]
						key := ""
						if i%5 != 0 {
							key = fmt.Sprintf("session-%d", (g*31+i)%97)
						}
						p := b.Pick(cands, key)
						if !containsBackend(cands, p) {
							t.Errorf("picked %v, not a candidate", p)
							return
						}
						f := p.(*fake)
						f.inFlight.Add(1)
						f.setCost(float64(i%50) * float64(time.Millisecond))
						defer f.inFlight.Add(-1) // hold some load until the goroutine ends
					}
				})
			}
			wg.Wait()
		})
	}
}

// TestPickDoesNotAllocate checks every balancer's steady state: a stable
// candidate set, then (for the keyed balancers) a set with members missing.
func TestPickDoesNotAllocate(t *testing.T) {
	keys := hashKeys(256)
	for _, name := range Names() {
		for _, n := range []int{4, 64} {
			t.Run(fmt.Sprintf("%s/%d", name, n), func(t *testing.T) {
				b, err := New(name)
				if err != nil {
					t.Fatal(err)
				}
				fs := fakes(n)
				for i, f := range fs {
					f.weight = 1 + i%4
					f.inFlight.Store(int64(i % 5))
					f.setCost(float64(1+i%7) * 1e6)
				}
				cands := backends(fs)
				i := 0
				pick := func() {
					b.Pick(cands, keys[i%len(keys)])
					i++
				}
				pick() // builds any per-set state
				if a := testing.AllocsPerRun(500, pick); a != 0 {
					t.Errorf("%v allocations per Pick, want 0", a)
				}
				// Backends dropping in and out of the candidates from one
				// pick to the next (at their caps).
				full, short := cands, slices.Delete(slices.Clone(cands), 1, 2)
				flap := func() {
					if i%2 == 0 {
						cands = full
					} else {
						cands = short
					}
					pick()
				}
				if a := testing.AllocsPerRun(100, flap); a != 0 {
					t.Errorf("with a candidate flapping: %v allocations per Pick, want 0", a)
				}
			})
		}
	}
	t.Run("PeakEWMA", func(t *testing.T) {
		e := NewPeakEWMA(0, nil)
		if a := testing.AllocsPerRun(500, func() {
			e.Observe(time.Millisecond)
			_ = e.Value()
		}); a != 0 {
			t.Errorf("%v allocations per Observe+Value, want 0", a)
		}
	})
}
