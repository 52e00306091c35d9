package gateway

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/sluice-ai/sluice/internal/redistest"
)

// TestKubernetesPoolFollowsEndpointSlices runs a real kube-apiserver: a
// kubernetes pool of the gateway learns its replicas from the Service's
// EndpointSlice and drops them when it goes. (The API server refuses
// loopback endpoints, and tests send no traffic off loopback, so this
// checks the pool, not a request; internal/kube covers the rest.)
func TestKubernetesPoolFollowsEndpointSlices(t *testing.T) {
	client, kubeconfig := startKube(t)
	ready, p32, name, host := true, int32(8000), "http", "10.0.0.7"
	_, err := client.DiscoveryV1().EndpointSlices("default").Create(context.Background(), &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "model-abc", Labels: map[string]string{discoveryv1.LabelServiceName: "model"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{host}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &p32}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	g := startGateway(t, header()+"  - name: chat\n    models: [m1]\n    health_check: {path: \"\"}\n"+
		"    kubernetes: {namespace: default, service: model, port: http, kubeconfig: "+kubeconfig+"}\n")
	eventually(t, "the replica discovered", func() bool {
		ps := g.pools()
		return len(ps[0].Backends) == 1 && ps[0].Backends[0].State == "healthy" && ps[0].Backends[0].URL == "http://10.0.0.7:8000"
	})
	if err := client.DiscoveryV1().EndpointSlices("default").Delete(context.Background(), "model-abc", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the replica removed", func() bool { return len(g.pools()[0].Backends) == 0 })
}

// startKube runs a real kube-apiserver and etcd for the test; it returns
// an admin client and a kubeconfig file for the gateway.
func startKube(t *testing.T) (kubernetes.Interface, string) {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		root, _ := filepath.Abs("../..")
		out, err := exec.Command(filepath.Join(root, "scripts", "kube-test-assets.sh")).Output()
		if err != nil {
			t.Fatalf("building the test control plane: %v", err)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		t.Setenv("KUBEBUILDER_ASSETS", lines[len(lines)-1])
	}
	env := &envtest.Environment{}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })

	kc := clientcmdapi.NewConfig()
	kc.Clusters["test"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "admin"}
	kc.CurrentContext = "test"
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		t.Fatal(err)
	}

	return kubernetes.NewForConfigOrDie(cfg), kubeconfig
}

// TestKubernetesPoolScaledForEveryGateway: three gateways share a Redis and
// one kubernetes pool scaled through a real kube-apiserver. Each holds two
// requests waiting for a replica; the gateway holding the pool's Lease
// sizes the Deployment for all six, not for its own two.
func TestKubernetesPoolScaledForEveryGateway(t *testing.T) {
	client, kubeconfig := startKube(t)
	rd := redistest.Start(t)
	labels := map[string]string{"app": "model"}
	_, err := client.AppsV1().Deployments("default").Create(context.Background(), &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "model"},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To(int32(1)), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "model", Image: "registry.example/model:1"}}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := "listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0}\nlog: {level: error}\nlimits: {drain_timeout: 5s}\nredis: {url: " + rd.URL() + "}\npools:\n" +
		"  - name: chat\n    models: [m1]\n    queue: {size: 100, timeout: 60s}\n" +
		"    kubernetes: {namespace: default, service: model, port: http, kubeconfig: " + kubeconfig + ", scale_target: {kind: Deployment, name: model}}\n" +
		"    autoscale: {min: 1, max: 10, target_concurrency: 1, stable_window: 2s, panic_window: 1s}\n"
	gws := []*gw{startGateway(t, cfg), startGateway(t, cfg), startGateway(t, cfg)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for _, g := range gws {
		for range 2 {
			wg.Go(func() {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, g.url+"/v1/chat/completions", strings.NewReader(chatBody))
				if resp, err := http.DefaultClient.Do(req); err == nil {
					resp.Body.Close()
				}
			})
		}
	}
	replicas := func() int32 {
		d, err := client.AppsV1().Deployments("default").Get(context.Background(), "model", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return *d.Spec.Replicas
	}
	deadline := time.Now().Add(60 * time.Second)
	for replicas() < 6 {
		if time.Now().After(deadline) {
			var leaders int
			for _, g := range gws {
				if k := g.pools()[0].Kubernetes; k != nil && k.Leading {
					leaders++
				}
			}
			t.Fatalf("the Deployment has %d replicas; want 6 for the three gateways' requests (%d gateways leading)", replicas(), leaders)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := replicas(); n > 10 {
		t.Fatalf("%d replicas, above max", n)
	}
	cancel()
}
