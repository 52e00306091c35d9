package gateway

import (
	"context"
	"net/http"

	"github.com/sluice-ai/sluice/internal/bridge"
	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/jobs"
)

// runBridges feeds pools from their queues (pools[].bridge) until ctx
// ends. A bridge that stops with an error is logged: a broker's trouble
// never stops live inference. Bridges follow the config in force at start;
// a reload that changes one takes effect at the next start.
func (s *Server) runBridges(ctx context.Context, cfg *config.Config) {
	done := make(chan struct{})
	n := 0
	for i := range cfg.Pools {
		pc := &cfg.Pools[i]
		b := pc.Bridge
		if b == nil {
			continue
		}
		o := bridge.Options{
			Exec: http.HandlerFunc(s.runJob), Validate: s.validateJob,
			Pool: pc.Name, Tenant: b.Tenant, Priority: jobs.Priority(b.Priority), Path: b.Path,
			Concurrency: b.Concurrency, MaxAttempts: b.MaxAttempts, Logger: s.logger.With("pool", pc.Name),
		}
		n++
		go func() {
			defer func() { done <- struct{}{} }()
			var err error
			switch {
			case b.AMQP != nil:
				err = bridge.RunAMQP(ctx, bridge.AMQP{URL: b.AMQP.URL, Queue: b.AMQP.Queue, DeadLetter: b.AMQP.DeadLetter}, o)
			case b.Kafka != nil:
				err = bridge.RunKafka(ctx, bridge.Kafka{Brokers: b.Kafka.Brokers, Topic: b.Kafka.Topic, ResultsTopic: b.Kafka.ResultsTopic, Group: b.Kafka.Group, DeadLetterTopic: b.Kafka.DeadLetterTopic}, o)
			}
			if err != nil {
				s.logger.Error("queue bridge stopped; the pool still serves live traffic", "pool", pc.Name, "err", err)
			}
		}()
	}
	for range n {
		<-done
	}
}
