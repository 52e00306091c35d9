package kube

import (
	"maps"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/jonboulle/clockwork"

	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/upstream"
)

func newTestPool(t *testing.T, name string, k *config.Kubernetes) *upstream.Pool {
	t.Helper()
	cfg := config.DefaultPool()
	cfg.Name = name
	cfg.Kubernetes = k
	p, err := upstream.NewPool(&cfg, upstream.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func poolStates(p *upstream.Pool) map[string]upstream.State {
	m := make(map[string]upstream.State)
	for _, b := range p.Backends() {
		m[b.Key()] = b.State()
	}
	return m
}

// unreachableClient is a client for reconcile tests, which never call the
// API server.
func unreachableClient(t *testing.T) kubernetes.Interface {
	t.Helper()
	c, err := kubernetes.NewForConfig(&rest.Config{Host: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func sliceObjs(s ...*discoveryv1.EndpointSlice) []any {
	out := make([]any, len(s))
	for i := range s {
		out[i] = s[i]
	}
	return out
}

// TestReconcile walks a pool through the life of its replicas, one
// EndpointSlice state after another, including states set by health
// checks and outlier detection that discovery must leave alone.
func TestReconcile(t *testing.T) {
	v4 := discoveryv1.AddressTypeIPv4
	H, S, D, U, E := upstream.StateHealthy, upstream.StateStarting, upstream.StateDraining, upstream.StateUnhealthy, upstream.StateEjected
	ports := slicePorts("http=8000")
	url := func(i string) string { return "http://10.0.0." + i + ":8000" }
	steps := []struct {
		name   string
		before func(p *upstream.Pool) // changes made by others (health checks, outlier detection)
		slices []*discoveryv1.EndpointSlice
		want   map[string]upstream.State
	}{
		{
			name:   "initial list: the stale backend of an earlier discovery goes, a known one is adopted",
			slices: []*discoveryv1.EndpointSlice{testSlice("a", v4, ports, ep{"10.0.0.1", "p1", "ready"}, ep{"10.0.0.2", "p2", "not-ready"}, ep{"10.0.0.9", "p9", "terminating"})},
			want:   map[string]upstream.State{url("1"): H, url("2"): S},
		},
		{
			name:   "a pod becomes ready, another one starts",
			slices: []*discoveryv1.EndpointSlice{testSlice("a", v4, ports, ep{"10.0.0.1", "p1", "ready"}, ep{"10.0.0.2", "p2", "ready"}, ep{"10.0.0.3", "p3", "not-ready"})},
			want:   map[string]upstream.State{url("1"): H, url("2"): H, url("3"): S},
		},
		{
			name: "unhealthy and ejected backends stay with their owners while ready",
			before: func(p *upstream.Pool) {
				for _, b := range p.Backends() {
					switch b.Key() {
					case url("1"):
						p.SetBackendState(b, U)
					case url("2"):
						p.SetBackendState(b, E)
					}
				}
			},
			slices: []*discoveryv1.EndpointSlice{testSlice("a", v4, ports, ep{"10.0.0.1", "p1", "ready"}, ep{"10.0.0.2", "p2", "ready"}, ep{"10.0.0.3", "p3", "not-ready"})},
			want:   map[string]upstream.State{url("1"): U, url("2"): E, url("3"): S},
		},
		{
			name:   "a pod that fails its readiness probe stops taking traffic",
			slices: []*discoveryv1.EndpointSlice{testSlice("a", v4, ports, ep{"10.0.0.1", "p1", "ready"}, ep{"10.0.0.2", "p2", "not-ready"}, ep{"10.0.0.3", "p3", "ready"})},
			want:   map[string]upstream.State{url("1"): U, url("2"): S, url("3"): H},
		},
		{
			name:   "a terminating pod drains",
			slices: []*discoveryv1.EndpointSlice{testSlice("a", v4, ports, ep{"10.0.0.1", "p1", "terminating-serving"}, ep{"10.0.0.2", "p2", "ready"}, ep{"10.0.0.3", "p3", "ready"})},
			want:   map[string]upstream.State{url("1"): D, url("2"): H, url("3"): H},
		},
		{
			name: "a pod gone from the slices leaves the pool; one in a new slice joins",
			slices: []*discoveryv1.EndpointSlice{
				testSlice("a", v4, ports, ep{"10.0.0.2", "p2", "ready"}, ep{"10.0.0.3", "p3", "ready"}),
				testSlice("b", v4, ports, ep{"10.0.0.4", "p4", "ready"}),
			},
			want: map[string]upstream.State{url("2"): H, url("3"): H, url("4"): H},
		},
		{
			name:   "every slice deleted empties the pool",
			slices: nil,
			want:   map[string]upstream.State{},
		},
	}

	k := &config.Kubernetes{Namespace: "ns", Service: "svc", Port: "http"}
	pool := newTestPool(t, "chat", k)
	for _, u := range []string{url("1"), url("7")} { // left by an earlier discovery
		b, err := pool.NewBackend(u, 1, H)
		if err != nil {
			t.Fatal(err)
		}
		pool.AddBackend(b)
	}
	adopted := pool.Backends()[0]
	clk := clockwork.NewFakeClock()
	d, err := NewDiscovery(unreachableClient(t), "chat", k, pool, Options{Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	for i, st := range steps {
		if st.before != nil {
			st.before(pool)
		}
		d.reconcile(sliceObjs(st.slices...))
		if got := poolStates(pool); !maps.Equal(got, st.want) {
			t.Fatalf("step %d (%s): pool = %v, want %v", i, st.name, got, st.want)
		}
		if i == 0 && pool.Backends()[0] != adopted {
			t.Fatalf("step 0: the backend of %s was replaced, not adopted", url("1"))
		}
		clk.Advance(time.Second)
	}
	if got := d.StartupTime(); got != 2*time.Second {
		t.Errorf("StartupTime = %v, want 2s (10.0.0.3 was not ready for two steps, 10.0.0.2 for one, twice)", got)
	}
}

func TestStartupTimeKeepsLongestOfRecent(t *testing.T) {
	v4 := discoveryv1.AddressTypeIPv4
	ports := slicePorts("http=8000")
	k := &config.Kubernetes{Namespace: "ns", Service: "svc", Port: "http"}
	pool := newTestPool(t, "chat", k)
	clk := clockwork.NewFakeClock()
	d, err := NewDiscovery(unreachableClient(t), "chat", k, pool, Options{Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	// Replica i takes starts[i] to become ready, one after another.
	starts := []time.Duration{40 * time.Second, 5 * time.Second, 6 * time.Second, 7 * time.Second, 8 * time.Second, 9 * time.Second}
	want := []time.Duration{40 * time.Second, 40 * time.Second, 40 * time.Second, 40 * time.Second, 40 * time.Second, 9 * time.Second}
	for i, s := range starts {
		pod := string(rune('a' + i))
		addr := "10.0.1." + string(rune('1'+i))
		d.reconcile(sliceObjs(testSlice("a", v4, ports, ep{addr, pod, "not-ready"})))
		clk.Advance(s)
		d.reconcile(sliceObjs(testSlice("a", v4, ports, ep{addr, pod, "ready"})))
		if got := d.StartupTime(); got != want[i] {
			t.Errorf("after replica %d: StartupTime = %v, want %v", i, got, want[i])
		}
	}
	if got := d.Status().StartupSeconds; got != 9 {
		t.Errorf("Status().StartupSeconds = %v, want 9", got)
	}
}
