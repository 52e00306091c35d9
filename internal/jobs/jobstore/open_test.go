package jobstore

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/jobs"
	"github.com/sluice-ai/sluice/internal/jobs/jobstest"
	"github.com/sluice-ai/sluice/internal/redistest"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want Spec
		bad  bool
	}{
		{in: "", want: Spec{Kind: Embedded}},
		{in: "embedded", want: Spec{Kind: Embedded}},
		{in: "redis", want: Spec{Kind: Redis}},
		{in: "nats://127.0.0.1:4222", want: Spec{Kind: NATS, URL: "nats://127.0.0.1:4222", Replicas: 1}},
		{in: "nats://a:4222, nats://b:4222?replicas=3", want: Spec{Kind: NATS, URL: "nats://a:4222,nats://b:4222", Replicas: 3}},
		{in: "tls://user:pw@nats.example.com:4222", want: Spec{Kind: NATS, URL: "tls://user:pw@nats.example.com:4222", Replicas: 1}},
		{in: "amqp://guest:guest@127.0.0.1:5672/", want: Spec{Kind: AMQP, URL: "amqp://guest:guest@127.0.0.1:5672/"}},
		{in: "amqps://u:p@mq.example.com/prod?prefix=jobs.eu&heartbeat=5", want: Spec{Kind: AMQP, URL: "amqps://u:p@mq.example.com/prod?heartbeat=5", Prefix: "jobs.eu"}},
		{in: "amqp://", bad: true},
		{in: "amqp://a:5672,b:5672/", bad: true},
		{in: "amqp://h/?prefix=a{b}", bad: true},
		{in: "kafka://127.0.0.1:9092", want: Spec{Kind: Kafka, URL: "127.0.0.1:9092"}},
		{in: "kafka://a:9092, b:9093?partitions=12&prefix=jobs", want: Spec{Kind: Kafka, URL: "a:9092,b:9093", Partitions: 12, Prefix: "jobs"}},
		{in: "kafka://a", bad: true},
		{in: "kafka://a:0", bad: true},
		{in: "kafka://:9092", bad: true},
		{in: "kafka://a:9092?partitions=0", bad: true},
		{in: "kafka://a:9092?acks=1", bad: true},
		{in: "nats://a:4222?replicas=9", bad: true},
		{in: "nats://a:4222?stream=x", bad: true},
		{in: "nats://", bad: true},
		{in: "postgres://db", bad: true},
		{in: "Embedded", bad: true},
	}
	for _, tc := range tests {
		got, err := Parse(tc.in)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v, error %v", tc.in, got, err, tc.want, tc.bad)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "redis", "nats://a:1?replicas=3", "tls://x", "nats://a,b", "amqp://u:p@h:1/v?prefix=x", "kafka://a:1,b:2?partitions=3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		spec, err := Parse(s)
		if err == nil && spec.Kind == NATS && (spec.URL == "" || spec.Replicas < 1) {
			t.Fatalf("Parse(%q) = %+v", s, spec)
		}
		if err == nil && (spec.Kind == AMQP || spec.Kind == Kafka) && (spec.URL == "" || spec.Partitions < 0) {
			t.Fatalf("Parse(%q) = %+v", s, spec)
		}
		if err == nil && spec.Prefix != "" && !validPrefix(spec.Prefix) {
			t.Fatalf("Parse(%q) = %+v: invalid prefix", s, spec)
		}
	})
}

func TestOpen(t *testing.T) {
	ctx := context.Background()
	cfg := &config.Config{DataDir: t.TempDir()}
	s, err := Open(ctx, cfg, jobstest.TestLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	cfg.Jobs.Store = "redis"
	if _, err := Open(ctx, cfg, jobstest.TestLogger()); err == nil {
		t.Fatal("redis store without redis.url opened")
	}
}

func TestOpenBrokerStores(t *testing.T) {
	redisURL := redistest.Start(t).URL()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()

	cfg := &config.Config{DataDir: t.TempDir()}
	cfg.Jobs.Store = "kafka://" + strings.Join(cluster.ListenAddrs(), ",") + "?partitions=2&prefix=open-test"
	if _, err := Open(ctx, cfg, jobstest.TestLogger()); err == nil || !strings.Contains(err.Error(), "redis.url") {
		t.Fatalf("kafka store without redis.url: %v", err)
	}
	cfg.Redis.URL = redisURL
	s, err := Open(ctx, cfg, jobstest.TestLogger())
	if err != nil {
		t.Fatal(err)
	}
	id, _ := jobs.NewID()
	if _, created, err := s.Create(ctx, &jobs.Job{ID: id, Tenant: "t", Pool: "p", Priority: jobs.PriorityNormal, Status: jobs.StatusQueued, CreatedAt: time.Now()}); err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	if got, err := s.Get(ctx, "t", id); err != nil || got.ID != id {
		t.Fatalf("get: %+v %v", got, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// A broker that is down: retried until the context ends, then a clear
	// error naming it.
	cfg.Jobs.Store = "amqp://guest:guest@127.0.0.1:1/"
	short, cancel2 := context.WithTimeout(ctx, 600*time.Millisecond)
	defer cancel2()
	if _, err := Open(short, cfg, jobstest.TestLogger()); err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("amqp store on a closed port: %v", err)
	}
}
