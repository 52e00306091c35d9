package upstream

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/sluice-ai/sluice/internal/config"
)

// testPool builds a pool of n static backends (nothing listens on them; the
// admission logic never dials).
func testPool(t *testing.T, n int, mutate func(*config.Pool)) (*Pool, *clockwork.FakeClock) {
	t.Helper()
	pc := config.DefaultPool()
	pc.Name = "p"
	pc.Models = []string{"m"}
	pc.Balancer = "round_robin"
	pc.SlowStart = 0
	for i := range n {
		pc.Backends = append(pc.Backends, config.Backend{URL: fmt.Sprintf("http://127.0.0.1:%d", 10001+i), Weight: 1})
	}
	if mutate != nil {
		mutate(&pc)
	}
	clk := clockwork.NewFakeClock()
	p, err := NewPool(&pc, Options{Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p, clk
}

func TestAcquireRespectsMaxConcurrency(t *testing.T) {
	p, _ := testPool(t, 2, func(pc *config.Pool) { pc.MaxConcurrency = 3; pc.Queue.Size = 0 })
	ctx := context.Background()
	var got []*Backend
	for range 6 {
		b, err := p.Acquire(ctx, "", PriorityNormal, nil)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, b)
	}
	for _, b := range p.Backends() {
		if b.InFlight() != 3 {
			t.Errorf("%s in flight %d, want 3", b.Key(), b.InFlight())
		}
	}
	if _, err := p.Acquire(ctx, "", PriorityNormal, nil); !errors.Is(err, ErrNoCapacity) {
		t.Fatalf("7th request: %v, want ErrNoCapacity", err)
	}
	p.Release(got[0], 0)
	if _, err := p.Acquire(ctx, "", PriorityNormal, nil); err != nil {
		t.Fatalf("after a release: %v", err)
	}
}

// waitQueued blocks until n requests wait in p's queue.
func waitQueued(t *testing.T, p *Pool, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for p.QueueDepth() != n {
		if time.Now().After(deadline) {
			t.Fatalf("queue depth %d, want %d", p.QueueDepth(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestQueueOrderPriorityAndBounds(t *testing.T) {
	p, clk := testPool(t, 1, func(pc *config.Pool) {
		pc.MaxConcurrency = 1
		pc.Queue = config.Queue{Size: 6, Timeout: config.Duration(time.Minute)}
	})
	ctx := context.Background()
	holder, err := p.Acquire(ctx, "", PriorityNormal, nil)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		name string
		err  error
	}
	order := make(chan result, 16)
	enqueue := func(name string, prio Priority) {
		go func() {
			b, err := p.Acquire(ctx, "", prio, nil)
			order <- result{name, err}
			if err == nil {
				p.Release(b, 0)
			}
		}()
	}
	// Enqueue one at a time so arrival order is known.
	names := []struct {
		name string
		prio Priority
	}{{"low1", PriorityLow}, {"norm1", PriorityNormal}, {"low2", PriorityLow}, {"high1", PriorityHigh}, {"norm2", PriorityNormal}, {"high2", PriorityHigh}}
	for i, n := range names {
		enqueue(n.name, n.prio)
		waitQueued(t, p, i+1)
	}
	// The queue is full: one more is refused at once.
	if _, err := p.Acquire(ctx, "", PriorityHigh, nil); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("over the queue size: %v, want ErrQueueFull", err)
	}
	_ = clk
	p.Release(holder, 0) // each finished request hands its slot to the next
	var got []string
	for range names {
		r := <-order
		if r.err != nil {
			t.Fatalf("%s: %v", r.name, r.err)
		}
		got = append(got, r.name)
	}
	// Smooth weighted order over classes 8:4:1 — high first, FIFO within a
	// class, and low is not starved: having been passed over three times,
	// low1 has earned its turn before norm2.
	want := "high1 norm1 high2 low1 norm2 low2"
	if fmt.Sprint(got) != "["+want+"]" {
		t.Errorf("dispatch order %v, want [%s]", got, want)
	}
}

func TestLowPriorityIsNotStarved(t *testing.T) {
	var q queue
	for i := range 40 {
		q.classes[PriorityHigh] = append(q.classes[PriorityHigh], &waiter{key: fmt.Sprint("h", i)})
	}
	q.classes[PriorityLow] = append(q.classes[PriorityLow], &waiter{key: "low"})
	for i := range 14 {
		if w := q.nextLocked(false); w.key == "low" {
			return // served while high-priority requests still wait
		} else if i == 13 {
			t.Fatal("low-priority waiter not served within one weight cycle")
		}
	}
}

func TestQueueTimeoutAndCancel(t *testing.T) {
	p, clk := testPool(t, 1, func(pc *config.Pool) {
		pc.MaxConcurrency = 1
		pc.Queue = config.Queue{Size: 10, Timeout: config.Duration(5 * time.Second)}
	})
	if _, err := p.Acquire(context.Background(), "", PriorityNormal, nil); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := p.Acquire(context.Background(), "", PriorityNormal, nil)
		errc <- err
	}()
	waitQueued(t, p, 1)
	clk.BlockUntilContext(context.Background(), 1)
	clk.Advance(5 * time.Second)
	if err := <-errc; !errors.Is(err, ErrQueueTimeout) {
		t.Fatalf("got %v, want ErrQueueTimeout", err)
	}
	if p.QueueDepth() != 0 {
		t.Fatalf("queue depth %d after timeout", p.QueueDepth())
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		_, err := p.Acquire(ctx, "", PriorityNormal, nil)
		errc <- err
	}()
	waitQueued(t, p, 1)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

func TestNoHealthyStaticBackendFailsFast(t *testing.T) {
	p, _ := testPool(t, 2, nil)
	for _, b := range p.Backends() {
		p.SetBackendState(b, StateUnhealthy)
	}
	if _, err := p.Acquire(context.Background(), "", PriorityNormal, nil); !errors.Is(err, ErrNoBackend) {
		t.Fatalf("got %v, want ErrNoBackend", err)
	}
}

func TestWaiterGetsBackendThatBecomesReady(t *testing.T) {
	p, _ := testPool(t, 1, func(pc *config.Pool) { pc.Process = &config.Process{} })
	b := p.Backends()[0]
	p.SetBackendState(b, StateStarting)
	got := make(chan *Backend, 1)
	go func() {
		b, err := p.Acquire(context.Background(), "", PriorityNormal, nil)
		if err != nil {
			t.Error(err)
		}
		got <- b
	}()
	waitQueued(t, p, 1)
	p.SetBackendState(b, StateHealthy) // the replica finished starting
	if g := <-got; g != b || g.InFlight() != 1 {
		t.Fatalf("waiter got %v", g)
	}
}

func TestSlowStartRampsShare(t *testing.T) {
	p, clk := testPool(t, 2, func(pc *config.Pool) { pc.SlowStart = config.Duration(10 * time.Second) })
	old, fresh := p.Backends()[0], p.Backends()[1]
	p.SetBackendState(fresh, StateUnhealthy)
	p.SetBackendState(fresh, StateHealthy) // rejoins a serving pool
	share := func() float64 {
		n := 0
		for range 2000 {
			b, _ := p.Acquire(context.Background(), "", PriorityNormal, nil)
			if b == fresh {
				n++
			}
			p.Release(b, 0)
		}
		return float64(n) / 2000
	}
	if s := share(); s > 0.15 {
		t.Errorf("just rejoined: share %.2f, want about 0.05 (10%% of an even share)", s)
	}
	clk.Advance(5 * time.Second)
	if s := share(); s < 0.15 || s > 0.40 {
		t.Errorf("half-way: share %.2f, want about 0.25", s)
	}
	clk.Advance(6 * time.Second)
	if s := share(); s < 0.45 || s > 0.55 {
		t.Errorf("warmed up: share %.2f, want 0.5", s)
	}
	_ = old
}
