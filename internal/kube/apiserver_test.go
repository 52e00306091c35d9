package kube

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// The tests that need Kubernetes run against a real kube-apiserver and
// etcd, started once for the package by envtest. The binaries come from
// KUBEBUILDER_ASSETS or, when it is unset, from scripts/kube-test-assets.sh,
// which builds them into .tools/kube/bin on first use and returns at once
// afterwards. There is no controller-manager: tests write EndpointSlices
// and workload replica counts themselves.

var (
	apiOnce sync.Once
	apiEnv  *envtest.Environment
	apiCfg  *rest.Config
	apiErr  error
)

func TestMain(m *testing.M) {
	// client-go's own logging (watch errors the tests provoke, leader
	// election chatter) would bury the test output.
	klog.SetLogger(logr.Discard())
	code := m.Run()
	if apiEnv != nil {
		if err := apiEnv.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the test API server:", err)
			code = 1
		}
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "leaked goroutines:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// apiServer returns admin credentials for the package's API server,
// starting it on first use.
func apiServer(t *testing.T) *rest.Config {
	t.Helper()
	apiOnce.Do(func() { apiCfg, apiErr = startAPIServer() })
	if apiErr != nil {
		t.Fatal(apiErr)
	}
	return rest.CopyConfig(apiCfg)
}

func startAPIServer() (*rest.Config, error) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		dir, err := buildAssets()
		if err != nil {
			return nil, err
		}
		os.Setenv("KUBEBUILDER_ASSETS", dir)
	}
	ctrllog.SetLogger(logr.Discard())
	apiEnv = &envtest.Environment{
		// Generous: under -race on a busy machine the first start of
		// kube-apiserver can take a while.
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  time.Minute,
	}
	cfg, err := apiEnv.Start()
	if err != nil {
		apiEnv = nil
		return nil, fmt.Errorf("starting kube-apiserver and etcd from KUBEBUILDER_ASSETS=%s: %w", os.Getenv("KUBEBUILDER_ASSETS"), err)
	}
	return cfg, nil
}

// buildAssets runs scripts/kube-test-assets.sh, which returns at once when
// its stamp says the binaries are built, and returns their directory.
func buildAssets() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	script := filepath.Join(root, "scripts", "kube-test-assets.sh")
	cmd := exec.Command(script)
	cmd.Dir = root
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("building kube-apiserver and etcd for the tests (%s; its output is above): %w", script, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1], nil
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the test's directory")
		}
		dir = parent
	}
}

func newClient(t *testing.T, cfg *rest.Config) kubernetes.Interface {
	t.Helper()
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// newNamespace creates a namespace of the test's own. (Without a
// controller-manager, deleted namespaces never finish terminating, so
// they are left in place.)
func newNamespace(t *testing.T, c kubernetes.Interface) string {
	t.Helper()
	name := "t-" + rand.String(8)
	_, err := c.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return name
}

// requestCounter counts the requests a client sends, by a substring of
// their path, with their methods and response codes.
type requestCounter struct {
	mu    sync.Mutex
	match string
	reqs  []string // "METHOD CODE path?query"
	// before, when set, runs before each matching request is sent.
	before func(*http.Request)
}

func (rc *requestCounter) wrap(cfg *rest.Config) *rest.Config {
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if !strings.Contains(r.URL.Path, rc.match) {
				return rt.RoundTrip(r)
			}
			if rc.before != nil {
				rc.before(r)
			}
			resp, err := rt.RoundTrip(r)
			code := 0
			if resp != nil {
				code = resp.StatusCode
			}
			rc.mu.Lock()
			rc.reqs = append(rc.reqs, fmt.Sprintf("%s %d %s?%s", r.Method, code, r.URL.Path, r.URL.RawQuery))
			rc.mu.Unlock()
			return resp, err
		})
	}
	return cfg
}

func (rc *requestCounter) all() []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]string(nil), rc.reqs...)
}

func (rc *requestCounter) count(method string) int {
	n := 0
	for _, r := range rc.all() {
		if strings.HasPrefix(r, method+" ") {
			n++
		}
	}
	return n
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// eventually waits up to 30s for cond, which describes the state it saw
// when it fails. Watch events arrive in milliseconds; the bound only stops
// a broken test from hanging.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %s after 30s", what, state)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
