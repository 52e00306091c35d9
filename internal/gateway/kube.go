package gateway

import (
	"context"
	"fmt"
	"net"
	"reflect"
	"sync"

	"github.com/sluice-ai/sluice/internal/autoscale"
	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/kube"
	"github.com/sluice-ai/sluice/internal/upstream"
)

// kubeSet is a kubernetes pool's discovery and, with autoscale, its scale
// actuator and leader election: only the gateway replica holding the pool's
// Lease runs the autoscaler, so replicas never fight over the count.
type kubeSet struct {
	s    *Server
	name string
	pool *upstream.Pool
	cfg  config.Kubernetes
	disc *kube.Discovery
	work *kube.Workload // nil without autoscale
	el   *kube.Elector  // nil without autoscale
	leader

	cancel context.CancelFunc // nil until start
	wg     sync.WaitGroup
}

func (s *Server) newKubeSet(pc *config.Pool, pool *upstream.Pool) (*kubeSet, error) {
	kube.RouteLogs(s.logger)
	client, err := kube.NewClient(pc.Kubernetes.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("pool %s: %w", pc.Name, err)
	}
	opts := kube.Options{Logger: s.logger, Clock: s.opts.Clock}
	ks := &kubeSet{s: s, name: pc.Name, pool: pool, cfg: *pc.Kubernetes}
	ks.autoscale = pc.Autoscale
	if ks.disc, err = kube.NewDiscovery(client, pc.Name, pc.Kubernetes, pool, opts); err != nil {
		return nil, fmt.Errorf("pool %s: %w", pc.Name, err)
	}
	if pc.Autoscale == nil {
		return ks, nil
	}
	if ks.work, err = kube.NewWorkload(client, pc.Kubernetes.Namespace, pc.Kubernetes.ScaleTarget, opts); err != nil {
		return nil, fmt.Errorf("pool %s: %w", pc.Name, err)
	}
	if ks.el, err = kube.NewElector(client, pc.Kubernetes.Namespace, kube.LeaseName(pc.Name), s.id, kube.ElectorOptions{Logger: s.logger}); err != nil {
		return nil, fmt.Errorf("pool %s: %w", pc.Name, err)
	}
	return ks, nil
}

// accepts keeps the discovery while the kubernetes block is the same and
// autoscale neither appears nor goes (which adds or drops the election).
func (ks *kubeSet) accepts(pc *config.Pool) bool {
	return pc.Kubernetes != nil && reflect.DeepEqual(ks.cfg, *pc.Kubernetes) && (ks.work != nil) == (pc.Autoscale != nil)
}

func (ks *kubeSet) check(*config.Pool) error { return nil }

func (ks *kubeSet) reconfigure(pc *config.Pool) { ks.configure(pc.Autoscale) }

// start runs discovery, the workload watch and the election until stop.
func (ks *kubeSet) start() {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	ks.cancel = cancel
	ks.wg.Go(func() { _ = ks.disc.Run(ctx) })
	if ks.work == nil {
		return
	}
	ks.wg.Go(func() { _ = ks.work.Run(ctx) })
	ks.wg.Go(func() { _ = ks.el.Run(ctx, ks.lead) })
}

// lead runs the autoscaler for one term of leadership.
func (ks *kubeSet) lead(ctx context.Context) {
	if ks.work.WaitSynced(ctx) != nil {
		return // never decide from an unknown replica count
	}
	ks.term(ctx, ks.s, ks.name, ks.work, ks.s.controllerOptions(ks.name, ks.pool, ks.disc.StartupTime))
}

// stop ends discovery, scaling and the election, and waits for them.
func (ks *kubeSet) stop() {
	ks.mu.Lock()
	cancel := ks.cancel
	ks.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	ks.wg.Wait()
}

// KubeStatus is a kubernetes pool in GET /api/pools.
type KubeStatus struct {
	Discovery kube.DiscoveryStatus `json:"discovery"`
	Workload  *kube.WorkloadStatus `json:"workload,omitempty"`
	Leader    string               `json:"leader,omitempty"`
	Leading   bool                 `json:"leading"`
}

func (ks *kubeSet) describe(ps *PoolStatus) {
	st := KubeStatus{Discovery: ks.disc.Status()}
	if ks.work != nil {
		w := ks.work.Status()
		st.Workload = &w
		st.Leader, st.Leading = ks.el.Leader(), ks.el.Leading()
		ps.Replicas.Desired = ks.work.Desired()
	}
	ps.Kubernetes = &st
	ps.Autoscaler = ks.last()
}

// serveKEDA serves KEDA's external-scaler interface on keda.listen until ctx
// ends.
func (s *Server) serveKEDA(ctx context.Context, ln net.Listener) error {
	es, err := kube.NewExternalScaler(kube.ExternalScalerOptions{
		Demand: func(pool string) (float64, bool) {
			p := s.Pool(pool)
			if p == nil {
				return 0, false
			}
			var as *config.Autoscale
			if pc := s.Config().PoolByName(pool); pc != nil {
				as = pc.Autoscale
			}
			return autoscale.Demand(as, s.poolDemand(pool, p)), true
		},
		TargetConcurrency: func(pool string) float64 {
			if pc := s.Config().PoolByName(pool); pc != nil && pc.Autoscale != nil {
				return pc.Autoscale.TargetConcurrency
			}
			return 0
		},
		Logger: s.logger,
	})
	if err != nil {
		return err
	}
	return es.Serve(ctx, ln)
}
