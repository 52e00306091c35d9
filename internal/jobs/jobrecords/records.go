// Package jobrecords keeps job records in Redis for the job stores whose
// queue lives in a message broker (amqpstore, kafkastore). A broker is a
// queue or a log, not a database: it has no compare-and-set, no lookup by
// key and no secondary index, and the job system needs all three (a
// result recorded once, GET /v1/jobs/{id}, listing by tenant, expiry by
// finishing time, exact counts). Redis has them, atomically per script,
// and is shared by every gateway of a deployment, so several gateways
// that share a broker also share their records.
//
// Keys, for prefix P, all under the hash tag {P}:
//
//   - {P}:job:<id>, hash: data (the job without bodies), req and res (the
//     bodies), rev (the revision Update compares), status, pool, prio,
//     tenant, idem and tidx (the keys to clean up with the job);
//   - {P}:tenant:<base64url(tenant)>, sorted set of the tenant's job IDs;
//   - {P}:idem:<sha256(tenant, key)>: the job ID holding an idempotency key;
//   - {P}:done, sorted set of finished job IDs by finishing time;
//   - {P}:counts and {P}:pending, exact counts by state and of queued
//     jobs by pool;
//   - {P}:unsent, sorted set of jobs recorded but not yet confirmed on the
//     broker, by creation time: a gateway that died between the record and
//     the publish leaves its job here, and another publishes it;
//   - channel {P}:events for notifications between gateways.
//
// A job is recorded before its queue message is published, so a
// dispatcher never meets a message without its record except for a job
// that was deleted (a stale duplicate).
package jobrecords

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-ai/sluice/internal/jobs"
)

// Options configure Records.
type Options struct {
	// Prefix namespaces the keys; records that share a prefix share jobs.
	// It must not contain braces. Required.
	Prefix string
	// Retention is the lifetime of an idempotency key from submission,
	// renewed when its job finishes; set it to jobs.retention. Default 24h.
	Retention time.Duration
	// Logger receives the logs. Default slog.Default().
	Logger *slog.Logger
}

// DefaultRetention is the default of Options.Retention.
const DefaultRetention = 24 * time.Hour

// Records is the record half of a broker job store.
type Records struct {
	rdb      redis.UniversalClient
	opt      Options
	log      *slog.Logger
	p        string // "{prefix}:"
	closeRDB bool
}

// Open returns records on rdb; Close does not close rdb.
func Open(rdb redis.UniversalClient, opts Options) (*Records, error) {
	if opts.Prefix == "" || strings.ContainsAny(opts.Prefix, "{}") {
		return nil, fmt.Errorf("job records prefix %q: want a non-empty prefix without braces", opts.Prefix)
	}
	if opts.Retention <= 0 {
		opts.Retention = DefaultRetention
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Records{rdb: rdb, opt: opts, log: opts.Logger, p: "{" + opts.Prefix + "}:"}, nil
}

// Dial connects to the Redis at url (redis:// or rediss://) and returns
// records on it; Close closes the client.
func Dial(ctx context.Context, url string, opts Options) (*Records, error) {
	o, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redis url: %w", err)
	}
	rdb := redis.NewClient(o)
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("redis %s: %w", o.Addr, err)
	}
	r, err := Open(rdb, opts)
	if err != nil {
		rdb.Close()
		return nil, err
	}
	r.closeRDB = true
	return r, nil
}

// Close closes the client if Dial made it.
func (r *Records) Close() error {
	if r.closeRDB {
		return r.rdb.Close()
	}
	return nil
}

// KeyPrefix is "{prefix}:", which begins every key. The redis job store,
// whose create script also writes its queue, builds its keys with it and
// the Key methods below.
func (r *Records) KeyPrefix() string { return r.p }

// JobKey, CountsKey, PendingKey and EventsKey name a record's keys, for a
// store's own scripts that write records (see KeyPrefix).
func (r *Records) JobKey(id string) string { return r.p + "job:" + id }

// CountsKey: see JobKey.
func (r *Records) CountsKey() string { return r.p + "counts" }

// PendingKey: see JobKey.
func (r *Records) PendingKey() string { return r.p + "pending" }

// EventsKey: see JobKey.
func (r *Records) EventsKey() string { return r.p + "events" }

func (r *Records) doneKey() string   { return r.p + "done" }
func (r *Records) unsentKey() string { return r.p + "unsent" }

// TenantKey names the index of tenant's jobs (see JobKey).
func (r *Records) TenantKey(tenant string) string {
	return r.p + "tenant:" + base64.RawURLEncoding.EncodeToString([]byte(tenant))
}

// IdemKey names the holder of an idempotency key of tenant (see JobKey).
func (r *Records) IdemKey(tenant, key string) string {
	h := sha256.New()
	h.Write([]byte(tenant))
	h.Write([]byte{0})
	h.Write([]byte(key))
	return r.p + "idem:" + hex.EncodeToString(h.Sum(nil))
}

// Fields encodes a job without its bodies, as the data field of its hash
// (the bodies have their own fields).
func Fields(j *jobs.Job) ([]byte, error) {
	c := *j
	c.Request.Body = nil
	if j.Result != nil {
		res := *j.Result
		res.Body = nil
		c.Result = &res
	}
	return c.MarshalBinary()
}

// Decode decodes a job from its hash fields data, req, res and rev as
// HMGET or a script returns them; nil data means no record
// (jobs.ErrNotFound).
func Decode(data, req, res, rev any) (*jobs.Job, error) {
	d, ok := data.(string)
	if !ok {
		return nil, jobs.ErrNotFound
	}
	var j jobs.Job
	if err := j.UnmarshalBinary([]byte(d)); err != nil {
		return nil, err
	}
	if b, ok := req.(string); ok && b != "" {
		j.Request.Body = []byte(b)
	}
	if b, ok := res.(string); ok && j.Result != nil && b != "" {
		j.Result.Body = []byte(b)
	}
	s, _ := rev.(string)
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("job %s: bad revision %q", j.ID, s)
	}
	j.Revision = n
	return &j, nil
}

// Create records job as queued and unsent, or returns the retained job of
// the same tenant holding job's idempotency key and false. The caller
// publishes the job's queue message and then calls Sent.
func (r *Records) Create(ctx context.Context, job *jobs.Job) (*jobs.Job, bool, error) {
	if !jobs.ValidID(job.ID) {
		return nil, false, fmt.Errorf("create job: invalid id %q", job.ID)
	}
	data, err := Fields(job)
	if err != nil {
		return nil, false, err
	}
	useIdem, idem := "0", r.p+"idem:-"
	if job.IdempotencyKey != "" {
		useIdem, idem = "1", r.IdemKey(job.Tenant, job.IdempotencyKey)
	}
	keys := []string{r.JobKey(job.ID), r.TenantKey(job.Tenant), idem, r.CountsKey(), r.PendingKey(), r.unsentKey()}
	res, err := createScript.Run(ctx, r.rdb, keys,
		job.ID, data, job.Request.Body, job.Tenant, job.Pool, useIdem, r.opt.Retention.Milliseconds(),
		r.p+"job:", string(job.Priority)).Slice()
	if err != nil {
		return nil, false, fmt.Errorf("record job %s: %w", job.ID, err)
	}
	if len(res) != 2 {
		return nil, false, fmt.Errorf("record job %s: unexpected reply %v", job.ID, res)
	}
	if created, _ := res[0].(int64); created == 1 {
		job.Revision = 1
		return job, true, nil
	}
	existing, _ := res[1].(string)
	j, err := r.Get(ctx, job.Tenant, existing)
	if err != nil {
		return nil, false, fmt.Errorf("idempotent job %s: %w", existing, err)
	}
	return j, false, nil
}

// Sent records that the queue message of job id is on the broker.
func (r *Records) Sent(ctx context.Context, id string) error {
	if err := r.rdb.ZRem(ctx, r.unsentKey(), id).Err(); err != nil {
		return fmt.Errorf("mark job %s sent: %w", id, err)
	}
	return nil
}

// Unsent is a queued job whose queue message may not be on the broker.
type Unsent struct {
	ID       string
	Priority jobs.Priority
	Pool     string
}

// Unsent returns up to max queued jobs recorded at least age ago whose
// queue message was never confirmed: the caller publishes them again and
// calls Sent. A job it returns is not returned again for age.
func (r *Records) Unsent(ctx context.Context, age time.Duration, max int) ([]Unsent, error) {
	res, err := unsentScript.Run(ctx, r.rdb, []string{r.unsentKey()}, age.Milliseconds(), max, r.p+"job:").Slice()
	if err != nil {
		return nil, fmt.Errorf("unsent jobs: %w", err)
	}
	out := make([]Unsent, 0, len(res))
	for _, e := range res {
		f, ok := e.([]any)
		if !ok || len(f) != 3 {
			continue
		}
		var u Unsent
		u.ID, _ = f[0].(string)
		p, _ := f[1].(string)
		u.Priority = jobs.Priority(p)
		u.Pool, _ = f[2].(string)
		if _, err := jobs.ParsePriority(p); err != nil {
			u.Priority = jobs.PriorityNormal
		}
		out = append(out, u)
	}
	return out, nil
}

// Get returns the job id of tenant, or jobs.ErrNotFound.
func (r *Records) Get(ctx context.Context, tenant, id string) (*jobs.Job, error) {
	j, t, err := r.get(ctx, id)
	if err != nil {
		return nil, err
	}
	if t != tenant {
		return nil, jobs.ErrNotFound
	}
	return j, nil
}

// Lookup returns the job id whatever its tenant (for queue deliveries).
func (r *Records) Lookup(ctx context.Context, id string) (*jobs.Job, error) {
	j, _, err := r.get(ctx, id)
	return j, err
}

func (r *Records) get(ctx context.Context, id string) (*jobs.Job, string, error) {
	if !jobs.ValidID(id) {
		return nil, "", jobs.ErrNotFound
	}
	v, err := r.rdb.HMGet(ctx, r.JobKey(id), "data", "req", "res", "rev", "tenant").Result()
	if err != nil {
		return nil, "", fmt.Errorf("get job %s: %w", id, err)
	}
	t, ok := v[4].(string)
	if !ok {
		return nil, "", jobs.ErrNotFound
	}
	j, err := Decode(v[0], v[1], v[2], v[3])
	return j, t, err
}

// List implements jobs.Store.List: the tenant's index newest first, records
// read a page at a time until the page is full.
func (r *Records) List(ctx context.Context, q jobs.ListQuery) ([]*jobs.Job, bool, error) {
	limit := max(q.Limit, 1)
	maxID := "+"
	if q.Before != "" {
		maxID = "(" + q.Before
	}
	const page = 100
	var out []*jobs.Job
	for offset := int64(0); ; offset += page {
		ids, err := r.rdb.ZRevRangeByLex(ctx, r.TenantKey(q.Tenant), &redis.ZRangeBy{Max: maxID, Min: "-", Offset: offset, Count: page}).Result()
		if err != nil {
			return nil, false, fmt.Errorf("list jobs: %w", err)
		}
		pipe := r.rdb.Pipeline()
		cmds := make([]*redis.SliceCmd, len(ids))
		for i, id := range ids {
			cmds[i] = pipe.HMGet(ctx, r.JobKey(id), "data", "rev")
		}
		if len(ids) > 0 {
			if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
				return nil, false, fmt.Errorf("list jobs: %w", err)
			}
		}
		for _, c := range cmds {
			v := c.Val()
			if len(v) != 2 {
				continue
			}
			j, err := Decode(v[0], nil, nil, v[1])
			if errors.Is(err, jobs.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, false, err
			}
			if q.Status != "" && j.Status != q.Status {
				continue
			}
			if len(out) == limit {
				return out, true, nil
			}
			out = append(out, j)
		}
		if len(ids) < page {
			return out, false, nil
		}
	}
}

// Update implements jobs.Store.Update.
func (r *Records) Update(ctx context.Context, job *jobs.Job) error {
	data, err := Fields(job)
	if err != nil {
		return err
	}
	hasRes, res := "0", []byte(nil)
	if job.Result != nil {
		hasRes, res = "1", job.Result.Body
	}
	var finishedAt int64
	if !job.FinishedAt.IsZero() {
		finishedAt = job.FinishedAt.UnixMilli()
	}
	ev, err := json.Marshal(jobs.Event{Kind: jobs.EventFinished, ID: job.ID})
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	keys := []string{r.JobKey(job.ID), r.CountsKey(), r.PendingKey(), r.doneKey()}
	rev, err := updateScript.Run(ctx, r.rdb, keys,
		job.Revision, data, string(job.Status), job.ID, finishedAt, hasRes, res, r.opt.Retention.Milliseconds(),
		r.EventsKey(), ev).Int64()
	if err != nil {
		return fmt.Errorf("update job %s: %w", job.ID, err)
	}
	switch {
	case rev == 0:
		return jobs.ErrConflict
	case rev < 0:
		return jobs.ErrNotFound
	}
	job.Revision = uint64(rev)
	return nil
}

// Expire implements jobs.Store.Expire.
func (r *Records) Expire(ctx context.Context, before time.Time, max int) (int, error) {
	n, err := expireScript.Run(ctx, r.rdb, []string{r.doneKey(), r.CountsKey(), r.unsentKey()},
		before.UnixMilli(), max, r.p+"job:").Int()
	if err != nil {
		return 0, fmt.Errorf("expire jobs: %w", err)
	}
	return n, nil
}

// Counts implements jobs.Store.Counts; the counts are exact.
func (r *Records) Counts(ctx context.Context) (jobs.Counts, error) {
	pipe := r.rdb.Pipeline()
	byStatus := pipe.HGetAll(ctx, r.CountsKey())
	byPool := pipe.HGetAll(ctx, r.PendingKey())
	if _, err := pipe.Exec(ctx); err != nil {
		return jobs.Counts{}, fmt.Errorf("job counts: %w", err)
	}
	c := jobs.Counts{ByStatus: make(map[jobs.Status]int64), QueuedByPool: make(map[string]int64)}
	for k, v := range byStatus.Val() {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n != 0 {
			c.ByStatus[jobs.Status(k)] = n
		}
	}
	for k, v := range byPool.Val() {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > 0 {
			c.QueuedByPool[k] = n
		}
	}
	return c, nil
}

// Publish implements jobs.Store.Publish with PUBLISH (at most once).
func (r *Records) Publish(ctx context.Context, ev jobs.Event) error {
	b, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	if err := r.rdb.Publish(ctx, r.EventsKey(), b).Err(); err != nil {
		return fmt.Errorf("publish event: %w", err)
	}
	return nil
}

// Announce publishes ev best effort: the state change it follows is
// stored, and listeners also poll.
func (r *Records) Announce(ev jobs.Event) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.Publish(ctx, ev); err != nil {
		r.log.Debug("announce job event", "event", ev.Kind, "job", ev.ID, "err", err)
	}
}

// Subscribe implements jobs.Store.Subscribe.
func (r *Records) Subscribe(ctx context.Context, fn func(jobs.Event)) error {
	ps := r.rdb.Subscribe(ctx, r.EventsKey())
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("subscribe to events: %w", err)
	}
	ch := ps.Channel()
	for {
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-ch:
			if !ok {
				return errors.New("event subscription closed")
			}
			var ev jobs.Event
			if err := json.Unmarshal([]byte(m.Payload), &ev); err != nil {
				r.log.Debug("drop malformed job event", "err", err)
				continue
			}
			fn(ev)
		}
	}
}

// Prefix returns the key prefix, for log messages.
func (r *Records) Prefix() string { return cmp.Or(r.opt.Prefix, "") }
