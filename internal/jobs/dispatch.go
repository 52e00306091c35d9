package jobs

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"time"
)

// allQueues is the maybeWork mask of every priority.
const allQueues = 1<<3 - 1 // one bit per entry of Priorities

// dispatch takes jobs from the queues while this Service has free slots,
// until ctx ends. It looks at a queue when a job was announced on it, when
// a fetch from it filled the slots asked for (more may wait), and at every
// queue every pollInterval (leases that lapsed, retries that came due on
// another replica). opsCtx bounds store operations and runCtx attempts;
// both outlive ctx.
func (s *Service) dispatch(ctx, opsCtx, runCtx context.Context) {
	// The poll is real time: leases and delays are kept by the store.
	poll := time.NewTicker(pollInterval)
	defer poll.Stop()
	var p picker
	s.maybeWork.Store(allQueues) // jobs may wait from before
	woken := false
	// A store may make an announced job visible to fetches a moment late
	// (JetStream signals its consumers asynchronously): a wake that finds
	// less than announced looks once more shortly after.
	var recheck <-chan time.Time
	for {
		free := s.opt.Concurrency - int(s.busy.Load())
		if free <= 0 || s.maybeWork.Load() == 0 {
			select {
			case <-ctx.Done():
				return
			case <-s.slotFreed:
			case <-s.wake:
				woken = true
			case <-recheck:
				recheck = nil
				s.maybeWork.Store(allQueues)
			case <-poll.C:
				s.maybeWork.Store(allQueues)
			}
			continue
		}
		if ctx.Err() != nil {
			return
		}
		n, err := s.fetchBatch(opsCtx, runCtx, &p, free)
		if err != nil {
			s.log.Warn("dispatch", "err", err)
			s.maybeWork.Store(0) // until the next poll
		}
		if n < free && woken && err == nil && recheck == nil {
			recheck = time.After(recheckDelay)
		}
		woken = false
	}
}

// fetchBatch leases up to n jobs from the queues that may hold work, the
// priorities owed a turn first, then strictly by priority, and starts
// them. A queue that returns fewer jobs than asked is marked empty.
func (s *Service) fetchBatch(ctx, runCtx context.Context, p *picker, n int) (int, error) {
	got := 0
	take := func(pr Priority, max int) error {
		bit := uint32(1) << pr.rank()
		if s.maybeWork.Load()&bit == 0 {
			p.took(pr, 0) // known empty: nothing starves there
			return nil
		}
		// Cleared before the fetch, so that an announcement racing with
		// it sets it again.
		s.maybeWork.And(^bit)
		fctx, cancel := context.WithTimeout(ctx, opTimeout)
		ds, err := s.store.Fetch(fctx, pr, max)
		cancel()
		if err != nil {
			return fmt.Errorf("fetch %s jobs: %w", pr, err)
		}
		if len(ds) == max {
			s.maybeWork.Or(bit) // more may wait
		}
		p.took(pr, len(ds))
		for _, d := range ds {
			s.start(ctx, runCtx, d)
		}
		got += len(ds)
		return nil
	}
	for _, pr := range p.due() {
		if got >= n {
			return got, nil
		}
		if err := take(pr, 1); err != nil {
			return got, err
		}
	}
	for _, pr := range Priorities {
		if got >= n {
			break
		}
		if err := take(pr, n-got); err != nil {
			return got, err
		}
	}
	return got, nil
}

// start handles d on its own goroutine, in a dispatch slot.
func (s *Service) start(ctx, runCtx context.Context, d *Delivery) {
	s.busy.Add(1)
	s.hold(d)
	s.handlers.Add(1)
	go func() {
		defer s.handlers.Done()
		defer s.freeSlot()
		s.handle(ctx, runCtx, d)
	}()
}

func (s *Service) freeSlot() {
	s.busy.Add(-1)
	select {
	case s.slotFreed <- struct{}{}:
	default:
	}
}

// handle decides what a delivery needs and does it: run an attempt, record
// a cancellation or an exhausted job, send a pending callback, or drop a
// stale duplicate. A conflicting update means the job changed meanwhile;
// handle then decides again on the fresh record.
func (s *Service) handle(ctx, runCtx context.Context, d *Delivery) {
	job := d.Job
	for {
		if job == nil {
			// The job was deleted; this entry is a stale duplicate.
			s.ack(ctx, d)
			return
		}
		d.Job = job
		var err error
		switch {
		case job.Status.Final():
			s.ended(ctx, d)
			return
		case s.running(job.ID):
			// Our own lease lapsed and came back to us while the attempt
			// still runs here; that attempt keeps the entry alive and acks it.
			s.drop(d)
			return
		case job.CancelRequested:
			err = s.finish(ctx, d, job, StatusCanceled, "canceled", nil, "")
		case job.Attempts >= s.opt.MaxAttempts:
			// The last attempt's holder died before recording an outcome.
			msg := fmt.Sprintf("attempt %d of %d was interrupted", job.Attempts, s.opt.MaxAttempts)
			err = s.finish(ctx, d, job, StatusFailed, msg, job.Result, "")
		default:
			if s.opt.Admit == nil {
				err = s.attempt(ctx, runCtx, d, job, nil)
				break
			}
			release, wait, ok := s.opt.Admit(runCtx, job)
			if !ok {
				// Over the tenant's limits: the job waits its turn like a
				// live request would, without spending an attempt.
				s.metrics.admissionDeferred.Inc()
				s.requeue(ctx, d, max(wait, 100*time.Millisecond))
				return
			}
			err = s.attempt(ctx, runCtx, d, job, release)
		}
		if err == nil {
			return
		}
		if !errors.Is(err, ErrConflict) && !errors.Is(err, ErrNotFound) {
			// The store is unreachable: the lease lapses and the job is
			// delivered again.
			s.log.Warn("handle job", "job", job.ID, "err", err)
			s.drop(d)
			return
		}
		job, err = s.store.Get(ctx, job.Tenant, job.ID)
		if errors.Is(err, ErrNotFound) {
			job = nil
		} else if err != nil {
			s.log.Warn("reread job", "job", d.Job.ID, "err", err)
			s.drop(d)
			return
		}
	}
}

// attempt claims job for a new attempt (a compare-and-set to running with
// a fresh run ID), runs it and records the outcome. It returns an error only
// if the claim failed.
func (s *Service) attempt(ctx, runCtx context.Context, d *Delivery, job *Job, release func(tokens int64)) error {
	tokens := int64(-1)
	if release != nil {
		defer func() { release(tokens) }()
	}
	runID := rand.Text()
	first := job.Attempts == 0
	// Registered before the claim, so a cancel announced right after the
	// claim finds the attempt.
	attemptCtx, cancel := context.WithCancelCause(runCtx)
	defer cancel(nil)
	job.Status = StatusRunning
	job.Attempts++
	job.StartedAt = s.clock.Now()
	job.RunID = runID
	r := &run{cancel: cancel, tenant: job.Tenant}
	s.mu.Lock()
	if s.runs[job.ID] != nil {
		// Another delivery of this job is being attempted here.
		s.mu.Unlock()
		s.drop(d)
		return nil
	}
	s.runs[job.ID] = r
	if d.FirstDelivery && first {
		// Written late (claim.go); registered under s.mu so that a cancel
		// here finds it.
		r.claim = s.claimLater(ctx, job, cancel)
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.runs, job.ID)
		s.mu.Unlock()
	}()

	if r.claim == nil {
		if err := s.store.Update(ctx, job); err != nil {
			return err
		}
	}
	d.Job = job
	if first {
		wait := job.StartedAt.Sub(job.CreatedAt).Seconds()
		s.metrics.queueWait.Observe(wait)
		s.queueWait.add(wait)
	}
	out := s.run(attemptCtx, job)
	if out.result != nil {
		tokens = out.result.tokens()
	}
	if r.claim != nil {
		job.Revision = r.claim.end()
	}
	s.settle(ctx, d, job, out)
	return nil
}

// run is an attempt under way on this Service.
type run struct {
	cancel context.CancelCauseFunc
	tenant string
	claim  *claim // its running record, if written late; nil if written
}

// ended ends a delivery of a job already final: a duplicate, or a callback
// still to send. Waiters may have missed the announcement if recording it
// failed half-way.
func (s *Service) ended(ctx context.Context, d *Delivery) {
	s.notify(d.Job.ID)
	if d.Job.callbackPending(s.opt.CallbackAttempts) {
		s.queueCallback(ctx, d)
		return
	}
	s.ack(ctx, d)
}

func (s *Service) running(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.runs[id] != nil
}

// outcome is how an attempt ended.
type outcome struct {
	kind    outcomeKind
	result  *Result
	message string
}

type outcomeKind int

const (
	outSucceeded outcomeKind = iota
	outFailed                // permanently: a client error, a response too large
	outRetry                 // a retryable failure
	outCanceled              // the client canceled the job
	outShutdown              // this Service is stopping
)

// run replays job's request through Exec with a capturing writer.
func (s *Service) run(ctx context.Context, job *Job) outcome {
	s.metrics.inFlight.Inc()
	defer s.metrics.inFlight.Dec()
	snapshot := *job
	req, err := attemptRequest(NewContext(ctx, &snapshot), job)
	if err != nil {
		return outcome{kind: outFailed, message: err.Error()}
	}
	cw := newCapture(s.opt.MaxResponseBody)
	start := s.clock.Now()
	perr := s.serve(cw, req)
	took := s.clock.Since(start).Seconds()
	s.metrics.runTime.Observe(took)
	s.runTime.add(took)

	switch cause := context.Cause(ctx); {
	case errors.Is(cause, errJobCanceled):
		return outcome{kind: outCanceled}
	case errors.Is(cause, errShutdown):
		return outcome{kind: outShutdown}
	}
	if perr != nil {
		return outcome{kind: outRetry, message: perr.Error()}
	}
	if cw.tooLarge {
		return outcome{kind: outFailed, message: fmt.Sprintf("response body exceeds %d bytes", s.opt.MaxResponseBody)}
	}
	res := cw.result()
	switch code := res.StatusCode; {
	case retryableStatus(code):
		return outcome{kind: outRetry, result: res, message: fmt.Sprintf("upstream answered %d", code)}
	case code >= 400:
		return outcome{kind: outFailed, result: res, message: fmt.Sprintf("upstream answered %d", code)}
	}
	return outcome{kind: outSucceeded, result: res}
}

// serve calls Exec, turning a panic into an error: http.ErrAbortHandler is
// how a proxy aborts a response it cannot finish.
func (s *Service) serve(w http.ResponseWriter, r *http.Request) (err error) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		if v == http.ErrAbortHandler {
			err = errors.New("response aborted by the gateway")
			return
		}
		s.log.Error("job attempt panicked", "panic", v, "stack", string(debug.Stack()))
		err = fmt.Errorf("attempt panicked: %v", v)
	}()
	s.exec.ServeHTTP(w, r)
	return nil
}

// retryableStatus reports whether an answer with this status may succeed
// if tried again: a timeout, a rate limit, or a server error other than
// 501 Not Implemented and 505 HTTP Version Not Supported. The gateway
// answers 502, 503 and 504 for connection failures, no capacity and
// upstream timeouts.
func retryableStatus(code int) bool {
	switch code {
	case http.StatusRequestTimeout, http.StatusTooManyRequests:
		return true
	case http.StatusNotImplemented, http.StatusHTTPVersionNotSupported:
		return false
	}
	return code >= 500 && code <= 599
}

// attemptRequest builds the request of an attempt of job.
func attemptRequest(ctx context.Context, job *Job) (*http.Request, error) {
	r, err := http.NewRequestWithContext(ctx, job.Request.Method, job.Request.Path, bytes.NewReader(job.Request.Body))
	if err != nil {
		return nil, fmt.Errorf("job request: %w", err)
	}
	r.RequestURI = job.Request.Path
	r.Host = job.Request.Host
	r.Header = job.Request.Header.Clone()
	if r.Header == nil {
		r.Header = make(http.Header)
	}
	return r, nil
}

// settle records the outcome of the attempt that holds job. If the record
// changed meanwhile and the attempt still holds the job (a cancel request
// arrived), it records again on the fresh record; if another attempt took
// the job over, it leaves the outcome to that one.
func (s *Service) settle(ctx context.Context, d *Delivery, job *Job, out outcome) {
	runID := job.RunID
	for {
		var err error
		switch {
		case job.CancelRequested || out.kind == outCanceled:
			err = s.finish(ctx, d, job, StatusCanceled, "canceled", nil, attemptCanceled)
		case out.kind == outShutdown:
			// Not the job's fault: hand it back without counting the attempt.
			job.Status = StatusQueued
			job.Attempts--
			job.RunID = ""
			if err = s.store.Update(ctx, job); err == nil {
				s.metrics.attempts.WithLabelValues(attemptInterrupted).Inc()
				s.requeue(ctx, d, 0)
			}
		case out.kind == outRetry && job.Attempts < s.opt.MaxAttempts:
			job.Status = StatusQueued
			job.RunID = ""
			job.Error = fmt.Sprintf("%s (attempt %d of %d; retrying)", out.message, job.Attempts, s.opt.MaxAttempts)
			if err = s.store.Update(ctx, job); err == nil {
				s.metrics.attempts.WithLabelValues(attemptRetried).Inc()
				s.requeue(ctx, d, backoff(s.opt.RetryBackoff, maxRetryBackoff, job.Attempts))
			}
		case out.kind == outSucceeded:
			err = s.finish(ctx, d, job, StatusSucceeded, "", out.result, attemptSucceeded)
		default:
			msg := out.message
			if out.kind == outRetry {
				msg = fmt.Sprintf("%s after %d attempts", msg, job.Attempts)
			}
			err = s.finish(ctx, d, job, StatusFailed, msg, out.result, attemptFailed)
		}
		if err == nil {
			return
		}
		if !errors.Is(err, ErrConflict) {
			// Unrecorded: the lease lapses and another attempt runs.
			s.log.Warn("record job outcome", "job", job.ID, "err", err)
			s.metrics.attempts.WithLabelValues(attemptInterrupted).Inc()
			s.drop(d)
			return
		}
		cur, gerr := s.store.Get(ctx, job.Tenant, job.ID)
		if gerr == nil && cur.Status.Final() && cur.Attempts < job.Attempts {
			// Canceled before this attempt's late claim was stored: no
			// other attempt holds the job (claim.go).
			s.metrics.attempts.WithLabelValues(attemptCanceled).Inc()
			d.Job = cur
			s.ended(ctx, d)
			return
		}
		if gerr != nil || cur.Status != StatusRunning || cur.RunID != runID {
			s.metrics.attempts.WithLabelValues(attemptInterrupted).Inc()
			s.drop(d)
			return
		}
		job = cur
		d.Job = cur
	}
}

// finish records job in a final state, counts the attempt that ended it
// (attempt is a sluice_job_attempts_total result, or "" if no attempt
// ran), and then sends its callback or acks its delivery. It returns the
// store's error if the record failed.
func (s *Service) finish(ctx context.Context, d *Delivery, job *Job, status Status, msg string, res *Result, attempt string) error {
	job.Status = status
	job.Error = msg
	job.Result = res
	job.FinishedAt = s.clock.Now()
	job.RunID = ""
	if err := s.store.Update(ctx, job); err != nil {
		return err
	}
	d.Job = job
	if attempt != "" {
		s.metrics.attempts.WithLabelValues(attempt).Inc()
	}
	// The store announced it to the other replicas; wake long polls here
	// at once.
	s.notify(job.ID)
	if job.callbackPending(s.opt.CallbackAttempts) {
		s.queueCallback(ctx, d)
		return nil
	}
	s.ack(ctx, d)
	return nil
}

// ack removes d from the queue and stops renewing its lease.
func (s *Service) ack(ctx context.Context, d *Delivery) {
	s.unhold(d)
	if err := s.store.Ack(ctx, d); err != nil {
		s.log.Warn("ack job", "job", d.jobID(), "err", err)
	}
}

// requeue returns d to its queue after delay and stops renewing its lease.
func (s *Service) requeue(ctx context.Context, d *Delivery, delay time.Duration) {
	s.unhold(d)
	if err := s.store.Requeue(ctx, d, delay); err != nil {
		s.log.Warn("requeue job", "job", d.jobID(), "err", err)
		return
	}
	if delay <= 0 {
		s.signalWake(d.Priority)
		return
	}
	// Look at the queue when it is due (stores release delayed entries on
	// their own timers, a little late); other replicas find it by polling.
	time.AfterFunc(delay+requeueSlack+delay/20, func() { s.signalWake(d.Priority) })
}

// drop stops renewing d's lease without acking it: the store delivers it
// again once the lease lapses.
func (s *Service) drop(d *Delivery) { s.unhold(d) }

func (d *Delivery) jobID() string {
	if d.Job == nil {
		return ""
	}
	return d.Job.ID
}

func (s *Service) hold(d *Delivery) {
	s.mu.Lock()
	s.held[d] = struct{}{}
	s.mu.Unlock()
}

func (s *Service) unhold(d *Delivery) {
	s.mu.Lock()
	delete(s.held, d)
	s.mu.Unlock()
}

// keepLeases renews the leases of held deliveries three times per lease,
// in real time like the store's leases, until ctx ends.
func (s *Service) keepLeases(ctx context.Context) {
	every := max(s.store.Lease()/3, 10*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		ds := make([]*Delivery, 0, len(s.held))
		for d := range s.held {
			ds = append(ds, d)
		}
		s.mu.Unlock()
		if len(ds) == 0 {
			continue
		}
		ectx, cancel := context.WithTimeout(ctx, every)
		if err := s.store.Extend(ectx, ds); err != nil {
			s.log.Warn("extend job leases", "n", len(ds), "err", err)
		}
		s.recheckCancels(ectx)
		cancel()
	}
}

// recheckCancels stops the attempts here whose job a client canceled. The
// cancel is announced (EventCancel), but an announcement is fire-and-forget
// on some stores (Redis pub/sub) and is lost while a gateway (re)subscribes;
// the record is not, so each lease extension reads it again.
func (s *Service) recheckCancels(ctx context.Context) {
	s.mu.Lock()
	runs := make(map[string]string, len(s.runs)) // job ID → tenant
	for id, r := range s.runs {
		runs[id] = r.tenant
	}
	s.mu.Unlock()
	for id, tenant := range runs {
		cur, err := s.store.Get(ctx, tenant, id)
		if err == nil && (cur.CancelRequested || cur.Status == StatusCanceled) {
			s.cancelRun(id)
		}
	}
}
