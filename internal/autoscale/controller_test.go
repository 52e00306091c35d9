package autoscale

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/sluice-ai/sluice/internal/config"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeActuator records Scale calls; fail makes the next calls fail.
type fakeActuator struct {
	mu      sync.Mutex
	n       int
	calls   []int
	failing bool
}

func (a *fakeActuator) Scale(_ context.Context, n int) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, n)
	if a.failing {
		return errors.New("scale subresource: conflict")
	}
	a.n = n
	return nil
}

func (a *fakeActuator) Desired() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n
}

func (a *fakeActuator) Calls() []int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]int(nil), a.calls...)
}

var _ Actuator = (*fakeActuator)(nil)

// syncBuffer is a log sink safe for the controller's goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestControllerStep(t *testing.T) {
	clk := clockwork.NewFakeClockAt(epoch)
	act := &fakeActuator{n: 1}
	var demand atomic.Int64
	var logs syncBuffer
	reg := prometheus.NewRegistry()
	cfg := config.DefaultAutoscale()
	c, err := NewController("chat", cfg, act, ControllerOptions{
		Demand:  func() float64 { return float64(demand.Load()) },
		Ready:   act.Desired, // replicas are ready at once here
		Clock:   clk,
		Logger:  slog.New(slog.NewTextHandler(&logs, nil)),
		Metrics: NewMetrics(reg),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, ok := c.Last(); ok {
		t.Fatal("a decision before the first step")
	}

	// Steady 4 (one replica's worth): no change, no Scale call.
	demand.Store(4)
	for range 10 {
		c.Step(ctx)
		clk.Advance(time.Second)
	}
	if calls := act.Calls(); len(calls) != 0 {
		t.Fatalf("Scale called %v for a steady load at target", calls)
	}

	// A burst: panic and scale up.
	demand.Store(40)
	var d Decision
	for range 3 {
		d = c.Step(ctx)
		clk.Advance(time.Second)
	}
	if !d.Panic || act.Desired() < 2 {
		t.Fatalf("after a 10x burst: %+v, actuator at %d", d, act.Desired())
	}
	last, ok := c.Last()
	if !ok || last.Desired != d.Desired || last.Time != d.Time {
		t.Errorf("Last() = %+v, want the latest step %+v", last, d)
	}
	out := logs.String()
	for _, want := range []string{"autoscaler panic", "msg=autoscale", "pool=chat", "from=1", "rule=panic", "panic_demand="} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if got := testutil.ToFloat64(c.gauges.desired); got != float64(act.Desired()) {
		t.Errorf("sluice_autoscaler_desired_replicas = %v, want %d", got, act.Desired())
	}
	if got := testutil.ToFloat64(c.gauges.panic); got != 1 {
		t.Errorf("sluice_autoscaler_panic = %v, want 1", got)
	}

	// A failing actuator is asked again next tick.
	act.mu.Lock()
	act.failing = true
	act.mu.Unlock()
	demand.Store(400)
	before := len(act.Calls())
	c.Step(ctx)
	clk.Advance(time.Second)
	c.Step(ctx)
	if got := act.Calls()[before:]; len(got) != 2 || got[0] != got[1] {
		t.Errorf("calls after failure %v, want the same count asked twice", got)
	}
	if !strings.Contains(logs.String(), "will retry") {
		t.Error("a failed Scale was not logged")
	}

	reg2 := prometheus.NewRegistry()
	m := NewMetrics(reg2)
	m.forPool("x").desired.Set(1)
	m.Forget("x")
	if n, _ := testutil.GatherAndCount(reg2, "sluice_autoscaler_desired_replicas"); n != 0 {
		t.Errorf("Forget left %d series", n)
	}
}

func TestControllerRunTicks(t *testing.T) {
	clk := clockwork.NewFakeClockAt(epoch)
	act := &fakeActuator{n: 1}
	c, err := NewController("chat", config.DefaultAutoscale(), act, ControllerOptions{
		Demand: func() float64 { return 0 },
		Ready:  act.Desired,
		Clock:  clk,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	for i := range 5 {
		if err := clk.BlockUntilContext(ctx, 1); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { d, ok := c.Last(); return ok && d.Time.Equal(clk.Now()) })
		if i < 4 {
			clk.Advance(time.Second)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

func TestControllerReconfigureKeepsForecast(t *testing.T) {
	cfg := config.DefaultAutoscale()
	cfg.Predictive = config.Predictive{Enabled: true, Season: config.Duration(time.Hour)}
	act := &fakeActuator{n: 1}
	c, err := NewController("chat", cfg, act, ControllerOptions{Demand: func() float64 { return 1 }, Ready: act.Desired, Clock: clockwork.NewFakeClockAt(epoch)})
	if err != nil {
		t.Fatal(err)
	}
	f := c.scaler.Forecast()
	c.Reconfigure(cfg)
	if c.scaler.Forecast() != f {
		t.Error("an unchanged config replaced the scaler")
	}
	cfg.Max = 3
	c.Reconfigure(cfg)
	if c.scaler.Forecast() != f || c.scaler.Config().Max != 3 {
		t.Error("a changed max did not apply, or lost the forecast")
	}
}

func TestNewControllerNeedsInputs(t *testing.T) {
	if _, err := NewController("chat", config.DefaultAutoscale(), &fakeActuator{}, ControllerOptions{}); err == nil {
		t.Error("NewController without Demand and Ready: no error")
	}
}

// waitFor polls cond until it holds; the controller's goroutine runs the step
// after the fake clock fires its ticker.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}
