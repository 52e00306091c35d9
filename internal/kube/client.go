package kube

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/sluice-ai/sluice/internal/buildinfo"
)

// RESTConfig returns the API server connection for a pool's
// kubernetes.kubeconfig:
//
//   - a path: that kubeconfig file, its current context;
//   - "" inside a pod: the pod's service account (in-cluster config);
//   - "" outside a cluster: the files listed in $KUBECONFIG, when it is set.
//
// "" outside a cluster without $KUBECONFIG is an error; sluice never falls
// back to ~/.kube/config on its own, so a gateway cannot scale a workload in
// whichever cluster a developer's shell last pointed at.
func RESTConfig(kubeconfig string) (*rest.Config, error) {
	var (
		cfg *rest.Config
		err error
	)
	switch {
	case kubeconfig != "":
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
		}
	default:
		cfg, err = rest.InClusterConfig()
		if errors.Is(err, rest.ErrNotInCluster) {
			env := os.Getenv(clientcmd.RecommendedConfigPathEnvVar)
			if env == "" {
				return nil, errors.New("kubernetes: not running in a cluster and neither kubernetes.kubeconfig nor $KUBECONFIG is set")
			}
			rules := &clientcmd.ClientConfigLoadingRules{Precedence: filepath.SplitList(env)}
			cfg, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
			if err != nil {
				return nil, fmt.Errorf("kubeconfig from $KUBECONFIG (%s): %w", env, err)
			}
		} else if err != nil {
			return nil, fmt.Errorf("in-cluster kubernetes config: %w", err)
		}
	}
	cfg.UserAgent = userAgent()
	return cfg, nil
}

// NewClient returns a clientset for kubeconfig, as RESTConfig resolves it.
// It does not contact the API server. Clientsets made from the same
// credentials share their connections.
func NewClient(kubeconfig string) (kubernetes.Interface, error) {
	cfg, err := RESTConfig(kubeconfig)
	if err != nil {
		return nil, err
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return c, nil
}

// RouteLogs sends client-go's own log output (watch restarts, throttling,
// the like) to logger instead of stderr. It sets process-wide state that
// running watches read, so only the first call takes effect: later ones
// (a reload adding a kubernetes pool, a second server in one process)
// would race with them.
func RouteLogs(logger *slog.Logger) {
	routeLogsOnce.Do(func() { klog.SetSlogLogger(logger.With("component", "client-go")) })
}

var routeLogsOnce sync.Once

func userAgent() string {
	v := buildinfo.Get().Version
	if v == "" {
		v = "dev"
	}
	return "sluice/" + v
}
