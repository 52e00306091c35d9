package kube

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/upstream"
)

func createService(t *testing.T, c kubernetes.Interface, ns, name string) {
	t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8000)}},
		},
	}
	if _, err := c.CoreV1().Services(ns).Create(context.Background(), svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// applySlice creates or replaces an EndpointSlice of service, as the
// EndpointSlice controller would.
func applySlice(t *testing.T, c kubernetes.Interface, ns, service string, s *discoveryv1.EndpointSlice) {
	t.Helper()
	ctx := context.Background()
	s = s.DeepCopy()
	s.Namespace = ns
	s.Labels = map[string]string{ServiceNameLabel: service}
	api := c.DiscoveryV1().EndpointSlices(ns)
	cur, err := api.Get(ctx, s.Name, metav1.GetOptions{})
	if err != nil {
		if _, err := api.Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		return
	}
	s.ResourceVersion = cur.ResourceVersion
	if _, err := api.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func waitPool(t *testing.T, p *upstream.Pool, what string, want map[string]upstream.State) {
	t.Helper()
	eventually(t, what, func() (bool, string) {
		got := poolStates(p)
		return maps.Equal(got, want), fmt.Sprint(got)
	})
}

// TestDiscoveryFollowsEndpointSlices changes a Service's EndpointSlices on
// a real API server the way the EndpointSlice controller does as pods
// start, become ready, terminate and go, and checks the pool follows each
// change through the watch: after the initial list, no further request
// for EndpointSlices is made (no polling, no resync, no relist).
func TestDiscoveryFollowsEndpointSlices(t *testing.T) {
	cfg := apiServer(t)
	admin := newClient(t, cfg)
	ns := newNamespace(t, admin)
	createService(t, admin, ns, "model")
	v4, v6 := discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6
	ports := slicePorts("http=8000")
	H, S, D := upstream.StateHealthy, upstream.StateStarting, upstream.StateDraining

	applySlice(t, admin, ns, "model", testSlice("model-a", v4, ports, ep{"10.1.0.1", "p1", "ready"}, ep{"10.1.0.2", "p2", "not-ready"}))
	// Another Service's slice in the same namespace is none of the pool's
	// business.
	applySlice(t, admin, ns, "other", testSlice("other-a", v4, ports, ep{"10.9.0.1", "o1", "ready"}))

	k := &config.Kubernetes{Namespace: ns, Service: "model", Port: "http"}
	pool := newTestPool(t, "chat", k)
	requests := &requestCounter{match: "/endpointslices"}
	d, err := NewDiscovery(newClient(t, requests.wrap(rest.CopyConfig(cfg))), "chat", k, pool, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var runErr error
	wg.Go(func() { runErr = d.Run(ctx) })
	defer func() {
		cancel()
		wg.Wait()
		if runErr != nil {
			t.Errorf("Run = %v, want nil after cancel", runErr)
		}
	}()

	waitPool(t, pool, "initial list", map[string]upstream.State{"http://10.1.0.1:8000": H, "http://10.1.0.2:8000": S})
	if !d.Synced() {
		t.Error("Synced = false after the initial list was applied")
	}

	applySlice(t, admin, ns, "model", testSlice("model-a", v4, ports, ep{"10.1.0.1", "p1", "ready"}, ep{"10.1.0.2", "p2", "ready"}))
	waitPool(t, pool, "pod p2 ready", map[string]upstream.State{"http://10.1.0.1:8000": H, "http://10.1.0.2:8000": H})
	// The watch is established now (that change came through it); from
	// here on every change must arrive without a new request.
	afterSync := requests.all()

	applySlice(t, admin, ns, "model", testSlice("model-a", v4, ports, ep{"10.1.0.1", "p1", "terminating-serving"}, ep{"10.1.0.2", "p2", "ready"}))
	waitPool(t, pool, "pod p1 terminating", map[string]upstream.State{"http://10.1.0.1:8000": D, "http://10.1.0.2:8000": H})

	applySlice(t, admin, ns, "model", testSlice("model-b", v6, ports, ep{"fd00::3", "p3", "not-ready"}))
	waitPool(t, pool, "pod p3 in a second slice", map[string]upstream.State{"http://10.1.0.1:8000": D, "http://10.1.0.2:8000": H, "http://[fd00::3]:8000": S})

	applySlice(t, admin, ns, "model", testSlice("model-b", v6, ports, ep{"fd00::3", "p3", "ready"}))
	applySlice(t, admin, ns, "model", testSlice("model-a", v4, ports, ep{"10.1.0.2", "p2", "ready"}))
	waitPool(t, pool, "pod p1 gone, p3 ready", map[string]upstream.State{"http://10.1.0.2:8000": H, "http://[fd00::3]:8000": H})

	if err := admin.DiscoveryV1().EndpointSlices(ns).Delete(context.Background(), "model-b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPool(t, pool, "slice model-b deleted", map[string]upstream.State{"http://10.1.0.2:8000": H})

	if got := requests.all(); len(got) != len(afterSync) {
		t.Errorf("requests for EndpointSlices after the watch was established: %q, want none (before: %q)", got[len(afterSync):], afterSync)
	}
	for _, r := range afterSync {
		if !containsAll(r, "labelSelector=kubernetes.io%2Fservice-name%3Dmodel", "/namespaces/"+ns+"/") {
			t.Errorf("request %q is not scoped to the Service's slices in its namespace", r)
		}
	}
	st := d.Status()
	want := DiscoveryStatus{Namespace: ns, Service: "model", Port: "http", Synced: true, Slices: 1, Ready: 1}
	if st.LastError != "" || len(st.Problems) != 0 || st.Namespace != want.Namespace || st.Service != want.Service ||
		st.Port != want.Port || st.Synced != want.Synced || st.Slices != want.Slices || st.Ready != want.Ready || st.NotReady != 0 || st.Terminating != 0 {
		t.Errorf("Status = %+v, want %+v", st, want)
	}
}

// A Discovery that cannot list slices (here: no such permission) keeps
// the pool's backends, reports why, and stops cleanly.
func TestDiscoveryReportsAPIErrors(t *testing.T) {
	cfg := apiServer(t)
	admin := newClient(t, cfg)
	ns := newNamespace(t, admin)
	k := &config.Kubernetes{Namespace: ns, Service: "model", Port: "http"}
	pool := newTestPool(t, "chat", k)
	b, err := pool.NewBackend("http://10.1.0.1:8000", 1, upstream.StateHealthy)
	if err != nil {
		t.Fatal(err)
	}
	pool.AddBackend(b)

	nobody := rest.CopyConfig(cfg)
	nobody.Impersonate = rest.ImpersonationConfig{UserName: "nobody"}
	d, err := NewDiscovery(newClient(t, nobody), "chat", k, pool, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = d.Run(ctx) })
	eventually(t, "the error in Status", func() (bool, string) {
		st := d.Status()
		return containsAll(st.LastError, "forbidden", "endpointslices"), fmt.Sprintf("%+v", st)
	})
	cancel()
	wg.Wait()
	if d.Synced() {
		t.Error("Synced = true without a successful list")
	}
	if got := poolStates(pool); len(got) != 1 {
		t.Errorf("pool = %v; a discovery that never synced must not change it", got)
	}
	if err := d.Run(context.Background()); err != ErrRunning {
		t.Errorf("second Run = %v, want ErrRunning", err)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
