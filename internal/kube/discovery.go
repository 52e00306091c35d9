package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	discoveryinformers "k8s.io/client-go/informers/discovery/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/jonboulle/clockwork"

	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/upstream"
)

// ErrRunning is returned by Run (Serve) when the same Discovery, Workload,
// Elector or ExternalScaler is already running or ran.
var ErrRunning = errors.New("kube: already running")

// startupSamples is how many recent not-ready-to-ready durations
// StartupTime keeps.
const startupSamples = 5

// ServiceNameLabel is the label the EndpointSlice controller puts on every
// slice of a Service.
const ServiceNameLabel = discoveryv1.LabelServiceName

// Options are the parts of a Discovery or Workload that come from its owner.
type Options struct {
	// Logger receives membership changes and API errors. Nil discards.
	Logger *slog.Logger
	// Clock times replica start-ups. Nil is the real clock.
	Clock clockwork.Clock
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = clockwork.NewRealClock()
	}
	return o
}

// Discovery keeps a pool's backends in step with the EndpointSlices of a
// Service. Create it with NewDiscovery and call Run.
//
// Each endpoint becomes the backend http://ADDRESS:PORT. A ready endpoint is
// healthy (active health checks and outlier detection still apply to it); a
// not-ready one waits in the pool as starting; a terminating one drains: it
// takes no new requests and its requests in flight finish. An endpoint that
// leaves every slice is removed from the pool.
//
// Discovery owns every backend of its pool: once its informer has synced,
// backends the slices do not list are removed. A Discovery started for a
// pool that already has backends (a reload that changed the Service) keeps
// those whose URL stays, with their load and latency state.
type Discovery struct {
	client kubernetes.Interface
	name   string // the pool's
	cfg    config.Kubernetes
	pool   upstream.Membership
	opts   Options
	log    *slog.Logger

	running atomic.Bool

	mu        sync.Mutex // guards the fields below
	synced    bool
	slices    int
	view      view
	firstSeen map[string]time.Time // not-ready endpoints, since first seen
	startups  []time.Duration
	lastErr   string
	lastErrAt time.Time
}

// NewDiscovery returns a Discovery that fills pool (named name) from the
// Service cfg names. It does not contact the API server until Run.
func NewDiscovery(client kubernetes.Interface, name string, cfg *config.Kubernetes, pool upstream.Membership, opts Options) (*Discovery, error) {
	if client == nil || cfg == nil || pool == nil {
		return nil, errors.New("kube: discovery needs a client, a kubernetes config and a pool")
	}
	if cfg.Service == "" {
		return nil, fmt.Errorf("pool %s: kubernetes.service is empty", name)
	}
	c := *cfg
	if c.Namespace == "" {
		c.Namespace = config.DefaultKubernetes().Namespace
	}
	opts = opts.withDefaults()
	return &Discovery{
		client: client, name: name, cfg: c, pool: pool, opts: opts,
		log:       opts.Logger.With("pool", name, "namespace", c.Namespace, "service", c.Service),
		firstSeen: make(map[string]time.Time),
	}, nil
}

// Run watches the Service's EndpointSlices and applies every change to the
// pool until ctx ends, then returns nil. The pool is first changed once the
// initial list is complete. When the API server cannot be reached, the
// watch retries with backoff and the pool keeps its backends; Status shows
// the error. A Discovery runs once.
func (d *Discovery) Run(ctx context.Context) error {
	if !d.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	selector := metav1.FormatLabelSelector(&metav1.LabelSelector{MatchLabels: map[string]string{ServiceNameLabel: d.cfg.Service}})
	// No resync: every change arrives as a watch event, and the
	// reconciliation is level-based (it reads the whole store), so a
	// periodic replay would change nothing.
	inf := discoveryinformers.NewFilteredEndpointSliceInformer(d.client, d.cfg.Namespace, 0, cache.Indexers{},
		func(o *metav1.ListOptions) { o.LabelSelector = selector })
	wake := make(chan struct{}, 1)
	nudge := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { nudge() },
		UpdateFunc: func(any, any) { nudge() },
		DeleteFunc: func(any) { nudge() },
	}); err != nil {
		return fmt.Errorf("pool %s: endpointslice informer: %w", d.name, err)
	}
	if err := inf.SetWatchErrorHandlerWithContext(watchErrors(func(err error) {
		d.recordError(fmt.Errorf("watch endpointslices of service %s/%s: %w", d.cfg.Namespace, d.cfg.Service, err))
	})); err != nil {
		return fmt.Errorf("pool %s: endpointslice informer: %w", d.name, err)
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Go(func() { inf.RunWithContext(ctx) })
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return nil
	}
	d.log.Info("kubernetes discovery synced")
	for {
		d.reconcile(inf.GetStore().List())
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		}
	}
}

// reconcile makes the pool's backends what objs (the informer's slices)
// say they should be.
func (d *Discovery) reconcile(objs []any) {
	list := make([]*discoveryv1.EndpointSlice, 0, len(objs))
	for _, o := range objs {
		if s, ok := o.(*discoveryv1.EndpointSlice); ok {
			list = append(list, s)
		}
	}
	v := endpointsView(list, d.cfg.Port)
	now := d.opts.Clock.Now()

	have := make(map[string]*upstream.Backend)
	for _, b := range d.pool.Backends() {
		have[b.Key()] = b
	}
	var startups []time.Duration
	seen := make(map[string]bool, len(v.targets))
	for _, url := range sortedKeys(v.targets) {
		t := v.targets[url]
		seen[url] = true
		b, ok := have[url]
		if !ok {
			if t.state == upstream.StateDraining {
				continue // never served through sluice: nothing to drain
			}
			nb, err := d.pool.NewBackend(url, 1, t.state)
			if err != nil {
				d.recordError(fmt.Errorf("endpoint %s: %w", url, err))
				continue
			}
			d.pool.AddBackend(nb)
			d.log.Info("replica discovered", "backend", url, "state", t.state)
			if t.state == upstream.StateStarting {
				d.firstSeenAt(url, now)
			}
			continue
		}
		cur := b.State()
		switch t.state {
		case upstream.StateHealthy:
			// Unhealthy and ejected backends belong to health checks and
			// outlier detection, which return them to traffic themselves.
			if cur == upstream.StateStarting || cur == upstream.StateDraining {
				d.pool.SetBackendState(b, upstream.StateHealthy)
				d.log.Info("replica ready", "backend", url)
				if since, ok := d.takeFirstSeen(url); ok {
					startups = append(startups, now.Sub(since))
				}
			}
		case upstream.StateStarting:
			if cur != upstream.StateStarting {
				d.pool.SetBackendState(b, upstream.StateStarting)
				d.log.Warn("replica not ready", "backend", url)
				d.firstSeenAt(url, now)
			}
		case upstream.StateDraining:
			if cur != upstream.StateDraining {
				d.pool.SetBackendState(b, upstream.StateDraining)
				d.log.Info("replica terminating; draining", "backend", url, "in_flight", b.InFlight())
			}
		}
	}
	for url := range have {
		if !seen[url] {
			d.pool.RemoveBackend(url)
			d.log.Info("replica gone", "backend", url)
		}
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	for url := range d.firstSeen {
		if !seen[url] {
			delete(d.firstSeen, url)
		}
	}
	for _, s := range startups {
		if len(d.startups) == startupSamples {
			d.startups = slices.Delete(d.startups, 0, 1)
		}
		d.startups = append(d.startups, s)
	}
	if !slices.Equal(v.problems, d.view.problems) {
		for _, p := range v.problems {
			d.log.Warn("endpoints skipped", "problem", p)
		}
	}
	d.synced = true
	d.slices = len(list)
	d.view = v
}

func (d *Discovery) firstSeenAt(url string, t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.firstSeen[url]; !ok {
		d.firstSeen[url] = t
	}
}

func (d *Discovery) takeFirstSeen(url string) (time.Time, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	t, ok := d.firstSeen[url]
	delete(d.firstSeen, url)
	return t, ok
}

func (d *Discovery) recordError(err error) {
	msg := err.Error()
	d.mu.Lock()
	repeated := msg == d.lastErr
	d.lastErr, d.lastErrAt = msg, d.opts.Clock.Now()
	d.mu.Unlock()
	if !repeated { // the reflector retries every second or so; log each new cause once
		d.log.Warn("kubernetes discovery", "err", msg)
	}
}

// Synced reports whether the initial list has been applied to the pool.
func (d *Discovery) Synced() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.synced
}

// StartupTime is how long a replica took from appearing (not ready) in the
// EndpointSlices to becoming ready: the longest of the last five. It
// leaves out scheduling and anything before the pod got an address. Zero
// until one was seen. The predictive autoscaler looks this far ahead.
func (d *Discovery) StartupTime() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.startupLocked()
}

func (d *Discovery) startupLocked() time.Duration {
	var m time.Duration
	for _, s := range d.startups {
		m = max(m, s)
	}
	return m
}

// DiscoveryStatus is a Discovery's state for /api/pools.
type DiscoveryStatus struct {
	Namespace string `json:"namespace"`
	Service   string `json:"service"`
	// Port is the configured port ("" = each slice's first TCP port).
	Port string `json:"port"`
	// Synced is false until the initial list has been applied.
	Synced bool `json:"synced"`
	// Slices is the number of the Service's EndpointSlices.
	Slices int `json:"slices"`
	// Ready, NotReady and Terminating count the replicas listed, by
	// condition.
	Ready       int `json:"ready"`
	NotReady    int `json:"not_ready"`
	Terminating int `json:"terminating"`
	// StartupSeconds is StartupTime in seconds.
	StartupSeconds float64 `json:"startup_seconds"`
	// Problems explain endpoints that could not become backends (a port
	// that matches none of a slice's ports).
	Problems []string `json:"problems,omitempty"`
	// LastError is the last error talking to the API server, and when it
	// happened; the watch retries on its own.
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
}

// Status reports what the Service's EndpointSlices list.
func (d *Discovery) Status() DiscoveryStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := DiscoveryStatus{
		Namespace: d.cfg.Namespace, Service: d.cfg.Service, Port: d.cfg.Port,
		Synced: d.synced, Slices: d.slices,
		Ready: d.view.ready, NotReady: d.view.notReady, Terminating: d.view.terminating,
		Problems: slices.Clone(d.view.problems), LastError: d.lastErr,
		StartupSeconds: d.startupLocked().Seconds(),
	}
	if d.lastErr != "" {
		at := d.lastErrAt
		st.LastErrorAt = &at
	}
	return st
}

// watchErrors returns an informer's watch error handler that passes real
// errors to record. A watch that ends (EOF) or whose resource version
// expired is routine: the reflector lists or watches again on its own.
func watchErrors(record func(error)) cache.WatchErrorHandlerWithContext {
	return func(_ context.Context, _ *cache.Reflector, err error) {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
			return
		}
		record(err)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
