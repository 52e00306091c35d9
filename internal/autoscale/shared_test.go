package autoscale

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/redistest"
)

// TestSharedDemandSumsGateways: three gateways share one real redis-server;
// the lease holder's controller sizes the pool for the sum of their
// requests, not its third, and a gateway that stops reporting drops out
// after the TTL.
func TestSharedDemandSumsGateways(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	prefix := redistest.UniquePrefix(t)
	clk := clockwork.NewFakeClockAt(epoch)
	gw := make([]*SharedDemand, 3)
	for i := range gw {
		var err error
		gw[i], err = NewSharedDemand(rdb, SharedOptions{ID: []string{"gw-a", "gw-b", "gw-c"}[i], Prefix: prefix, TTL: 5 * time.Second, Clock: clk})
		if err != nil {
			t.Fatal(err)
		}
	}
	ctx := t.Context()
	// Each gateway carries 8 requests; jobs come from one shared store, so
	// each sees the same 6.
	local := Inputs{Active: 8, PendingJobs: 6, TokensInFlight: 1000}
	for _, g := range gw {
		if err := g.Publish(ctx, "chat", local); err != nil {
			t.Fatal(err)
		}
	}
	sum, n, err := gw[0].Sum(ctx, "chat", Inputs{Active: 9, PendingJobs: 6, TokensInFlight: 1100})
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 || sum.Active != 25 || sum.PendingJobs != 6 || sum.TokensInFlight != 3100 {
		t.Errorf("sum %+v of %d gateways, want 25 active (9 own + 8 + 8), 6 jobs, 3100 tokens, 3 gateways", sum, n)
	}

	// The lease holder's controller scales for the sum: 25 + 6 over a
	// target of 4 is 8 replicas, where its own share would ask for 4.
	act := &fakeActuator{n: 1}
	c, err := NewController("chat", config.DefaultAutoscale(), act, ControllerOptions{
		Inputs: func() Inputs {
			in, _, _ := gw[0].Sum(ctx, "chat", Inputs{Active: 9, PendingJobs: 6})
			return in
		},
		Ready: act.Desired,
		Clock: clk,
	})
	if err != nil {
		t.Fatal(err)
	}
	if d := c.Step(ctx); d.Desired != 8 || d.Demand != 31 {
		t.Errorf("decision %+v, want demand 31 and 8 replicas", d)
	}

	// gw-c stops reporting; after the TTL it counts no more and its entry
	// is removed.
	clk.Advance(6 * time.Second)
	for _, g := range gw[:2] {
		if err := g.Publish(ctx, "chat", local); err != nil {
			t.Fatal(err)
		}
	}
	sum, n, err = gw[0].Sum(ctx, "chat", local)
	if err != nil || n != 2 || sum.Active != 16 {
		t.Errorf("after gw-c went quiet: %+v of %d (%v), want 16 active from 2 gateways", sum, n, err)
	}
	if fields, _ := rdb.HKeys(ctx, prefix+"chat").Result(); len(fields) != 2 {
		t.Errorf("fields %v, want gw-c's stale entry deleted", fields)
	}
	if ttl, _ := rdb.PTTL(ctx, prefix+"chat").Result(); ttl <= 0 || ttl > 15*time.Second {
		t.Errorf("hash TTL %v, want 3 × 5s", ttl)
	}

	if !srv.Private() {
		return // the machine's Redis is not ours to stop
	}
	// Redis gone: the local share, and an error.
	srv.Stop()
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if sum, n, err := gw[0].Sum(cctx, "chat", local); err == nil || n != 1 || sum != local {
		t.Errorf("without Redis: %+v of %d, %v; want the local share and an error", sum, n, err)
	}
}

// TestSharedDemandRun publishes every tick until its context ends.
func TestSharedDemandRun(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	prefix := redistest.UniquePrefix(t)
	clk := clockwork.NewFakeClockAt(epoch)
	pub, _ := NewSharedDemand(rdb, SharedOptions{ID: "gw-b", Prefix: prefix, Clock: clk})
	lead, _ := NewSharedDemand(rdb, SharedOptions{ID: "gw-a", Prefix: prefix, Clock: clk})
	var mu sync.Mutex
	active := int64(3)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- pub.Run(ctx, time.Second, func() map[string]Inputs {
			mu.Lock()
			defer mu.Unlock()
			return map[string]Inputs{"chat": {Active: active}}
		})
	}()
	waitSum := func(want int64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if s, _, err := lead.Sum(t.Context(), "chat", Inputs{}); err == nil && s.Active == want {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("sum never reached %d", want)
	}
	waitSum(3)
	mu.Lock()
	active = 11
	mu.Unlock()
	clk.BlockUntilContext(t.Context(), 1)
	clk.Advance(time.Second)
	waitSum(11)
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
}
