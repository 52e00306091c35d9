package kafkastore_test

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"

	"github.com/sluice-ai/sluice/internal/jobs"
	"github.com/sluice-ai/sluice/internal/jobs/jobrecords"
	"github.com/sluice-ai/sluice/internal/jobs/jobstest"
	"github.com/sluice-ai/sluice/internal/jobs/kafkastore"
	"github.com/sluice-ai/sluice/internal/redistest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "leaked goroutines:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// startKafka runs an in-process Kafka-protocol cluster (kfake) on a free
// port of 127.0.0.1 and returns its addresses.
func startKafka(t testing.TB) []string {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

var prefixes atomic.Int64

// newNamespace opens stores with a fresh prefix on the cluster at brokers
// and records in the Redis at redisURL.
func newNamespace(brokers []string, redisURL string, partitions int) jobstest.NewNamespace {
	return func(t testing.TB) jobstest.Open {
		prefix := fmt.Sprintf("sluice-test.%d.%d", os.Getpid(), prefixes.Add(1))
		return func(t testing.TB, lease time.Duration) jobstest.Store {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			rec, err := jobrecords.Dial(ctx, redisURL, jobrecords.Options{Prefix: prefix, Logger: jobstest.TestLogger()})
			if err != nil {
				t.Fatal(err)
			}
			s, err := kafkastore.Open(ctx, brokers, rec, kafkastore.Options{
				Prefix: prefix, Lease: lease, Partitions: partitions,
				SessionTimeout: 2 * time.Second, Logger: jobstest.TestLogger(),
			})
			if err != nil {
				rec.Close()
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
	}
}

func TestConformance(t *testing.T) {
	jobstest.Run(t, newNamespace(startKafka(t), redistest.Start(t).URL(), 3))
}

func TestDelayedRequeue(t *testing.T) {
	s := newNamespace(startKafka(t), redistest.Start(t).URL(), 1)(t)(t, 10*time.Second)
	ctx := context.Background()
	id, _ := jobs.NewID()
	if _, _, err := s.Create(ctx, &jobs.Job{ID: id, Tenant: "a", Pool: "chat", Priority: jobs.PriorityLow, Status: jobs.StatusQueued, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	d := fetchOne(t, s, jobs.PriorityLow)
	start := time.Now()
	if err := s.Requeue(ctx, d, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	again := fetchOne(t, s, jobs.PriorityLow)
	if waited := time.Since(start); waited < 300*time.Millisecond {
		t.Fatalf("requeued job came back after %s, want at least its 300ms delay", waited)
	}
	if again.Job == nil || again.Job.ID != id {
		t.Fatalf("got %+v", again.Job)
	}
	if err := s.Ack(ctx, again); err != nil {
		t.Fatal(err)
	}
}

func TestLeaseLapses(t *testing.T) {
	s := newNamespace(startKafka(t), redistest.Start(t).URL(), 1)(t)(t, 300*time.Millisecond)
	ctx := context.Background()
	id, _ := jobs.NewID()
	if _, _, err := s.Create(ctx, &jobs.Job{ID: id, Tenant: "a", Pool: "chat", Priority: jobs.PriorityNormal, Status: jobs.StatusQueued, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	d := fetchOne(t, s, jobs.PriorityNormal)
	for range 4 {
		time.Sleep(100 * time.Millisecond)
		if err := s.Extend(ctx, []*jobs.Delivery{d}); err != nil {
			t.Fatal(err)
		}
	}
	if ds, _ := s.Fetch(ctx, jobs.PriorityNormal, 1); len(ds) != 0 {
		t.Fatal("a renewed delivery was delivered again")
	}
	again := fetchOne(t, s, jobs.PriorityNormal)
	if err := s.Ack(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(ctx, again); err != nil {
		t.Fatal(err)
	}
}

func fetchOne(t *testing.T, s jobstest.Store, p jobs.Priority) *jobs.Delivery {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ds, err := s.Fetch(context.Background(), p, 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) == 1 {
			return ds[0]
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("nothing to fetch")
	return nil
}
