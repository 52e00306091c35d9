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
// controller. Both run on contexts of their own so a pool that leaves the
// config can be stopped alone.
type replicaSet struct {
	s    *Server
	name string
	pool *upstream.Pool
	set  *replicas.ProcessSet

	mu          sync.Mutex
	ctl         *autoscale.Controller // nil without autoscale
	cancelCtl   context.CancelFunc    // stops the controller only
	cancel      context.CancelFunc    // stops the supervisor (after Close drained it); nil until start
	stopTimeout time.Duration         // the pool's process.stop_timeout
	wg          sync.WaitGroup
}

func (s *Server) newReplicaSet(pc *config.Pool, pool *upstream.Pool) (*replicaSet, error) {
	set, err := s.processSet(pc, pool)
	if err != nil {
		return nil, err
	}
	rs := &replicaSet{s: s, name: pc.Name, pool: pool, set: set, stopTimeout: pc.Process.StopTimeout.D()}
	if pc.Autoscale != nil {
		if rs.ctl, err = rs.newController(*pc.Autoscale); err != nil {
			return nil, err
		}
	}
	return rs, nil
}

// newController builds the set's autoscaler; the set is its actuator.
func (rs *replicaSet) newController(as config.Autoscale) (*autoscale.Controller, error) {
	return autoscale.NewController(rs.name, as, rs.set, rs.s.controllerOptions(rs.name, rs.pool, rs.set.StartupTime))
}

// processSet builds pc's supervisor; building one starts nothing.
func (s *Server) processSet(pc *config.Pool, pool *upstream.Pool) (*replicas.ProcessSet, error) {
	set, err := replicas.NewProcessSet(pc.Name, pc.Process, pool, replicas.Options{Logger: s.logger, Executable: s.exe, Metrics: s.replicaMetrics})
	if err != nil {
		return nil, fmt.Errorf("pool %s: %w", pc.Name, err)
	}
	return set, nil
}

func (rs *replicaSet) accepts(pc *config.Pool) bool { return pc.Process != nil }

// check parses the new process block with a throwaway set, so that
// reconfigure, which parses it again, cannot fail on it.
func (rs *replicaSet) check(pc *config.Pool) error {
	_, err := rs.s.processSet(pc, rs.pool)
	return err
}

// reconfigure applies a reloaded process block and autoscale block (or its
// removal); the controller is kept across reloads while the pool has one.
func (rs *replicaSet) reconfigure(pc *config.Pool) {
	if err := rs.set.Reconfigure(pc.Process); err != nil {
		// check parsed the same block; only the environment (the
		// executable) could have changed in between.
		rs.s.logger.Error("replicas keep their previous command", "pool", rs.name, "err", err)
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.stopTimeout = pc.Process.StopTimeout.D()
	switch {
	case pc.Autoscale != nil && rs.ctl != nil:
		rs.ctl.Reconfigure(*pc.Autoscale)
	case pc.Autoscale != nil:
		ctl, err := rs.newController(*pc.Autoscale)
		if err != nil {
			rs.s.logger.Error("autoscaler not started", "pool", rs.name, "err", err)
			return
		}
		rs.ctl = ctl
		if rs.cancel != nil {
			rs.startControllerLocked()
		}
	default:
		if rs.ctl != nil {
			rs.cancelCtl()
			rs.ctl, rs.cancelCtl = nil, nil
			rs.s.autoscaleMetrics.Forget(rs.name)
		}
		_ = rs.set.Scale(context.Background(), pc.Process.Replicas)
	}
}

// start runs the supervisor and the controller until stop.
func (rs *replicaSet) start() {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	rs.cancel = cancel
	rs.wg.Go(func() {
		if err := rs.set.Run(ctx); err != nil {
			rs.s.logger.Error("replica supervisor stopped", "pool", rs.name, "err", err)
		}
	})
	if rs.ctl != nil {
		rs.startControllerLocked()
	}
}

func (rs *replicaSet) startControllerLocked() {
	ctx, cancel := context.WithCancel(context.Background()) // stopped by rs.cancelCtl
	rs.cancelCtl = cancel
	ctl := rs.ctl
	rs.wg.Go(func() { _ = ctl.Run(ctx) })
}

// stop stops the controller, drains and stops the replicas (bounded by
// stop_timeout plus the kill grace), and waits for the goroutines.
func (rs *replicaSet) stop() {
	rs.mu.Lock()
	if rs.cancelCtl != nil {
		rs.cancelCtl()
	}
	cancel, timeout := rs.cancel, rs.stopTimeout
	rs.mu.Unlock()
	ctx, done := context.WithTimeout(context.Background(), timeout+15*time.Second)
	defer done()
	if err := rs.set.Close(ctx); err != nil {
		rs.s.logger.Warn("replicas did not stop in time; killed", "pool", rs.name, "err", err)
	}
	if cancel != nil {
		cancel()
	}
	rs.wg.Wait()
}

func (rs *replicaSet) describe(ps *PoolStatus) {
	st := rs.set.Status()
	ps.Process = &st
	ps.Replicas.Desired = st.Desired
	rs.mu.Lock()
	ctl := rs.ctl
	rs.mu.Unlock()
	if ctl != nil {
		if d, ok := ctl.Last(); ok {
			ps.Autoscaler = &d
		}
	}
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
