package kube

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// writeKubeconfig writes a kubeconfig for cfg's server and credentials.
func writeKubeconfig(t *testing.T, cfg *rest.Config) string {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["test"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "admin"}
	kc.CurrentContext = "test"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestNewClient(t *testing.T) {
	cfg := apiServer(t)
	path := writeKubeconfig(t, cfg)
	missing := filepath.Join(t.TempDir(), "absent")
	t.Setenv("KUBERNETES_SERVICE_HOST", "") // not in a pod, whatever runs the test
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	tests := []struct {
		name       string
		kubeconfig string
		env        string // $KUBECONFIG
		wantErr    string // "" = a working client
	}{
		{name: "a kubeconfig path", kubeconfig: path},
		{name: "a path wins over $KUBECONFIG", kubeconfig: path, env: missing},
		{name: "empty outside a cluster uses $KUBECONFIG", env: path},
		{name: "$KUBECONFIG may list several files", env: missing + string(os.PathListSeparator) + path},
		{name: "empty outside a cluster without $KUBECONFIG", wantErr: "not running in a cluster and neither kubernetes.kubeconfig nor $KUBECONFIG is set"},
		{name: "a missing file", kubeconfig: missing, wantErr: "kubeconfig " + missing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("KUBECONFIG", tt.env)
			c, err := NewClient(tt.kubeconfig)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("NewClient(%q) = %v, want an error containing %q", tt.kubeconfig, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			v, err := c.Discovery().ServerVersion()
			if err != nil {
				t.Fatalf("talking to the API server: %v", err)
			}
			if !strings.HasPrefix(v.GitVersion, "v1.") {
				t.Errorf("server version %q", v.GitVersion)
			}
			rc, err := RESTConfig(tt.kubeconfig)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(rc.UserAgent, "sluice/") {
				t.Errorf("user agent %q, want sluice/VERSION", rc.UserAgent)
			}
		})
	}
}
