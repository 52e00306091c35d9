// Package jobstore opens the job store a configuration names: the
// embedded NATS JetStream store in data_dir (the default), an external
// NATS server or cluster, or Redis.
package jobstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/jobs"
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
)

// Spec is a parsed jobs.store value.
type Spec struct {
	Kind Kind
	// URL is the server of a nats store, without its replicas parameter.
	URL string
	// Replicas is the stream replication of a nats store (?replicas=N).
	Replicas int
}

// Parse reads a jobs.store value: "" or "embedded", "redis", or
// "nats://host:port[, nats://host2:port...][?replicas=N]" (tls:// for
// TLS); replicas sets the replication of the streams in a JetStream
// cluster (default 1).
func Parse(store string) (Spec, error) {
	switch {
	case store == "" || store == string(Embedded):
		return Spec{Kind: Embedded}, nil
	case store == string(Redis):
		return Spec{Kind: Redis}, nil
	case strings.HasPrefix(store, "nats://") || strings.HasPrefix(store, "tls://"):
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
	return Spec{}, fmt.Errorf("jobs.store %q: want embedded, redis or nats://host:port", store)
}

// Open opens the job store cfg names: embedded keeps it under
// cfg.DataDir/jobs; redis uses cfg.Redis.URL.
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
