package gateway

import (
	"context"
	"net/http"
	"reflect"
	"sync"

	"github.com/sluice-ai/sluice/internal/bridge"
	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/jobs"
)

// runningBridge feeds one pool from its queue (pools[].bridge) until stop.
// A bridge that stops with an error is logged: a broker's trouble never
// stops live inference.
type runningBridge struct {
	cfg    config.Bridge
	cancel context.CancelFunc
	done   chan struct{}
}

// stop ends the bridge and waits for it: what it took from the queue and
// did not answer goes back to the queue (the brokers redeliver it).
func (rb *runningBridge) stop() {
	rb.cancel()
	<-rb.done
}

func (s *Server) startBridge(pool string, b config.Bridge) *runningBridge {
	ctx, cancel := context.WithCancel(context.Background()) // stopped by rb.stop
	rb := &runningBridge{cfg: b, cancel: cancel, done: make(chan struct{})}
	o := bridge.Options{
		Exec: http.HandlerFunc(s.runJob), Validate: s.validateJob, Admit: s.admitJob,
		Pool: pool, Tenant: b.Tenant, Priority: jobs.Priority(b.Priority), Path: b.Path,
		Concurrency: b.Concurrency, MaxAttempts: b.MaxAttempts, Logger: s.logger.With("pool", pool),
	}
	go func() {
		defer close(rb.done)
		var err error
		switch {
		case b.AMQP != nil:
			err = bridge.RunAMQP(ctx, bridge.AMQP{URL: b.AMQP.URL, Queue: b.AMQP.Queue, DeadLetter: b.AMQP.DeadLetter}, o)
		case b.Kafka != nil:
			err = bridge.RunKafka(ctx, bridge.Kafka{Brokers: b.Kafka.Brokers, Topic: b.Kafka.Topic, ResultsTopic: b.Kafka.ResultsTopic, Group: b.Kafka.Group, DeadLetterTopic: b.Kafka.DeadLetterTopic}, o)
		}
		if err != nil {
			s.logger.Error("queue bridge stopped; the pool still serves live traffic", "pool", pool, "err", err)
		}
	}()
	return rb
}

// syncBridgesLocked makes the running bridges those cfg asks for: a bridge
// whose block is unchanged keeps running, a changed one is replaced (the
// old one stops in the background, its unanswered messages redelivered to
// the new one), one whose pool or block left is stopped. It does nothing
// once stopBridges ran.
func (s *Server) syncBridgesLocked(cfg *config.Config) {
	if s.bridges == nil {
		return
	}
	for i := range cfg.Pools {
		pc := &cfg.Pools[i]
		if pc.Bridge == nil {
			continue
		}
		rb, ok := s.bridges[pc.Name]
		if ok && reflect.DeepEqual(rb.cfg, *pc.Bridge) {
			continue
		}
		if ok {
			s.removed.Go(rb.stop)
		}
		s.bridges[pc.Name] = s.startBridge(pc.Name, *pc.Bridge)
	}
	for name, rb := range s.bridges {
		if pc := cfg.PoolByName(name); pc == nil || pc.Bridge == nil {
			delete(s.bridges, name)
			s.removed.Go(rb.stop)
		}
	}
}

// stopBridges stops every bridge, for shutdown, and waits for them; no
// reload starts one after it.
func (s *Server) stopBridges() {
	s.mu.Lock()
	running := s.bridges
	s.bridges = nil
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, rb := range running {
		wg.Go(rb.stop)
	}
	wg.Wait()
}
