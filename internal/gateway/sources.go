package gateway

import (
	"context"
	"time"

	"github.com/sluice-ai/sluice/internal/autoscale"
	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/upstream"
)

// replicaSource places a pool's replicas: local processes (replicaSet) or
// a Kubernetes workload (kubeSet), or a platform driven through
// autoscale.actuator (actuatorSet). Static backends need none: the pool's own
// Prepare and Commit apply them. A source reaches its pool only through
// upstream.Membership, and owns every goroutine it starts.
//
// A reload keeps a source whose kind and identity the new config keeps
// (accepts), checks the new block without touching it (check), and applies
// it at commit (reconfigure), which cannot fail. Otherwise it builds a new
// source and stops the old one once the new one is in place.
type replicaSource interface {
	// accepts reports whether pc's block can be applied in place.
	accepts(pc *config.Pool) bool
	// check validates pc's block for reconfigure; it changes nothing.
	check(pc *config.Pool) error
	// reconfigure applies pc's block; check accepted it.
	reconfigure(pc *config.Pool)
	// start runs the source until stop.
	start()
	// stop ends the source's goroutines and waits for them; replicas it
	// started are drained and stopped. It is safe on a source never
	// started, and it is called once.
	stop()
	// describe fills in the source's part of the pool's status.
	describe(ps *PoolStatus)
}

// sourcePlan is the prepared change of the replica sources.
type sourcePlan struct {
	created map[string]replicaSource // new or replacing sources, not started
}

// discard stops what a failed reload built.
func (sp *sourcePlan) discard() {
	if sp == nil {
		return
	}
	for _, src := range sp.created {
		src.stop()
	}
}

// newSource builds the source pc asks for, nil for a pool of static
// backends. Building one starts nothing.
func (s *Server) newSource(pc *config.Pool, pool *upstream.Pool) (replicaSource, error) {
	switch {
	case pc.Process != nil:
		return s.newReplicaSet(pc, pool)
	case pc.Kubernetes != nil:
		return s.newKubeSet(pc, pool)
	case isActuatorPool(pc):
		return s.newActuatorSet(pc, pool)
	}
	return nil, nil
}

// prepareSourcesLocked checks the blocks of the sources that stay and
// builds the new ones; live state is not touched.
func (s *Server) prepareSourcesLocked(cfg *config.Config, pools map[string]*upstream.Pool) (*sourcePlan, error) {
	plan := &sourcePlan{created: make(map[string]replicaSource)}
	for i := range cfg.Pools {
		pc := &cfg.Pools[i]
		if old, ok := s.sources[pc.Name]; ok && old.accepts(pc) {
			if err := old.check(pc); err != nil {
				plan.discard()
				return nil, err
			}
			continue
		}
		src, err := s.newSource(pc, pools[pc.Name])
		if err != nil {
			plan.discard()
			return nil, err
		}
		if src != nil {
			plan.created[pc.Name] = src
		}
	}
	return plan, nil
}

// commitSourcesLocked reconfigures the sources that stay, swaps in the new
// ones and stops those replaced or of pools that left (in the background:
// a draining replica must not hold the reload). It returns the new sources'
// pools, started by the caller when the server runs.
func (s *Server) commitSourcesLocked(cfg *config.Config, plan *sourcePlan) (created []string) {
	for i := range cfg.Pools {
		pc := &cfg.Pools[i]
		if _, replaced := plan.created[pc.Name]; replaced {
			continue
		}
		if src, ok := s.sources[pc.Name]; ok {
			src.reconfigure(pc)
		}
	}
	for name, src := range plan.created {
		if old, ok := s.sources[name]; ok {
			s.removed.Go(old.stop)
		}
		s.sources[name] = src
		created = append(created, name)
	}
	for name, src := range s.sources {
		if _, kept := plan.created[name]; kept {
			continue
		}
		if pc := cfg.PoolByName(name); pc == nil || !src.accepts(pc) {
			delete(s.sources, name)
			s.autoscaleMetrics.Forget(name)
			s.removed.Go(src.stop)
		}
	}
	return created
}

// controllerOptions are a pool's autoscaler inputs, whatever its source.
func (s *Server) controllerOptions(name string, pool *upstream.Pool, startup func() time.Duration) autoscale.ControllerOptions {
	return autoscale.ControllerOptions{
		Inputs:      func() autoscale.Inputs { return s.poolDemand(name, pool) },
		Targets:     func() []string { return readyTargets(pool) },
		Ready:       pool.Ready,
		StartupTime: startup,
		Logger:      s.logger, // the controller names its pool on every line
		Clock:       s.opts.Clock,
		Metrics:     s.autoscaleMetrics,
	}
}

// sharesDemand reports whether the gateways in front of pc's replicas share
// them (a Kubernetes workload, a platform behind an actuator), so that the
// one scaling them must see every gateway's demand. Process replicas are
// each gateway's own.
func sharesDemand(pc *config.Pool) bool {
	return pc != nil && pc.Autoscale != nil && (pc.Kubernetes != nil || isActuatorPool(pc))
}

// poolDemand is the demand a pool's autoscaler sizes it for: this gateway's
// own, plus, with redis.url and shared replicas, what the other gateways
// published. If Redis cannot be read the gateway's own share is used.
func (s *Server) poolDemand(name string, pool *upstream.Pool) autoscale.Inputs {
	local := s.demandInputs(name, pool)
	if s.shared == nil || !sharesDemand(s.Config().PoolByName(name)) {
		return local
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	sum, _, err := s.shared.Sum(ctx, name, local)
	if err != nil {
		s.logger.Debug("shared demand unread; using this gateway's own", "pool", name, "err", err)
	}
	return sum
}

// publishedDemand is this gateway's demand of each pool whose replicas
// other gateways share, published to Redis every tick.
func (s *Server) publishedDemand() map[string]autoscale.Inputs {
	out := make(map[string]autoscale.Inputs)
	cfg := s.Config()
	for i := range cfg.Pools {
		pc := &cfg.Pools[i]
		if p := s.Pool(pc.Name); p != nil && sharesDemand(pc) {
			out[pc.Name] = s.demandInputs(pc.Name, p)
		}
	}
	return out
}
