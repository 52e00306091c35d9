package amqpstore_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluice-ai/sluice/internal/jobs"
	"github.com/sluice-ai/sluice/internal/jobs/amqpstore"
	"github.com/sluice-ai/sluice/internal/jobs/amqpstore/amqptest"
	"github.com/sluice-ai/sluice/internal/jobs/jobrecords"
	"github.com/sluice-ai/sluice/internal/jobs/jobstest"
	"github.com/sluice-ai/sluice/internal/redistest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	amqptest.Stop()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "leaked goroutines:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// newNamespace opens stores with a fresh queue prefix on RabbitMQ at url
// and records in the Redis at redisURL.
func newNamespace(url, redisURL string) jobstest.NewNamespace {
	return func(t testing.TB) jobstest.Open {
		prefix := amqptest.Prefix()
		return func(t testing.TB, lease time.Duration) jobstest.Store {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			rec, err := jobrecords.Dial(ctx, redisURL, jobrecords.Options{Prefix: prefix, Logger: jobstest.TestLogger()})
			if err != nil {
				t.Fatal(err)
			}
			s, err := amqpstore.Open(ctx, url, rec, amqpstore.Options{Prefix: prefix, Lease: lease, Logger: jobstest.TestLogger()})
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
	jobstest.Run(t, newNamespace(amqptest.URL(t), redistest.Start(t).URL()))
}

func TestDelayedRequeue(t *testing.T) {
	open := newNamespace(amqptest.URL(t), redistest.Start(t).URL())(t)
	s := open(t, 10*time.Second)
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
	open := newNamespace(amqptest.URL(t), redistest.Start(t).URL())(t)
	s := open(t, 300*time.Millisecond)
	ctx := context.Background()
	id, _ := jobs.NewID()
	if _, _, err := s.Create(ctx, &jobs.Job{ID: id, Tenant: "a", Pool: "chat", Priority: jobs.PriorityNormal, Status: jobs.StatusQueued, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	d := fetchOne(t, s, jobs.PriorityNormal)
	// Extended, it stays.
	for range 4 {
		time.Sleep(100 * time.Millisecond)
		if err := s.Extend(ctx, []*jobs.Delivery{d}); err != nil {
			t.Fatal(err)
		}
	}
	if ds, _ := s.Fetch(ctx, jobs.PriorityNormal, 1); len(ds) != 0 {
		t.Fatal("a renewed delivery was delivered again")
	}
	// Not extended, it comes back; acking the lapsed one does nothing.
	again := fetchOne(t, s, jobs.PriorityNormal)
	if err := s.Ack(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(ctx, again); err != nil {
		t.Fatal(err)
	}
}

func TestDelayBucket(t *testing.T) {
	for _, tc := range []struct{ in, want time.Duration }{
		{0, time.Millisecond},
		{time.Millisecond, time.Millisecond},
		{1500 * time.Microsecond, 2 * time.Millisecond},
		{time.Second, 1024 * time.Millisecond},
		{1100 * time.Millisecond, 1449 * time.Millisecond},
		{time.Minute, 65536 * time.Millisecond},
	} {
		got := amqpstore.DelayBucket(tc.in)
		if got != tc.want || got < tc.in {
			t.Errorf("DelayBucket(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestOpenGivesUpWhenDown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	rec, err := jobrecords.Dial(ctx, redistest.Start(t).URL(), jobrecords.Options{Prefix: "x"})
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	_, err = amqpstore.Open(ctx, "amqp://guest:guest@127.0.0.1:1/", rec, amqpstore.Options{Logger: jobstest.TestLogger()})
	if err == nil {
		t.Fatal("opened a store on a closed port")
	}
	t.Log(err)
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
