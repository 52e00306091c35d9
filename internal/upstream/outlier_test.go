package upstream

import (
	"context"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/internal/config"
)

func TestOutlierEjectionHalfOpenAndGrowth(t *testing.T) {
	p, clk := testPool(t, 4, func(pc *config.Pool) {
		pc.OutlierDetection = config.OutlierDetection{ConsecutiveFailures: 3, EjectionTime: config.Duration(10 * time.Second), MaxEjectedPercent: 50}
	})
	b := p.Backends()[0]
	for range 2 {
		p.Observe(b, true)
	}
	p.Observe(b, false) // a success resets the streak
	for range 2 {
		p.Observe(b, true)
	}
	if b.State() != StateHealthy {
		t.Fatal("ejected before 3 consecutive failures")
	}
	p.Observe(b, true)
	if b.State() != StateEjected || b.BreakerState() != "open" || p.Ready() != 3 {
		t.Fatalf("after 3 failures: state %v breaker %s ready %d", b.State(), b.BreakerState(), p.Ready())
	}
	clk.Advance(10 * time.Second)
	waitBreaker(t, b, "half_open")
	// Half-open: one probe at a time.
	var probes int
	for range 20 {
		x, err := p.Acquire(context.Background(), "", PriorityNormal, nil)
		if err != nil {
			t.Fatal(err)
		}
		if x == b {
			probes++
		}
	}
	if probes != 1 {
		t.Fatalf("half-open backend took %d concurrent requests, want 1", probes)
	}
	// The probe fails: ejected again, for twice as long.
	p.Observe(b, true)
	if b.State() != StateEjected || b.Ejections() != 2 {
		t.Fatalf("failed probe: %v ejections %d", b.State(), b.Ejections())
	}
	clk.Advance(10 * time.Second)
	if b.State() != StateEjected {
		t.Fatal("second ejection did not grow")
	}
	clk.Advance(10 * time.Second)
	waitBreaker(t, b, "half_open")
	p.Observe(b, false)
	if b.BreakerState() != "closed" {
		t.Fatalf("successful probe: %s", b.BreakerState())
	}
}

// waitBreaker waits for the fake clock's timer callback to move b's breaker.
func waitBreaker(t *testing.T, b *Backend, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for b.BreakerState() != want {
		if time.Now().After(deadline) {
			t.Fatalf("breaker %s, want %s", b.BreakerState(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestMaxEjectedPercent(t *testing.T) {
	p, _ := testPool(t, 4, func(pc *config.Pool) {
		pc.OutlierDetection = config.OutlierDetection{ConsecutiveFailures: 1, EjectionTime: config.Duration(time.Minute), MaxEjectedPercent: 50}
	})
	for _, b := range p.Backends() {
		p.Observe(b, true)
	}
	ejected := 0
	for _, b := range p.Backends() {
		if b.State() == StateEjected {
			ejected++
		}
	}
	if ejected != 2 || p.Ready() != 2 {
		t.Fatalf("ejected %d (ready %d), want 2 of 4 at max_ejected_percent 50", ejected, p.Ready())
	}
}

func TestErrorRateEjection(t *testing.T) {
	p, clk := testPool(t, 2, func(pc *config.Pool) {
		pc.OutlierDetection = config.OutlierDetection{ErrorRate: 0.5, Window: config.Duration(10 * time.Second), MinRequests: 10, EjectionTime: config.Duration(time.Minute), MaxEjectedPercent: 50}
	})
	b := p.Backends()[0]
	for i := range 9 { // alternating: never consecutive, 4-5 of 9 failed
		p.Observe(b, i%2 == 1)
		clk.Advance(100 * time.Millisecond)
	}
	if b.State() != StateHealthy {
		t.Fatal("ejected below min_requests")
	}
	p.Observe(b, true) // 10 requests, 5 failed: 50%
	if b.State() != StateEjected {
		t.Fatal("not ejected at the error rate")
	}
	// Old failures leave the window.
	q := p.Backends()[1]
	for range 5 {
		p.Observe(q, true)
	}
	clk.Advance(11 * time.Second)
	for range 10 {
		p.Observe(q, false)
	}
	if q.State() != StateHealthy {
		t.Fatal("failures older than the window counted")
	}
}
