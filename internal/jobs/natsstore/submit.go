package natsstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-ai/sluice/internal/jobs"
)

// enqueueAndRecord publishes job's queue message and creates its record
// (val) together, without waiting for one before sending the other, and
// returns the record's revision once both are stored.
//
// Create used to store the message first, so that no record ever lacked
// one. Together, the record may be stored first: Reconcile then queues a
// never-attempted job under the ID the message has (see Reconcile), and a
// message that could not be stored has its record taken back (unqueued).
func (s *Store) enqueueAndRecord(ctx context.Context, job *jobs.Job, key string, val []byte) (uint64, error) {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	queued, err := s.js.PublishMsgAsync(s.queueMsg(job, key, val), jetstream.WithMsgID(job.ID), jetstream.WithStallWait(defaultTimeout))
	if err != nil {
		return 0, fmt.Errorf("enqueue job %s: %w", job.ID, err)
	}
	rec := nats.NewMsg(s.recordSubject(key))
	rec.Data = val
	recorded, err := s.js.PublishMsgAsync(rec, jetstream.WithExpectLastSequencePerSubject(0), jetstream.WithStallWait(defaultTimeout))
	if err != nil {
		// Not sent: the queue message alone makes its record when
		// delivered, as it did before records were written together.
		return 0, fmt.Errorf("record job %s: %w", job.ID, err)
	}
	if _, err := awaitPubAck(ctx, queued); err != nil {
		s.unqueued(key, recorded)
		return 0, fmt.Errorf("enqueue job %s: %w", job.ID, err)
	}
	ack, err := awaitPubAck(ctx, recorded)
	if isWrongLastSequence(err) {
		// The key has an entry: a record (ErrKeyExists) or the delete
		// marker of an expired one, which the bucket's Create writes over.
		return s.kv.Create(ctx, key, val)
	}
	if err != nil {
		return 0, fmt.Errorf("record job %s: %w", job.ID, err)
	}
	return ack.Sequence, nil
}

// unqueued takes back the record of a job whose queue message was not seen
// stored, once it is stored, so that no record waits for a message that
// may never come (a retry with its idempotency key would be given that
// job). If the message was stored after all, its delivery records the job
// again (recordFromMessage).
func (s *Store) unqueued(key string, recorded jetstream.PubAckFuture) {
	// The publish times out on its own (asyncPubAckTimeout).
	var rev uint64
	select {
	case ack := <-recorded.Ok():
		rev = ack.Sequence
	case <-recorded.Err():
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), defaultTimeout)
	defer cancel()
	err := s.kv.Purge(ctx, key, jetstream.LastRevision(rev), jetstream.PurgeTTL(markerTTL))
	if err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !isWrongLastSequence(err) {
		s.log.Warn("take back the record of a job not queued (Reconcile queues it at the next start)", "key", key, "err", err)
	}
}

// ensureQueued publishes again the queue message of a job that a
// submission with its idempotency key is about to be handed, if the job
// may have a record without one: never attempted, and young enough that
// JetStream still de-duplicates its submission's message by ID (then the
// publish stores nothing if that message was stored). Its submission may
// have died, or failed to take the record back, between the two writes;
// older ones are queued by Reconcile.
func (s *Store) ensureQueued(ctx context.Context, job *jobs.Job) error {
	if job.Status != jobs.StatusQueued || job.Attempts > 0 || time.Since(job.CreatedAt) > dedupWindow/2 {
		return nil
	}
	key := recordKey(job.Tenant, job.ID)
	e, err := s.kv.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("read job %s: %w", job.ID, err)
	}
	if e.Revision() != job.Revision {
		return nil // taken meanwhile
	}
	if err := s.enqueue(ctx, job, key, e.Value(), job.ID); err != nil {
		return fmt.Errorf("enqueue job %s: %w", job.ID, err)
	}
	return nil
}

// recordSubject is the subject of key's entries in the records bucket.
func (s *Store) recordSubject(key string) string {
	return "$KV." + s.opt.Name + "." + key
}

// awaitPubAck waits for the server's acknowledgement of an asynchronous
// publish.
func awaitPubAck(ctx context.Context, f jetstream.PubAckFuture) (*jetstream.PubAck, error) {
	select {
	case ack := <-f.Ok():
		return ack, nil
	case err := <-f.Err():
		return nil, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// withDefaultTimeout bounds ctx by defaultTimeout unless it has a deadline.
func withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, defaultTimeout)
}
