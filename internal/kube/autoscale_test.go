package kube

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/jonboulle/clockwork"

	"github.com/sluice-ai/sluice/internal/autoscale"
	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/upstream"
)

// TestAutoscalerDrivesDeployment closes the loop through a real API
// server: sluice's autoscaler decides from demand, the Workload writes the
// Deployment's scale subresource, the test plays the Deployment and
// EndpointSlice controllers (n replicas → n ready endpoints), and the
// Discovery's watch brings them into the pool, whose ready count feeds the
// next decision. Time is a fake clock, one tick per step.
func TestAutoscalerDrivesDeployment(t *testing.T) {
	cfg := apiServer(t)
	admin := newClient(t, cfg)
	ns := newNamespace(t, admin)
	createService(t, admin, ns, "model")
	createWorkload(t, admin, ns, KindDeployment, "model", 1)
	rollout(t, admin, ns, 1)

	k := &config.Kubernetes{Namespace: ns, Service: "model", Port: "http", ScaleTarget: config.ScaleTarget{Kind: KindDeployment, Name: "model"}}
	pool := newTestPool(t, "chat", k)
	client := newClient(t, cfg)
	disc, err := NewDiscovery(client, "chat", k, pool, Options{})
	if err != nil {
		t.Fatal(err)
	}
	work, err := NewWorkload(client, ns, k.ScaleTarget, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = disc.Run(ctx) })
	wg.Go(func() { _ = work.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()
	waitSynced(t, work)
	waitReady(t, pool, 1)

	as := config.DefaultAutoscale() // target 4, stable 60s, panic 6s ×2, delay 30s
	as.Min, as.Max = 1, 8
	clk := clockwork.NewFakeClock()
	var demand float64
	ctl, err := autoscale.NewController("chat", as, work, autoscale.ControllerOptions{
		Demand: func() float64 { return demand },
		Ready:  pool.Ready,
		Clock:  clk,
	})
	if err != nil {
		t.Fatal(err)
	}

	// step runs one decision, checks the API server holds it, and rolls
	// the Deployment out to it.
	var history []int
	step := func() autoscale.Decision {
		t.Helper()
		clk.Advance(time.Second)
		d := ctl.Step(ctx)
		if got := specReplicas(t, admin, ns, KindDeployment, "model"); got != d.Desired {
			t.Fatalf("decision %d (%s: %s), but spec.replicas = %d", d.Desired, d.Rule, d.Reason, got)
		}
		if len(history) == 0 || history[len(history)-1] != d.Desired {
			rollout(t, admin, ns, d.Desired)
			waitReady(t, pool, d.Desired)
		}
		history = append(history, d.Desired)
		return d
	}

	demand = 2 // half a replica's worth
	for range 40 {
		step() // the fresh scaler holds 1 for its first scale-down delay; then 1 is the minimum
	}
	if got := work.Desired(); got != 1 {
		t.Fatalf("steady low demand: %d replicas, want 1", got)
	}

	demand = 16 // a 4× burst
	var panicked bool
	for i := range 8 {
		d := step()
		panicked = panicked || d.Panic
		if d.Desired == 4 && i > 1 {
			break
		}
	}
	if !panicked || work.Desired() != 4 {
		t.Fatalf("burst: panic=%v, %d replicas (history %v), want panic and 4", panicked, work.Desired(), history)
	}
	for range 10 {
		if d := step(); d.Desired != 4 {
			t.Fatalf("steady burst: %d replicas, want 4", d.Desired)
		}
	}

	demand = 0
	downAt := -1
	for i := range 300 {
		d := step()
		if d.Desired < 4 && downAt < 0 {
			downAt = i
		}
		if d.Desired == 1 {
			break
		}
	}
	if work.Desired() != 1 {
		t.Fatalf("idle: %d replicas after 300s (history %v), want 1 (the minimum)", work.Desired(), history)
	}
	if downAt < int(as.ScaleDownDelay.D()/time.Second) {
		t.Errorf("first scale-down %ds after demand stopped, before the %v delay", downAt+1, as.ScaleDownDelay)
	}
	t.Logf("replicas per tick: %v", history)
	for i := 1; i < len(history); i++ {
		if prev, cur := history[i-1], history[i]; cur < prev && cur < (prev+1)/2 {
			t.Errorf("scale-down from %d to %d at step %d removes more than half (history %v)", prev, cur, i, history)
		}
	}
}

// rollout plays the Deployment and EndpointSlice controllers: n pods, all
// ready, in one slice.
func rollout(t *testing.T, c kubernetes.Interface, ns string, n int) {
	t.Helper()
	eps := make([]ep, n)
	for i := range eps {
		eps[i] = ep{fmt.Sprintf("10.2.0.%d", i+1), fmt.Sprintf("model-%d", i), "ready"}
	}
	applySlice(t, c, ns, "model", testSlice("model-a", discoveryv1.AddressTypeIPv4, slicePorts("http=8000"), eps...))
}

func waitReady(t *testing.T, p *upstream.Pool, n int) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d ready backends", n), func() (bool, string) {
		return p.Ready() == n, fmt.Sprint(poolStates(p))
	})
}
