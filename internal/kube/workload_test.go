package kube

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/sluice-ai/sluice/internal/config"
)

// createWorkload creates a Deployment or StatefulSet named name with
// replicas; without a controller-manager no pod ever starts.
func createWorkload(t *testing.T, c kubernetes.Interface, ns, kind, name string, replicas int32) {
	t.Helper()
	ctx := context.Background()
	labels := map[string]string{"app": name}
	tmpl := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "model", Image: "registry.example/model:1"}}},
	}
	var err error
	switch kind {
	case KindDeployment:
		_, err = c.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec:       appsv1.DeploymentSpec{Replicas: ptr.To(replicas), Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tmpl},
		}, metav1.CreateOptions{})
	case KindStatefulSet:
		_, err = c.AppsV1().StatefulSets(ns).Create(ctx, &appsv1.StatefulSet{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec:       appsv1.StatefulSetSpec{Replicas: ptr.To(replicas), ServiceName: name, Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tmpl},
		}, metav1.CreateOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
}

// specReplicas reads spec.replicas of the workload itself (not its scale
// subresource), as the Deployment or StatefulSet controller would.
func specReplicas(t *testing.T, c kubernetes.Interface, ns, kind, name string) int {
	t.Helper()
	ctx := context.Background()
	var n *int32
	switch kind {
	case KindDeployment:
		d, err := c.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n = d.Spec.Replicas
	case KindStatefulSet:
		s, err := c.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n = s.Spec.Replicas
	}
	return int(*n)
}

// kubectlScale sets replicas the way `kubectl scale` does: through the
// scale subresource, as another writer.
func kubectlScale(t *testing.T, c kubernetes.Interface, ns, kind, name string, n int32) {
	t.Helper()
	ctx := context.Background()
	var err error
	switch kind {
	case KindDeployment:
		sc, gerr := c.AppsV1().Deployments(ns).GetScale(ctx, name, metav1.GetOptions{})
		if gerr != nil {
			t.Fatal(gerr)
		}
		sc.Spec.Replicas = n
		_, err = c.AppsV1().Deployments(ns).UpdateScale(ctx, name, sc, metav1.UpdateOptions{})
	case KindStatefulSet:
		sc, gerr := c.AppsV1().StatefulSets(ns).GetScale(ctx, name, metav1.GetOptions{})
		if gerr != nil {
			t.Fatal(gerr)
		}
		sc.Spec.Replicas = n
		_, err = c.AppsV1().StatefulSets(ns).UpdateScale(ctx, name, sc, metav1.UpdateOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
}

// runWorkload runs w until the test ends and waits for its first sync.
func runWorkload(t *testing.T, w *Workload) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := w.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	waitSynced(t, w)
}

// waitSynced waits up to 30s for w's first list.
func waitSynced(t *testing.T, w *Workload) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.WaitSynced(ctx); err != nil {
		t.Fatalf("%s: %v (status %+v)", w, err, w.Status())
	}
}

func TestWorkloadScales(t *testing.T) {
	cfg := apiServer(t)
	admin := newClient(t, cfg)
	for _, kind := range []string{KindDeployment, KindStatefulSet} {
		t.Run(kind, func(t *testing.T) {
			ns := newNamespace(t, admin)
			createWorkload(t, admin, ns, kind, "model", 2)
			writes := &requestCounter{match: "/scale"}
			w, err := NewWorkload(newClient(t, writes.wrap(rest.CopyConfig(cfg))), ns, config.ScaleTarget{Kind: kind, Name: "model"}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if err := w.Scale(ctx, 3); !errors.Is(err, ErrNotSynced) {
				t.Fatalf("Scale before Run = %v, want ErrNotSynced", err)
			}
			runWorkload(t, w)
			if got := w.Desired(); got != 2 {
				t.Fatalf("Desired after sync = %d, want 2 (spec.replicas)", got)
			}

			for _, n := range []int{5, 1, 0, 3} {
				if err := w.Scale(ctx, n); err != nil {
					t.Fatalf("Scale(%d): %v", n, err)
				}
				if got := specReplicas(t, admin, ns, kind, "model"); got != n {
					t.Fatalf("after Scale(%d): spec.replicas = %d", n, got)
				}
				if got := w.Desired(); got != n {
					t.Fatalf("after Scale(%d): Desired = %d", n, got)
				}
			}
			if got := writes.count(http.MethodPut); got != 4 {
				t.Errorf("scale writes = %d, want 4: %q", got, writes.all())
			}

			// Another writer changes the count: the watch reports it, and
			// scaling to what is already there writes nothing.
			kubectlScale(t, admin, ns, kind, "model", 7)
			eventually(t, "Desired after kubectl scale", func() (bool, string) {
				return w.Desired() == 7, fmt.Sprint(w.Desired())
			})
			if err := w.Scale(ctx, 7); err != nil {
				t.Fatal(err)
			}
			if got := writes.count(http.MethodPut); got != 4 {
				t.Errorf("Scale to the current count wrote: %q", writes.all())
			}

			st := w.Status()
			if !st.Synced || !st.Found || st.Desired != 7 || st.Kind != kind || st.Name != "model" || st.Namespace != ns || st.LastScaleAt == nil || st.LastError != "" {
				t.Errorf("Status = %+v", st)
			}
		})
	}
}

// A write that races with another writer fails with a conflict on the API
// server and is read and tried again.
func TestWorkloadRetriesConflicts(t *testing.T) {
	cfg := apiServer(t)
	admin := newClient(t, cfg)
	ns := newNamespace(t, admin)
	createWorkload(t, admin, ns, KindDeployment, "model", 1)

	var raced atomic.Bool
	writes := &requestCounter{match: "/scale"}
	writes.before = func(r *http.Request) {
		if r.Method != http.MethodPut || !raced.CompareAndSwap(false, true) {
			return
		}
		// Between sluice's read and its write, someone else edits the
		// Deployment, so the resourceVersion sluice read is stale.
		d, err := admin.AppsV1().Deployments(ns).Get(r.Context(), "model", metav1.GetOptions{})
		if err != nil {
			t.Error(err)
			return
		}
		d.Annotations = map[string]string{"edited-by": "someone-else"}
		if _, err := admin.AppsV1().Deployments(ns).Update(r.Context(), d, metav1.UpdateOptions{}); err != nil {
			t.Error(err)
		}
	}
	w, err := NewWorkload(newClient(t, writes.wrap(rest.CopyConfig(cfg))), ns, config.ScaleTarget{Name: "model"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	runWorkload(t, w)
	if err := w.Scale(context.Background(), 4); err != nil {
		t.Fatalf("Scale: %v (requests %q)", err, writes.all())
	}
	if got := specReplicas(t, admin, ns, KindDeployment, "model"); got != 4 {
		t.Errorf("spec.replicas = %d, want 4", got)
	}
	var conflicts, puts int
	for _, r := range writes.all() {
		if r[:4] == "PUT " {
			puts++
			if r[4:7] == "409" {
				conflicts++
			}
		}
	}
	if conflicts != 1 || puts != 2 {
		t.Errorf("requests = %q; want one conflicting write and one retried write", writes.all())
	}
}

func TestWorkloadMissing(t *testing.T) {
	cfg := apiServer(t)
	admin := newClient(t, cfg)
	ns := newNamespace(t, admin)
	w, err := NewWorkload(admin, ns, config.ScaleTarget{Kind: KindStatefulSet, Name: "absent"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	runWorkload(t, w)
	if st := w.Status(); st.Found || !st.Synced || st.Desired != 0 {
		t.Errorf("Status = %+v, want synced and not found", st)
	}
	err = w.Scale(context.Background(), 2)
	if !apierrors.IsNotFound(err) {
		t.Fatalf("Scale of a missing StatefulSet = %v, want a NotFound error", err)
	}
	if st := w.Status(); st.LastError == "" || st.LastErrorAt == nil {
		t.Errorf("Status after a failed Scale = %+v, want the error", st)
	}

	// It appears later: the watch sees it.
	createWorkload(t, admin, ns, KindStatefulSet, "absent", 2)
	eventually(t, "the StatefulSet's creation", func() (bool, string) {
		st := w.Status()
		return st.Found && st.Desired == 2, fmt.Sprintf("%+v", st)
	})
}

func TestNewWorkloadRejects(t *testing.T) {
	c := unreachableClient(t)
	for _, target := range []config.ScaleTarget{{Kind: "ReplicaSet", Name: "x"}, {Kind: KindDeployment}} {
		if _, err := NewWorkload(c, "ns", target, Options{}); err == nil {
			t.Errorf("NewWorkload(%+v) = nil error", target)
		}
	}
	if _, err := NewWorkload(nil, "ns", config.ScaleTarget{Name: "x"}, Options{}); err == nil {
		t.Error("NewWorkload without a client = nil error")
	}
}
