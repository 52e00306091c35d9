package kvroute

import (
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

func seq(from, n int) []uint64 {
	b := make([]uint64, n)
	for i := range b {
		b[i] = mix64(uint64(from + i))
	}
	return b
}

func match(x *Index, blocks []uint64, ids ...uint32) []int {
	m := make([]int, len(ids))
	x.Match(blocks, ids, m)
	return m
}

func TestIndexMatch(t *testing.T) {
	clk := clockwork.NewFakeClock()
	x := NewIndex(1024, time.Minute, clk)
	shared := seq(0, 3)
	a := append(append([]uint64(nil), shared...), seq(100, 2)...)
	b := append(append([]uint64(nil), shared...), seq(200, 4)...)
	x.Record(a, 1)
	x.Record(b, 2)
	for _, tc := range []struct {
		name   string
		blocks []uint64
		want   []int // for ids 1, 2, 3
	}{
		{"a", a, []int{5, 3, 0}},
		{"b", b, []int{3, 7, 0}},
		{"a's prefix", a[:2], []int{2, 2, 0}},
		{"a then more", append(append([]uint64(nil), a...), seq(300, 3)...), []int{5, 3, 0}},
		{"unknown first block", append(seq(400, 1), a...), []int{0, 0, 0}},
		{"empty", nil, []int{0, 0, 0}},
	} {
		got := match(x, tc.blocks, 1, 2, 3)
		for j := range got {
			if got[j] != tc.want[j] {
				t.Errorf("%s: matched %v, want %v", tc.name, got, tc.want)
				break
			}
		}
	}
}

func TestIndexTTL(t *testing.T) {
	clk := clockwork.NewFakeClock()
	x := NewIndex(1024, time.Minute, clk)
	old, hot := seq(0, 4), seq(10, 4)
	x.Record(old, 1)
	x.Record(hot, 1)
	clk.Advance(40 * time.Second)
	x.Record(hot, 1) // refreshed
	clk.Advance(30 * time.Second)
	if got := match(x, old, 1)[0]; got != 0 {
		t.Errorf("expired prefix matched %d blocks", got)
	}
	if got := match(x, hot, 1)[0]; got != 4 {
		t.Errorf("refreshed prefix matched %d blocks, want 4", got)
	}
	clk.Advance(31 * time.Second)
	if got := match(x, hot, 1)[0]; got != 0 {
		t.Errorf("prefix matched %d blocks after its TTL", got)
	}
}

func TestIndexHoldersPerBlock(t *testing.T) {
	clk := clockwork.NewFakeClock()
	x := NewIndex(1024, time.Hour, clk)
	p := seq(0, 2)
	for id := uint32(1); id <= holdersPerBlock+1; id++ {
		x.Record(p, id)
		clk.Advance(time.Second)
	}
	got := match(x, p, 1, 2, holdersPerBlock+1)
	if got[0] != 0 || got[1] != 2 || got[2] != 2 {
		t.Errorf("matched %v: the replica seen longest ago should have been replaced", got)
	}
}

func TestIndexEvictionBound(t *testing.T) {
	clk := clockwork.NewFakeClock()
	x := NewIndex(2048, time.Hour, clk)
	hot := seq(1<<40, 2)
	const total = 20 * 2048
	for i := 0; i < total; i += 16 {
		x.Record(seq(i, 16), uint32(1+i%3))
		if i%256 == 0 {
			x.Record(hot, 9)
			clk.Advance(time.Second)
		}
	}
	if x.Len() > x.Cap() || x.Cap() < 2048 || x.Cap() > 2048+maxShards {
		t.Fatalf("len %d, cap %d", x.Len(), x.Cap())
	}
	if got := match(x, hot, 9)[0]; got != 2 {
		t.Errorf("a prefix refreshed every second was evicted (matched %d)", got)
	}
	// The most recent quarter of the capacity survives whole.
	recent := 0
	for i := total - 512; i < total; i += 16 {
		recent += match(x, seq(i, 16), uint32(1+i%3))[0]
	}
	if recent != 512 {
		t.Errorf("%d of the 512 most recent blocks survive", recent)
	}
}

// TestIndexMemory measures the index's memory per entry: it is allocated
// once, so filling it adds nothing.
func TestIndexMemory(t *testing.T) {
	const entries = 1 << 16
	before := heapInUse()
	x := NewIndex(entries, time.Hour, clockwork.NewFakeClock())
	for i := 0; i < 3*entries; i += 64 {
		x.Record(seq(i, 64), uint32(1+i%5))
	}
	after := heapInUse()
	per := float64(after-before) / float64(x.Cap())
	t.Logf("%d entries: %.1f bytes per entry", x.Cap(), per)
	if per < 40 || per > 100 {
		t.Errorf("%.1f bytes per entry, want 40 to 100 (a slot alone is 40)", per)
	}
	if x.Len() != x.Cap() {
		t.Errorf("len %d, cap %d", x.Len(), x.Cap())
	}
	runtime.KeepAlive(x)
}

func heapInUse() int64 {
	// Twice: sync.Pool's victim cache outlives one collection.
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

func TestIndexConcurrent(t *testing.T) {
	x := NewIndex(4096, time.Hour, nil)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			m := make([]int, 3)
			for i := range 500 {
				b := seq(i%50, 20)
				x.Record(b, uint32(1+g))
				x.Match(b, []uint32{1, 2, 3}, m)
			}
		})
	}
	wg.Wait()
	if got := match(x, seq(0, 20), 1)[0]; got != 20 {
		t.Errorf("matched %d", got)
	}
}

func BenchmarkIndex(b *testing.B) {
	x := NewIndex(DefaultIndexEntries, time.Hour, nil)
	blocks := seq(0, 300)
	ids := []uint32{1, 2, 3, 4, 5, 6, 7, 8}
	m := make([]int, len(ids))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		x.Match(blocks, ids, m)
		x.Record(blocks, ids[i%len(ids)])
	}
}
