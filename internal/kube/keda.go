package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/kube/externalscaler"
)

// Keys of a KEDA trigger's metadata that sluice reads.
const (
	// MetadataPool names the sluice pool whose demand drives the
	// ScaledObject. Required.
	MetadataPool = "pool"
	// MetadataTargetConcurrency overrides the demand one replica should
	// carry. Optional; a number above 0.
	MetadataTargetConcurrency = "targetConcurrency"
	// MetadataActivationDemand is the demand above which the workload is
	// active (has replicas). Optional; default 0, so any request in flight
	// or waiting activates it.
	MetadataActivationDemand = "activationDemand"
)

// DefaultStreamInterval is how often StreamIsActive samples demand.
const DefaultStreamInterval = time.Second

// stopGrace bounds how long Serve waits for calls in flight when it stops.
const stopGrace = 5 * time.Second

// ExternalScalerOptions configure an ExternalScaler.
type ExternalScalerOptions struct {
	// Demand returns a pool's demand now (requests in flight + waiting in
	// its queue + pending jobs), and false when no pool has that name.
	// Required.
	Demand func(pool string) (float64, bool)
	// TargetConcurrency returns the demand one replica of pool should
	// carry: its autoscale.target_concurrency. A trigger's
	// targetConcurrency metadata overrides it. Nil, or a result ≤ 0, means
	// the autoscale default (4).
	TargetConcurrency func(pool string) float64
	// StreamInterval is how often StreamIsActive samples demand; it sends
	// only changes. Default DefaultStreamInterval.
	StreamInterval time.Duration
	// Logger receives rejected requests at debug level and server errors.
	// Nil discards.
	Logger *slog.Logger
	// Clock drives StreamIsActive's sampling. Nil is the real clock.
	Clock clockwork.Clock
}

// ExternalScaler serves KEDA's external scaler gRPC interface
// (externalscaler.ExternalScaler) over sluice's demand signal, so a
// ScaledObject with an `external` trigger sizes a workload from the demand
// sluice sees:
//
//   - the metric is the pool's demand, its per-replica target the pool's
//     target concurrency, so KEDA's HPA asks for ceil(demand / target)
//     replicas, the same count sluice's own autoscaler aims for without its
//     windows;
//   - the workload is active (KEDA scales it from zero) when demand is above
//     activationDemand; StreamIsActive pushes that as soon as it changes.
//
// Create it with NewExternalScaler and call Serve.
type ExternalScaler struct {
	externalscaler.UnimplementedExternalScalerServer

	opts    ExternalScalerOptions
	serving atomic.Bool

	quit     chan struct{} // closed when Serve stops: ends open streams
	quitOnce sync.Once
}

var _ externalscaler.ExternalScalerServer = (*ExternalScaler)(nil)

// NewExternalScaler returns a server over opts.Demand.
func NewExternalScaler(opts ExternalScalerOptions) (*ExternalScaler, error) {
	if opts.Demand == nil {
		return nil, errors.New("kube: external scaler needs a Demand function")
	}
	if opts.StreamInterval <= 0 {
		opts.StreamInterval = DefaultStreamInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	return &ExternalScaler{opts: opts, quit: make(chan struct{})}, nil
}

// Serve answers KEDA on lis until ctx ends; then it ends open streams,
// lets unary calls finish, closes lis and returns nil. grpcOpts are passed
// to grpc.NewServer (TLS credentials, for one). It serves once.
func (s *ExternalScaler) Serve(ctx context.Context, lis net.Listener, grpcOpts ...grpc.ServerOption) error {
	if !s.serving.CompareAndSwap(false, true) {
		lis.Close()
		return ErrRunning
	}
	srv := grpc.NewServer(grpcOpts...)
	externalscaler.RegisterExternalScalerServer(srv, s)
	var wg sync.WaitGroup
	defer wg.Wait()
	stopped := make(chan struct{})
	defer close(stopped)
	wg.Go(func() {
		select {
		case <-ctx.Done():
		case <-stopped: // Serve failed on its own
		}
		s.quitOnce.Do(func() { close(s.quit) })
		graceful := make(chan struct{})
		go func() { srv.GracefulStop(); close(graceful) }()
		t := time.NewTimer(stopGrace)
		defer t.Stop()
		select {
		case <-graceful:
		case <-t.C: // a call stuck on a client that stopped reading
			srv.Stop()
			<-graceful
		}
	})
	if err := srv.Serve(lis); err != nil {
		return fmt.Errorf("keda external scaler on %s: %w", lis.Addr(), err)
	}
	return nil
}

// trigger is what one ScaledObject trigger asks about.
type trigger struct {
	pool       string
	target     float64
	activation float64
}

func (s *ExternalScaler) trigger(ref *externalscaler.ScaledObjectRef) (trigger, error) {
	md := ref.GetScalerMetadata()
	t := trigger{pool: md[MetadataPool]}
	if t.pool == "" {
		return t, s.reject(ref, codes.InvalidArgument, "trigger metadata has no %q: name the sluice pool", MetadataPool)
	}
	if _, ok := s.opts.Demand(t.pool); !ok {
		return t, s.reject(ref, codes.NotFound, "no pool %q in sluice's config", t.pool)
	}
	if v, ok := md[MetadataTargetConcurrency]; ok {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || !(f > 0) || math.IsInf(f, 0) {
			return t, s.reject(ref, codes.InvalidArgument, "metadata %s %q: want a number above 0", MetadataTargetConcurrency, v)
		}
		t.target = f
	} else if s.opts.TargetConcurrency != nil {
		t.target = s.opts.TargetConcurrency(t.pool)
	}
	if !(t.target > 0) {
		t.target = config.DefaultAutoscale().TargetConcurrency
	}
	if v, ok := md[MetadataActivationDemand]; ok {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
			return t, s.reject(ref, codes.InvalidArgument, "metadata %s %q: want a number, 0 or more", MetadataActivationDemand, v)
		}
		t.activation = f
	}
	return t, nil
}

func (s *ExternalScaler) reject(ref *externalscaler.ScaledObjectRef, code codes.Code, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	s.opts.Logger.Debug("keda request rejected", "scaledobject", ref.GetNamespace()+"/"+ref.GetName(), "code", code.String(), "err", msg)
	return status.Error(code, msg)
}

// demand reads the pool's demand; the pool can leave the config between
// trigger and here.
func (s *ExternalScaler) demand(pool string) (float64, error) {
	d, ok := s.opts.Demand(pool)
	if !ok {
		return 0, status.Errorf(codes.NotFound, "no pool %q in sluice's config", pool)
	}
	return max(d, 0), nil
}

// MetricName is the name GetMetricSpec gives a pool's demand metric.
func MetricName(pool string) string { return "sluice-demand-" + pool }

// IsActive reports whether the pool's demand is above the trigger's
// activationDemand.
func (s *ExternalScaler) IsActive(_ context.Context, ref *externalscaler.ScaledObjectRef) (*externalscaler.IsActiveResponse, error) {
	t, err := s.trigger(ref)
	if err != nil {
		return nil, err
	}
	d, err := s.demand(t.pool)
	if err != nil {
		return nil, err
	}
	return &externalscaler.IsActiveResponse{Result: d > t.activation}, nil
}

// StreamIsActive sends IsActive's answer at once and then whenever it
// changes, sampled every StreamInterval, until the client leaves or Serve
// stops.
func (s *ExternalScaler) StreamIsActive(ref *externalscaler.ScaledObjectRef, stream grpc.ServerStreamingServer[externalscaler.IsActiveResponse]) error {
	t, err := s.trigger(ref)
	if err != nil {
		return err
	}
	tick := s.opts.Clock.NewTicker(s.opts.StreamInterval)
	defer tick.Stop()
	sent, first := false, true
	for {
		d, err := s.demand(t.pool)
		if err != nil {
			return err
		}
		if active := d > t.activation; first || active != sent {
			if err := stream.Send(&externalscaler.IsActiveResponse{Result: active}); err != nil {
				return err
			}
			sent, first = active, false
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-s.quit:
			return nil
		case <-tick.Chan():
		}
	}
}

// GetMetricSpec names the pool's demand metric and its per-replica target.
func (s *ExternalScaler) GetMetricSpec(_ context.Context, ref *externalscaler.ScaledObjectRef) (*externalscaler.GetMetricSpecResponse, error) {
	t, err := s.trigger(ref)
	if err != nil {
		return nil, err
	}
	return &externalscaler.GetMetricSpecResponse{MetricSpecs: []*externalscaler.MetricSpec{{
		MetricName: MetricName(t.pool),
		// The integer form rounds down (at least 1): a lower target
		// errs towards more replicas.
		TargetSize:      max(1, int64(t.target)),
		TargetSizeFloat: t.target,
	}}}, nil
}

// GetMetrics returns the pool's demand now.
func (s *ExternalScaler) GetMetrics(_ context.Context, req *externalscaler.GetMetricsRequest) (*externalscaler.GetMetricsResponse, error) {
	t, err := s.trigger(req.GetScaledObjectRef())
	if err != nil {
		return nil, err
	}
	d, err := s.demand(t.pool)
	if err != nil {
		return nil, err
	}
	name := req.GetMetricName()
	if name == "" {
		name = MetricName(t.pool)
	}
	return &externalscaler.GetMetricsResponse{MetricValues: []*externalscaler.MetricValue{{
		MetricName: name,
		// The integer form rounds up, so a fraction of a request still
		// counts as demand.
		MetricValue:      int64(math.Ceil(d)),
		MetricValueFloat: d,
	}}}, nil
}
