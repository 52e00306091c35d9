package gateway

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// TestKubernetesPoolFollowsEndpointSlices runs a real kube-apiserver: a
// kubernetes pool of the gateway learns its replicas from the Service's
// EndpointSlice and drops them when it goes. (The API server refuses
// loopback endpoints, and tests send no traffic off loopback, so this
// checks the pool, not a request; internal/kube covers the rest.)
func TestKubernetesPoolFollowsEndpointSlices(t *testing.T) {
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

	client := kubernetes.NewForConfigOrDie(cfg)
	ready, p32, name, host := true, int32(8000), "http", "10.0.0.7"
	_, err = client.DiscoveryV1().EndpointSlices("default").Create(context.Background(), &discoveryv1.EndpointSlice{
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
