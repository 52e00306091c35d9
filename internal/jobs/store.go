package jobs

import (
	"context"
	"errors"
	"time"
)

// Store keeps job records and the priority queues that feed dispatchers.
// Several Services (gateway replicas) may share one store; every method is
// safe for concurrent use. The natsstore and redisstore packages implement
// it and pass the conformance suite in jobstest.
//
// Records are versioned: Create, Get, List and Fetch return jobs with their
// Revision set, and Update is a compare-and-set on it. That is what makes a
// result recorded once even though dispatch is at-least-once.
//
// A lease that expired may already belong to another holder, and not every
// engine can refuse Ack, Requeue or Extend of a stale lease (JetStream acks
// by stream sequence). The Service therefore acks or requeues a delivery
// only while the job record says the delivery's attempt owns the job.
type Store interface {
	// Create records job (status queued, ID set) and enqueues it on the
	// queue of its priority, durably before returning, and announces it
	// (EventEnqueued). If job.IdempotencyKey is set and a retained job of
	// the same tenant holds that key, Create enqueues nothing and returns
	// that job and false; the check and the creation are atomic.
	Create(ctx context.Context, job *Job) (*Job, bool, error)
	// Get returns the job id of tenant, or ErrNotFound, also when the job
	// exists but belongs to another tenant.
	Get(ctx context.Context, tenant, id string) (*Job, error)
	// List returns q.Tenant's jobs, newest first, without result bodies,
	// and whether more matched beyond q.Limit.
	List(ctx context.Context, q ListQuery) ([]*Job, bool, error)
	// Update replaces the stored job if its revision is still job.Revision
	// and sets job.Revision to the new one. It returns ErrConflict if the
	// job changed since it was read and ErrNotFound if it is gone. An
	// update that makes the job final announces it (EventFinished); a store
	// may also announce later updates of a final job.
	Update(ctx context.Context, job *Job) error

	// Fetch leases up to max deliveries from the queue of priority p
	// without waiting: new jobs, jobs whose Requeue delay passed, and jobs
	// whose lease expired. A lease lasts Lease() unless extended.
	Fetch(ctx context.Context, p Priority, max int) ([]*Delivery, error)
	// Extend renews the leases of ds.
	Extend(ctx context.Context, ds []*Delivery) error
	// Ack removes d from the queue.
	Ack(ctx context.Context, d *Delivery) error
	// Requeue returns d to its queue, to be delivered again after delay.
	Requeue(ctx context.Context, d *Delivery, delay time.Duration) error
	// Lease is how long a delivery stays with its holder without Extend.
	Lease() time.Duration

	// Expire deletes up to max jobs that reached a final state before
	// before, with their idempotency keys, and returns how many it deleted.
	Expire(ctx context.Context, before time.Time, max int) (int, error)
	// Counts returns the number of jobs by state and of queued jobs by
	// pool. Stores document how exact they are.
	Counts(ctx context.Context) (Counts, error)

	// Publish sends ev to every subscriber of every store instance sharing
	// this store, best effort.
	Publish(ctx context.Context, ev Event) error
	// Subscribe calls fn for every event published until ctx ends, then
	// returns nil; or returns an error when the subscription broke.
	Subscribe(ctx context.Context, fn func(Event)) error
}

// Delivery is a job leased from a queue.
type Delivery struct {
	// Job is the stored job at delivery time, or nil if the record no
	// longer exists (a stale queue entry).
	Job *Job
	// Priority is the queue the delivery came from.
	Priority Priority
	// Handle is the store's reference to the queue entry.
	Handle any
	// FirstDelivery is set by a store that knows this is the entry's first
	// delivery, so no attempt of it can have started before. The attempt
	// then writes its running record late (claim.go). A store whose Counts
	// come from its records must not set it: it would count the attempt's
	// job as queued until then.
	FirstDelivery bool
}

// ListQuery selects jobs for Store.List.
type ListQuery struct {
	// Tenant whose jobs are listed.
	Tenant string
	// Status keeps only jobs in this state; "" keeps all.
	Status Status
	// Limit is the most jobs returned; it is at least 1.
	Limit int
	// Before, if set, lists only jobs created before the job with this ID
	// (a cursor: the last ID of the previous page).
	Before string
}

// Counts are job counts from Store.Counts.
type Counts struct {
	// ByStatus counts retained jobs by state.
	ByStatus map[Status]int64
	// QueuedByPool counts jobs waiting to run, by pool.
	QueuedByPool map[string]int64
}

// EventKind says what an Event announces.
type EventKind string

// The kinds of Event.
const (
	// EventEnqueued: a job was queued; idle dispatchers look at the queues.
	EventEnqueued EventKind = "enqueued"
	// EventFinished: a job reached a final state; long polls wake.
	EventFinished EventKind = "finished"
	// EventCancel: a client canceled a running job; its dispatcher cancels
	// the attempt.
	EventCancel EventKind = "cancel"
)

// Event is a notification between the Services sharing a store.
type Event struct {
	Kind EventKind `json:"kind"`
	ID   string    `json:"id"`
	// Priority is the queue of an EventEnqueued job.
	Priority Priority `json:"priority,omitempty"`
}

// Errors returned by Store implementations.
var (
	// ErrNotFound: no such job for this tenant.
	ErrNotFound = errors.New("job not found")
	// ErrConflict: the job changed since it was read (Update).
	ErrConflict = errors.New("job changed concurrently")
)
