package natsstore

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-ai/sluice/internal/jobs"
)

// How a finished job is indexed for expiry.
//
// Update writes the final record and publishes the job's entry on the
// N_done stream without waiting for it to be stored; the dispatcher that
// holds the job acks its queue message right after. The store holds that
// ack back until the entry is stored (index.ackAfter), so a queue message
// is never acked while its job's entry might still be lost: a crash in
// between leaves the message unacked, and its redelivery finds the job
// final and indexes it again (deliver). An entry that could not be stored
// keeps the message unacked the same way, until its lease lapses.

// indexWaitOnClose bounds how long Close waits for index entries in flight
// before it acks their queue messages.
const indexWaitOnClose = time.Second

// index tracks the finished-job entries published and not yet stored, by
// record key, with the queue messages to ack once they are.
type index struct {
	mu      sync.Mutex
	pending map[string]*indexEntry
	// order feeds entries to the goroutine that waits for them, in the
	// order they were published (the order the server stores them).
	order chan *indexEntry
}

type indexEntry struct {
	key    string
	future jetstream.PubAckFuture
	// Under index.mu:
	err  error           // the publish failed (set once resolved)
	done bool            // resolved
	acks []jetstream.Msg // queue messages to ack once stored
}

func newIndex() *index {
	return &index{pending: make(map[string]*indexEntry), order: make(chan *indexEntry, maxAsyncPending)}
}

// publishIndex publishes job's entry on the N_done stream without waiting
// for it to be stored.
func (s *Store) publishIndex(ctx context.Context, job *jobs.Job) error {
	b, err := s.indexEntry(job)
	if err != nil {
		return err
	}
	m := nats.NewMsg(s.opt.Name + ".done." + string(job.Status))
	m.Data = b
	f, err := s.js.PublishMsgAsync(m, jetstream.WithMsgID("done."+job.ID), jetstream.WithStallWait(defaultTimeout))
	if err != nil {
		return fmt.Errorf("index finished job %s: %w", job.ID, err)
	}
	e := &indexEntry{key: recordKey(job.Tenant, job.ID), future: f}
	s.index.mu.Lock()
	s.index.pending[e.key] = e
	s.index.mu.Unlock()
	select {
	case s.index.order <- e:
		return nil
	case <-ctx.Done():
		s.index.forget(e)
		return fmt.Errorf("index finished job %s: %w", job.ID, ctx.Err())
	}
}

// ackAfter acks msg once the index entry of key published last is stored,
// or at once if none is in flight. It reports an error, and leaves msg
// unacked, if that entry could not be stored.
func (x *index) ackAfter(key string, msg jetstream.Msg) error {
	x.mu.Lock()
	e := x.pending[key]
	switch {
	case e == nil:
		x.mu.Unlock()
		return msg.Ack()
	case e.done:
		// Failed: the lease lapses and the redelivery indexes the job.
		delete(x.pending, key)
		x.mu.Unlock()
		return fmt.Errorf("index finished job: %w", e.err)
	}
	e.acks = append(e.acks, msg)
	x.mu.Unlock()
	return nil
}

// drop forgets the entry of key in flight, if any, for a queue message
// that is not acked (requeued): its redelivery indexes the job again if
// it has to.
func (x *index) drop(key string) {
	x.mu.Lock()
	if e := x.pending[key]; e != nil && e.done {
		delete(x.pending, key)
	}
	x.mu.Unlock()
}

func (x *index) forget(e *indexEntry) {
	x.mu.Lock()
	if x.pending[e.key] == e {
		delete(x.pending, e.key)
	}
	x.mu.Unlock()
}

// resolve records the outcome of e's publish and acks the queue messages
// waiting for it if it was stored.
func (x *index) resolve(e *indexEntry, err error) {
	x.mu.Lock()
	e.done, e.err = true, err
	acks := e.acks
	e.acks = nil
	if x.pending[e.key] == e && (err == nil || len(acks) > 0) {
		// A failure no ack waited for is kept for the ack to come.
		delete(x.pending, e.key)
	}
	x.mu.Unlock()
	if err != nil {
		return
	}
	for _, m := range acks {
		_ = m.Ack()
	}
}

// ackIndexed waits for index entries in the order they were published
// and acks the queue messages waiting for them, until ctx ends (then it
// waits at most indexWaitOnClose for those in flight) or the connection
// closes. Queue messages whose entry it did not see stored stay unacked.
func (s *Store) ackIndexed(ctx context.Context) {
	closed := s.nc.StatusChanged(nats.CLOSED)
	defer s.nc.RemoveStatusListener(closed)
	if s.nc.IsClosed() {
		return
	}
	// wait resolves e, or reports false when stop ended or the connection
	// closed first.
	wait := func(stop <-chan struct{}, e *indexEntry) bool {
		select {
		case <-e.future.Ok():
			s.index.resolve(e, nil)
		case err := <-e.future.Err():
			s.log.Warn("index finished job", "key", e.key, "err", err)
			s.index.resolve(e, err)
		case <-stop:
			return false
		case <-closed:
			return false
		}
		return true
	}
	for {
		select {
		case e := <-s.index.order:
			if !wait(ctx.Done(), e) {
				if ctx.Err() != nil {
					s.drainIndex(e, wait)
				}
				return
			}
		case <-ctx.Done():
			s.drainIndex(nil, wait)
			return
		case <-closed:
			return
		}
	}
}

// drainIndex resolves first and the entries queued behind it, for at most
// indexWaitOnClose.
func (s *Store) drainIndex(first *indexEntry, wait func(<-chan struct{}, *indexEntry) bool) {
	ctx, cancel := context.WithTimeout(context.Background(), indexWaitOnClose)
	defer cancel()
	stop := ctx.Done()
	if first != nil && !wait(stop, first) {
		return
	}
	for {
		select {
		case e := <-s.index.order:
			if !wait(stop, e) {
				return
			}
		default:
			return
		}
	}
}

// indexEntry encodes job's N_done message.
func (s *Store) indexEntry(job *jobs.Job) ([]byte, error) {
	e := finishedEntry{Key: recordKey(job.Tenant, job.ID), FinishedAt: job.FinishedAt.UnixNano()}
	if job.IdempotencyKey != "" {
		e.Idem = idemKey(job.Tenant, job.IdempotencyKey)
	}
	if len(job.Request.Body) > s.inline {
		e.Blobs = append(e.Blobs, requestBlob(job.ID))
	}
	if job.Result != nil && len(job.Result.Body) > s.inline {
		e.Blobs = append(e.Blobs, resultBlob(job.ID, job.Result.Body))
	}
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("index finished job %s: %w", job.ID, err)
	}
	return b, nil
}
