package bridge

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Kafka is a Kafka source of requests.
type Kafka struct {
	// Brokers to bootstrap from, host:port. Required.
	Brokers []string
	// Topic the requests arrive on. Required.
	Topic string
	// ResultsTopic receives the answers, keyed by the request's key.
	// Required.
	ResultsTopic string
	// Group is the consumer group of the bridge's gateways. Default
	// "sluice-bridge-<pool>".
	Group string
	// DeadLetterTopic receives failed requests, with the error in their
	// headers. Required.
	DeadLetterTopic string
}

// RunKafka consumes requests from cfg.Topic in consumer group cfg.Group,
// runs each through the gateway, produces its answer to cfg.ResultsTopic
// and commits, until ctx ends. A poll's records (up to Concurrency) run at
// once; their offsets are committed when every answer of the poll was
// produced (acks=all), so a gateway that dies uncommitted has them run
// again by the group member that takes the partition over.
func RunKafka(ctx context.Context, cfg Kafka, o Options) error {
	if err := o.defaults(); err != nil {
		return err
	}
	if len(cfg.Brokers) == 0 || cfg.Topic == "" || cfg.ResultsTopic == "" || cfg.DeadLetterTopic == "" {
		return errors.New("bridge: kafka needs brokers, topic, results_topic and dead_letter_topic")
	}
	if cfg.Group == "" {
		cfg.Group = "sluice-bridge-" + o.Pool
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ClientID("sluice-bridge"),
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(cfg.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(0),
	)
	if err != nil {
		return err
	}
	defer cl.CloseAllowingRebalance()
	o.Logger.Info("kafka bridge consuming", "topic", cfg.Topic, "group", cfg.Group, "pool", o.Pool)
	for {
		fs := cl.PollRecords(ctx, o.Concurrency)
		if ctx.Err() != nil || fs.IsClientClosed() {
			return nil
		}
		fs.EachError(func(topic string, p int32, err error) {
			o.Logger.Warn("kafka bridge: read", "topic", topic, "partition", p, "err", err)
		})
		recs := fs.Records()
		var wg sync.WaitGroup
		var mu sync.Mutex
		complete := true
		for _, r := range recs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if !handleKafka(ctx, cl, cfg, &o, r) {
					mu.Lock()
					complete = false
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if !complete {
			return nil // stopping: the uncommitted records run again
		}
		if len(recs) > 0 {
			if err := cl.CommitRecords(ctx, recs...); err != nil && ctx.Err() == nil {
				o.Logger.Warn("kafka bridge: commit", "err", err)
			}
		}
		cl.AllowRebalance()
	}
}

// handleKafka runs one request and produces its answer (and dead letter),
// retrying the produce until it succeeds; it reports false if the bridge
// is stopping first.
func handleKafka(ctx context.Context, cl *kgo.Client, cfg Kafka, o *Options, r *kgo.Record) bool {
	var path string
	for _, h := range r.Headers {
		if h.Key == HeaderPath {
			path = string(h.Value)
		}
	}
	res := run(ctx, o, r.Value, path)
	if res.aborted {
		return false
	}
	answer := &kgo.Record{Topic: cfg.ResultsTopic, Key: r.Key, Value: res.answerBody(), Headers: []kgo.RecordHeader{
		{Key: HeaderStatus, Value: []byte(strconv.Itoa(res.answerStatus()))},
		{Key: "content-type", Value: []byte(res.contentType())},
	}}
	out := []*kgo.Record{answer}
	if res.err != "" {
		answer.Headers = append(answer.Headers, kgo.RecordHeader{Key: HeaderError, Value: []byte(res.err)})
		dead := &kgo.Record{Topic: cfg.DeadLetterTopic, Key: r.Key, Value: r.Value, Headers: append(append([]kgo.RecordHeader(nil), r.Headers...),
			kgo.RecordHeader{Key: HeaderError, Value: []byte(res.err)},
			kgo.RecordHeader{Key: HeaderAttempts, Value: []byte(strconv.Itoa(res.attempts))},
			kgo.RecordHeader{Key: "source", Value: []byte(r.Topic + "/" + strconv.Itoa(int(r.Partition)) + "@" + strconv.FormatInt(r.Offset, 10))},
		)}
		out = append(out, dead)
	}
	for wait := 250 * time.Millisecond; ; wait = min(2*wait, 10*time.Second) {
		err := cl.ProduceSync(ctx, out...).FirstErr()
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		o.Logger.Warn("kafka bridge: produce answer; retrying", "topic", cfg.ResultsTopic, "in", wait, "err", err)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
	}
}
