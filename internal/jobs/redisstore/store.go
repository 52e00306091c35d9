// Package redisstore keeps jobs in Redis: job records in hashes, one
// stream per priority read by a consumer group, and Lua scripts that make
// every state change atomic.
//
// Keys, for prefix P (Options.Prefix), all under the hash tag {P} so that
// they share one Redis Cluster slot:
//
//   - {P}:job:<id>, hash: data (the job without bodies), req and res (the
//     bodies), rev (the revision Update compares), status, pool, tenant,
//     idem and tidx (the keys to clean up with the job);
//   - {P}:q:<priority>, stream: one entry per queued job, read with
//     XREADGROUP by the group "dispatch"; an entry idle longer than the
//     lease is taken over with XAUTOCLAIM; acked entries are deleted;
//   - {P}:delayed:<priority>, sorted set: requeued entries by due time (Redis
//     server time), moved back to the stream when due;
//   - {P}:tenant:<base64url(tenant)>, sorted set of the tenant's job IDs
//     (scored 0, ordered by ID, which orders by creation);
//   - {P}:idem:<sha256(tenant, key)>: the job ID holding an idempotency key,
//     SET NX with a TTL of the retention, deleted with the job;
//   - {P}:done, sorted set of finished job IDs by finishing time (expiry);
//   - {P}:counts and {P}:pending, hashes of exact counts by state and of
//     queued jobs by pool, maintained by the scripts;
//   - channel {P}:events for notifications between gateways.
//
// The records, their indexes and counts are the jobrecords package's, the
// same the RabbitMQ and Kafka stores keep; this store adds the queue
// streams, and its own create script, which records a job and queues it in
// one atomic step.
package redisstore

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-ai/sluice/internal/jobs"
	"github.com/sluice-ai/sluice/internal/jobs/jobrecords"
)

// Options configure a Store.
type Options struct {
	// Prefix namespaces the keys; stores that share a prefix share jobs.
	// Default "sluice:jobs".
	Prefix string
	// Lease is how long a delivery stays with a dispatcher that stopped
	// renewing it. Default 30s.
	Lease time.Duration
	// Retention is the lifetime of an idempotency key from submission,
	// renewed when its job finishes; set it to jobs.retention. The janitor
	// deletes keys with their jobs. Default 24h.
	Retention time.Duration
	// Logger receives the store's logs. Default slog.Default().
	Logger *slog.Logger
}

// Defaults of Options.
const (
	DefaultPrefix    = "sluice:jobs"
	DefaultLease     = 30 * time.Second
	DefaultRetention = 24 * time.Hour
)

// group is the consumer group of every queue stream.
const group = "dispatch"

// Store is a jobs.Store on Redis.
type Store struct {
	rdb      redis.UniversalClient
	opt      Options
	log      *slog.Logger
	p        string // "{prefix}:"
	rec      *jobrecords.Records
	consumer string

	mu                sync.Mutex
	reclaim           [3]reclaimState // by priority, as jobs.Priorities
	lastConsumerSweep time.Time
	closeRDB          bool
}

// reclaimState paces XAUTOCLAIM over a queue's pending entries.
type reclaimState struct {
	last   time.Time
	cursor string
}

var _ jobs.Store = (*Store)(nil)

// Open returns a store on rdb, creating the consumer groups. Closing the
// store does not close rdb.
func Open(ctx context.Context, rdb redis.UniversalClient, opts Options) (*Store, error) {
	opts.Prefix = cmp.Or(opts.Prefix, DefaultPrefix)
	if strings.ContainsAny(opts.Prefix, "{}") {
		return nil, fmt.Errorf("redis job store prefix %q: must not contain braces", opts.Prefix)
	}
	if opts.Lease <= 0 {
		opts.Lease = DefaultLease
	}
	if opts.Retention <= 0 {
		opts.Retention = DefaultRetention
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	rec, err := jobrecords.Open(rdb, jobrecords.Options{Prefix: opts.Prefix, Retention: opts.Retention, Logger: opts.Logger})
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	s := &Store{
		rec:      rec,
		rdb:      rdb,
		opt:      opts,
		log:      opts.Logger,
		p:        rec.KeyPrefix(),
		consumer: cmp.Or(host, "sluice") + "-" + strconv.Itoa(os.Getpid()) + "-" + rand.Text()[:8],
	}
	for _, pr := range jobs.Priorities {
		err := rdb.XGroupCreateMkStream(ctx, s.queueKey(pr), group, "0").Err()
		if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
			return nil, fmt.Errorf("create consumer group on %s: %w", s.queueKey(pr), err)
		}
	}
	return s, nil
}

// Dial connects to the Redis at url (redis://[user:password@]host:port/db,
// or rediss:// for TLS) and opens a store; closing the store closes the
// client.
func Dial(ctx context.Context, url string, opts Options) (*Store, error) {
	o, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redis url: %w", err)
	}
	rdb := redis.NewClient(o)
	s, err := Open(ctx, rdb, opts)
	if err != nil {
		rdb.Close()
		return nil, err
	}
	s.closeRDB = true
	return s, nil
}

// Close closes the client if Dial made it.
func (s *Store) Close() error {
	if s.closeRDB {
		return s.rdb.Close()
	}
	return nil
}

// Lease implements jobs.Store.
func (s *Store) Lease() time.Duration { return s.opt.Lease }

func (s *Store) queueKey(p jobs.Priority) string   { return s.p + "q:" + string(p) }
func (s *Store) delayedKey(p jobs.Priority) string { return s.p + "delayed:" + string(p) }

func priorityIndex(p jobs.Priority) int {
	for i, q := range jobs.Priorities {
		if q == p {
			return i
		}
	}
	return 1
}

// Create implements jobs.Store.
func (s *Store) Create(ctx context.Context, job *jobs.Job) (*jobs.Job, bool, error) {
	if !jobs.ValidID(job.ID) {
		return nil, false, fmt.Errorf("create job: invalid id %q", job.ID)
	}
	data, err := jobrecords.Fields(job)
	if err != nil {
		return nil, false, err
	}
	useIdem, idem := "0", s.p+"idem:-"
	if job.IdempotencyKey != "" {
		useIdem, idem = "1", s.rec.IdemKey(job.Tenant, job.IdempotencyKey)
	}
	ev, err := json.Marshal(jobs.Event{Kind: jobs.EventEnqueued, ID: job.ID, Priority: job.Priority})
	if err != nil {
		return nil, false, fmt.Errorf("encode event: %w", err)
	}
	keys := []string{s.rec.JobKey(job.ID), s.rec.TenantKey(job.Tenant), idem, s.queueKey(job.Priority), s.rec.CountsKey(), s.rec.PendingKey()}
	res, err := createScript.Run(ctx, s.rdb, keys,
		job.ID, data, job.Request.Body, job.Tenant, job.Pool, useIdem, s.opt.Retention.Milliseconds(), s.p+"job:",
		s.rec.EventsKey(), ev).Slice()
	if err != nil {
		return nil, false, fmt.Errorf("create job %s: %w", job.ID, err)
	}
	if len(res) != 2 {
		return nil, false, fmt.Errorf("create job %s: unexpected reply %v", job.ID, res)
	}
	if created, _ := res[0].(int64); created == 1 {
		job.Revision = 1
		return job, true, nil
	}
	existing, _ := res[1].(string)
	j, err := s.Get(ctx, job.Tenant, existing)
	if err != nil {
		return nil, false, fmt.Errorf("idempotent job %s: %w", existing, err)
	}
	return j, false, nil
}

// Get implements jobs.Store.
func (s *Store) Get(ctx context.Context, tenant, id string) (*jobs.Job, error) {
	return s.rec.Get(ctx, tenant, id)
}

// List implements jobs.Store: it walks the tenant's index newest first,
// reading records a page at a time until the page is full.
func (s *Store) List(ctx context.Context, q jobs.ListQuery) ([]*jobs.Job, bool, error) {
	return s.rec.List(ctx, q)
}

// Update implements jobs.Store.
func (s *Store) Update(ctx context.Context, job *jobs.Job) error {
	return s.rec.Update(ctx, job)
}

// handle is a Delivery's reference to its stream entry.
type handle struct {
	entry string
	id    string
	pool  string
}

// Fetch implements jobs.Store. Entries whose lease lapsed are reclaimed
// at most four times per lease, resuming the XAUTOCLAIM scan where the
// previous one stopped.
func (s *Store) Fetch(ctx context.Context, p jobs.Priority, max int) ([]*jobs.Delivery, error) {
	i := priorityIndex(p)
	s.mu.Lock()
	rs := s.reclaim[i]
	doReclaim := time.Since(rs.last) >= s.opt.Lease/4
	if doReclaim {
		s.reclaim[i].last = time.Now()
	}
	s.mu.Unlock()
	cursor := cmp.Or(rs.cursor, "0-0")
	reclaim := "0"
	if doReclaim {
		reclaim = "1"
	}
	res, err := fetchScript.Run(ctx, s.rdb, []string{s.queueKey(p), s.delayedKey(p)},
		group, s.consumer, max, reclaim, s.opt.Lease.Milliseconds(), cursor, s.p+"job:").Slice()
	if err != nil {
		return nil, fmt.Errorf("fetch %s queue: %w", p, err)
	}
	if len(res) != 2 {
		return nil, fmt.Errorf("fetch %s queue: unexpected reply %v", p, res)
	}
	if doReclaim {
		next, _ := res[0].(string)
		s.mu.Lock()
		s.reclaim[i].cursor = next
		s.mu.Unlock()
	}
	entries, _ := res[1].([]any)
	out := make([]*jobs.Delivery, 0, len(entries))
	for _, e := range entries {
		f, ok := e.([]any)
		if !ok || len(f) != 7 {
			return out, fmt.Errorf("fetch %s queue: malformed entry %v", p, e)
		}
		h := &handle{}
		h.entry, _ = f[0].(string)
		h.id, _ = f[1].(string)
		h.pool, _ = f[2].(string)
		job, err := jobrecords.Decode(f[3], f[4], f[5], f[6])
		if errors.Is(err, jobs.ErrNotFound) {
			job = nil // a stale entry: the Service acks it
		} else if err != nil {
			return out, fmt.Errorf("fetch %s queue: %w", p, err)
		}
		out = append(out, &jobs.Delivery{Job: job, Priority: p, Handle: h})
	}
	return out, nil
}

func handleOf(d *jobs.Delivery) (*handle, error) {
	h, ok := d.Handle.(*handle)
	if !ok {
		return nil, fmt.Errorf("delivery of another store (%T)", d.Handle)
	}
	return h, nil
}

// Extend implements jobs.Store; entries another consumer took over are
// left alone.
func (s *Store) Extend(ctx context.Context, ds []*jobs.Delivery) error {
	byQueue := make(map[jobs.Priority][]any)
	for _, d := range ds {
		h, err := handleOf(d)
		if err != nil {
			return err
		}
		byQueue[d.Priority] = append(byQueue[d.Priority], h.entry)
	}
	var errs []error
	for p, entries := range byQueue {
		args := append([]any{group, s.consumer}, entries...)
		if err := extendScript.Run(ctx, s.rdb, []string{s.queueKey(p)}, args...).Err(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("extend leases: %w", err)
	}
	return nil
}

// Ack implements jobs.Store; an entry another consumer took over is left
// alone.
func (s *Store) Ack(ctx context.Context, d *jobs.Delivery) error {
	h, err := handleOf(d)
	if err != nil {
		return err
	}
	if err := ackScript.Run(ctx, s.rdb, []string{s.queueKey(d.Priority)}, group, s.consumer, h.entry).Err(); err != nil {
		return fmt.Errorf("ack job %s: %w", h.id, err)
	}
	return nil
}

// Requeue implements jobs.Store; the delay runs on the Redis server's
// clock.
func (s *Store) Requeue(ctx context.Context, d *jobs.Delivery, delay time.Duration) error {
	h, err := handleOf(d)
	if err != nil {
		return err
	}
	err = requeueScript.Run(ctx, s.rdb, []string{s.queueKey(d.Priority), s.delayedKey(d.Priority)},
		group, s.consumer, h.entry, h.id+"|"+h.pool, max(delay, 0).Milliseconds()).Err()
	if err != nil {
		return fmt.Errorf("requeue job %s: %w", h.id, err)
	}
	return nil
}

// Expire implements jobs.Store. It also forgets, about once an hour,
// consumers of gateways that are gone (idle for an hour, nothing pending):
// every gateway process reads as a consumer of its own name.
func (s *Store) Expire(ctx context.Context, before time.Time, max int) (int, error) {
	n, err := s.rec.Expire(ctx, before, max)
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	sweep := time.Since(s.lastConsumerSweep) >= consumerIdle
	if sweep {
		s.lastConsumerSweep = time.Now()
	}
	s.mu.Unlock()
	if sweep {
		s.forgetIdleConsumers(ctx)
	}
	return n, nil
}

// consumerIdle is how long a consumer with nothing pending stays known.
const consumerIdle = time.Hour

func (s *Store) forgetIdleConsumers(ctx context.Context) {
	for _, p := range jobs.Priorities {
		cs, err := s.rdb.XInfoConsumers(ctx, s.queueKey(p), group).Result()
		if err != nil {
			s.log.Debug("list job queue consumers", "err", err)
			return
		}
		for _, c := range cs {
			// A consumer that reads again is recreated by XREADGROUP.
			if c.Pending == 0 && c.Idle >= consumerIdle && c.Name != s.consumer {
				s.rdb.XGroupDelConsumer(ctx, s.queueKey(p), group, c.Name)
			}
		}
	}
}

// Counts implements jobs.Store; the counts are exact (kept by the scripts).
func (s *Store) Counts(ctx context.Context) (jobs.Counts, error) { return s.rec.Counts(ctx) }

// Publish implements jobs.Store with PUBLISH (at most once).
func (s *Store) Publish(ctx context.Context, ev jobs.Event) error { return s.rec.Publish(ctx, ev) }

// Subscribe implements jobs.Store.
func (s *Store) Subscribe(ctx context.Context, fn func(jobs.Event)) error {
	return s.rec.Subscribe(ctx, fn)
}
