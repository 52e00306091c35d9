//go:build linux

package replicas_test

import (
	"context"
	"io"
	"log/slog"
	"math"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/internal/autoscale"
	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/replicas"
)

var _ autoscale.Actuator = (*replicas.ProcessSet)(nil)

// TestAutoscalerDrivesProcesses runs the autoscaler against real sim
// replicas: demand grows the set, its removal shrinks it after the delay down
// to zero, and demand at zero brings a replica back.
func TestAutoscalerDrivesProcesses(t *testing.T) {
	h := start(t, "auto", processConfig(simCommand(), 1), replicas.Options{})
	cfg := config.DefaultAutoscale()
	cfg.Min, cfg.Max = 0, 3
	cfg.TargetConcurrency = 2
	cfg.StableWindow = config.Duration(2 * time.Second)
	cfg.PanicWindow = config.Duration(500 * time.Millisecond)
	cfg.ScaleDownDelay = config.Duration(time.Second)
	const delay = time.Second

	var demand atomic.Uint64 // float64 bits
	setDemand := func(v float64) { demand.Store(math.Float64bits(v)) }
	setDemand(1)
	ctl, err := autoscale.NewController("auto", cfg, h.set, autoscale.ControllerOptions{
		Demand:      func() float64 { return math.Float64frombits(demand.Load()) },
		Ready:       h.pool.Ready,
		StartupTime: h.set.StartupTime,
		Tick:        100 * time.Millisecond,
		Logger:      slog.New(slog.NewTextHandler(h.logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- ctl.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-stopped; err != nil {
			t.Errorf("controller: %v", err)
		}
	})

	waitFor(t, 20*time.Second, "1 ready replica", func() bool { return h.pool.Ready() == 1 })

	// Load: 6 in flight needs 3 replicas of 2.
	setDemand(6)
	waitFor(t, 30*time.Second, "3 ready replicas", func() bool { return h.pool.Ready() == 3 })
	waitFor(t, 10*time.Second, "a stable window of the load", func() bool {
		d, _ := ctl.Last()
		return d.StableDemand > 5.9 && d.Desired == 3
	})

	// Removal: 3 stays recommended while the average is above 3.6 (0.9 ×
	// 2 × 2), and then the delay holds it; nothing may go before.
	dropped := time.Now()
	setDemand(0)
	var firstDown time.Time
	waitFor(t, 30*time.Second, "the set to shrink", func() bool {
		if h.set.Desired() < 3 && firstDown.IsZero() {
			firstDown = time.Now()
		}
		return !firstDown.IsZero()
	})
	if early := firstDown.Sub(dropped); early < delay {
		t.Errorf("scaled down %s after demand went, before scale_down_delay %s", early, delay)
	}
	waitFor(t, 30*time.Second, "scale to zero", func() bool {
		return h.set.Desired() == 0 && len(h.pool.Backends()) == 0
	})
	if d, _ := ctl.Last(); d.Rule != autoscale.RuleZero && d.Desired != 0 {
		t.Errorf("last decision %+v, want zero", d)
	}

	// Activation: demand at zero starts a replica, which then serves.
	setDemand(1)
	waitFor(t, 20*time.Second, "a replica from zero", func() bool { return h.pool.Ready() == 1 })
	resp, err := http.Get(h.pool.Backends()[0].Key() + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("replica started from zero answers %d", resp.StatusCode)
	}
	if len(h.logs.lines("msg=autoscale", "pool=auto", "from=0", "to=1", "rule=activation")) == 0 {
		t.Errorf("activation not logged:\n%s", h.logs)
	}
}
