package gateway

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/sluice-ai/sluice/internal/autoscale"
	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/replicas"
	"github.com/sluice-ai/sluice/internal/upstream"
)

// replicaSet is a process pool's supervisor and, with autoscale, its
// controller. Both run on a context of their own so a pool that leaves the
// config can be stopped alone.
type replicaSet struct {
	set *replicas.ProcessSet
	ctl *autoscale.Controller // nil without autoscale

	cancelCtl context.CancelFunc // stops the controller only
	cancel    context.CancelFunc // stops the supervisor (after Close drained it)
	wg        sync.WaitGroup
}

// setPlan is the prepared change of the process pools' supervisors.
type setPlan struct {
	created map[string]*replicaSet // new supervisors, not started
}

// prepareReplicasLocked builds supervisors for new process pools and checks
// that the ones that stay accept their new process block (a throwaway set
// parses it: building one starts nothing), so the commit cannot fail.
func (s *Server) prepareReplicasLocked(cfg *config.Config, pools map[string]*upstream.Pool) (*setPlan, error) {
	plan := &setPlan{created: make(map[string]*replicaSet)}
	for i := range cfg.Pools {
		pc := &cfg.Pools[i]
		if pc.Process == nil {
			continue
		}
		pool := pools[pc.Name]
		set, err := replicas.NewProcessSet(pc.Name, pc.Process, pool, replicas.Options{Logger: s.logger, Executable: s.exe, Metrics: s.replicaMetrics})
		if err != nil {
			return nil, fmt.Errorf("pool %s: %w", pc.Name, err)
		}
		if _, ok := s.sets[pc.Name]; ok {
			continue
		}
		rs := &replicaSet{set: set}
		if pc.Autoscale != nil {
			if rs.ctl, err = s.newController(pc, pool, set); err != nil {
				return nil, err
			}
		}
		plan.created[pc.Name] = rs
	}
	return plan, nil
}

// commitReplicasLocked reconfigures the supervisors that stay, adds the new
// ones and stops those of pools that left; it returns the new ones' names
// (started by the caller when the server runs).
func (s *Server) commitReplicasLocked(cfg *config.Config, plan *setPlan) (created []string) {
	for i := range cfg.Pools {
		pc := &cfg.Pools[i]
		if pc.Process == nil {
			continue
		}
		if rs, ok := s.sets[pc.Name]; ok {
			if err := rs.set.Reconfigure(pc.Process); err != nil {
				// Prepare parsed the same block; only the environment
				// (the executable) could have changed in between.
				s.logger.Error("replicas keep their previous command", "pool", pc.Name, "err", err)
			}
			s.reconfigureAutoscaleLocked(rs, pc, s.pools[pc.Name])
		}
	}
	for name, rs := range plan.created {
		s.sets[name] = rs
		created = append(created, name)
	}
	for name, rs := range s.sets {
		if pc := cfg.PoolByName(name); pc == nil || pc.Process == nil {
			delete(s.sets, name)
			s.autoscaleMetrics.Forget(name)
			timeout := cfg.Limits.DrainTimeout.D()
			s.removed.Go(func() { s.stopSet(name, rs, timeout) })
		}
	}
	return created
}

func (s *Server) newController(pc *config.Pool, pool *upstream.Pool, set *replicas.ProcessSet) (*autoscale.Controller, error) {
	name := pc.Name
	return autoscale.NewController(name, *pc.Autoscale, set, autoscale.ControllerOptions{
		Inputs:      func() autoscale.Inputs { return s.demandInputs(name, pool) },
		Targets:     func() []string { return readyTargets(pool) },
		Ready:       pool.Ready,
		StartupTime: set.StartupTime,
		Logger:      s.logger, // the controller names its pool on every line
		Clock:       s.opts.Clock,
		Metrics:     s.autoscaleMetrics,
	})
}

// reconfigureAutoscaleLocked applies a reloaded autoscale block (or its
// removal) to a running set.
func (s *Server) reconfigureAutoscaleLocked(rs *replicaSet, pc *config.Pool, pool *upstream.Pool) {
	switch {
	case pc.Autoscale != nil && rs.ctl != nil:
		rs.ctl.Reconfigure(*pc.Autoscale)
	case pc.Autoscale != nil:
		ctl, err := s.newController(pc, pool, rs.set)
		if err != nil {
			s.logger.Error("autoscaler not started", "pool", pc.Name, "err", err)
			return
		}
		rs.ctl = ctl
		if s.running {
			s.startController(rs)
		}
	default:
		if rs.ctl != nil {
			rs.cancelCtl()
			rs.ctl = nil
			s.autoscaleMetrics.Forget(pc.Name)
		}
		_ = rs.set.Scale(context.Background(), pc.Process.Replicas)
	}
}

// startSetLocked runs a set's supervisor and controller until stopSet.
func (s *Server) startSetLocked(name string) {
	rs := s.sets[name]
	if rs == nil || rs.cancel != nil {
		return
	}
	setCtx, cancel := context.WithCancel(context.Background())
	rs.cancel = cancel
	rs.wg.Go(func() {
		if err := rs.set.Run(setCtx); err != nil {
			s.logger.Error("replica supervisor stopped", "pool", name, "err", err)
		}
	})
	if rs.ctl != nil {
		s.startController(rs)
	}
}

func (s *Server) startController(rs *replicaSet) {
	ctx, cancel := context.WithCancel(context.Background()) // stopped by rs.cancelCtl
	rs.cancelCtl = cancel
	ctl := rs.ctl
	rs.wg.Go(func() { _ = ctl.Run(ctx) })
}

// stopSet stops a set's controller, drains and stops its replicas (bounded
// by stop_timeout plus the kill grace), and waits for its goroutines.
func (s *Server) stopSet(name string, rs *replicaSet, stopTimeout time.Duration) {
	if rs.cancelCtl != nil {
		rs.cancelCtl()
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout+15*time.Second)
	defer cancel()
	if err := rs.set.Close(ctx); err != nil {
		s.logger.Warn("replicas did not stop in time; killed", "pool", name, "err", err)
	}
	if rs.cancel != nil {
		rs.cancel()
	}
	rs.wg.Wait()
}

// pendingJobs is the number of queued jobs for pool, which count as demand.
func (s *Server) pendingJobs(pool string) int64 {
	if s.jobsPending == nil {
		return 0
	}
	return int64(s.jobsPending(pool))
}

// demandInputs is what the gateway knows of a pool's load, for its
// autoscaler: requests in flight and waiting, and queued jobs.
func (s *Server) demandInputs(name string, pool *upstream.Pool) autoscale.Inputs {
	return autoscale.Inputs{Active: pool.InFlight(), PendingJobs: s.pendingJobs(name)}
}

// readyTargets are the base URLs of a pool's ready replicas, whose
// /metrics the autoscaler reads when its LLM signals are on.
func readyTargets(pool *upstream.Pool) []string {
	var out []string
	for _, b := range pool.Backends() {
		if b.State() == upstream.StateHealthy {
			out = append(out, b.Target().String())
		}
	}
	return out
}
