package gateway

import (
	"context"
	"fmt"
	"net"
	"os"
	"reflect"
	"sync"

	"github.com/google/uuid"

	"github.com/sluice-ai/sluice/internal/autoscale"
	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/kube"
	"github.com/sluice-ai/sluice/internal/upstream"
)

// kubeSet is a kubernetes pool's discovery and, with autoscale, its scale
// actuator and leader election: only the gateway replica holding the pool's
// Lease runs the autoscaler, so replicas never fight over the count.
type kubeSet struct {
	cfg  config.Kubernetes
	disc *kube.Discovery
	work *kube.Workload // nil without autoscale
	el   *kube.Elector  // nil without autoscale

	mu        sync.Mutex
	autoscale *config.Autoscale     // current autoscale block
	ctl       *autoscale.Controller // the controller of the current term, while leading

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// kubePlan is the prepared change of the kubernetes pools.
type kubePlan struct {
	created map[string]*kubeSet // new or replacing discovery, not started
}

func (kp *kubePlan) discard() {
	if kp == nil {
		return
	}
	for _, ks := range kp.created {
		ks.stop()
	}
}

// prepareKubeLocked builds discovery (and scaling) for new kubernetes pools
// and for those whose kubernetes block changed; the running ones keep
// running until the commit.
func (s *Server) prepareKubeLocked(cfg *config.Config, pools map[string]*upstream.Pool) (*kubePlan, error) {
	plan := &kubePlan{created: make(map[string]*kubeSet)}
	for i := range cfg.Pools {
		pc := &cfg.Pools[i]
		if pc.Kubernetes == nil {
			continue
		}
		if ks, ok := s.kubes[pc.Name]; ok && reflect.DeepEqual(ks.cfg, *pc.Kubernetes) && (ks.work != nil) == (pc.Autoscale != nil) {
			continue
		}
		ks, err := s.newKubeSet(pc, pools[pc.Name])
		if err != nil {
			plan.discard()
			return nil, fmt.Errorf("pool %s: %w", pc.Name, err)
		}
		plan.created[pc.Name] = ks
	}
	return plan, nil
}

// commitKubeLocked applies autoscale changes in place, swaps in the new
// discovery (stopping what it replaces) and stops that of pools that left.
func (s *Server) commitKubeLocked(cfg *config.Config, plan *kubePlan) (created []string) {
	for i := range cfg.Pools {
		pc := &cfg.Pools[i]
		if pc.Kubernetes == nil {
			continue
		}
		if _, replaced := plan.created[pc.Name]; replaced {
			continue
		}
		if ks, ok := s.kubes[pc.Name]; ok {
			ks.mu.Lock()
			ks.autoscale = pc.Autoscale
			if ks.ctl != nil && pc.Autoscale != nil {
				ks.ctl.Reconfigure(*pc.Autoscale)
			}
			ks.mu.Unlock()
		}
	}
	for name, ks := range plan.created {
		if old, ok := s.kubes[name]; ok {
			s.removed.Go(old.stop)
		}
		s.kubes[name] = ks
		created = append(created, name)
	}
	for name, ks := range s.kubes {
		if pc := cfg.PoolByName(name); pc == nil || pc.Kubernetes == nil {
			delete(s.kubes, name)
			s.removed.Go(ks.stop)
		}
	}
	return created
}

func (s *Server) newKubeSet(pc *config.Pool, pool *upstream.Pool) (*kubeSet, error) {
	kube.RouteLogs(s.logger)
	client, err := kube.NewClient(pc.Kubernetes.Kubeconfig)
	if err != nil {
		return nil, err
	}
	opts := kube.Options{Logger: s.logger, Clock: s.opts.Clock}
	ks := &kubeSet{cfg: *pc.Kubernetes, autoscale: pc.Autoscale}
	if ks.disc, err = kube.NewDiscovery(client, pc.Name, pc.Kubernetes, pool, opts); err != nil {
		return nil, err
	}
	if pc.Autoscale == nil {
		return ks, nil
	}
	if ks.work, err = kube.NewWorkload(client, pc.Kubernetes.Namespace, pc.Kubernetes.ScaleTarget, opts); err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	identity := host + "_" + uuid.NewString()[:8]
	if ks.el, err = kube.NewElector(client, pc.Kubernetes.Namespace, kube.LeaseName(pc.Name), identity, kube.ElectorOptions{Logger: s.logger}); err != nil {
		return nil, err
	}
	return ks, nil
}

// startKubeLocked runs a kubernetes pool's discovery, workload watch and
// election until ks.stop.
func (s *Server) startKubeLocked(name string) {
	ks := s.kubes[name]
	if ks == nil || ks.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	ks.cancel = cancel
	pool := s.pools[name]
	ks.wg.Go(func() { _ = ks.disc.Run(ctx) })
	if ks.work == nil {
		return
	}
	ks.wg.Go(func() { _ = ks.work.Run(ctx) })
	ks.wg.Go(func() {
		_ = ks.el.Run(ctx, func(ctx context.Context) {
			if ks.work.WaitSynced(ctx) != nil {
				return // never decide from an unknown replica count
			}
			ks.mu.Lock()
			as := ks.autoscale
			ks.mu.Unlock()
			if as == nil {
				return
			}
			ctl, err := autoscale.NewController(name, *as, ks.work, autoscale.ControllerOptions{
				Inputs:      func() autoscale.Inputs { return s.demandInputs(name, pool) },
				Targets:     func() []string { return readyTargets(pool) },
				Ready:       pool.Ready,
				StartupTime: ks.disc.StartupTime,
				Logger:      s.logger, // the controller names its pool on every line
				Clock:       s.opts.Clock,
				Metrics:     s.autoscaleMetrics,
			})
			if err != nil {
				s.logger.Error("autoscaler not started", "pool", name, "err", err)
				return
			}
			ks.mu.Lock()
			ks.ctl = ctl
			ks.mu.Unlock()
			_ = ctl.Run(ctx)
			ks.mu.Lock()
			ks.ctl = nil
			ks.mu.Unlock()
		})
	})
}

// stop ends discovery, scaling and the election, and waits for them.
func (ks *kubeSet) stop() {
	if ks.cancel != nil {
		ks.cancel()
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

func (ks *kubeSet) status() (KubeStatus, *autoscale.Decision, int) {
	st := KubeStatus{Discovery: ks.disc.Status()}
	desired := -1
	if ks.work != nil {
		w := ks.work.Status()
		st.Workload = &w
		st.Leader, st.Leading = ks.el.Leader(), ks.el.Leading()
		desired = ks.work.Desired()
	}
	ks.mu.Lock()
	ctl := ks.ctl
	ks.mu.Unlock()
	if ctl != nil {
		if d, ok := ctl.Last(); ok {
			return st, &d, desired
		}
	}
	return st, nil, desired
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
			return autoscale.Demand(as, s.demandInputs(pool, p)), true
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
