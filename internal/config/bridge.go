package config

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Bridge feeds a pool from a message queue: requests consumed from a
// RabbitMQ queue (answers to each message's reply_to) or a Kafka topic
// (answers to a results topic), run through the pool like jobs. Set
// exactly one of AMQP and Kafka.
type Bridge struct {
	// AMQP consumes from RabbitMQ.
	AMQP *BridgeAMQP `yaml:"amqp"`
	// Kafka consumes from Kafka.
	Kafka *BridgeKafka `yaml:"kafka"`
	// Tenant the requests run as (its limits and models apply). Default ""
	// (an open gateway's anonymous tenant).
	Tenant string `yaml:"tenant"`
	// Priority of the requests: high, normal or low. Default low, so that
	// the queue fills spare capacity.
	Priority string `yaml:"priority"`
	// Path is the API path requests go to unless a message's "path"
	// header names another. Default /v1/chat/completions.
	Path string `yaml:"path"`
	// Concurrency is the most requests of the bridge in flight per
	// gateway. Default 16.
	Concurrency int `yaml:"concurrency"`
	// MaxAttempts per message before it is dead-lettered. Default 3.
	MaxAttempts int `yaml:"max_attempts"`
}

// BridgeAMQP is a RabbitMQ source.
type BridgeAMQP struct {
	// URL is amqp://user:password@host:5672/vhost (amqps:// for TLS); write
	// the password as ${VAR}. Required.
	URL string `yaml:"url"`
	// Queue the requests arrive on (declared as a durable quorum queue if
	// missing). Required.
	Queue string `yaml:"queue"`
	// DeadLetter is the queue failed requests go to, with their error.
	// Required.
	DeadLetter string `yaml:"dead_letter"`
}

// BridgeKafka is a Kafka source.
type BridgeKafka struct {
	// Brokers are host:port bootstrap addresses. Required.
	Brokers []string `yaml:"brokers"`
	// Topic the requests arrive on. Required.
	Topic string `yaml:"topic"`
	// ResultsTopic receives answers keyed by the request's key. Required.
	ResultsTopic string `yaml:"results_topic"`
	// Group is the consumer group. Default "sluice-bridge-<pool>".
	Group string `yaml:"group"`
	// DeadLetterTopic receives failed requests, with their error. Required.
	DeadLetterTopic string `yaml:"dead_letter_topic"`
}

func (v *validator) bridge(at string, b *Bridge) {
	switch {
	case b.AMQP == nil && b.Kafka == nil:
		v.addf(at, "set amqp or kafka: where the requests come from")
	case b.AMQP != nil && b.Kafka != nil:
		v.addf(at, "set only one of amqp and kafka")
	}
	switch b.Priority {
	case "", "high", "normal", "low":
	default:
		v.addf(at+".priority", "unknown priority %q; want high, normal or low", b.Priority)
	}
	if b.Path != "" && !strings.HasPrefix(b.Path, "/") {
		v.addf(at+".path", "%q must start with /", b.Path)
	}
	if b.Concurrency < 0 {
		v.addf(at+".concurrency", "must not be negative; 0 means the default, 16")
	}
	if b.MaxAttempts < 0 {
		v.addf(at+".max_attempts", "must not be negative; 0 means the default, 3")
	}
	if a := b.AMQP; a != nil {
		if !strings.HasPrefix(a.URL, "amqp://") && !strings.HasPrefix(a.URL, "amqps://") {
			v.addf(at+".amqp.url", "want amqp://user:password@host:5672/vhost or amqps://…")
		}
		if a.Queue == "" {
			v.addf(at+".amqp.queue", "missing: the queue requests arrive on")
		}
		switch {
		case a.DeadLetter == "":
			v.addf(at+".amqp.dead_letter", "missing: the queue failed requests go to")
		case a.DeadLetter == a.Queue:
			v.addf(at+".amqp.dead_letter", "must differ from queue, or failed requests would come back")
		}
	}
	if k := b.Kafka; k != nil {
		if len(k.Brokers) == 0 {
			v.addf(at+".kafka.brokers", "missing: host:port of at least one broker")
		}
		for i, br := range k.Brokers {
			host, port, err := net.SplitHostPort(br)
			if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
				v.addf(fmt.Sprintf("%s.kafka.brokers[%d]", at, i), "%q: want host:port", br)
			}
		}
		if k.Topic == "" {
			v.addf(at+".kafka.topic", "missing: the topic requests arrive on")
		}
		if k.ResultsTopic == "" {
			v.addf(at+".kafka.results_topic", "missing: the topic answers go to")
		} else if k.ResultsTopic == k.Topic {
			v.addf(at+".kafka.results_topic", "must differ from topic")
		}
		if k.DeadLetterTopic == "" {
			v.addf(at+".kafka.dead_letter_topic", "missing: the topic failed requests go to")
		} else if k.DeadLetterTopic == k.Topic {
			v.addf(at+".kafka.dead_letter_topic", "must differ from topic, or failed requests would come back")
		}
	}
}
