package upstream

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/metrics"
)

func newTestPool(t *testing.T, reg *prometheus.Registry, mutate func(*config.Pool)) *Pool {
	t.Helper()
	pc := config.DefaultPool()
	pc.Name = "p"
	pc.Backends = []config.Backend{{URL: "http://127.0.0.1:9001", Weight: 1}, {URL: "http://127.0.0.1:9002", Weight: 1}}
	if mutate != nil {
		mutate(&pc)
	}
	p, err := NewPool(&pc, Options{Metrics: metrics.NewGateway(reg)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func TestRetryOnIsCompiledOnce(t *testing.T) {
	p := newTestPool(t, prometheus.NewRegistry(), func(pc *config.Pool) { pc.Retry.On = []string{"connect_failure", "502", "503", "504"} })
	for _, c := range []struct {
		kind   string
		status int
		want   bool
	}{
		{"connect", 0, true}, {"timeout", 0, true}, {"error", 0, true},
		{"", 503, true}, {"", 500, false}, {"", 429, false},
	} {
		if got := p.RetryOn(c.kind, c.status); got != c.want {
			t.Errorf("RetryOn(%q, %d) = %v", c.kind, c.status, got)
		}
	}
	q := newTestPool(t, prometheus.NewRegistry(), func(pc *config.Pool) { pc.Retry.On = []string{"503"} })
	if q.RetryOn("connect", 0) {
		t.Error("connect failure retried without connect_failure or 502 in the list")
	}
}

// Per-backend series were never deleted, so they grew without bound as
// replicas came and went.
func TestRemovedBackendsLeaveNoSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	p := newTestPool(t, reg, func(pc *config.Pool) { pc.Backends = nil; pc.Process = &config.Process{} })
	for i := range 50 {
		b, err := p.NewBackend("http://127.0.0.1:"+string(rune('0'+i%10))+"1"+string(rune('0'+i/10)), 1, StateHealthy)
		if err != nil {
			t.Fatal(err)
		}
		p.AddBackend(b)
		a := Attempt{p: p, b: b}
		b.Acquire()
		a.Done(Outcome{Status: 200})
		p.RemoveBackend(b.Key())
	}
	if n := testutil.CollectAndCount(p.gm.Upstream); n != 0 {
		t.Fatalf("%d sluice_upstream_requests_total series left after every backend was removed", n)
	}
}

// The retry budget lives with the pool: retries in flight are capped at
// budget × requests in flight, with a floor of 3.
func TestRetryBudget(t *testing.T) {
	p := newTestPool(t, prometheus.NewRegistry(), func(pc *config.Pool) { pc.Retry.Budget = 0.2 })
	var flights []Flight
	for range 10 {
		flights = append(flights, p.Enter())
	}
	granted := 0
	for i := range flights {
		if flights[i].MayRetry(false) {
			granted++
		}
	}
	if granted != 3 {
		t.Fatalf("%d of 10 requests may retry, want the floor of 3", granted)
	}
	if !flights[9].MayRetry(true) {
		t.Fatal("a connect failure must always be retryable")
	}
	for i := range flights {
		flights[i].Leave()
	}
	if p.InFlight() != 0 || p.retrying.Load() != 0 {
		t.Fatalf("after every flight left: %d in flight, %d retrying", p.InFlight(), p.retrying.Load())
	}
}

// A rejected change leaves the pool as it was.
func TestDiscardedChangeTouchesNothing(t *testing.T) {
	p := newTestPool(t, prometheus.NewRegistry(), func(pc *config.Pool) { pc.Balancer = "round_robin" })
	next := *p.Config()
	next.Balancer = "random"
	next.Backends = append(next.Backends, config.Backend{URL: "http://127.0.0.1:9003", Weight: 1})
	c, err := p.Prepare(&next)
	if err != nil {
		t.Fatal(err)
	}
	c.Discard()
	if p.BalancerName() != "round_robin" || len(p.Backends()) != 2 {
		t.Fatalf("discarded change applied: balancer %s, %d backends", p.BalancerName(), len(p.Backends()))
	}
	c, _ = p.Prepare(&next)
	c.Commit()
	if p.BalancerName() != "random" || len(p.Backends()) != 3 {
		t.Fatalf("committed change not applied: balancer %s, %d backends", p.BalancerName(), len(p.Backends()))
	}
}

// Close is idempotent and stops the pool's timers: a slow start or an
// ejection scheduled before Close never fires after it.
func TestCloseIsIdempotentAndStopsTimers(t *testing.T) {
	p := newTestPool(t, prometheus.NewRegistry(), nil)
	p.mu.Lock()
	p.afterFuncLocked(time.Hour, func() { t.Error("a timer fired after Close") })
	n := len(p.timers)
	p.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d timers owned, want 1", n)
	}
	p.Close()
	p.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.timers) != 0 || !p.closed {
		t.Fatalf("after Close: %d timers, closed=%v", len(p.timers), p.closed)
	}
	p.afterFuncLocked(time.Nanosecond, func() { t.Error("a timer was scheduled after Close") })
	if len(p.timers) != 0 {
		t.Fatal("a closed pool took a new timer")
	}
}
