// Package gateway is sluice's server: it builds pools from the config, routes
// data-plane requests to them, serves the admin API, reloads the config
// without dropping traffic, and drains on shutdown.
package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-ai/sluice/internal/autoscale"
	"github.com/sluice-ai/sluice/internal/batch"
	"github.com/sluice-ai/sluice/internal/cache"
	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/jobs"
	"github.com/sluice-ai/sluice/internal/jobs/jobstore"
	"github.com/sluice-ai/sluice/internal/kvroute"
	"github.com/sluice-ai/sluice/internal/metrics"
	"github.com/sluice-ai/sluice/internal/proxy"
	"github.com/sluice-ai/sluice/internal/ratelimit"
	"github.com/sluice-ai/sluice/internal/replicas"
	"github.com/sluice-ai/sluice/internal/tracing"
	"github.com/sluice-ai/sluice/internal/upstream"
)

// Options are the parts of a Server that do not come from the config file.
type Options struct {
	// Logger receives logs and the access log. Nil discards.
	Logger *slog.Logger
	// Clock drives health checks and other timed logic. Nil is the real clock.
	Clock clockwork.Clock
	// Version is reported by the admin API.
	Version string
	// Load reads the config on reload. Nil uses config.Load on the path the
	// config was loaded from.
	Load func() (*config.Config, error)
}

// Server is a running sluice gateway.
type Server struct {
	logger  *slog.Logger
	opts    Options
	reg     *prometheus.Registry
	metrics *metrics.Gateway
	kvm     *kvroute.Metrics // the kv_aware routers' metrics, shared by every pool
	proxy   *proxy.Proxy
	started time.Time

	unrouted *metrics.CodeCounters // requests_total{pool=""}

	table atomic.Pointer[table]

	mu      sync.Mutex // serializes reloads; guards pools and sources
	pools   map[string]*upstream.Pool
	sources map[string]replicaSource  // process and kubernetes pools' replicas
	removed sync.WaitGroup            // sources and bridges replaced or of removed pools, stopping
	bridges map[string]*runningBridge // queue bridges by pool, while running; nil before and after

	slots  tenantSlots // tenants' requests in flight here, before their bodies are read
	bodies bodyBudget  // request body bytes held in memory

	tracer *tracing.Provider // OpenTelemetry traces (a no-op without tracing.otlp_endpoint); reloads swap its exporter

	redis   *redis.Client      // nil without redis.url
	limiter *ratelimit.Limiter // per-tenant limits (global with Redis)
	cache   *cache.Cache       // response cache for pools with cache.ttl

	jobStore jobstore.Store // nil until Run opens it
	jobs     *jobs.Service
	jobsAPI  http.Handler
	batch    *batch.Service // nil until Run opens the jobs
	batchAPI http.Handler

	id               string                  // this gateway among those sharing a Redis or a Lease
	shared           *autoscale.SharedDemand // the demand of every gateway of a scaled pool; nil without redis.url
	exe              string                  // what a process command's "sluice" runs
	autoscaleMetrics *autoscale.Metrics
	replicaMetrics   *replicas.Metrics
	jobsPending      func(pool string) int

	// running is set once Run started the background work; pools, replica
	// sets and discovery created by a reload after that are started at once.
	// Each is stopped by its own Close or stop, never by a shared context.
	running             bool // guarded by mu
	ready               atomic.Bool
	dataAddr, adminAddr atomic.Pointer[string]
	listening           chan struct{}
}

// New builds a server for cfg. Nothing listens until Run.
func New(cfg *config.Config, opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	if opts.Load == nil {
		path := cfg.Path
		opts.Load = func() (*config.Config, error) { return config.Load(path) }
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s := &Server{
		logger:    opts.Logger,
		opts:      opts,
		reg:       reg,
		metrics:   metrics.NewGateway(reg),
		kvm:       kvroute.NewMetrics(reg),
		proxy:     proxy.New(opts.Logger, opts.Clock),
		started:   time.Now(),
		pools:     make(map[string]*upstream.Pool),
		sources:   make(map[string]replicaSource),
		id:        gatewayID(),
		listening: make(chan struct{}),
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find sluice's own executable for process pools: %w", err)
	}
	s.exe = exe
	s.autoscaleMetrics = autoscale.NewMetrics(reg)
	s.replicaMetrics = replicas.NewMetrics(reg)
	if err := s.openShared(cfg); err != nil {
		return nil, err
	}
	if s.redis != nil {
		// Cannot fail: the client and the ID are set.
		s.shared, _ = autoscale.NewSharedDemand(s.redis, autoscale.SharedOptions{ID: s.id, Clock: s.opts.Clock, Logger: s.logger})
	}
	if s.tracer, err = tracing.New(context.Background(), cfg.Tracing, tracing.Options{Registerer: reg, Logger: s.logger}); err != nil {
		s.closeShared()
		return nil, fmt.Errorf("tracing: %w", err)
	}
	s.proxy.Tracer = s.tracer
	s.unrouted = metrics.NewCodeCounters(s.metrics.Requests, "")
	s.bodies.gauge = s.metrics.BufferedBody
	reg.MustRegister(poolCollector{s})
	if err := s.apply(cfg); err != nil {
		return nil, err
	}
	return s, nil
}

// Registry is the server's metric registry (for capabilities to register on).
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Pool returns the pool named name in the current config, or nil.
func (s *Server) Pool(name string) *upstream.Pool { return s.table.Load().pools[name] }

// Config is the config in force.
func (s *Server) Config() *config.Config { return s.table.Load().cfg }

// apply applies cfg in two phases. Prepare builds everything the new
// config needs — pool changes, new pools, the routing table, replica
// supervisors, Kubernetes discovery, the authenticator — and may fail
// without touching anything that runs. Commit swaps it all in and cannot
// fail. Pools whose names stay keep their backends' health and load state
// and their connection pools; pools that left the config are closed after
// the swap (requests in flight on them finish).
func (s *Server) apply(cfg *config.Config) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next, changes, created, err := s.preparePoolsLocked(cfg)
	discard := func() {
		for _, c := range changes {
			c.Discard()
		}
		for _, p := range created {
			p.Close()
		}
	}
	if err != nil {
		discard()
		return err
	}
	t, err := buildTable(cfg, next)
	var sources *sourcePlan
	if err == nil {
		sources, err = s.prepareSourcesLocked(cfg, next)
	}
	var traces *tracing.Change
	if err == nil {
		traces, err = s.tracer.Prepare(context.Background(), cfg.Tracing)
	}
	if err == nil {
		t.auth, err = s.authenticatorFor(cfg) // last: nothing after it can fail
	}
	if err != nil {
		discard()
		sources.discard()
		traces.Discard()
		return err
	}

	// Commit: nothing below can fail.
	for _, c := range changes {
		c.Commit()
	}
	traces.Commit()
	if old := s.table.Swap(t); old != nil && old.auth != nil && old.auth != t.auth {
		old.auth.Close()
	}
	for name, p := range s.pools {
		if _, ok := next[name]; !ok {
			p.Close()
		}
	}
	s.pools = next
	newSources := s.commitSourcesLocked(cfg, sources)
	if s.running {
		for _, p := range created {
			p.Start(context.Background())
		}
		for _, name := range newSources {
			s.sources[name].start()
		}
		s.syncBridgesLocked(cfg)
	}
	return nil
}

// preparePoolsLocked prepares a change for every pool that stays and builds
// the pools that are new.
func (s *Server) preparePoolsLocked(cfg *config.Config) (next map[string]*upstream.Pool, changes []*upstream.Change, created []*upstream.Pool, err error) {
	next = make(map[string]*upstream.Pool, len(cfg.Pools))
	for i := range cfg.Pools {
		pc := &cfg.Pools[i]
		if p, ok := s.pools[pc.Name]; ok {
			c, err := p.Prepare(pc)
			if err != nil {
				return nil, changes, created, err
			}
			changes = append(changes, c)
			next[pc.Name] = p
			continue
		}
		p, err := upstream.NewPool(pc, upstream.Options{Logger: s.logger, Clock: s.opts.Clock, Metrics: s.metrics, KVMetrics: s.kvm, Redis: s.redis})
		if err != nil {
			return nil, changes, created, err
		}
		next[pc.Name] = p
		created = append(created, p)
	}
	return next, changes, created, nil
}

// Reload reads the config again and applies it. An invalid config leaves the
// running one in place; the error is returned, logged and counted.
func (s *Server) Reload() error {
	cfg, err := s.opts.Load()
	if err == nil {
		err = s.apply(cfg)
	}
	if err != nil {
		s.metrics.Reloads.WithLabelValues("failure").Inc()
		s.logger.Error("config reload rejected; the previous config stays in force", "err", err)
		return err
	}
	s.metrics.Reloads.WithLabelValues("success").Inc()
	s.logger.Info("config reloaded", "pools", len(cfg.Pools))
	return nil
}

// Addr is the data-plane listener's address once Run is listening.
func (s *Server) Addr() string { return deref(s.dataAddr.Load()) }

// AdminAddr is the admin listener's address once Run is listening ("" when
// the admin server is disabled).
func (s *Server) AdminAddr() string { return deref(s.adminAddr.Load()) }

// Listening is closed once Run's listeners are up.
func (s *Server) Listening() <-chan struct{} { return s.listening }

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// Run listens and serves until ctx is done, then drains: listeners close,
// requests and streams in flight get limits.drain_timeout to finish, and Run
// returns nil. A listener that cannot start is an error.
func (s *Server) Run(ctx context.Context) error {
	cfg := s.Config()
	runCtx, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBackground()

	dataLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	var adminLn net.Listener
	if cfg.Admin.Listen != "" {
		if adminLn, err = net.Listen("tcp", cfg.Admin.Listen); err != nil {
			dataLn.Close()
			return fmt.Errorf("admin listen %s: %w", cfg.Admin.Listen, err)
		}
		a := adminLn.Addr().String()
		s.adminAddr.Store(&a)
	}
	// Every listener is bound before anything starts, so one that cannot
	// be leaves nothing running behind.
	var kedaLn net.Listener
	if cfg.KEDA.Listen != "" {
		if kedaLn, err = net.Listen("tcp", cfg.KEDA.Listen); err != nil {
			dataLn.Close()
			if adminLn != nil {
				adminLn.Close()
			}
			return fmt.Errorf("keda listen %s: %w", cfg.KEDA.Listen, err)
		}
	}
	closeListeners := func() {
		dataLn.Close()
		if adminLn != nil {
			adminLn.Close()
		}
		if kedaLn != nil {
			kedaLn.Close()
		}
	}
	d := dataLn.Addr().String()
	s.dataAddr.Store(&d)

	data := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: cfg.Limits.ReadHeaderTimeout.D(),
		MaxHeaderBytes:    int(cfg.Limits.MaxHeaderBytes),
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: cfg.Limits.HTTP2MaxStreams},
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelDebug),
		Protocols:         new(http.Protocols),
	}
	data.Protocols.SetHTTP1(true)
	var certs *certReloader
	if cfg.TLS != nil {
		certs, err = newCertReloader(cfg.TLS.CertFile, cfg.TLS.KeyFile)
		if err != nil {
			closeListeners()
			return err
		}
		data.Protocols.SetHTTP2(true)
		data.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.GetCertificate, NextProtos: []string{"h2", "http/1.1"}}
	} else {
		data.Protocols.SetUnencryptedHTTP2(true) // h2c with prior knowledge, as gRPC clients speak it
	}

	own := []string{dataLn.Addr().String()}
	if adminLn != nil {
		own = append(own, adminLn.Addr().String())
	}
	if kedaLn != nil {
		own = append(own, kedaLn.Addr().String())
	}
	if err := s.openJobs(runCtx, cfg, own); err != nil {
		closeListeners()
		return err
	}

	s.mu.Lock()
	s.running = true
	for _, p := range s.pools {
		p.Start(context.Background()) // stopped by p.Close
	}
	for _, src := range s.sources {
		src.start()
	}
	s.bridges = make(map[string]*runningBridge)
	s.syncBridgesLocked(s.Config())
	s.mu.Unlock()

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		var err error
		if certs != nil {
			err = data.ServeTLS(dataLn, "", "")
		} else {
			err = data.Serve(dataLn)
		}
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("serve %s: %w", cfg.Listen, err)
	})
	var admin *http.Server
	if adminLn != nil {
		admin = &http.Server{Handler: s.adminHandler(), ReadHeaderTimeout: 10 * time.Second}
		g.Go(func() error {
			if err := admin.Serve(adminLn); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("admin serve %s: %w", cfg.Admin.Listen, err)
			}
			return nil
		})
	}
	if cfg.Path != "" {
		g.Go(func() error { s.watchConfig(runCtx, cfg.Path); return nil })
	}
	if s.shared != nil {
		g.Go(func() error { return s.shared.Run(gctx, autoscale.DefaultTick, s.publishedDemand) })
	}
	g.Go(func() error { s.refreshModels(gctx); return nil })
	if kedaLn != nil {
		g.Go(func() error { return s.serveKEDA(gctx, kedaLn) })
	}
	s.ready.Store(true)
	close(s.listening)
	s.logger.Info("sluice listening", "addr", d, "admin", s.AdminAddr(), "tls", cfg.TLS != nil, "pools", len(cfg.Pools))

	g.Go(func() error {
		<-gctx.Done()
		s.ready.Store(false)
		drain := s.Config().Limits.DrainTimeout.D()
		s.logger.Info("draining", "timeout", drain)
		dctx, cancel := context.WithTimeout(context.Background(), drain)
		defer cancel()
		var bridges sync.WaitGroup
		bridges.Go(s.stopBridges) // beside the drain: both wait for requests in flight
		if err := data.Shutdown(dctx); err != nil {
			s.logger.Warn("drain timeout passed; closing remaining connections", "err", err)
			data.Close()
		}
		bridges.Wait()
		s.closeJobs(dctx)
		if admin != nil {
			_ = admin.Shutdown(dctx)
		}
		stopBackground()
		return nil
	})
	err = g.Wait()
	s.mu.Lock()
	var stops sync.WaitGroup
	for _, src := range s.sources {
		stops.Go(src.stop)
	}
	s.mu.Unlock()
	stops.Wait()
	s.removed.Wait()
	s.mu.Lock()
	for _, p := range s.pools {
		p.Close()
	}
	if a := s.table.Load().auth; a != nil {
		a.Close()
	}
	s.mu.Unlock()
	s.closeShared()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.tracer.Shutdown(sctx)
	return err
}
