package balancer

import (
	"fmt"
	"testing"
	"time"
)

func BenchmarkPick(b *testing.B) {
	keys := hashKeys(1024)
	for _, name := range Names() {
		for _, n := range []int{4, 64} {
			b.Run(fmt.Sprintf("%s/%d", name, n), func(b *testing.B) {
				bal, err := New(name)
				if err != nil {
					b.Fatal(err)
				}
				fs := fakes(n)
				for i, f := range fs {
					f.weight = 1 + i%4
					f.inFlight.Store(int64(i % 5))
					f.setCost(float64(1+i%7) * 1e6)
				}
				cands := backends(fs)
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					bal.Pick(cands, keys[i%len(keys)])
					i++
				}
			})
		}
	}
}

// BenchmarkPickParallel shows contention on shared state: the round-robin
// counter, the smooth WRR mutex, the ring pointer.
func BenchmarkPickParallel(b *testing.B) {
	keys := hashKeys(1024)
	for _, name := range Names() {
		b.Run(name, func(b *testing.B) {
			bal, err := New(name)
			if err != nil {
				b.Fatal(err)
			}
			cands := backends(fakes(16))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					bal.Pick(cands, keys[i%len(keys)])
					i++
				}
			})
		})
	}
}

func BenchmarkPeakEWMA(b *testing.B) {
	b.Run("Observe", func(b *testing.B) {
		e := NewPeakEWMA(0, nil)
		b.ReportAllocs()
		for b.Loop() {
			e.Observe(time.Millisecond)
		}
	})
	b.Run("Value", func(b *testing.B) {
		e := NewPeakEWMA(0, nil)
		e.Observe(time.Millisecond)
		b.ReportAllocs()
		for b.Loop() {
			_ = e.Value()
		}
	})
}
