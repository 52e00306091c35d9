package kube

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/upstream"
)

// deployObjects reads every manifest kustomization.yaml in deploy/ lists,
// strictly (an unknown field is an error), and checks the list names every
// manifest there.
func deployObjects(t *testing.T) []client.Object {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "deploy")
	raw, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(raw, &k); err != nil { // only resources matters here
		t.Fatalf("kustomization.yaml: %v", err)
	}
	onDisk, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var manifests []string
	for _, p := range onDisk {
		if name := filepath.Base(p); name != "kustomization.yaml" {
			manifests = append(manifests, name)
		}
	}
	if listed := slices.Sorted(slices.Values(k.Resources)); !slices.Equal(listed, manifests) {
		t.Fatalf("kustomization.yaml lists %v; deploy/ holds %v", listed, manifests)
	}

	decoder := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
	var objs []client.Object
	for _, name := range k.Resources {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		docs := utilyaml.NewYAMLReader(bufio.NewReader(f))
		for i := 0; ; i++ {
			doc, err := docs.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: document %d: %v", name, i, err)
			}
			if len(bytes.TrimSpace(stripComments(doc))) == 0 {
				continue
			}
			obj, _, err := decoder.Decode(doc, nil, nil)
			if err != nil {
				t.Fatalf("%s: document %d: %v", name, i, err)
			}
			objs = append(objs, obj.(client.Object))
		}
		f.Close()
	}
	return objs
}

func stripComments(doc []byte) []byte {
	var out []byte
	for line := range bytes.Lines(doc) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out = append(out, line...)
		}
	}
	return out
}

func find[T client.Object](t *testing.T, objs []client.Object, name string) T {
	t.Helper()
	for _, o := range objs {
		if v, ok := o.(T); ok && o.GetName() == name {
			return v
		}
	}
	var zero T
	t.Fatalf("deploy/ has no %T named %s", zero, name)
	return zero
}

// TestDeployManifests checks deploy/ against the config parser and a real
// API server: the embedded sluice.yaml is valid and agrees with the pod
// spec, every object passes a server-side dry run, and the Role lets the
// gateway do exactly what discovery and scaling need.
func TestDeployManifests(t *testing.T) {
	objs := deployObjects(t)
	ns := find[*corev1.Namespace](t, objs, "sluice")
	cm := find[*corev1.ConfigMap](t, objs, "sluice")
	gw := find[*appsv1.Deployment](t, objs, "sluice")

	t.Setenv("POD_NAMESPACE", ns.Name)
	cfg, err := config.Parse("deploy/configmap.yaml:sluice.yaml", []byte(cm.Data["sluice.yaml"]))
	if err != nil {
		t.Fatalf("sluice.yaml in the ConfigMap: %v", err)
	}

	t.Run("pod spec agrees with sluice.yaml", func(t *testing.T) {
		c := gw.Spec.Template.Spec.Containers[0]
		ports := map[string]int32{}
		for _, p := range c.Ports {
			ports[p.Name] = p.ContainerPort
		}
		for name, listen := range map[string]string{"http": cfg.Listen, "admin": cfg.Admin.Listen} {
			_, port, _ := strings.Cut(listen, ":")
			if strconv.Itoa(int(ports[name])) != port || strings.HasPrefix(listen, "127.") {
				t.Errorf("%s listens on %q, but the container port %s is %d (and must be reachable from the kubelet)", name, listen, name, ports[name])
			}
		}
		if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" || p.HTTPGet.Port.String() != "admin" {
			t.Errorf("readiness probe = %+v, want GET /readyz on admin", p)
		}
		if p := c.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" || p.HTTPGet.Port.String() != "admin" {
			t.Errorf("liveness probe = %+v, want GET /healthz on admin", p)
		}
		sc := c.SecurityContext
		if sc == nil || !ptrTrue(sc.ReadOnlyRootFilesystem) || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			!ptrTrue(gw.Spec.Template.Spec.SecurityContext.RunAsNonRoot) {
			t.Errorf("security context = %+v / %+v, want non-root, read-only root, no privilege escalation", sc, gw.Spec.Template.Spec.SecurityContext)
		}
		mounted := map[string]bool{}
		for _, m := range c.VolumeMounts {
			mounted[m.MountPath] = true
		}
		if !mounted[cfg.DataDir] {
			t.Errorf("data_dir %s is not a mounted volume; the root filesystem is read-only", cfg.DataDir)
		}
		grace := int64(cfg.Limits.DrainTimeout.D().Seconds()) + int64(c.Lifecycle.PreStop.Sleep.Seconds)
		if got := *gw.Spec.Template.Spec.TerminationGracePeriodSeconds; got <= grace {
			t.Errorf("terminationGracePeriodSeconds %d leaves no room after preStop + drain_timeout (%ds)", got, grace)
		}
		if gw.Spec.Replicas == nil || *gw.Spec.Replicas < 2 {
			t.Errorf("gateway replicas = %v, want several", gw.Spec.Replicas)
		}
	})

	apiCfg := apiServer(t)
	admin, err := client.New(apiCfg, client.Options{Scheme: scheme.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := admin.Create(ctx, ns.DeepCopy()); err != nil {
		t.Fatal(err)
	}

	t.Run("server-side dry run", func(t *testing.T) {
		for _, o := range objs {
			if o == client.Object(ns) {
				continue
			}
			if err := admin.Create(ctx, o.DeepCopyObject().(client.Object), client.DryRunAll); err != nil {
				t.Errorf("%T %s: %v", o, o.GetName(), err)
			}
		}
	})

	t.Run("the Role allows what sluice does and no more", func(t *testing.T) {
		for _, o := range objs {
			if o == client.Object(ns) {
				continue
			}
			if err := admin.Create(ctx, o.DeepCopyObject().(client.Object)); err != nil {
				t.Fatalf("%T %s: %v", o, o.GetName(), err)
			}
		}
		applySlice(t, newClient(t, apiCfg), ns.Name, "sim", testSlice("sim-abc", discoveryv1.AddressTypeIPv4, slicePorts("http=8000"), ep{"10.3.0.1", "sim-1", "ready"}))
		createWorkload(t, newClient(t, apiCfg), ns.Name, KindDeployment, "other", 1)

		asGateway := rest.CopyConfig(apiCfg)
		asGateway.Impersonate = rest.ImpersonationConfig{
			UserName: "system:serviceaccount:" + ns.Name + ":sluice",
			Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + ns.Name, "system:authenticated"},
		}
		gateway := newClient(t, asGateway)
		pc := cfg.Pools[0]
		pool := newTestPool(t, pc.Name, pc.Kubernetes)
		disc, err := NewDiscovery(gateway, pc.Name, pc.Kubernetes, pool, Options{})
		if err != nil {
			t.Fatal(err)
		}
		work, err := NewWorkload(gateway, pc.Kubernetes.Namespace, pc.Kubernetes.ScaleTarget, Options{})
		if err != nil {
			t.Fatal(err)
		}
		runCtx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { _ = disc.Run(runCtx) })
		wg.Go(func() { _ = work.Run(runCtx) })
		defer func() { cancel(); wg.Wait() }()

		waitPool(t, pool, "the sim replica", map[string]upstream.State{"http://10.3.0.1:8000": upstream.StateHealthy})
		waitSynced(t, work)
		if err := work.Scale(ctx, 3); err != nil {
			t.Fatalf("scaling the model as the gateway: %v", err)
		}
		if got := specReplicas(t, newClient(t, apiCfg), ns.Name, KindDeployment, "sim"); got != 3 {
			t.Errorf("sim replicas = %d, want 3", got)
		}
		if e := disc.Status().LastError; e != "" {
			t.Errorf("discovery as the gateway: %s", e)
		}
		if e := work.Status().LastError; e != "" {
			t.Errorf("workload watch as the gateway: %s", e)
		}

		leaseOpts := ElectorOptions{LeaseDuration: 2 * time.Second, RenewDeadline: time.Second, RetryPeriod: 100 * time.Millisecond}
		elector, err := NewElector(gateway, ns.Name, LeaseName(pc.Name), "gateway-0", leaseOpts)
		if err != nil {
			t.Fatal(err)
		}
		led := make(chan struct{})
		electCtx, stopElection := context.WithCancel(ctx)
		elected := make(chan error, 1)
		go func() {
			elected <- elector.Run(electCtx, func(leadCtx context.Context) {
				close(led)
				<-leadCtx.Done()
			})
		}()
		select {
		case <-led:
		case <-time.After(30 * time.Second):
			t.Errorf("the gateway never won its Lease %s", LeaseName(pc.Name))
		}
		stopElection()
		if err := <-elected; err != nil {
			t.Error(err)
		}

		// No more than that.
		other, err := NewWorkload(gateway, ns.Name, config.ScaleTarget{Name: "other"}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = other.getScale(ctx)
		if !apierrors.IsForbidden(err) {
			t.Errorf("reading another Deployment's scale = %v, want forbidden", err)
		}
		denied := map[string]error{}
		_, denied["list pods"] = gateway.CoreV1().Pods(ns.Name).List(ctx, metav1.ListOptions{})
		_, denied["get secrets"] = gateway.CoreV1().Secrets(ns.Name).List(ctx, metav1.ListOptions{})
		_, denied["update deployment"] = gateway.AppsV1().Deployments(ns.Name).Update(ctx, find[*appsv1.Deployment](t, objs, "sim"), metav1.UpdateOptions{})
		_, denied["list endpointslices elsewhere"] = gateway.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{})
		_, denied["list all deployments"] = gateway.AppsV1().Deployments(ns.Name).List(ctx, metav1.ListOptions{})
		_, denied["another pool's lease"] = gateway.CoordinationV1().Leases(ns.Name).Get(ctx, LeaseName("other"), metav1.GetOptions{})
		for what, err := range denied {
			if !apierrors.IsForbidden(err) {
				t.Errorf("%s as the gateway = %v, want forbidden", what, err)
			}
		}
	})
}

func ptrTrue(b *bool) bool { return b != nil && *b }
