package gateway

import (
	"context"
	"fmt"
	"os"
	"reflect"
	"sync"

	"github.com/google/uuid"

	"github.com/sluice-ai/sluice/internal/autoscale"
	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/upstream"
)

// leaseKeyPrefix starts the Redis key of an actuator pool's lease; the
// pool's name follows.
const leaseKeyPrefix = "sluice:autoscale:lease:"

// gatewayID names this gateway among those sharing a Redis or a Kubernetes
// Lease: the host name (the pod name in Kubernetes) and a random suffix, so
// two gateways on one host differ.
func gatewayID() string {
	host, _ := os.Hostname()
	return host + "_" + uuid.NewString()[:8]
}

// leader runs a pool's autoscaler while this gateway leads the pool (holds
// its Lease), building a controller for each term: a new leader starts from
// the demand it sees, not from windows sampled before it led.
type leader struct {
	mu        sync.Mutex
	autoscale *config.Autoscale     // current autoscale block
	ctl       *autoscale.Controller // the controller of the current term, while leading
}

// configure applies a reloaded autoscale block, to the running controller
// too.
func (l *leader) configure(as *config.Autoscale) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.autoscale = as
	if l.ctl != nil && as != nil {
		l.ctl.Reconfigure(*as)
	}
}

// term runs one term's controller until ctx ends.
func (l *leader) term(ctx context.Context, s *Server, name string, act autoscale.Actuator, opts autoscale.ControllerOptions) {
	l.mu.Lock()
	as := l.autoscale
	l.mu.Unlock()
	if as == nil {
		return
	}
	ctl, err := autoscale.NewController(name, *as, act, opts)
	if err != nil {
		s.logger.Error("autoscaler not started", "pool", name, "err", err)
		return
	}
	l.mu.Lock()
	l.ctl = ctl
	l.mu.Unlock()
	_ = ctl.Run(ctx)
	l.mu.Lock()
	l.ctl = nil
	l.mu.Unlock()
}

// last is the current term's last decision, nil when not leading.
func (l *leader) last() *autoscale.Decision {
	l.mu.Lock()
	ctl := l.ctl
	l.mu.Unlock()
	if ctl == nil {
		return nil
	}
	if d, ok := ctl.Last(); ok {
		return &d
	}
	return nil
}

// actuatorSet scales a pool whose replicas sluice does not run (an AWS Auto
// Scaling group, Nomad, Docker Compose) through autoscale.actuator; the
// pool's static backends address them. With redis.url, the gateways in
// front of the pool elect one through a Redis lease and it scales for the
// demand they all publish; without, this gateway scales alone.
type actuatorSet struct {
	s     *Server
	name  string
	pool  *upstream.Pool
	cfg   config.Actuator
	act   *autoscale.ExternalActuator
	lease *autoscale.RedisLease // nil without redis.url
	leader

	cancel context.CancelFunc // nil until start
	wg     sync.WaitGroup
}

func (s *Server) newActuatorSet(pc *config.Pool, pool *upstream.Pool) (*actuatorSet, error) {
	as := &actuatorSet{s: s, name: pc.Name, pool: pool, cfg: *pc.Autoscale.Actuator}
	as.autoscale = pc.Autoscale
	var err error
	as.act, err = autoscale.NewExternalActuator(pc.Name, as.cfg, autoscale.ExternalOptions{Initial: pc.Autoscale.Min, Logger: s.logger})
	if err != nil {
		return nil, fmt.Errorf("pool %s: %w", pc.Name, err)
	}
	if s.redis != nil {
		as.lease, err = autoscale.NewRedisLease(s.redis, leaseKeyPrefix+pc.Name, autoscale.LeaseOptions{ID: s.id, Clock: s.opts.Clock, Logger: s.logger})
		if err != nil {
			return nil, fmt.Errorf("pool %s: %w", pc.Name, err)
		}
	}
	return as, nil
}

// accepts keeps the set while the pool stays an actuator pool with the same
// actuator; autoscale changes apply in place.
func (as *actuatorSet) accepts(pc *config.Pool) bool {
	return isActuatorPool(pc) && reflect.DeepEqual(as.cfg, *pc.Autoscale.Actuator)
}

func isActuatorPool(pc *config.Pool) bool {
	return pc.Process == nil && pc.Kubernetes == nil && pc.Autoscale != nil && pc.Autoscale.Actuator != nil
}

func (as *actuatorSet) check(*config.Pool) error { return nil }

func (as *actuatorSet) reconfigure(pc *config.Pool) { as.configure(pc.Autoscale) }

// start runs the autoscaler, under the lease when there is one, until stop.
func (as *actuatorSet) start() {
	as.mu.Lock()
	defer as.mu.Unlock()
	if as.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	as.cancel = cancel
	// The platform's replicas are not visible to sluice: it takes the
	// count the platform last accepted as the ready count.
	opts := as.s.controllerOptions(as.name, as.pool, nil)
	opts.Ready = as.act.Desired
	lead := func(ctx context.Context) { as.term(ctx, as.s, as.name, as.act, opts) }
	if as.lease == nil {
		as.wg.Go(func() { lead(ctx) })
		return
	}
	as.wg.Go(func() { _ = as.lease.Run(ctx, lead) })
}

func (as *actuatorSet) stop() {
	as.mu.Lock()
	cancel := as.cancel
	as.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	as.wg.Wait()
}

// ActuatorStatus is an actuator pool in GET /api/pools.
type ActuatorStatus struct {
	Desired int  `json:"desired"`
	Leading bool `json:"leading"`
}

func (as *actuatorSet) describe(ps *PoolStatus) {
	d := as.last()
	ps.Actuator = &ActuatorStatus{Desired: as.act.Desired(), Leading: d != nil}
	ps.Replicas.Desired = as.act.Desired()
	ps.Autoscaler = d
}
