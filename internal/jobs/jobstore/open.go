// Package jobstore opens the job store a configuration names: the
// embedded NATS JetStream store in data_dir (the default), an external
// NATS server or cluster, Redis, RabbitMQ or Kafka (the last two with
// their job records in Redis).
package jobstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/jobs"
	"github.com/sluice-ai/sluice/internal/jobs/amqpstore"
	"github.com/sluice-ai/sluice/internal/jobs/jobrecords"
	"github.com/sluice-ai/sluice/internal/jobs/kafkastore"
	"github.com/sluice-ai/sluice/internal/jobs/natsstore"
	"github.com/sluice-ai/sluice/internal/jobs/redisstore"
)

// Store is a job store that the caller closes after the jobs.Service using
// it.
type Store interface {
	jobs.Store
	io.Closer
}

// Kind is the type of store a jobs.store value names.
type Kind string

// The kinds of store.
const (
	Embedded Kind = "embedded"
	NATS     Kind = "nats"
	Redis    Kind = "redis"
	AMQP     Kind = "amqp"
	Kafka    Kind = "kafka"
)

// Spec is a parsed jobs.store value.
type Spec struct {
	Kind Kind
	// URL is the server of a nats store, without its replicas parameter.
	URL string
	// Replicas is the stream replication of a nats store (?replicas=N).
	Replicas int
	// Prefix names the queues or topics of an amqp or kafka store and the
	// Redis keys of its records (?prefix=NAME); "" is the store's default.
	Prefix string
	// Partitions of the topics a kafka store creates (?partitions=N); 0 is
	// the store's default.
	Partitions int
}

// For amqp:// and kafka:// stores, the URL of an amqp store (with its other
// query parameters, which the AMQP client reads), and the comma-separated
// host:port list of a kafka store's brokers.

// Parse reads a jobs.store value: "" or "embedded", "redis",
// "nats://host:port[, nats://host2:port...][?replicas=N]" (tls:// for
// TLS; replicas sets the replication of the streams in a JetStream
// cluster, default 1), "amqp://user:password@host:5672/vhost[?prefix=P]"
// (amqps:// for TLS), or "kafka://host:9092[,host2:9092][?prefix=P&partitions=N]".
func Parse(store string) (Spec, error) {
	switch {
	case store == "" || store == string(Embedded):
		return Spec{Kind: Embedded}, nil
	case store == string(Redis):
		return Spec{Kind: Redis}, nil
	case strings.HasPrefix(store, "nats://") || strings.HasPrefix(store, "tls://"):
		return parseNATS(store)
	case strings.HasPrefix(store, "amqp://") || strings.HasPrefix(store, "amqps://"):
		return parseAMQP(store)
	case strings.HasPrefix(store, "kafka://"):
		return parseKafka(store)
	}
	return Spec{}, fmt.Errorf("jobs.store %q: want embedded, redis, nats://host:port, amqp://host:port or kafka://host:port", store)
}

func parseNATS(store string) (Spec, error) {
	base, query, _ := strings.Cut(store, "?")
	servers := strings.Split(base, ",")
	for i := range servers {
		servers[i] = strings.TrimSpace(servers[i])
	}
	spec := Spec{Kind: NATS, URL: strings.Join(servers, ","), Replicas: 1}
	q, err := url.ParseQuery(query)
	if err != nil {
		return Spec{}, fmt.Errorf("jobs.store: %w", err)
	}
	for k := range q {
		if k != "replicas" {
			return Spec{}, fmt.Errorf("jobs.store: unknown parameter %q (want replicas)", k)
		}
	}
	if v := q.Get("replicas"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 5 {
			return Spec{}, fmt.Errorf("jobs.store: replicas %q: want 1 to 5", v)
		}
		spec.Replicas = n
	}
	for _, u := range servers {
		if p, err := url.Parse(u); err != nil || p.Host == "" {
			return Spec{}, fmt.Errorf("jobs.store: invalid server URL %q", u)
		}
	}
	return spec, nil
}

// validPrefix is what amqpstore and kafkastore accept as a prefix.
func validPrefix(p string) bool {
	if p == "" || len(p) > 100 {
		return false
	}
	for _, c := range p {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func parseAMQP(store string) (Spec, error) {
	u, err := url.Parse(store)
	if err != nil || u.Host == "" || strings.Contains(u.Host, ",") {
		return Spec{}, fmt.Errorf("jobs.store: invalid RabbitMQ URL %q: want amqp://user:password@host:5672/vhost", amqpstore.Redact(store))
	}
	spec := Spec{Kind: AMQP}
	q := u.Query()
	if q.Has("prefix") {
		spec.Prefix = q.Get("prefix")
		if !validPrefix(spec.Prefix) {
			return Spec{}, fmt.Errorf("jobs.store: prefix %q: want [a-zA-Z0-9._-]+", spec.Prefix)
		}
		q.Del("prefix")
		u.RawQuery = q.Encode()
	}
	spec.URL = u.String()
	return spec, nil
}

func parseKafka(store string) (Spec, error) {
	base, query, _ := strings.Cut(strings.TrimPrefix(store, "kafka://"), "?")
	spec := Spec{Kind: Kafka}
	var brokers []string
	for b := range strings.SplitSeq(base, ",") {
		b = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(b), "kafka://"))
		host, port, err := net.SplitHostPort(b)
		if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
			return Spec{}, fmt.Errorf("jobs.store: invalid Kafka broker %q: want host:port", b)
		}
		brokers = append(brokers, b)
	}
	spec.URL = strings.Join(brokers, ",")
	q, err := url.ParseQuery(query)
	if err != nil {
		return Spec{}, fmt.Errorf("jobs.store: %w", err)
	}
	for k := range q {
		switch k {
		case "prefix":
			spec.Prefix = q.Get(k)
			if !validPrefix(spec.Prefix) {
				return Spec{}, fmt.Errorf("jobs.store: prefix %q: want [a-zA-Z0-9._-]+", spec.Prefix)
			}
		case "partitions":
			n, err := strconv.Atoi(q.Get(k))
			if err != nil || n < 1 || n > 10000 {
				return Spec{}, fmt.Errorf("jobs.store: partitions %q: want 1 to 10000", q.Get(k))
			}
			spec.Partitions = n
		default:
			return Spec{}, fmt.Errorf("jobs.store: unknown parameter %q (want prefix or partitions)", k)
		}
	}
	return spec, nil
}

// Open opens the job store cfg names: embedded keeps it under
// cfg.DataDir/jobs; redis uses cfg.Redis.URL, and so do the records of
// amqp and kafka stores. A RabbitMQ or Kafka that is down is retried with
// backoff until ctx ends.
func Open(ctx context.Context, cfg *config.Config, logger *slog.Logger) (Store, error) {
	spec, err := Parse(cfg.Jobs.Store)
	if err != nil {
		return nil, err
	}
	lease := natsstore.DefaultLease
	switch spec.Kind {
	case Embedded:
		dir := filepath.Join(cfg.DataDir, "jobs")
		s, err := natsstore.OpenEmbedded(ctx, dir, natsstore.Options{Lease: lease, Logger: logger})
		if err != nil {
			return nil, fmt.Errorf("open embedded job store in %s: %w", dir, err)
		}
		return s, nil
	case NATS:
		s, err := natsstore.Dial(ctx, spec.URL, natsstore.Options{Lease: lease, Replicas: spec.Replicas, Logger: logger})
		if err != nil {
			return nil, fmt.Errorf("open nats job store: %w", err)
		}
		return s, nil
	case AMQP, Kafka:
		if cfg.Redis.URL == "" {
			return nil, fmt.Errorf("jobs.store is %s, whose job records live in Redis, but redis.url is empty", spec.Kind)
		}
		prefix := spec.Prefix
		if prefix == "" {
			prefix = amqpstore.DefaultPrefix
		}
		rec, err := jobrecords.Dial(ctx, cfg.Redis.URL, jobrecords.Options{Prefix: prefix, Retention: cfg.Jobs.Retention.D(), Logger: logger})
		if err != nil {
			return nil, fmt.Errorf("open job records: %w", err)
		}
		var s Store
		if spec.Kind == AMQP {
			s, err = amqpstore.Open(ctx, spec.URL, rec, amqpstore.Options{Prefix: prefix, Lease: lease, Logger: logger})
		} else {
			s, err = kafkastore.Open(ctx, strings.Split(spec.URL, ","), rec, kafkastore.Options{
				Prefix: prefix, Lease: lease, Partitions: spec.Partitions, Logger: logger})
		}
		if err != nil {
			rec.Close()
			return nil, fmt.Errorf("open %s job store: %w", spec.Kind, err)
		}
		return s, nil
	default:
		if cfg.Redis.URL == "" {
			return nil, errors.New("jobs.store is redis but redis.url is empty")
		}
		s, err := redisstore.Dial(ctx, cfg.Redis.URL, redisstore.Options{
			Lease:     lease,
			Retention: cfg.Jobs.Retention.D(),
			Logger:    logger,
		})
		if err != nil {
			return nil, fmt.Errorf("open redis job store: %w", err)
		}
		return s, nil
	}
}
