package replicas

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"time"

	"github.com/sluice-ai/sluice/internal/upstream"
)

// phase is where a replica is in its life.
type phase int

const (
	phaseStarting phase = iota // process started, ready path not yet 200
	phaseReady                 // in its pool, taking requests
	phaseDraining              // no new requests; in-flight ones finishing
	phaseStopping              // signalled, waiting for the process to exit
	phaseBackoff               // exited; waiting to be restarted
)

var phaseNames = [...]string{"starting", "ready", "draining", "stopping", "backoff"}

func (p phase) String() string { return phaseNames[p] }

// Why a start attempt did not produce a ready replica, or a ready one was
// killed.
var (
	errExited       = errors.New("exited before it was ready")
	errStartTimeout = errors.New("not ready within start_timeout")
	errUnhealthy    = errors.New("ready path failing for unhealthy_timeout; killed")
)

// replica is one slot of a process set: it keeps a process running under
// one id, restarting it when it fails, until it is asked to stop.
type replica struct {
	set    *ProcessSet
	idx    int
	id     string
	cancel context.CancelFunc // asks the replica to stop

	// Guarded by set.mu.
	spec      *spec
	stopping  bool
	phase     phase
	since     time.Time
	port      int
	pid       int
	backend   *upstream.Backend
	restarts  int
	lastExit  string
	failures  int       // in a row, reset by serving for backoffReset
	nextStart time.Time // while in backoff
}

// newReplicaLocked returns replica idx and the function that runs it.
func (s *ProcessSet) newReplicaLocked(ctx context.Context, idx int) (*replica, func()) {
	// A replica's life is bounded by its own stop request, not by Run's
	// context: when Run's context ends, replicas still drain.
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r := &replica{set: s, idx: idx, id: s.name + "-" + strconv.Itoa(idx), cancel: cancel, spec: s.spec, phase: phaseStarting, since: s.opts.Clock.Now()}
	return r, func() { r.loop(rctx) }
}

// stopLocked asks the replica to stop (drain, then signal).
func (r *replica) stopLocked() {
	if !r.stopping {
		r.stopping = true
		r.cancel()
	}
}

func (r *replica) setPhase(p phase) {
	r.set.mu.Lock()
	defer r.set.mu.Unlock()
	r.phase = p
	r.since = r.set.opts.Clock.Now()
}

// loop runs processes for the replica until it is asked to stop, then
// leaves the set.
func (r *replica) loop(ctx context.Context) {
	s := r.set
	defer func() {
		s.mu.Lock()
		delete(s.replicas, r.idx)
		s.mu.Unlock()
		r.cancel()
		s.nudge()
	}()
	failures, portRetry := 0, 0
	for {
		res := r.life(ctx)
		if ctx.Err() != nil {
			return
		}
		s.mu.Lock()
		outdated := r.spec.gen != s.spec.gen
		s.mu.Unlock()
		if outdated {
			// A reload changed the command: leave, and let a replica of the
			// new one take this place.
			s.log.Info("replica of a replaced command exited; not restarting it", "replica", r.id, "pid", res.pid, "exit", res.exit)
			return
		}
		if res.readyFor >= backoffReset {
			failures = 0
		}
		if res.portTaken && portRetry < portRetries {
			portRetry++
			s.log.Info("replica port was taken before it could bind; retrying on another port", "replica", r.id, "port", res.port)
			continue
		}
		portRetry = 0
		failures++
		delay := backoff(s.opts.RestartBackoff, s.opts.MaxRestartBackoff, failures)
		now := s.opts.Clock.Now()
		s.mu.Lock()
		r.restarts++
		s.restarts++
		r.failures = failures
		r.phase, r.since, r.lastExit, r.pid, r.port, r.backend = phaseBackoff, now, res.exit, 0, 0, nil
		r.nextStart = now.Add(delay)
		s.mu.Unlock()
		s.opts.Metrics.restarted(s.name, res.reason)
		if failures >= crashLoopAfter {
			s.log.Error("replica crash-looping; restarting after backoff", "replica", r.id, "pid", res.pid, "exit", res.exit, "reason", res.reason, "restart_in", delay.Round(time.Millisecond), "consecutive_failures", failures)
		} else {
			s.log.Warn("replica failed; restarting", "replica", r.id, "pid", res.pid, "exit", res.exit, "reason", res.reason, "restart_in", delay.Round(time.Millisecond), "consecutive_failures", failures)
		}
		t := s.opts.Clock.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.Chan():
		}
	}
}

// backoff is the delay before restart n (1-based): base × 2^(n-1), at most
// limit, with ±10% jitter so replicas that failed together do not restart
// in lockstep.
func backoff(base, limit time.Duration, n int) time.Duration {
	d := base << min(n-1, 20)
	if d > limit || d <= 0 {
		d = limit
	}
	return time.Duration(float64(d) * (0.9 + 0.2*rand.Float64()))
}

// lifeResult is how one process of a replica ended.
type lifeResult struct {
	pid       int
	port      int
	reason    string        // crash, start_timeout or unhealthy
	exit      string        // exit status and last output, for status and logs
	readyFor  time.Duration // how long it served; 0 if never ready
	portTaken bool          // it exited before ready because its port was in use
}

// life starts one process and supervises it until it exits or the replica
// is asked to stop (ctx ends), in which case it is drained and stopped.
// Every goroutine it starts has ended when it returns.
func (r *replica) life(ctx context.Context) (res lifeResult) {
	s := r.set
	res.reason = reasonCrash
	port, err := s.allocPort()
	if err != nil {
		res.exit = err.Error()
		return res
	}
	defer s.releasePort(port)
	res.port = port
	s.mu.Lock()
	sp := r.spec
	s.mu.Unlock()

	proc, err := s.spawn(sp, port, r.id, r.idx-1)
	if err != nil {
		res.exit = err.Error()
		return res
	}
	started := s.opts.Clock.Now()
	res.pid = proc.cmd.Process.Pid
	var failure error // why sluice ended the process, if it did so for a fault
	defer func() {
		proc.reap()
		if failure == nil {
			failure = proc.waitErr
		}
		res.exit = describeExit(failure, &proc.out)
	}()
	exited := proc.exited

	url := backendURL(port)
	b, err := s.pool.NewBackend(url, 1, upstream.StateStarting)
	if err != nil { // cannot happen for a URL of this shape
		failure = fmt.Errorf("backend %s: %w", url, err)
		return res
	}
	s.mu.Lock()
	r.phase, r.since, r.port, r.pid, r.backend = phaseStarting, started, port, res.pid, b
	s.mu.Unlock()
	s.pool.AddBackend(b)
	defer s.pool.RemoveBackend(url)
	s.log.Info("replica started", "replica", r.id, "pid", res.pid, "port", port)

	switch err := r.waitReady(ctx, sp, url, exited); {
	case err == nil:
	case errors.Is(err, errExited):
		res.portTaken = proc.out.contains("address already in use")
		return res
	case errors.Is(err, errStartTimeout):
		s.log.Warn("replica not ready within start_timeout; killing it", "replica", r.id, "pid", res.pid, "start_timeout", sp.cfg.StartTimeout.D())
		failure = fmt.Errorf("%w (%s)", errStartTimeout, sp.cfg.StartTimeout.D())
		res.reason = reasonStartTimeout
		return res
	default: // asked to stop while starting: it serves nothing, so no drain
		r.stop(proc.cmd.Process, exited)
		return res
	}

	readyAt := s.opts.Clock.Now()
	s.recordStartup(readyAt.Sub(started))
	s.pool.SetBackendState(b, upstream.StateHealthy)
	r.setPhase(phaseReady)
	s.nudge() // a roll may now retire an old replica
	s.log.Info("replica ready", "replica", r.id, "pid", res.pid, "url", url, "startup", readyAt.Sub(started).Round(time.Millisecond))

	switch healthyUntil, err := r.watch(ctx, sp, b, exited); {
	case errors.Is(err, errUnhealthy):
		res.readyFor = healthyUntil.Sub(readyAt)
		res.reason = reasonUnhealthy
		failure = fmt.Errorf("%w (%s)", errUnhealthy, sp.cfg.UnhealthyTimeout.D())
		s.pool.SetBackendState(b, upstream.StateUnhealthy)
		s.log.Warn("replica hung: ready path failing for unhealthy_timeout; killing it", "replica", r.id, "pid", res.pid, "unhealthy_timeout", sp.cfg.UnhealthyTimeout.D())
		// SIGKILL: a stopped or hung process cannot act on SIGTERM.
		_ = kill(proc.cmd.Process)
		<-exited
	case errors.Is(err, errExited):
		res.readyFor = s.opts.Clock.Since(readyAt)
		s.pool.SetBackendState(b, upstream.StateUnhealthy)
	default: // asked to stop
		s.mu.Lock()
		sp = r.spec // a reload may have changed stop_timeout
		s.mu.Unlock()
		r.drain(sp, b, exited)
		r.stop(proc.cmd.Process, exited)
	}
	return res
}

// The reasons a replica is restarted, as the restarts metric labels them.
const (
	reasonCrash        = "crash"
	reasonStartTimeout = "start_timeout"
	reasonUnhealthy    = "unhealthy"
)

// watch probes a ready replica's ready path until the process exits
// (errExited), ctx ends (ctx's error), or the path has failed for
// unhealthy_timeout (errUnhealthy). The second failed probe in a row takes
// the backend out of rotation and a good probe puts it back, unless
// something else (a drain, the pool's own health checks) changed its state
// meanwhile. It returns the time of the last good probe.
func (r *replica) watch(ctx context.Context, sp *spec, b *upstream.Backend, exited <-chan struct{}) (time.Time, error) {
	s := r.set
	clk := s.opts.Clock
	lastOK := clk.Now()
	timeout := sp.cfg.UnhealthyTimeout.D()
	if timeout <= 0 {
		select {
		case <-exited:
			return lastOK, errExited
		case <-ctx.Done():
			return lastOK, ctx.Err()
		}
	}
	poll := min(max(timeout/5, minLivenessPoll), maxLivenessPoll)
	t := clk.NewTicker(poll)
	defer t.Stop()
	failed, tookOut := 0, false
	for {
		select {
		case <-exited:
			return lastOK, errExited
		case <-ctx.Done():
			return lastOK, ctx.Err()
		case <-t.Chan():
		}
		if r.probeWithin(ctx, sp, min(poll, maxProbeTimeout)) {
			lastOK, failed = clk.Now(), 0
			if tookOut && b.State() == upstream.StateUnhealthy {
				s.pool.SetBackendState(b, upstream.StateHealthy)
				s.log.Info("replica answers its ready path again; back in rotation", "replica", r.id)
			}
			tookOut = false
			continue
		}
		if ctx.Err() != nil {
			return lastOK, ctx.Err()
		}
		failed++
		if failed == 2 && b.State() == upstream.StateHealthy {
			s.pool.SetBackendState(b, upstream.StateUnhealthy)
			tookOut = true
			s.log.Warn("replica not answering its ready path; out of rotation", "replica", r.id, "failed_probes", failed)
		}
		if clk.Since(lastOK) >= timeout {
			return lastOK, errUnhealthy
		}
	}
}

// waitReady polls the ready path until it answers 200 (nil), the process
// exits (errExited), start_timeout passes (errStartTimeout) or ctx ends.
func (r *replica) waitReady(ctx context.Context, sp *spec, url string, exited <-chan struct{}) error {
	clk := r.set.opts.Clock
	deadline := clk.NewTimer(sp.cfg.StartTimeout.D())
	defer deadline.Stop()
	delay := firstProbeDelay
	for {
		wait := clk.NewTimer(time.Duration(float64(delay) * (0.8 + 0.4*rand.Float64())))
		select {
		case <-ctx.Done():
			wait.Stop()
			return ctx.Err()
		case <-exited:
			wait.Stop()
			return errExited
		case <-deadline.Chan():
			wait.Stop()
			return errStartTimeout
		case <-wait.Chan():
		}
		if r.probe(ctx, sp, url) {
			return nil
		}
		delay = min(2*delay, maxProbeDelay)
	}
}

// probeWithin reports whether the ready path answers 200 within timeout.
func (r *replica) probeWithin(ctx context.Context, sp *spec, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return r.probeURL(ctx, sp, r.url())
}

func (r *replica) url() string {
	r.set.mu.Lock()
	defer r.set.mu.Unlock()
	return backendURL(r.port)
}

// probe reports whether GET ready_path answers 200.
func (r *replica) probe(ctx context.Context, sp *spec, url string) bool {
	ctx, cancel := context.WithTimeout(ctx, min(maxProbeTimeout, sp.cfg.StartTimeout.D()))
	defer cancel()
	return r.probeURL(ctx, sp, url)
}

func (r *replica) probeURL(ctx context.Context, sp *spec, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+sp.cfg.ReadyPath, nil)
	if err != nil {
		return false
	}
	req.Header.Set("User-Agent", "sluice-replica-ready")
	resp, err := r.set.probe.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// drain takes b out of rotation and waits until it has no request in
// flight, stop_timeout passes, the process exits, or the set hurries.
func (r *replica) drain(sp *spec, b *upstream.Backend, exited <-chan struct{}) {
	s := r.set
	s.pool.SetBackendState(b, upstream.StateDraining)
	r.setPhase(phaseDraining)
	timeout := sp.cfg.StopTimeout.D()
	if timeout <= 0 {
		return
	}
	clk := s.opts.Clock
	start := clk.Now()
	deadline := clk.NewTimer(timeout)
	defer deadline.Stop()
	tick := clk.NewTicker(drainPoll)
	defer tick.Stop()
	s.log.Info("replica draining", "replica", r.id, "in_flight", b.InFlight(), "stop_timeout", timeout)
	for {
		select {
		case <-exited:
			return
		case <-s.hurry:
			return
		case <-deadline.Chan():
			s.log.Warn("replica still busy at stop_timeout; stopping it anyway", "replica", r.id, "in_flight", b.InFlight(), "stop_timeout", timeout)
			return
		case <-tick.Chan():
			if b.InFlight() == 0 && clk.Since(start) >= drainSettle {
				return
			}
		}
	}
}

// stop sends SIGTERM to the replica's process group and SIGKILL if it has
// not exited after the kill grace (at once when the set hurries), and
// returns once the process has exited.
func (r *replica) stop(p *os.Process, exited <-chan struct{}) {
	s := r.set
	r.setPhase(phaseStopping)
	select {
	case <-s.hurry:
		_ = kill(p)
		<-exited
		return
	default:
	}
	if err := terminate(p); err != nil {
		s.log.Warn("replica SIGTERM failed; killing it", "replica", r.id, "pid", p.Pid, "err", err)
		_ = kill(p)
	}
	grace := s.opts.Clock.NewTimer(s.opts.KillGrace)
	defer grace.Stop()
	select {
	case <-exited:
		return
	case <-grace.Chan():
		s.log.Warn("replica did not exit after SIGTERM; sending SIGKILL", "replica", r.id, "pid", p.Pid, "grace", s.opts.KillGrace)
	case <-s.hurry:
	}
	_ = kill(p)
	<-exited
}

// describeExit says how a process ended, with its last output when it
// failed.
func describeExit(err error, out *tail) string {
	var desc string
	var ee *exec.ExitError
	switch {
	case err == nil:
		return "exit status 0"
	case errors.As(err, &ee):
		desc = ee.Error() // "exit status 1", "signal: killed"
	default:
		desc = err.Error()
	}
	if t := out.String(); t != "" {
		desc += ": " + t
	}
	return desc
}
