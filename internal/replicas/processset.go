package replicas

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/upstream"
)

// ErrClosed is returned by Scale and Run once the set was closed.
var ErrClosed = errors.New("replicas: process set closed")

// SluiceCommand is the program name that means sluice's own executable in a
// process command.
const SluiceCommand = "sluice"

// Defaults of Options.
const (
	DefaultKillGrace         = 10 * time.Second
	DefaultRestartBackoff    = time.Second
	DefaultMaxRestartBackoff = 30 * time.Second
)

// Timing of the supervisor. Readiness is polled quickly at first (a
// replica that loads nothing is ready in milliseconds) and then once a
// second; a replica that served for a minute has proved its command works,
// so its next crash restarts it at the first backoff step again.
const (
	firstProbeDelay = 50 * time.Millisecond
	maxProbeDelay   = time.Second
	maxProbeTimeout = 2 * time.Second
	backoffReset    = time.Minute
	drainPoll       = 50 * time.Millisecond
	// drainSettle is how long a draining replica's in-flight count must be
	// watched before zero is believed: the proxy counts a request on its
	// backend just after picking it, so one picked as the state changed
	// shows up within microseconds.
	drainSettle = 100 * time.Millisecond
	// outputLinger bounds the wait for a stopped replica's output pipes to
	// close; a grandchild that left the process group may hold them open.
	outputLinger = 2 * time.Second
	// portRetries is how many immediate retries on a new port a replica
	// gets when its port was taken between sluice choosing it and the
	// replica binding it.
	portRetries = 3
	// startupSamples is how many recent start durations StartupTime keeps.
	startupSamples = 5
	// crashLoopAfter is how many failures in a row, none after a minute of
	// serving, make a replica crash-looping: reported as such, and restarted
	// only at the backoff's pace.
	crashLoopAfter = 3
	// minLivenessPoll and maxLivenessPoll bound how often a ready replica's
	// ready path is probed: a fifth of unhealthy_timeout, within them.
	minLivenessPoll = 100 * time.Millisecond
	maxLivenessPoll = 5 * time.Second
)

// Options are the parts of a process set that come from its owner.
type Options struct {
	// Logger receives replica life-cycle events and replica output (one
	// record per line, with attributes pool, replica and stream). Nil
	// discards.
	Logger *slog.Logger
	// Clock drives readiness polling, timeouts and backoff. Nil is the real
	// clock.
	Clock clockwork.Clock
	// Executable is the program a command's first element "sluice" runs.
	// The gateway passes os.Executable() so `go run` works with no sluice
	// on PATH. Empty: os.Executable() of this process.
	Executable string
	// KillGrace is how long a replica has between SIGTERM and SIGKILL.
	// Default DefaultKillGrace (10s).
	KillGrace time.Duration
	// RestartBackoff is the delay before the first restart of a failed
	// replica; it doubles with each further failure up to MaxRestartBackoff.
	// Defaults DefaultRestartBackoff (1s) and DefaultMaxRestartBackoff (30s).
	RestartBackoff, MaxRestartBackoff time.Duration
	// Metrics receives restarts and crash loops. Nil exports none.
	Metrics *Metrics
}

// ProcessSet supervises the local replicas of one pool. Create it with
// NewProcessSet, run it with Run, size it with Scale, stop it with Close or
// by cancelling Run's context.
type ProcessSet struct {
	name  string
	pool  upstream.Membership
	opts  Options
	log   *slog.Logger
	probe *http.Client

	// wake nudges Run to reconcile; quit asks it to stop; hurry cuts drains
	// and grace periods short (Close's context ended); done closes when Run
	// has returned.
	wake      chan struct{}
	quit      chan struct{}
	quitOnce  sync.Once
	hurry     chan struct{}
	hurryOnce sync.Once
	done      chan struct{}
	started   atomic.Bool

	// Set while Run runs; used by replica goroutines.
	spawner *spawner
	pump    *outputPump
	wg      sync.WaitGroup // replica goroutines

	mu       sync.Mutex // guards the fields below and every replica's status fields
	spec     *spec      // what new replicas run
	desired  int
	closed   bool
	replicas map[int]*replica // by index
	ports    map[int]bool     // ports handed to live replicas
	restarts int
	startups []time.Duration // recent start-to-ready durations
}

// NewProcessSet returns a set that runs cfg's command for pool, aiming for
// cfg.Replicas copies until Scale says otherwise. It resolves the program
// now, so a command that does not exist fails here rather than in a
// restart loop.
func NewProcessSet(name string, cfg *config.Process, pool upstream.Membership, opts Options) (*ProcessSet, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	if opts.KillGrace <= 0 {
		opts.KillGrace = DefaultKillGrace
	}
	if opts.RestartBackoff <= 0 {
		opts.RestartBackoff = DefaultRestartBackoff
	}
	if opts.MaxRestartBackoff <= 0 {
		opts.MaxRestartBackoff = DefaultMaxRestartBackoff
	}
	sp, err := newSpec(cfg, opts.Executable, 1)
	if err != nil {
		return nil, fmt.Errorf("pool %s: %w", name, err)
	}
	return &ProcessSet{
		name: name,
		spec: sp,
		pool: pool,
		opts: opts,
		log:  opts.Logger.With("pool", name),
		probe: &http.Client{
			Transport:     &http.Transport{Proxy: nil, DisableKeepAlives: true},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		wake:     make(chan struct{}, 1),
		quit:     make(chan struct{}),
		hurry:    make(chan struct{}),
		done:     make(chan struct{}),
		desired:  max(cfg.Replicas, 0),
		replicas: make(map[int]*replica),
		ports:    make(map[int]bool),
	}, nil
}

// spec is one generation of what a set's replicas run. It is immutable;
// a reload that changes the command or environment makes a new generation,
// and replicas of an older one are replaced.
type spec struct {
	gen  int
	cfg  config.Process
	path string // the resolved program
}

func newSpec(cfg *config.Process, self string, gen int) (*spec, error) {
	if len(cfg.Command) == 0 {
		return nil, errors.New("process command is empty")
	}
	path, err := resolveProgram(cfg.Command[0], self)
	if err != nil {
		return nil, fmt.Errorf("process command: %w", err)
	}
	c := *cfg
	c.Command = slices.Clone(cfg.Command)
	c.Env = maps.Clone(cfg.Env)
	if c.ReadyPath == "" {
		c.ReadyPath = "/"
	}
	return &spec{gen: gen, cfg: c, path: path}, nil
}

// sameProcess reports whether a and b start the same processes.
func (a *spec) sameProcess(b *spec) bool {
	return a.path == b.path && slices.Equal(a.cfg.Command, b.cfg.Command) && maps.Equal(a.cfg.Env, b.cfg.Env)
}

// expand replaces {port}, {id} and {gpu} in every argument and environment
// value. The environment is sluice's own plus the configured variables.
func (a *spec) expand(port int, id string, gpu int) (args, env []string) {
	r := strings.NewReplacer("{port}", strconv.Itoa(port), "{id}", id, "{gpu}", strconv.Itoa(gpu))
	args = make([]string, len(a.cfg.Command)-1)
	for i, arg := range a.cfg.Command[1:] {
		args[i] = r.Replace(arg)
	}
	env = os.Environ()
	for _, k := range slices.Sorted(maps.Keys(a.cfg.Env)) {
		env = append(env, k+"="+r.Replace(a.cfg.Env[k]))
	}
	return args, env
}

// resolveProgram finds the program a command runs: sluice's own executable
// for "sluice", else a path or a name looked up in PATH.
func resolveProgram(name, self string) (string, error) {
	if name == SluiceCommand {
		if self != "" {
			return self, nil
		}
		exe, err := os.Executable()
		if err != nil {
			return "", fmt.Errorf("locate sluice's own executable: %w", err)
		}
		return exe, nil
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return "", err
	}
	return path, nil
}

// Scale sets how many replicas to run. It returns at once; Run starts or
// stops replicas to match. It implements autoscale.Actuator.
func (s *ProcessSet) Scale(_ context.Context, n int) error {
	if n < 0 {
		return fmt.Errorf("pool %s: scale to %d replicas: negative", s.name, n)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if n != s.desired {
		s.log.Debug("replica count set", "from", s.desired, "to", n)
	}
	s.desired = n
	s.nudge()
	return nil
}

// Desired is the replica count the set aims for. It implements
// autoscale.Actuator.
func (s *ProcessSet) Desired() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.desired
}

// StartupTime is the longest of the last few start-to-ready durations, 0
// before any replica became ready. The predictive autoscaler looks this far
// ahead.
func (s *ProcessSet) StartupTime() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	var m time.Duration
	for _, d := range s.startups {
		m = max(m, d)
	}
	return m
}

func (s *ProcessSet) nudge() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run supervises the replicas until ctx ends or Close is called, then stops
// every replica (drain, SIGTERM, SIGKILL) and returns once all have exited.
// It returns nil after a normal stop and ErrClosed if the set was closed
// before it ran. A set runs once.
func (s *ProcessSet) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("replicas: process set already running")
	}
	defer close(s.done)
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return ErrClosed
	}
	s.spawner = newSpawner()
	s.pump = newOutputPump(s.log)
	s.opts.Metrics.add(s)
	defer s.opts.Metrics.remove(s)
	s.mu.Lock()
	// The program only: arguments may carry secrets expanded from ${VAR}.
	s.log.Info("replicas starting", "program", s.spec.path, "replicas", s.desired)
	s.mu.Unlock()
	for {
		s.reconcile(ctx)
		select {
		case <-ctx.Done():
		case <-s.quit:
		case <-s.wake:
			continue
		}
		break
	}
	s.stopAll()
	s.wg.Wait()
	s.pump.stop()
	s.spawner.stop()
	s.log.Info("replicas stopped")
	return nil
}

// Close stops every replica: each is drained (bounded by stop_timeout),
// sent SIGTERM, and SIGKILLed if it outlives the grace period. If ctx ends
// first, the remaining replicas are killed at once. Close returns when Run
// has returned (at once if Run never ran), with ctx's error if it cut the
// stop short. It is safe to call more than once.
func (s *ProcessSet) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.quitOnce.Do(func() { close(s.quit) })
	if !s.started.Load() {
		return nil
	}
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
	}
	s.hurryOnce.Do(func() { close(s.hurry) })
	<-s.done
	return ctx.Err()
}

// stopAll marks the set closed and asks every replica to stop.
func (s *ProcessSet) stopAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for _, r := range s.replicas {
		r.stopLocked()
	}
}

// reconcile starts or stops replicas until as many of the current spec are
// running (not being stopped) as desired and none of an older spec is left.
// During a roll to a new spec, one replica more than desired may run, and
// an old replica that serves is stopped only when the others that are ready
// carry the desired count, so a reload does not cost capacity.
func (s *ProcessSet) reconcile(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	var cur, old []*replica
	for _, r := range s.replicas {
		switch {
		case r.stopping:
		case r.spec.gen == s.spec.gen:
			cur = append(cur, r)
		default:
			old = append(old, r)
		}
	}
	ready := countReady(cur) + countReady(old)
	for len(old) > 0 {
		i := victim(old)
		serving := old[i].phase == phaseReady
		if serving && ready-1 < s.desired && len(cur)+len(old) <= s.desired+1 {
			break
		}
		if serving {
			ready--
		}
		old[i].stopLocked()
		old = slices.Delete(old, i, i+1)
	}
	surge := 0
	if len(old) > 0 {
		surge = 1
	}
	for len(cur) < s.desired && len(cur)+len(old) < s.desired+surge {
		idx := 1
		for s.replicas[idx] != nil {
			idx++
		}
		r, run := s.newReplicaLocked(ctx, idx)
		s.replicas[idx] = r
		cur = append(cur, r)
		s.wg.Go(run)
	}
	for len(cur) > s.desired {
		i := victim(cur)
		cur[i].stopLocked()
		cur = slices.Delete(cur, i, i+1)
	}
}

func countReady(rs []*replica) int {
	n := 0
	for _, r := range rs {
		if r.phase == phaseReady {
			n++
		}
	}
	return n
}

// Reconfigure applies a reloaded process block. Timeouts and the ready path
// take effect at each replica's next start or stop. A changed command or
// environment rolls the replicas: a replica of the new command starts beside
// the old ones, and an old one is drained once the ready replicas can spare
// it, until none is left. If the new command never becomes ready, the old
// replicas keep serving. A program that cannot be found is an error and
// changes nothing. The fixed replica count is not applied here: call Scale.
func (s *ProcessSet) Reconfigure(cfg *config.Process) error {
	next, err := newSpec(cfg, s.opts.Executable, 0)
	if err != nil {
		return fmt.Errorf("pool %s: %w", s.name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.spec.sameProcess(next) {
		next.gen = s.spec.gen
		for _, r := range s.replicas {
			if r.spec.gen == next.gen {
				r.spec = next
			}
		}
	} else {
		next.gen = s.spec.gen + 1
		s.log.Info("replicas rolling to a new command", "program", next.path)
	}
	s.spec = next
	s.nudge()
	return nil
}

// victim picks the replica whose loss costs least: one waiting to restart,
// then the newest starting one, then one its pool's health checks took out
// of rotation, then the ready one with the fewest requests in flight (the
// highest index on a tie, so low ids stay stable).
func victim(rs []*replica) int {
	rank := func(r *replica) (int, int64) {
		switch r.phase {
		case phaseBackoff:
			return 0, 0
		case phaseStarting:
			return 1, -r.since.UnixNano()
		}
		if r.backend != nil && r.backend.State() != upstream.StateHealthy {
			return 2, 0
		}
		if r.backend != nil {
			return 3, r.backend.InFlight()
		}
		return 3, 0
	}
	best := 0
	for i := 1; i < len(rs); i++ {
		ci, cl := rank(rs[i])
		bi, bl := rank(rs[best])
		if ci < bi || ci == bi && (cl < bl || cl == bl && rs[i].idx > rs[best].idx) {
			best = i
		}
	}
	return best
}

// allocPort returns a free port that no live replica of this set holds. The
// port is free when checked; a process may still take it before the replica
// binds it, which the replica survives by retrying on a new port.
func (s *ProcessSet) allocPort() (int, error) {
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("find a free port: %w", err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		s.mu.Lock()
		taken := s.ports[port]
		if !taken {
			s.ports[port] = true
		}
		s.mu.Unlock()
		if !taken {
			return port, nil
		}
	}
	return 0, errors.New("find a free port: every port the system offered is held by a replica")
}

func (s *ProcessSet) releasePort(port int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.ports, port)
}

func (s *ProcessSet) recordStartup(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.startups) == startupSamples {
		s.startups = slices.Delete(s.startups, 0, 1)
	}
	s.startups = append(s.startups, d)
}

// Status is a process set's state for /api/pools.
type Status struct {
	// Desired is the count the set aims for.
	Desired int `json:"desired"`
	// Starting, Ready and Draining count replicas by phase; Backoff counts
	// those waiting to be restarted.
	Starting int `json:"starting"`
	Ready    int `json:"ready"`
	Draining int `json:"draining"`
	Backoff  int `json:"backoff"`
	// Restarts counts restarts after a crash, a hang or a failed start,
	// over the set's life.
	Restarts int `json:"restarts"`
	// CrashLooping counts replicas that failed crash_loop_after (3) times
	// in a row without serving for a minute in between.
	CrashLooping int `json:"crash_looping"`
	// StartupSeconds is StartupTime in seconds.
	StartupSeconds float64 `json:"startup_seconds"`
	// Replicas lists each replica by id.
	Replicas []ReplicaStatus `json:"replicas"`
}

// ReplicaStatus is one replica.
type ReplicaStatus struct {
	// ID is pool-N; {id} in the command expands to it.
	ID string `json:"id"`
	// State is starting, ready, draining (no new requests, in flight
	// finishing), stopping (signalled) or backoff (waiting to restart).
	State string `json:"state"`
	// URL, Port and PID are those of the current process; empty while in
	// backoff.
	URL  string `json:"url,omitempty"`
	Port int    `json:"port,omitempty"`
	PID  int    `json:"pid,omitempty"`
	// Since is when the replica entered State.
	Since time.Time `json:"since"`
	// Restarts counts this replica's restarts.
	Restarts int `json:"restarts"`
	// LastExit describes how the previous process ended ("" if none did):
	// its exit status and last lines of output.
	LastExit string `json:"last_exit,omitempty"`
	// Failures counts its failures in a row (reset by a minute of serving);
	// CrashLoop is true from the third, and NextRestart is when a replica
	// in backoff starts again.
	Failures    int       `json:"failures,omitempty"`
	CrashLoop   bool      `json:"crash_loop,omitempty"`
	NextRestart time.Time `json:"next_restart,omitzero"`
}

// Status reports the set's replicas, ordered by id.
func (s *ProcessSet) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Clock.Now()
	st := Status{Desired: s.desired, Restarts: s.restarts, Replicas: []ReplicaStatus{}}
	for _, d := range s.startups {
		st.StartupSeconds = max(st.StartupSeconds, d.Seconds())
	}
	for _, idx := range slices.Sorted(maps.Keys(s.replicas)) {
		r := s.replicas[idx]
		rs := ReplicaStatus{ID: r.id, State: r.phase.String(), Since: r.since, Restarts: r.restarts, LastExit: r.lastExit,
			Failures: r.failures}
		// A minute of serving ends a crash loop, as it resets the backoff.
		if r.phase == phaseReady && now.Sub(r.since) >= backoffReset {
			rs.Failures = 0
		}
		rs.CrashLoop = rs.Failures >= crashLoopAfter
		if rs.CrashLoop {
			st.CrashLooping++
		}
		if r.phase == phaseBackoff {
			rs.NextRestart = r.nextStart
		}
		if r.phase != phaseBackoff {
			rs.Port, rs.PID = r.port, r.pid
			if r.port != 0 {
				rs.URL = backendURL(r.port)
			}
		}
		switch r.phase {
		case phaseStarting:
			st.Starting++
		case phaseReady:
			st.Ready++
		case phaseDraining, phaseStopping:
			st.Draining++
		case phaseBackoff:
			st.Backoff++
		}
		st.Replicas = append(st.Replicas, rs)
	}
	return st
}

func backendURL(port int) string { return "http://127.0.0.1:" + strconv.Itoa(port) }
