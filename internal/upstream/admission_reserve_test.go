package upstream

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/internal/config"
)

// reservePool is 2 backends × max_concurrency 4 = 8 slots, a quarter of
// them kept from low-priority requests: low ones may hold 6.
func reservePool(t *testing.T, queueSize int, reserve float64) *Pool {
	p, _ := testPool(t, 2, func(pc *config.Pool) {
		pc.MaxConcurrency = 4
		pc.Queue = config.Queue{Size: queueSize, Timeout: config.Duration(time.Minute), Reserve: reserve}
	})
	return p
}

func inFlight(p *Pool) int64 {
	var n int64
	for _, b := range p.Backends() {
		n += b.InFlight()
	}
	return n
}

func mustAcquire(t *testing.T, p *Pool, prio Priority) *Backend {
	t.Helper()
	b, err := p.Acquire(context.Background(), "", prio, nil)
	if err != nil {
		t.Fatalf("%s request: %v", prio, err)
	}
	return b
}

// TestReserveKeepsSlotsFromLowPriority fills a pool with low-priority
// requests: they stop at the reserve and wait, a normal request is
// dispatched at once, and the waiting low one starts only when the
// requests in flight fall below the reserve again.
func TestReserveKeepsSlotsFromLowPriority(t *testing.T) {
	p := reservePool(t, 16, 0.25)
	var lows []*Backend
	for range 6 {
		lows = append(lows, mustAcquire(t, p, PriorityLow))
	}
	got := make(chan *Backend, 1)
	go func() {
		b, err := p.Acquire(context.Background(), "", PriorityLow, nil)
		if err != nil {
			t.Errorf("queued low request: %v", err)
		}
		got <- b
	}()
	waitQueued(t, p, 1)
	if n := inFlight(p); n != 6 {
		t.Fatalf("%d in flight after filling with low requests, want 6 (8 slots, 2 reserved)", n)
	}

	// The reserve is there for normal and high requests, at once.
	normal := mustAcquire(t, p, PriorityNormal)
	high := mustAcquire(t, p, PriorityHigh)
	if n := inFlight(p); n != 8 {
		t.Fatalf("%d in flight, want 8", n)
	}

	// A low request ending frees a slot in the reserve: the waiting low
	// request still may not take it (7 in flight).
	p.Release(lows[0], 0)
	if p.QueueDepth() != 1 || inFlight(p) != 7 {
		t.Fatalf("queue %d, in flight %d after a low request ended; want 1 waiting, 7 in flight", p.QueueDepth(), inFlight(p))
	}
	// A normal request takes that slot at once.
	normal2 := mustAcquire(t, p, PriorityNormal)
	// A normal request that has to wait is served before the low one,
	// which waited longer: a freed slot below the reserve goes to it.
	gotNormal := make(chan *Backend, 1)
	go func() {
		b, err := p.Acquire(context.Background(), "", PriorityNormal, nil)
		if err != nil {
			t.Errorf("queued normal request: %v", err)
		}
		gotNormal <- b
	}()
	waitQueued(t, p, 2)
	p.Release(lows[1], 0)
	if b := <-gotNormal; b == nil {
		t.Fatal("the queued normal request got no backend")
	}
	if p.QueueDepth() != 1 || inFlight(p) != 8 {
		t.Fatalf("queue %d, in flight %d; want the low request still waiting, 8 in flight", p.QueueDepth(), inFlight(p))
	}

	// Down to 6 in flight: still at the reserve.
	p.Release(normal, 0)
	p.Release(high, 0)
	if p.QueueDepth() != 1 || inFlight(p) != 6 {
		t.Fatalf("queue %d, in flight %d; want the low request still waiting at 6", p.QueueDepth(), inFlight(p))
	}
	// Down to 5: below it, the low request starts.
	p.Release(normal2, 0)
	if b := <-got; b == nil {
		t.Fatal("the waiting low request got no backend")
	}
	if p.QueueDepth() != 0 || inFlight(p) != 6 {
		t.Fatalf("queue %d, in flight %d; want 0 waiting, 6 in flight", p.QueueDepth(), inFlight(p))
	}
}

// TestReserveWithoutQueue: with no queue a low request over the reserve
// fails at once, as any request without room does, while a normal one
// still gets a slot.
func TestReserveWithoutQueue(t *testing.T) {
	p := reservePool(t, 0, 0.25)
	for range 6 {
		mustAcquire(t, p, PriorityLow)
	}
	if _, err := p.Acquire(context.Background(), "", PriorityLow, nil); !errors.Is(err, ErrNoCapacity) {
		t.Fatalf("7th low request: %v, want ErrNoCapacity", err)
	}
	mustAcquire(t, p, PriorityNormal)
	mustAcquire(t, p, PriorityNormal)
	if _, err := p.Acquire(context.Background(), "", PriorityNormal, nil); !errors.Is(err, ErrNoCapacity) {
		t.Fatalf("9th request: %v, want ErrNoCapacity", err)
	}
}

// TestReserveHoldsUnderConcurrency: low requests racing for the last
// slots below the reserve never take more than their share.
func TestReserveHoldsUnderConcurrency(t *testing.T) {
	p := reservePool(t, 0, 0.25)
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := p.Acquire(context.Background(), "", PriorityLow, nil); err == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if ok != 6 || inFlight(p) != 6 {
		t.Fatalf("%d low requests started (%d in flight), want 6", ok, inFlight(p))
	}
}

// TestNoReserve: without a reserve low requests may use every slot.
func TestNoReserve(t *testing.T) {
	p := reservePool(t, 0, 0)
	for range 8 {
		mustAcquire(t, p, PriorityLow)
	}
	if _, err := p.Acquire(context.Background(), "", PriorityLow, nil); !errors.Is(err, ErrNoCapacity) {
		t.Fatalf("9th low request: %v, want ErrNoCapacity", err)
	}
}
