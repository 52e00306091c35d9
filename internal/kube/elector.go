package kube

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Defaults of ElectorOptions, as Kubernetes' own controllers use them: a
// leader that dies is replaced within about LeaseDuration; one that is
// cut off from the API server stops leading within RenewDeadline, before
// anyone else may start.
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
)

// LeaseName is the Lease the gateway replicas of one autoscaled pool
// compete for: one leader scales the pool's workload at a time. It is
// "sluice-autoscaler-POOL"; a pool name with '_' (not allowed in object
// names) has it replaced by '-' and a hash of the name appended, so that
// "a_b" and "a-b" do not share a Lease.
func LeaseName(pool string) string {
	if !strings.Contains(pool, "_") {
		return "sluice-autoscaler-" + pool
	}
	h := fnv.New32a()
	h.Write([]byte(pool))
	return fmt.Sprintf("sluice-autoscaler-%s-%08x", strings.ReplaceAll(pool, "_", "-"), h.Sum32())
}

// ElectorOptions configure an Elector.
type ElectorOptions struct {
	// LeaseDuration, RenewDeadline and RetryPeriod time the election; see
	// the Default constants, which zero values mean.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// Logger receives leadership changes. Nil discards.
	Logger *slog.Logger
}

// Elector makes one of several gateway replicas the only one that acts for
// a pool, by holding a coordination.k8s.io Lease. Several sluice replicas
// behind one Service each run an autoscaler for the same workload; without
// an election they would all write its replica count and undo each
// other's scale-downs. Create it with NewElector and call Run.
type Elector struct {
	client    kubernetes.Interface
	namespace string
	name      string
	identity  string
	opts      ElectorOptions
	log       *slog.Logger

	running atomic.Bool
	leading atomic.Bool

	mu sync.Mutex
	le *leaderelection.LeaderElector // of the current campaign
}

// NewElector returns an elector for the Lease namespace/name, campaigning
// as identity (unique per gateway replica: the pod's name).
func NewElector(client kubernetes.Interface, namespace, name, identity string, opts ElectorOptions) (*Elector, error) {
	if client == nil || namespace == "" || name == "" || identity == "" {
		return nil, errors.New("kube: elector needs a client, a lease namespace and name, and an identity")
	}
	if opts.LeaseDuration <= 0 {
		opts.LeaseDuration = DefaultLeaseDuration
	}
	if opts.RenewDeadline <= 0 {
		opts.RenewDeadline = DefaultRenewDeadline
	}
	if opts.RetryPeriod <= 0 {
		opts.RetryPeriod = DefaultRetryPeriod
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	e := &Elector{
		client: client, namespace: namespace, name: name, identity: identity, opts: opts,
		log: opts.Logger.With("lease", namespace+"/"+name, "identity", identity),
	}
	if _, err := e.newLeaderElector(e.lock(), func(context.Context) {}); err != nil {
		return nil, err // timings that cannot work
	}
	return e, nil
}

func (e *Elector) lock() *resourcelock.LeaseLock {
	return &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: e.namespace, Name: e.name},
		Client:     e.client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: e.identity},
	}
}

func (e *Elector) newLeaderElector(lock *resourcelock.LeaseLock, started func(context.Context)) (*leaderelection.LeaderElector, error) {
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:          lock,
		LeaseDuration: e.opts.LeaseDuration,
		RenewDeadline: e.opts.RenewDeadline,
		RetryPeriod:   e.opts.RetryPeriod,
		// Not client-go's release on cancel: it would hand the Lease over
		// while lead may still be running. campaign releases it after.
		ReleaseOnCancel: false,
		Name:            e.name,
		Callbacks:       leaderelection.LeaderCallbacks{OnStartedLeading: started, OnStoppedLeading: func() {}},
	})
	if err != nil {
		return nil, fmt.Errorf("lease %s/%s: %w", e.namespace, e.name, err)
	}
	return le, nil
}

// Run campaigns for the Lease until ctx ends, then returns nil. Each time
// it wins, it calls lead with a context that ends when leadership is lost
// (the Lease could not be renewed in time) or ctx ends, and waits for lead
// to return before campaigning again or releasing the Lease. lead should
// run until its context ends (the Lease is held for the whole term) and
// return promptly then: a lost Lease may go to another replica
// LeaseDuration - RenewDeadline (5s by default) later. An Elector runs
// once.
func (e *Elector) Run(ctx context.Context, lead func(ctx context.Context)) error {
	if !e.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	for ctx.Err() == nil {
		if err := e.campaign(ctx, lead); err != nil {
			return err
		}
	}
	return nil
}

// campaign runs one term: it waits to win, leads until the Lease is lost
// or ctx ends, and returns once lead has returned.
func (e *Elector) campaign(ctx context.Context, lead func(ctx context.Context)) error {
	var (
		gate   sync.Mutex
		over   bool           // the term ended; a late start must not lead
		leader sync.WaitGroup // lead, while it runs
	)
	// client-go calls this in a goroutine of its own once the Lease is
	// won, and does not wait for it; the gate and the WaitGroup make this
	// term wait for lead, and keep a call that starts after the term
	// ended from leading with a dead context.
	started := func(leaderCtx context.Context) {
		gate.Lock()
		if over {
			gate.Unlock()
			return
		}
		leader.Add(1)
		gate.Unlock()
		defer leader.Done()
		e.leading.Store(true)
		e.log.Info("leading: this replica scales the pool")
		lead(leaderCtx)
	}
	lock := e.lock()
	le, err := e.newLeaderElector(lock, started)
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.le = le
	e.mu.Unlock()
	le.Run(ctx) // returns when ctx ends or the Lease is lost
	gate.Lock()
	over = true
	gate.Unlock()
	leader.Wait()
	if e.leading.Swap(false) {
		e.log.Info("stopped leading")
		// A replica that stops (a rollout, a scale-down) hands over at
		// once instead of leaving the pool without a leader for a
		// lease; lead has returned, so there is never a second one.
		e.release(lock)
	}
	return nil
}

// release gives up the Lease if this replica still holds it, as
// client-go's ReleaseOnCancel would, but only after lead returned.
func (e *Elector) release(lock *resourcelock.LeaseLock) {
	ctx, cancel := context.WithTimeout(context.Background(), e.opts.RenewDeadline)
	defer cancel()
	rec, _, err := lock.Get(ctx)
	if err != nil || rec.HolderIdentity != e.identity {
		return
	}
	now := metav1.NewTime(time.Now())
	err = lock.Update(ctx, resourcelock.LeaderElectionRecord{
		LeaderTransitions:    rec.LeaderTransitions,
		LeaseDurationSeconds: 1,
		RenewTime:            now,
		AcquireTime:          now,
	})
	if err != nil {
		e.log.Warn("lease not released; another replica takes over when it expires", "err", err)
	}
}

// Leading reports whether this replica holds the Lease now.
func (e *Elector) Leading() bool { return e.leading.Load() }

// Leader is the identity of the Lease's holder as last seen, "" before
// the first campaign.
func (e *Elector) Leader() string {
	e.mu.Lock()
	le := e.le
	e.mu.Unlock()
	if le == nil {
		return ""
	}
	return le.GetLeader()
}
