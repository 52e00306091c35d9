package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	appsinformers "k8s.io/client-go/informers/apps/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"

	"github.com/sluice-ai/sluice/internal/autoscale"
	"github.com/sluice-ai/sluice/internal/config"
)

// ErrNotSynced is returned by Scale before the workload's informer has
// synced: a decision made before the running count was known could stop
// replicas that serve.
var ErrNotSynced = errors.New("kube: workload not observed yet")

// Scale target kinds.
const (
	KindDeployment  = "Deployment"
	KindStatefulSet = "StatefulSet"
)

// Workload is the autoscaler's actuator for a Deployment or StatefulSet:
// Scale writes the replica count through the scale subresource, and
// Desired reports spec.replicas as last observed on the workload, whoever
// set it (sluice, kubectl scale, a rollout tool). Create it with
// NewWorkload, call Run, and start the autoscaler once WaitSynced returns.
type Workload struct {
	client kubernetes.Interface
	ns     string
	kind   string
	name   string
	opts   Options
	log    *slog.Logger

	running    atomic.Bool
	synced     chan struct{}
	syncedOnce sync.Once

	mu          sync.Mutex // guards the fields below
	found       bool
	spec        int // spec.replicas
	replicas    int // status.replicas
	ready       int // status.readyReplicas
	lastScaleAt time.Time
	lastErr     string
	lastErrAt   time.Time
}

var _ autoscale.Actuator = (*Workload)(nil)

// NewWorkload returns the actuator for target in namespace ("" means
// "default"). Kind "" means Deployment. It does not contact the API server
// until Run or Scale.
func NewWorkload(client kubernetes.Interface, namespace string, target config.ScaleTarget, opts Options) (*Workload, error) {
	if client == nil {
		return nil, errors.New("kube: workload needs a client")
	}
	if namespace == "" {
		namespace = config.DefaultKubernetes().Namespace
	}
	kind := target.Kind
	if kind == "" {
		kind = KindDeployment
	}
	if kind != KindDeployment && kind != KindStatefulSet {
		return nil, fmt.Errorf("kube: scale target kind %q: want %s or %s", kind, KindDeployment, KindStatefulSet)
	}
	if target.Name == "" {
		return nil, errors.New("kube: scale target name is empty")
	}
	opts = opts.withDefaults()
	return &Workload{
		client: client, ns: namespace, kind: kind, name: target.Name, opts: opts,
		log:    opts.Logger.With("kind", kind, "namespace", namespace, "workload", target.Name),
		synced: make(chan struct{}),
	}, nil
}

func (w *Workload) String() string { return w.kind + " " + w.ns + "/" + w.name }

// Run watches the workload (one object: a field selector on its name) and
// records its replica counts until ctx ends, then returns nil. A Workload
// runs once.
func (w *Workload) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	byName := func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", w.name).String()
	}
	var inf cache.SharedIndexInformer
	if w.kind == KindStatefulSet {
		inf = appsinformers.NewFilteredStatefulSetInformer(w.client, w.ns, 0, cache.Indexers{}, byName)
	} else {
		inf = appsinformers.NewFilteredDeploymentInformer(w.client, w.ns, 0, cache.Indexers{}, byName)
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    w.observeObject,
		UpdateFunc: func(_, o any) { w.observeObject(o) },
		DeleteFunc: func(any) { w.observeGone() },
	}); err != nil {
		return fmt.Errorf("%s: informer: %w", w, err)
	}
	if err := inf.SetWatchErrorHandlerWithContext(watchErrors(func(err error) {
		w.recordError(fmt.Errorf("watch %s: %w", w, err))
	})); err != nil {
		return fmt.Errorf("%s: informer: %w", w, err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Go(func() { inf.RunWithContext(ctx) })
	if cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		w.syncedOnce.Do(func() { close(w.synced) })
		if !w.Status().Found {
			w.log.Warn("scale target not found; scaling fails until it exists")
		}
	}
	<-ctx.Done()
	return nil
}

// WaitSynced returns nil once Run has listed the workload (whether or not it
// exists), or ctx's error.
func (w *Workload) WaitSynced(ctx context.Context) error {
	select {
	case <-w.synced:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (w *Workload) isSynced() bool {
	select {
	case <-w.synced:
		return true
	default:
		return false
	}
}

func (w *Workload) observeObject(obj any) {
	var spec *int32
	var replicas, ready int32
	switch o := obj.(type) {
	case *appsv1.Deployment:
		spec, replicas, ready = o.Spec.Replicas, o.Status.Replicas, o.Status.ReadyReplicas
	case *appsv1.StatefulSet:
		spec, replicas, ready = o.Spec.Replicas, o.Status.Replicas, o.Status.ReadyReplicas
	default:
		return
	}
	n := 1 // the API's default for an unset spec.replicas
	if spec != nil {
		n = int(*spec)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.found && w.spec != n {
		w.log.Info("workload replicas changed", "from", w.spec, "to", n)
	}
	w.found, w.spec, w.replicas, w.ready = true, n, int(replicas), int(ready)
}

func (w *Workload) observeGone() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.found, w.spec, w.replicas, w.ready = false, 0, 0, 0
	w.log.Warn("scale target deleted")
}

// Scale sets the workload's spec.replicas to n through its scale
// subresource. It reads the scale first and writes only when the count
// differs; a write that loses a race with another writer (a conflict) is
// read and tried again. It returns once the API server has stored the
// count; pods start and stop afterwards.
func (w *Workload) Scale(ctx context.Context, n int) error {
	if n < 0 {
		return fmt.Errorf("scale %s to %d: negative replicas", w, n)
	}
	if !w.isSynced() {
		return fmt.Errorf("scale %s to %d: %w", w, n, ErrNotSynced)
	}
	var stored int32
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		sc, err := w.getScale(ctx)
		if err != nil {
			return err
		}
		if sc.Spec.Replicas == int32(n) {
			stored = sc.Spec.Replicas
			return nil
		}
		sc.Spec.Replicas = int32(n)
		up, err := w.updateScale(ctx, sc)
		if err != nil {
			return err
		}
		stored = up.Spec.Replicas
		return nil
	})
	if err != nil {
		err = fmt.Errorf("scale %s to %d: %w", w, n, err)
		w.recordError(err)
		return err
	}
	w.mu.Lock()
	w.found, w.spec, w.lastScaleAt = true, int(stored), w.opts.Clock.Now()
	w.mu.Unlock()
	return nil
}

func (w *Workload) getScale(ctx context.Context) (*autoscalingv1.Scale, error) {
	if w.kind == KindStatefulSet {
		return w.client.AppsV1().StatefulSets(w.ns).GetScale(ctx, w.name, metav1.GetOptions{})
	}
	return w.client.AppsV1().Deployments(w.ns).GetScale(ctx, w.name, metav1.GetOptions{})
}

// updateScale writes sc; its resourceVersion (from getScale) makes the
// write fail with a conflict when someone changed the workload since.
func (w *Workload) updateScale(ctx context.Context, sc *autoscalingv1.Scale) (*autoscalingv1.Scale, error) {
	opts := metav1.UpdateOptions{FieldManager: fieldManager}
	if w.kind == KindStatefulSet {
		return w.client.AppsV1().StatefulSets(w.ns).UpdateScale(ctx, w.name, sc, opts)
	}
	return w.client.AppsV1().Deployments(w.ns).UpdateScale(ctx, w.name, sc, opts)
}

// fieldManager names sluice as the owner of spec.replicas in the
// workload's managed fields.
const fieldManager = "sluice"

// Desired is spec.replicas as last observed: by the watch or by Scale's
// own read and write. 0 before Run has synced and while the workload does
// not exist.
func (w *Workload) Desired() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.spec
}

func (w *Workload) recordError(err error) {
	msg := err.Error()
	w.mu.Lock()
	repeated := msg == w.lastErr
	w.lastErr, w.lastErrAt = msg, w.opts.Clock.Now()
	w.mu.Unlock()
	if !repeated {
		w.log.Warn("kubernetes workload", "err", msg)
	}
}

// WorkloadStatus is a Workload's state for /api/pools.
type WorkloadStatus struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Synced is false until the workload has been listed once.
	Synced bool `json:"synced"`
	// Found is false while the workload does not exist.
	Found bool `json:"found"`
	// Desired is spec.replicas; Replicas and Ready are the workload
	// controller's status.replicas and status.readyReplicas.
	Desired  int `json:"desired"`
	Replicas int `json:"replicas"`
	Ready    int `json:"ready"`
	// LastScaleAt is when Scale last succeeded.
	LastScaleAt *time.Time `json:"last_scale_at,omitempty"`
	// LastError is the last error reading, writing or watching the
	// workload, and when it happened.
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
}

// Status reports the workload as last observed.
func (w *Workload) Status() WorkloadStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := WorkloadStatus{
		Kind: w.kind, Namespace: w.ns, Name: w.name, Synced: w.isSynced(), Found: w.found,
		Desired: w.spec, Replicas: w.replicas, Ready: w.ready, LastError: w.lastErr,
	}
	if !w.lastScaleAt.IsZero() {
		t := w.lastScaleAt
		st.LastScaleAt = &t
	}
	if w.lastErr != "" {
		t := w.lastErrAt
		st.LastErrorAt = &t
	}
	return st
}
