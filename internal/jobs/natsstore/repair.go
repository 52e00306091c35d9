package natsstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-ai/sluice/internal/jobs"
)

// How the store survives damaged files.
//
// The embedded store keeps JetStream's files in data_dir. A crash, a full
// disk or an operator's mistake can truncate any of them. JetStream
// recovers what it can of a damaged stream by itself (it rebuilds the
// index from the message blocks and drops a torn tail), so what remains
// to the store is:
//
//   - a consumer whose state file cannot be read: the server refuses to
//     load it, and refuses to create it again over the same files.
//     openConsumer deletes it and creates it afresh. On a work-queue
//     stream a consumer's state only says which entries are out on lease
//     (acked entries are gone from the stream), so a fresh consumer
//     delivers every entry still queued, leased ones included: the jobs
//     whose attempts ran when the gateway stopped run again, as after a
//     lease expiry. Nothing is lost.
//   - records that went back in time: a torn tail of the records bucket
//     loses the latest revisions, so a job that finished reads queued or
//     running again while its queue entry was acked long ago. Nothing would
//     ever deliver it: it would stay queued forever. Reconcile finds every
//     record that is not final and has no queue entry and queues it again.
//     A queued job then runs; a running one is delivered as if its lease
//     had expired (its interrupted attempt counts, and the last one allowed
//     fails the job). The job's result, if it had one, was in the lost
//     revision: running it again is the at-least-once guarantee the job
//     system gives anyway, and the alternative is a job that never ends.
//   - records lost entirely: nothing names them any more; their jobs are
//     404. Their queue entries, if any, are acked when delivered (a stale
//     entry, see recordFromMessage).
//
// Whatever cannot be repaired (a stream or bucket that cannot be created,
// a consumer that cannot be created even afresh) makes Open fail with
// jobs.ErrStoreUnavailable, and the gateway runs without jobs.

// openConsumer creates or updates a durable consumer. If the server cannot
// load or create it (its stored state is damaged), it deletes the consumer
// (through the API, and through removeConsumer for what the API cannot
// reach) and creates it again.
func (s *Store) openConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig, removeConsumer removeConsumerFunc) (jetstream.Consumer, error) {
	c, err := s.js.CreateOrUpdateConsumer(ctx, stream, cfg)
	if err == nil {
		return c, nil
	}
	if ctx.Err() != nil || errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) {
		return nil, fmt.Errorf("create consumer %s/%s: %w", stream, cfg.Durable, err)
	}
	s.log.Warn("job store: a consumer cannot be loaded; deleting it and creating it again (jobs it had out on lease are delivered again)",
		"stream", stream, "consumer", cfg.Durable, "err", err)
	if derr := s.js.DeleteConsumer(ctx, stream, cfg.Durable); derr != nil && !errors.Is(derr, jetstream.ErrConsumerNotFound) {
		s.log.Debug("job store: delete damaged consumer", "consumer", cfg.Durable, "err", derr)
	}
	if removeConsumer != nil {
		if rerr := removeConsumer(stream, cfg.Durable); rerr != nil {
			return nil, fmt.Errorf("create consumer %s/%s: %w (repair: %w)", stream, cfg.Durable, err, rerr)
		}
	}
	c, rerr := s.js.CreateOrUpdateConsumer(ctx, stream, cfg)
	if rerr != nil {
		return nil, fmt.Errorf("create consumer %s/%s: %w (created again: %w)", stream, cfg.Durable, err, rerr)
	}
	s.log.Warn("job store: consumer created again", "stream", stream, "consumer", cfg.Durable)
	return c, nil
}

// Reconciled is what Reconcile found and did.
type Reconciled struct {
	// Unfinished counts the records that were queued or running.
	Unfinished int
	// Requeued lists the jobs queued again because their queue entry was
	// gone.
	Requeued []string
}

// reconcileTimeout bounds the reconciliation at start.
const reconcileTimeout = 5 * time.Minute

func (s *Store) reconcileInBackground(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, reconcileTimeout)
	defer cancel()
	r, err := s.Reconcile(ctx)
	switch {
	case err != nil && ctx.Err() == nil:
		s.log.Warn("job store: reconciling records with the queue", "err", err)
	case len(r.Requeued) > 0:
		s.log.Warn("job store: queued again jobs whose queue entry was lost (their records were not final)",
			"jobs", len(r.Requeued), "first", r.Requeued[:min(len(r.Requeued), 10)])
	}
}

// Reconcile queues again every job whose record is not final (queued or
// running) but which has no entry on the queue, so that no damage to the
// store's files can leave a job unfinished forever (see the comment at the
// top of this file). Open runs it in the background; it is safe to run
// while gateways use the store, and more than once.
//
// It reads every record, then every queue entry, then reads each candidate
// again: the store writes a final record before acking its entry, so a
// record that is still not final at the end, with the same revision, and
// had no entry during the scan, has none, or is a job never attempted
// whose Create is still in flight (it writes the record and the entry
// together), whose entry the requeue's message ID makes JetStream store
// once.
func (s *Store) Reconcile(ctx context.Context) (Reconciled, error) {
	var out Reconciled
	lister, err := s.kv.ListKeys(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return out, nil
		}
		return out, fmt.Errorf("list records: %w", err)
	}
	var keys []string
	for k := range lister.Keys() {
		if strings.HasPrefix(k, "t") {
			keys = append(keys, k)
		}
	}
	_ = lister.Stop()
	if err := ctx.Err(); err != nil {
		return out, err
	}
	candidates := make(map[string]uint64)
	for _, k := range keys {
		j, err := s.get(ctx, k, false)
		if errors.Is(err, jobs.ErrNotFound) {
			continue
		}
		if err != nil {
			s.log.Warn("job store: unreadable record", "key", k, "err", err)
			continue
		}
		if !j.Status.Final() {
			candidates[k] = j.Revision
		}
	}
	out.Unfinished = len(candidates)
	if len(candidates) == 0 {
		return out, nil
	}
	queued, err := s.queuedKeys(ctx)
	if err != nil {
		return out, err
	}
	for k, rev := range candidates {
		if queued[k] {
			continue
		}
		e, err := s.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("read record %s: %w", k, err)
		}
		j, _, err := s.decode(ctx, e.Value(), false)
		if err != nil || j.Status.Final() || e.Revision() != rev {
			continue
		}
		if err := s.requeueRecord(ctx, j, k, e.Value(), rev); err != nil {
			return out, fmt.Errorf("queue job %s again: %w", j.ID, err)
		}
		out.Requeued = append(out.Requeued, j.ID)
		s.announce(jobs.Event{Kind: jobs.EventEnqueued, ID: j.ID, Priority: j.Priority})
	}
	return out, nil
}

// requeueRecord queues job (record key, encoding val at revision rev)
// again. The record's encoding is the queue entry's (Create publishes the
// same bytes). The message ID lets a concurrent reconciliation of the same
// revision add no second entry. A job never attempted gets the ID of the
// entry its Create publishes, as Create stores its record and its entry
// together: one in flight during the scan is then stored once. If that ID
// names an entry removed since (within the deduplication window), the job
// is queued under the revision's ID after all.
func (s *Store) requeueRecord(ctx context.Context, job *jobs.Job, key string, val []byte, rev uint64) error {
	again := fmt.Sprintf("requeue.%s.%d", job.ID, rev)
	if job.Status != jobs.StatusQueued || job.Attempts > 0 {
		return s.enqueue(ctx, job, key, val, again)
	}
	ack, err := s.js.PublishMsg(ctx, s.queueMsg(job, key, val), jetstream.WithMsgID(job.ID))
	if err != nil || !ack.Duplicate {
		return err
	}
	_, err = s.queue.GetMsg(ctx, ack.Sequence)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return s.enqueue(ctx, job, key, val, again)
	}
	return err
}

// queuedKeys returns the record keys of every entry on the queue stream.
func (s *Store) queuedKeys(ctx context.Context) (map[string]bool, error) {
	info, err := s.queue.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("queue info: %w", err)
	}
	keys := make(map[string]bool, info.State.Msgs)
	if info.State.Msgs == 0 {
		return keys, nil
	}
	subject := s.opt.Name + ".q.>"
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; {
		m, err := s.queue.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read queue entry %d: %w", seq, err)
		}
		if key, err := s.messageKey(ctx, m.Header, m.Data); err == nil {
			keys[key] = true
		}
		seq = m.Sequence + 1
	}
	return keys, nil
}
