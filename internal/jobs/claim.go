package jobs

import (
	"context"
	"errors"
	"sync"
	"time"
)

// The record of a job delivered for the first time says "running" only
// once its attempt has run for runningWriteDelay.
//
// An attempt used to begin with a compare-and-set of the record to running
// (the claim) and end with another to the outcome. For a short job the
// first write is one of the five or so writes the job costs the store, and
// nobody sees it: the job is queued, then done. So the claim of a first
// delivery is written late: an attempt that ends within runningWriteDelay
// writes its outcome over the queued record and never the claim; a longer
// one writes the claim when the delay is up, and the job shows running from
// then on.
//
// What that changes, and why it is safe:
//   - Ownership is the queue's lease, not the record: no other attempt can
//     take a delivery within its lease, which is far longer than the delay.
//     The outcome's compare-and-set still fails if the record changed.
//   - The record changed while it still said queued only by a cancel
//     (Service.cancel), which writes the job canceled. The late claim then
//     fails, stops the attempt, and the delivery ends like a duplicate of a
//     finished job (settle). A cancel on the gateway that runs the attempt
//     writes the claim first and cancels it as running (flushClaim).
//   - A crash before the claim is written leaves that attempt uncounted. Only
//     the first attempt of a job, on the first delivery of its queue entry
//     (Delivery.FirstDelivery), is claimed late; any other is claimed at
//     once, so a job that kills its gateway is counted from its second
//     attempt on and still ends at MaxAttempts (one attempt later than if
//     every claim were written).
const runningWriteDelay = 200 * time.Millisecond

// claim is an attempt's running record, written late.
type claim struct {
	s      *Service
	ctx    context.Context
	cancel context.CancelCauseFunc // the attempt's
	timer  *time.Timer

	mu      sync.Mutex
	job     Job  // the running record; its Revision is the one stored last
	written bool // the running record is stored
	ended   bool // the attempt ended or lost the job: nothing more is written
}

// claimLater schedules the write of job (running) as the claim of the
// attempt that cancel stops.
func (s *Service) claimLater(ctx context.Context, job *Job, cancel context.CancelCauseFunc) *claim {
	c := &claim{s: s, ctx: ctx, cancel: cancel, job: *job}
	// Real time, like the lease it stays well within (the Service's clock
	// is for what the job API shows).
	c.timer = time.AfterFunc(runningWriteDelay, func() { c.write() })
	return c
}

// write stores the running record unless it is stored already or the
// attempt ended, and reports whether the record changed: written now, or
// found changed by a cancel (the attempt is then stopped).
func (c *claim) write() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.written || c.ended {
		return false
	}
	err := c.s.store.Update(c.ctx, &c.job)
	switch {
	case err == nil:
		c.written = true
		return true
	case errors.Is(err, ErrConflict), errors.Is(err, ErrNotFound):
		// Canceled while it said queued: the outcome is not recorded.
		c.ended = true
		c.cancel(errJobCanceled)
		return true
	default:
		// The outcome's write tries again; if the store is still out, the
		// lease lapses and the job runs again, as with a failed claim.
		c.s.log.Warn("record job as running", "job", c.job.ID, "err", err)
		return false
	}
}

// end stops the late write, waiting for one under way, and returns the
// revision the attempt's outcome is written over: the claim's if it was
// stored, the queued record's if not.
func (c *claim) end() uint64 {
	c.timer.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ended = true
	return c.job.Revision
}

// flushClaim writes now the late claim of the attempt of job id running
// here, if there is one not yet written, and reports whether the record
// changed.
func (s *Service) flushClaim(id string) bool {
	s.mu.Lock()
	r := s.runs[id]
	s.mu.Unlock()
	if r == nil || r.claim == nil {
		return false
	}
	return r.claim.write()
}
