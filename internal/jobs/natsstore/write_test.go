package natsstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-ai/sluice/internal/jobs"
	"github.com/sluice-ai/sluice/internal/jobs/jobstest"
)

// openTestStore opens a store on an embedded server; reopen opens it again
// on the same connection (creating streams deleted since).
func openTestStore(t *testing.T, lease time.Duration) (s *Store, reopen func() *Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := StartEmbedded(ctx, t.TempDir(), jobstest.TestLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	nc, err := e.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	reopen = func() *Store {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s, err := Open(ctx, nc, Options{Lease: lease, Logger: jobstest.TestLogger()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	return reopen(), reopen
}

func testJob(t *testing.T) *jobs.Job {
	t.Helper()
	id, err := jobs.NewID()
	if err != nil {
		t.Fatal(err)
	}
	return &jobs.Job{
		ID: id, Tenant: "a", Pool: "chat", Priority: jobs.PriorityNormal, Status: jobs.StatusQueued,
		CreatedAt: time.Now(),
		Request:   jobs.Request{Method: "POST", Path: "/v1/embeddings", Body: []byte(`{"model":"sim"}`)},
	}
}

func queueLength(t *testing.T, s *Store) uint64 {
	t.Helper()
	info, err := s.queue.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// TestCreateWithoutQueue: a submission whose queue message cannot be
// stored fails and leaves no record behind (a retry with its idempotency
// key would otherwise be given a job that never runs).
func TestCreateWithoutQueue(t *testing.T) {
	ctx := context.Background()
	s, _ := openTestStore(t, time.Minute)
	if err := s.js.DeleteStream(ctx, s.opt.Name+"_queue"); err != nil {
		t.Fatal(err)
	}
	job := testJob(t)
	if _, _, err := s.Create(ctx, job); err == nil {
		t.Fatal("Create succeeded without a queue")
	}
	if _, err := s.Get(ctx, job.Tenant, job.ID); !errors.Is(err, jobs.ErrNotFound) {
		t.Fatalf("the record of the job not queued: %v, want ErrNotFound", err)
	}
}

// TestReconcileDuringCreate: Create stores a record and its queue message
// together, so a reconciliation may see the record and not yet the
// message. The job is queued once all the same.
func TestReconcileDuringCreate(t *testing.T) {
	ctx := context.Background()
	s, _ := openTestStore(t, time.Minute)
	job := testJob(t)
	val, err := s.encode(ctx, job, true)
	if err != nil {
		t.Fatal(err)
	}
	key := recordKey(job.Tenant, job.ID)
	if _, err := s.kv.Create(ctx, key, val); err != nil {
		t.Fatal(err)
	}
	// Open reconciles in the background too: either may queue it.
	if _, err := s.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	// The message of the Create in flight, stored after the scan.
	if err := s.enqueue(ctx, job, key, val, job.ID); err != nil {
		t.Fatal(err)
	}
	if n := queueLength(t, s); n != 1 {
		t.Fatalf("%d queue messages, want 1", n)
	}
}

// TestReconcileAfterRemovedMessage: the queue message of a job never
// attempted was removed within the deduplication window; the job is
// queued again all the same.
func TestReconcileAfterRemovedMessage(t *testing.T) {
	ctx := context.Background()
	s, _ := openTestStore(t, time.Minute)
	job := testJob(t)
	if _, _, err := s.Create(ctx, job); err != nil {
		t.Fatal(err)
	}
	info, err := s.queue.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.queue.DeleteMsg(ctx, info.State.LastSeq); err != nil {
		t.Fatal(err)
	}
	// Open reconciles in the background too: either may queue it.
	if _, err := s.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if n := queueLength(t, s); n != 1 {
		t.Fatalf("%d queue messages, want 1", n)
	}
}

// TestAckWaitsForIndex: a finished job's queue message is not acked while
// its expiry-index entry is not stored; the redelivery indexes it and is
// acked.
func TestAckWaitsForIndex(t *testing.T) {
	ctx := context.Background()
	const lease = 500 * time.Millisecond
	s, reopen := openTestStore(t, lease)
	job := testJob(t)
	if _, _, err := s.Create(ctx, job); err != nil {
		t.Fatal(err)
	}
	ds := fetchOne(t, s)
	if err := s.js.DeleteStream(ctx, s.opt.Name+"_done"); err != nil {
		t.Fatal(err)
	}
	d := ds[0]
	d.Job.Status = jobs.StatusSucceeded
	d.Job.FinishedAt = time.Now()
	if err := s.Update(ctx, d.Job); err != nil {
		t.Fatal(err)
	}
	s.index.mu.Lock()
	e := s.index.pending[recordKey(job.Tenant, job.ID)]
	s.index.mu.Unlock()
	_ = s.Ack(ctx, d) // an error or nothing, depending on how soon the index failed
	for resolved := false; !resolved; {
		time.Sleep(10 * time.Millisecond)
		s.index.mu.Lock()
		resolved = e.done
		s.index.mu.Unlock()
	}
	if e.err == nil {
		t.Fatal("the index entry was stored without its stream")
	}
	s = reopen()        // the N_done stream again
	ds = fetchOne(t, s) // once the lease lapsed
	if ds[0].Job.Status != jobs.StatusSucceeded {
		t.Fatalf("redelivered job is %s", ds[0].Job.Status)
	}
	if err := s.Ack(ctx, ds[0]); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := s.Counts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if c.ByStatus[jobs.StatusSucceeded] == 1 && queueLength(t, s) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("counts %v, %d queue messages; want the job indexed and acked", c.ByStatus, queueLength(t, s))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fetchOne fetches until one delivery comes.
func fetchOne(t *testing.T, s *Store) []*jobs.Delivery {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ds, err := s.Fetch(context.Background(), jobs.PriorityNormal, 1)
		if err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			t.Fatal(err)
		}
		if len(ds) == 1 {
			return ds
		}
		if time.Now().After(deadline) {
			t.Fatal("no delivery")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestIdempotentRetryOfARecordWithoutMessage: a submission died between
// storing its record and its queue message. A retry with its idempotency
// key is handed the job, which is queued (once) so that it runs.
func TestIdempotentRetryOfARecordWithoutMessage(t *testing.T) {
	ctx := context.Background()
	s, _ := openTestStore(t, time.Minute)
	job := testJob(t)
	job.IdempotencyKey = "k"
	if _, err := s.kv.Create(ctx, idemKey(job.Tenant, job.IdempotencyKey), []byte(job.ID)); err != nil {
		t.Fatal(err)
	}
	val, err := s.encode(ctx, job, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.kv.Create(ctx, recordKey(job.Tenant, job.ID), val); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		retry := testJob(t)
		retry.IdempotencyKey = "k"
		got, created, err := s.Create(ctx, retry)
		if err != nil || created || got.ID != job.ID {
			t.Fatalf("retry: %v %v %v, want job %s", got, created, err, job.ID)
		}
		if n := queueLength(t, s); n != 1 {
			t.Fatalf("%d queue messages, want 1", n)
		}
	}
}

// TestDeliveryOfAnExpiredJob: a queue message delivered again after its
// job's record is gone (a job canceled while queued and expired before any
// dispatcher took its entry) comes without a job, for the dispatcher to
// ack, and the store goes on.
func TestDeliveryOfAnExpiredJob(t *testing.T) {
	ctx := context.Background()
	s, _ := openTestStore(t, time.Minute)
	job := testJob(t)
	if _, _, err := s.Create(ctx, job); err != nil {
		t.Fatal(err)
	}
	if err := s.Requeue(ctx, fetchOne(t, s)[0], 0); err != nil {
		t.Fatal(err)
	}
	if err := s.kv.Delete(ctx, recordKey(job.Tenant, job.ID)); err != nil {
		t.Fatal(err)
	}
	d := fetchOne(t, s)[0]
	if d.Job != nil {
		t.Fatalf("delivered %+v, want no job", d.Job)
	}
	if err := s.Ack(ctx, d); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for queueLength(t, s) != 0 { // the ack is sent without waiting
		if time.Now().After(deadline) {
			t.Fatalf("%d queue messages after the ack, want 0", queueLength(t, s))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
