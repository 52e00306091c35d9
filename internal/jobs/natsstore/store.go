// Package natsstore keeps jobs in NATS JetStream: the store sluice embeds by
// default (an in-process server writing to data_dir) and the one it uses
// with an external NATS server or cluster — the same code over a different
// connection.
//
// Layout, for a store named N (Options.Name):
//
//   - stream N_queue, work-queue retention, subjects N.q.<priority>.<pool>:
//     one message per queued job holding the job as submitted; one durable pull
//     consumer per priority, explicit acks, AckWait = the lease, unlimited
//     redeliveries (the job record, not the engine, decides when a job has
//     used its attempts);
//   - key-value bucket N: the job records, key t<base64url(tenant)>.<id>,
//     updated by compare-and-set on the entry revision; idempotency keys
//     i.<sha256(tenant, key)> created with Create (fails if present);
//   - object store N_blobs: request and result bodies too large to inline in
//     a record;
//   - stream N_done, work-queue retention, subjects N.done.<status>: one
//     message per finished job in finishing order, which the janitor
//     consumes to expire jobs and which counts finished jobs; and subject
//     N.gc: bodies of expired jobs, deleted a grace period after their
//     record, so that a reader that got the record in time can still read
//     them;
//   - subject N.events: core NATS notifications between gateways.
//
// Submission publishes the queue message and creates the record together
// and returns once both are stored; a dispatcher that meets a fresh
// message before its record creates the record from it, and a record
// whose message was not stored is taken back (see enqueueAndRecord). A
// finished job's N_done entry is published without waiting, and its queue
// message is acked once the entry is stored (see index.go).
//
// Requires NATS Server 2.11 or later (per-message TTL for delete markers).
package natsstore

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-ai/sluice/internal/jobs"
)

// Options configure a Store.
type Options struct {
	// Name prefixes the streams, buckets and subjects; stores that share a
	// name share jobs. [a-zA-Z0-9_-]+. Default "sluice_jobs".
	Name string
	// Lease is how long a delivery stays with a dispatcher that stopped
	// renewing it. Default 30s.
	Lease time.Duration
	// Replicas of every stream, for JetStream clusters. Default 1.
	Replicas int
	// Logger receives the store's logs. Default slog.Default().
	Logger *slog.Logger
}

// Defaults of Options.
const (
	DefaultName  = "sluice_jobs"
	DefaultLease = 30 * time.Second
)

const (
	// maxInline is the largest body kept inside a record; larger ones go
	// to the object store. Records must fit the server's max_payload.
	maxInline = 256 << 10
	// maxAckPending bounds deliveries out at once per priority, over all
	// gateways.
	maxAckPending = 20000
	// dedupWindow is how long JetStream drops republished messages by ID.
	dedupWindow = 2 * time.Minute
	// markerTTL is how long delete markers of expired records remain.
	markerTTL = time.Minute
	// blobReadTimeout bounds reading one body from the object store;
	// bodies of an expired job are deleted blobGrace after its record.
	blobReadTimeout = 30 * time.Second
	blobGrace       = 2 * blobReadTimeout
	// recreateWindow bounds the age of a first-delivered queue message
	// whose missing record is created from it (see recordFromMessage).
	recreateWindow = 5 * time.Minute
	// idemWait bounds how long Create waits for the job an existing
	// idempotency key names to be recorded by its (possibly crashed)
	// submitter before taking the submission over.
	idemWait = 2 * time.Second
	// defaultTimeout bounds a JetStream request whose context has no
	// deadline, as the client does for its synchronous calls; and
	// asyncPubAckTimeout, the wait for an asynchronous publish's
	// acknowledgement, after which the client forgets it.
	defaultTimeout     = 5 * time.Second
	asyncPubAckTimeout = 2 * defaultTimeout
	// maxAsyncPending bounds the asynchronous publishes awaiting their
	// acknowledgement; a publish beyond it waits for room, at most
	// defaultTimeout.
	maxAsyncPending = 4096
)

var validName = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// Store is a jobs.Store on NATS JetStream.
type Store struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	kv       jetstream.KeyValue
	blobs    jetstream.ObjectStore
	queue    jetstream.Stream
	done     jetstream.Stream
	dispatch [3]jetstream.Consumer // by priority, as jobs.Priorities
	janitor  jetstream.Consumer
	gc       jetstream.Consumer
	opt      Options
	log      *slog.Logger
	inline   int

	mu     sync.Mutex
	leased map[string]int64 // deliveries this store holds, by pool
	recent recent
	index  *index

	onClose   []func()
	closeOnce sync.Once
	// stopBG stops the background reconciliation; bg waits for it.
	stopBG context.CancelFunc
	bg     sync.WaitGroup
}

var _ jobs.Store = (*Store)(nil)

// Open creates (or updates) the streams, consumers and buckets on nc and
// returns a store using them. Closing the store does not close nc.
//
// A consumer whose stored state the server cannot load is deleted and
// created again (see openConsumer). Once open, the store reconciles its
// records with its queue in the background (see Reconcile). An error
// that leaves the store unusable (a stream, bucket or consumer that cannot
// be created, the server unreachable) wraps jobs.ErrStoreUnavailable.
func Open(ctx context.Context, nc *nats.Conn, opts Options) (*Store, error) {
	return open(ctx, nc, opts, nil)
}

// removeConsumerFunc deletes what is left of a consumer that the server
// could not load, so that it can be created again.
type removeConsumerFunc func(stream, consumer string) error

func open(ctx context.Context, nc *nats.Conn, opts Options, removeConsumer removeConsumerFunc) (*Store, error) {
	opts.Name = cmp.Or(opts.Name, DefaultName)
	if !validName.MatchString(opts.Name) {
		return nil, fmt.Errorf("nats job store name %q: want [a-zA-Z0-9_-]+", opts.Name)
	}
	s, err := setUp(ctx, nc, opts, removeConsumer)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", jobs.ErrStoreUnavailable, err)
	}
	bgCtx, stop := context.WithCancel(context.Background())
	s.stopBG = stop
	s.bg.Add(2)
	go func() {
		defer s.bg.Done()
		s.reconcileInBackground(bgCtx)
	}()
	go func() {
		defer s.bg.Done()
		s.ackIndexed(bgCtx)
	}()
	return s, nil
}

// setUp creates or updates everything the store uses.
func setUp(ctx context.Context, nc *nats.Conn, opts Options, removeConsumer removeConsumerFunc) (*Store, error) {
	if opts.Lease <= 0 {
		opts.Lease = DefaultLease
	}
	opts.Replicas = max(opts.Replicas, 1)
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(maxAsyncPending),
		jetstream.WithPublishAsyncTimeout(asyncPubAckTimeout))
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	s := &Store{
		nc:     nc,
		js:     js,
		opt:    opts,
		log:    opts.Logger,
		inline: int(min(maxInline, nc.MaxPayload()/4)),
		leased: make(map[string]int64),
		index:  newIndex(),
	}
	n := opts.Name
	stream := func(name string, subjects ...string) (jetstream.Stream, error) {
		st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name:       name,
			Subjects:   subjects,
			Retention:  jetstream.WorkQueuePolicy,
			Storage:    jetstream.FileStorage,
			Replicas:   opts.Replicas,
			Duplicates: dedupWindow,
		})
		if err != nil {
			return nil, fmt.Errorf("create stream %s: %w", name, err)
		}
		return st, nil
	}
	if s.queue, err = stream(n+"_queue", n+".q.>"); err != nil {
		return nil, err
	}
	if s.done, err = stream(n+"_done", n+".done.>", n+".gc"); err != nil {
		return nil, err
	}
	consumer := func(stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
		return s.openConsumer(ctx, stream, cfg, removeConsumer)
	}
	for i, p := range jobs.Priorities {
		c, err := consumer(n+"_queue", jetstream.ConsumerConfig{
			Durable:       "dispatch_" + string(p),
			FilterSubject: s.queueSubject(p, "*"),
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       opts.Lease,
			MaxDeliver:    -1,
			MaxAckPending: maxAckPending,
		})
		if err != nil {
			return nil, fmt.Errorf("create %s consumer: %w", p, err)
		}
		s.dispatch[i] = c
	}
	s.janitor, err = consumer(n+"_done", jetstream.ConsumerConfig{
		Durable:       "janitor",
		FilterSubject: n + ".done.>",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       time.Minute,
		MaxDeliver:    -1,
		MaxAckPending: maxAckPending,
	})
	if err != nil {
		return nil, fmt.Errorf("create janitor consumer: %w", err)
	}
	s.gc, err = consumer(n+"_done", jetstream.ConsumerConfig{
		Durable:       "gc",
		FilterSubject: n + ".gc",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       time.Minute,
		MaxDeliver:    -1,
		MaxAckPending: maxAckPending,
	})
	if err != nil {
		return nil, fmt.Errorf("create gc consumer: %w", err)
	}
	s.kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:         n,
		History:        1,
		Storage:        jetstream.FileStorage,
		Replicas:       opts.Replicas,
		LimitMarkerTTL: markerTTL,
	})
	if err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", n, err)
	}
	s.blobs, err = js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:   n + "_blobs",
		Storage:  jetstream.FileStorage,
		Replicas: opts.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("create object store %s_blobs: %w", n, err)
	}
	return s, nil
}

// Close releases what the store opened (the connection and the embedded
// server, when the store made them). It is idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		if s.stopBG != nil {
			s.stopBG()
			s.bg.Wait()
		}
		// Send buffered acks before the connection goes.
		_ = s.nc.FlushTimeout(time.Second)
		for _, f := range s.onClose {
			f()
		}
	})
	return nil
}

// Lease implements jobs.Store.
func (s *Store) Lease() time.Duration { return s.opt.Lease }

func (s *Store) queueSubject(p jobs.Priority, poolToken string) string {
	return s.opt.Name + ".q." + string(p) + "." + poolToken
}

// poolToken is a pool name as a subject token (pool names are
// [a-z0-9_-]+; "" becomes "_").
func poolToken(pool string) string {
	if pool == "" || strings.ContainsAny(pool, ".*> \t") {
		return "_"
	}
	return pool
}

func recordKey(tenant, id string) string {
	return "t" + base64.RawURLEncoding.EncodeToString([]byte(tenant)) + "." + id
}

func idemKey(tenant, key string) string {
	h := sha256.New()
	h.Write([]byte(tenant))
	h.Write([]byte{0})
	h.Write([]byte(key))
	return "i." + hex.EncodeToString(h.Sum(nil))
}

func priorityIndex(p jobs.Priority) int {
	return max(slices.Index(jobs.Priorities, p), 0)
}

// Record encoding: a flags byte, the result blob's name if the result body
// is in the object store, then the job's binary encoding with the bodies
// that live in the object store left out.
const (
	flagRequestBlob = 1 << 0
	flagResultBlob  = 1 << 1
)

func requestBlob(id string) string { return id + ".req" }

// resultBlob names a result body by its content, so a second write of the
// same result is a no-op and a different result never overwrites it.
func resultBlob(id string, body []byte) string {
	h := sha256.Sum256(body)
	return id + ".res." + hex.EncodeToString(h[:16])
}

// encode returns job's record, storing large bodies in the object store:
// the request body only when putRequest (at creation), the result body
// unless already stored.
func (s *Store) encode(ctx context.Context, j *jobs.Job, putRequest bool) ([]byte, error) {
	c := *j
	var flags byte
	var resName string
	if len(j.Request.Body) > s.inline {
		flags |= flagRequestBlob
		if putRequest {
			if _, err := s.blobs.PutBytes(ctx, requestBlob(j.ID), j.Request.Body); err != nil {
				return nil, fmt.Errorf("store request body of %s: %w", j.ID, err)
			}
		}
		c.Request.Body = nil
	}
	if j.Result != nil && len(j.Result.Body) > s.inline {
		flags |= flagResultBlob
		resName = resultBlob(j.ID, j.Result.Body)
		_, err := s.blobs.GetInfo(ctx, resName)
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			_, err = s.blobs.PutBytes(ctx, resName, j.Result.Body)
		}
		if err != nil {
			return nil, fmt.Errorf("store result body of %s: %w", j.ID, err)
		}
		r := *j.Result
		r.Body = nil
		c.Result = &r
	}
	enc, err := c.MarshalBinary()
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(resName)+len(enc))
	b = append(b, flags)
	if flags&flagResultBlob != 0 {
		b = binary.AppendUvarint(b, uint64(len(resName)))
		b = append(b, resName...)
	}
	return append(b, enc...), nil
}

// blobNames are the object-store entries a record refers to.
type blobNames struct {
	request, result string
}

// decode parses a record; with bodies it loads bodies from the object store.
func (s *Store) decode(ctx context.Context, data []byte, bodies bool) (*jobs.Job, blobNames, error) {
	var names blobNames
	if len(data) == 0 {
		return nil, names, errors.New("empty job record")
	}
	flags, rest := data[0], data[1:]
	if flags&flagResultBlob != 0 {
		n, k := binary.Uvarint(rest)
		if k <= 0 || n > uint64(len(rest)-k) {
			return nil, names, errors.New("corrupt job record: result blob name")
		}
		names.result = string(rest[k : k+int(n)])
		rest = rest[k+int(n):]
	}
	var j jobs.Job
	if err := j.UnmarshalBinary(rest); err != nil {
		return nil, names, err
	}
	if flags&flagRequestBlob != 0 {
		names.request = requestBlob(j.ID)
	}
	if bodies && names.request != "" {
		body, err := s.loadBlob(ctx, names.request)
		if err != nil {
			return nil, names, fmt.Errorf("load request body of %s: %w", j.ID, err)
		}
		j.Request.Body = body
	}
	if bodies && names.result != "" && j.Result != nil {
		body, err := s.loadBlob(ctx, names.result)
		if err != nil {
			return nil, names, fmt.Errorf("load result body of %s: %w", j.ID, err)
		}
		j.Result.Body = body
	}
	return &j, names, nil
}

// loadBlob reads a body from the object store. The janitor deletes bodies
// blobGrace after their record, so a reader that found the record has
// that long; the read is bounded, as one that outlived the body would wait
// for chunks that never come.
func (s *Store) loadBlob(ctx context.Context, name string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, blobReadTimeout)
	defer cancel()
	return s.blobs.GetBytes(ctx, name)
}

func (s *Store) get(ctx context.Context, key string, bodies bool) (*jobs.Job, error) {
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, jobs.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get job record: %w", err)
	}
	j, _, err := s.decode(ctx, e.Value(), bodies)
	if err != nil {
		return nil, err
	}
	j.Revision = e.Revision()
	return j, nil
}

// Create implements jobs.Store.
func (s *Store) Create(ctx context.Context, job *jobs.Job) (*jobs.Job, bool, error) {
	if !jobs.ValidID(job.ID) {
		return nil, false, fmt.Errorf("create job: invalid id %q", job.ID)
	}
	if job.IdempotencyKey != "" {
		existing, err := s.claimIdempotencyKey(ctx, job)
		if err != nil || existing != nil {
			return existing, false, err
		}
	}
	val, err := s.encode(ctx, job, true)
	if err != nil {
		return nil, false, err
	}
	key := recordKey(job.Tenant, job.ID)
	rev, err := s.enqueueAndRecord(ctx, job, key, val)
	if errors.Is(err, jetstream.ErrKeyExists) {
		// Recorded already, from the queue message by a quick dispatcher
		// or by a submission that took this one over.
		stored, gerr := s.get(ctx, key, true)
		return stored, true, gerr
	}
	if err != nil {
		return nil, false, err
	}
	job.Revision = rev
	s.recent.put(key, val, rev, false)
	s.announce(jobs.Event{Kind: jobs.EventEnqueued, ID: job.ID, Priority: job.Priority})
	return job, true, nil
}

// claimIdempotencyKey makes job the holder of its idempotency key, or
// returns the job that holds it. If the holder's record does not appear
// within idemWait, its submission died before it was accepted: job takes
// the holder's ID over and is submitted in its place.
func (s *Store) claimIdempotencyKey(ctx context.Context, job *jobs.Job) (*jobs.Job, error) {
	ik := idemKey(job.Tenant, job.IdempotencyKey)
	deadline := time.Now().Add(idemWait)
	for {
		_, err := s.kv.Create(ctx, ik, []byte(job.ID))
		if err == nil {
			return nil, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, fmt.Errorf("claim idempotency key: %w", err)
		}
		e, err := s.kv.Get(ctx, ik)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // expired meanwhile; claim it again
		}
		if err != nil {
			return nil, fmt.Errorf("read idempotency key: %w", err)
		}
		holder := string(e.Value())
		existing, err := s.get(ctx, recordKey(job.Tenant, holder), true)
		if err == nil {
			if err := s.ensureQueued(ctx, existing); err != nil {
				return nil, err
			}
			return existing, nil
		}
		if !errors.Is(err, jobs.ErrNotFound) {
			return nil, err
		}
		if time.Now().After(deadline) {
			if !jobs.ValidID(holder) {
				return nil, fmt.Errorf("idempotency key holds invalid id %q", holder)
			}
			job.ID = holder
			return nil, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// keyHeader names a queue message's record key, so that a dispatcher finds
// the record without decoding the message. Messages queued before it
// existed are decoded instead.
const keyHeader = "Sluice-Job-Key"

// enqueue publishes job's queue message carrying val, deduplicated by
// msgID.
func (s *Store) enqueue(ctx context.Context, job *jobs.Job, key string, val []byte, msgID string) error {
	_, err := s.js.PublishMsg(ctx, s.queueMsg(job, key, val), jetstream.WithMsgID(msgID))
	return err
}

// queueMsg is job's queue message.
func (s *Store) queueMsg(job *jobs.Job, key string, val []byte) *nats.Msg {
	m := nats.NewMsg(s.queueSubject(job.Priority, poolToken(job.Pool)))
	m.Data = val
	m.Header.Set(keyHeader, key)
	return m
}

// messageKey returns the record key of a queue message.
func (s *Store) messageKey(ctx context.Context, h nats.Header, data []byte) (string, error) {
	if key := h.Get(keyHeader); key != "" {
		return key, nil
	}
	j, _, err := s.decode(ctx, data, false)
	if err != nil {
		return "", err
	}
	return recordKey(j.Tenant, j.ID), nil
}

// Get implements jobs.Store.
func (s *Store) Get(ctx context.Context, tenant, id string) (*jobs.Job, error) {
	if !jobs.ValidID(id) {
		return nil, jobs.ErrNotFound
	}
	return s.get(ctx, recordKey(tenant, id), true)
}

// List implements jobs.Store. It reads the tenant's keys (not values) and
// then records newest first until the page is full.
func (s *Store) List(ctx context.Context, q jobs.ListQuery) ([]*jobs.Job, bool, error) {
	prefix := strings.TrimSuffix(recordKey(q.Tenant, ""), ".")
	keys, err := Keys(ctx, s.js, s.kv.Bucket(), prefix+".*")
	if err != nil {
		return nil, false, fmt.Errorf("list job keys: %w", err)
	}
	var ids []string
	for _, k := range slices.Backward(keys) {
		if id := k[len(prefix)+1:]; q.Before == "" || id < q.Before {
			ids = append(ids, id)
		}
	}
	limit := max(q.Limit, 1)
	var out []*jobs.Job
	for _, id := range ids {
		j, err := s.get(ctx, prefix+"."+id, false)
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
		j.Request.Body = nil
		if j.Result != nil {
			j.Result.Body = nil
		}
		out = append(out, j)
	}
	return out, false, nil
}

// Update implements jobs.Store. A job updated into a final state is also
// indexed for expiry, without waiting: the ack of its delivery waits
// instead (see index), and if the index entry cannot be stored, the
// delivery is not acked and its redelivery, which finds the job final,
// indexes it again.
func (s *Store) Update(ctx context.Context, job *jobs.Job) error {
	val, err := s.encode(ctx, job, false)
	if err != nil {
		return err
	}
	rev, err := s.kv.Update(ctx, recordKey(job.Tenant, job.ID), val, job.Revision)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return jobs.ErrConflict
	}
	if err != nil {
		return fmt.Errorf("update job %s: %w", job.ID, err)
	}
	job.Revision = rev
	if !job.Status.Final() {
		s.recent.put(recordKey(job.Tenant, job.ID), val, rev, true)
		return nil
	}
	s.recent.forget(recordKey(job.Tenant, job.ID))
	if err := s.publishIndex(ctx, job); err != nil {
		return err
	}
	s.announce(jobs.Event{Kind: jobs.EventFinished, ID: job.ID})
	return nil
}

// finishedEntry is a message of the N_done stream.
type finishedEntry struct {
	Key        string   `json:"key"`
	FinishedAt int64    `json:"finished_at"` // Unix nanoseconds
	Idem       string   `json:"idem,omitempty"`
	Blobs      []string `json:"blobs,omitempty"`
}

// indexFinished indexes a finished job for expiry and waits until the
// entry is stored.
func (s *Store) indexFinished(ctx context.Context, job *jobs.Job) error {
	b, err := s.indexEntry(job)
	if err != nil {
		return err
	}
	subject := s.opt.Name + ".done." + string(job.Status)
	if _, err := s.js.Publish(ctx, subject, b, jetstream.WithMsgID("done."+job.ID)); err != nil {
		return fmt.Errorf("index finished job %s: %w", job.ID, err)
	}
	return nil
}

// recordFromMessage creates a missing record from the queue message that
// carries it. Create publishes the message before it writes the record, so
// a dispatcher may be first; if the submitter died in between, the job was
// never accepted but still runs (at least once). A message first delivered
// long after it was queued, or delivered again, whose record is missing,
// belongs to a job that finished and expired (one canceled while queued):
// it yields a nil job and is acked.
func (s *Store) recordFromMessage(ctx context.Context, key string, msg jetstream.Msg) (*jobs.Job, error) {
	meta, err := msg.Metadata()
	if err != nil {
		return nil, fmt.Errorf("queue message metadata: %w", err)
	}
	if meta.NumDelivered > 1 || time.Since(meta.Timestamp) > recreateWindow {
		return nil, nil
	}
	if _, err := s.kv.Create(ctx, key, msg.Data()); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return nil, fmt.Errorf("record job from its queue message: %w", err)
	}
	return s.get(ctx, key, true)
}

// handle is a Delivery's reference to its queue message.
type handle struct {
	msg      jetstream.Msg
	key      string // of the record
	pool     string
	released atomic.Bool
}

// Fetch implements jobs.Store.
func (s *Store) Fetch(ctx context.Context, p jobs.Priority, max int) ([]*jobs.Delivery, error) {
	batch, err := s.dispatch[priorityIndex(p)].FetchNoWait(max)
	if err != nil {
		return nil, fmt.Errorf("fetch %s queue: %w", p, err)
	}
	var out []*jobs.Delivery
	var firstErr error
	for msg := range batch.Messages() {
		d, err := s.deliver(ctx, msg, p)
		if err != nil {
			// The lease lapses and the message comes back.
			firstErr = cmp.Or(firstErr, err)
			continue
		}
		if d != nil {
			out = append(out, d)
		}
	}
	if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
		firstErr = cmp.Or(firstErr, fmt.Errorf("fetch %s queue: %w", p, err))
	}
	if len(out) == 0 && firstErr != nil {
		return nil, firstErr
	}
	return out, nil
}

func (s *Store) deliver(ctx context.Context, msg jetstream.Msg, p jobs.Priority) (*jobs.Delivery, error) {
	key, err := s.messageKey(ctx, msg.Headers(), msg.Data())
	if err != nil {
		s.log.Warn("drop corrupt queue message", "err", err)
		return nil, msg.Term()
	}
	job := s.recentJob(ctx, key)
	if job == nil {
		job, err = s.get(ctx, key, true)
	}
	if errors.Is(err, jobs.ErrNotFound) {
		job, err = s.recordFromMessage(ctx, key, msg)
	}
	switch {
	case err != nil:
		return nil, err
	case job == nil:
		// The message of a job whose record expired: the dispatcher acks it.
	case job.Status.Final():
		// A duplicate: make sure the expiry index has it (dropped as a
		// duplicate message if it does).
		if err := s.indexFinished(ctx, job); err != nil {
			return nil, err
		}
	}
	tokens := strings.Split(msg.Subject(), ".")
	h := &handle{msg: msg, key: key, pool: tokens[len(tokens)-1]}
	s.mu.Lock()
	s.leased[h.pool]++
	s.mu.Unlock()
	meta, err := msg.Metadata()
	first := err == nil && meta.NumDelivered == 1
	return &jobs.Delivery{Job: job, Priority: p, Handle: h, FirstDelivery: first}, nil
}

func (s *Store) release(h *handle) {
	if h.released.Swap(true) {
		return
	}
	s.mu.Lock()
	if s.leased[h.pool]--; s.leased[h.pool] <= 0 {
		delete(s.leased, h.pool)
	}
	s.mu.Unlock()
}

func handleOf(d *jobs.Delivery) (*handle, error) {
	h, ok := d.Handle.(*handle)
	if !ok {
		return nil, fmt.Errorf("delivery of another store (%T)", d.Handle)
	}
	return h, nil
}

// Extend implements jobs.Store.
func (s *Store) Extend(_ context.Context, ds []*jobs.Delivery) error {
	var errs []error
	for _, d := range ds {
		h, err := handleOf(d)
		if err == nil {
			err = h.msg.InProgress()
		}
		// An entry acked since the caller listed it needs no lease.
		if err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("extend leases: %w", err)
	}
	return nil
}

// Ack implements jobs.Store.
func (s *Store) Ack(_ context.Context, d *jobs.Delivery) error {
	h, err := handleOf(d)
	if err != nil {
		return err
	}
	s.release(h)
	if err := s.index.ackAfter(h.key, h.msg); err != nil {
		return fmt.Errorf("ack: %w", err)
	}
	return nil
}

// Requeue implements jobs.Store.
func (s *Store) Requeue(_ context.Context, d *jobs.Delivery, delay time.Duration) error {
	h, err := handleOf(d)
	if err != nil {
		return err
	}
	s.release(h)
	s.index.drop(h.key)
	if delay <= 0 {
		err = h.msg.Nak()
	} else {
		err = h.msg.NakWithDelay(delay)
	}
	if err != nil {
		return fmt.Errorf("requeue: %w", err)
	}
	return nil
}

// Expire implements jobs.Store. The N_done stream holds finished jobs in
// the order they finished, so the janitor stops at the first entry that is
// not due; entries it did not expire go back for the next round. It also
// deletes the bodies of expired jobs whose grace period ended.
func (s *Store) Expire(ctx context.Context, before time.Time, max int) (int, error) {
	if err := s.collectGarbage(ctx); err != nil {
		return 0, err
	}
	deleted := 0
	for deleted < max {
		batch, err := s.janitor.FetchNoWait(min(100, max-deleted))
		if err != nil {
			return deleted, fmt.Errorf("fetch finished jobs: %w", err)
		}
		n, stop := 0, false
		var firstErr error
		for msg := range batch.Messages() {
			n++
			if stop {
				_ = msg.Nak()
				continue
			}
			var e finishedEntry
			if err := json.Unmarshal(msg.Data(), &e); err != nil {
				s.log.Warn("drop corrupt finished-job entry", "err", err)
				_ = msg.Term()
				continue
			}
			if e.FinishedAt >= before.UnixNano() {
				stop = true
				_ = msg.Nak()
				continue
			}
			if err := s.deleteJob(ctx, e); err != nil {
				firstErr = cmp.Or(firstErr, err)
				stop = true
				_ = msg.Nak()
				continue
			}
			_ = msg.Ack()
			deleted++
		}
		if firstErr != nil {
			return deleted, firstErr
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return deleted, fmt.Errorf("fetch finished jobs: %w", err)
		}
		if stop || n == 0 {
			break
		}
	}
	return deleted, nil
}

func (s *Store) deleteJob(ctx context.Context, e finishedEntry) error {
	if e.Idem != "" {
		// Only if the key still names this job: it may have been freed and
		// claimed again.
		ie, err := s.kv.Get(ctx, e.Idem)
		if err == nil && strings.HasSuffix(e.Key, "."+string(ie.Value())) {
			err = s.kv.Purge(ctx, e.Idem, jetstream.LastRevision(ie.Revision()), jetstream.PurgeTTL(markerTTL))
		}
		if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return fmt.Errorf("delete idempotency key: %w", err)
		}
	}
	if err := s.kv.Purge(ctx, e.Key, jetstream.PurgeTTL(markerTTL)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("delete job record: %w", err)
	}
	if len(e.Blobs) == 0 {
		return nil
	}
	// The bodies go later: a reader may have got the record just now.
	b, err := json.Marshal(garbage{Blobs: e.Blobs, After: time.Now().Add(blobGrace).UnixNano()})
	if err != nil {
		return fmt.Errorf("encode garbage: %w", err)
	}
	if _, err := s.js.Publish(ctx, s.opt.Name+".gc", b, jetstream.WithMsgID("gc."+e.Key)); err != nil {
		return fmt.Errorf("schedule body deletion: %w", err)
	}
	return nil
}

// garbage is a message of subject N.gc: bodies to delete once After (Unix
// nanoseconds, this host's clock) has passed.
type garbage struct {
	Blobs []string `json:"blobs"`
	After int64    `json:"after"`
}

// collectGarbage deletes the bodies whose grace period ended; the others
// come back when theirs ends.
func (s *Store) collectGarbage(ctx context.Context) error {
	for {
		batch, err := s.gc.FetchNoWait(100)
		if err != nil {
			return fmt.Errorf("fetch garbage: %w", err)
		}
		n := 0
		var firstErr error
		for msg := range batch.Messages() {
			n++
			var g garbage
			if err := json.Unmarshal(msg.Data(), &g); err != nil {
				_ = msg.Term()
				continue
			}
			if wait := time.Until(time.Unix(0, g.After)); wait > 0 {
				_ = msg.NakWithDelay(wait)
				continue
			}
			err := firstErr
			for _, name := range g.Blobs {
				if derr := s.blobs.Delete(ctx, name); derr != nil && !errors.Is(derr, jetstream.ErrObjectNotFound) {
					err = cmp.Or(err, fmt.Errorf("delete body %s: %w", name, derr))
				}
			}
			if err != nil {
				firstErr = err
				_ = msg.Nak()
				continue
			}
			_ = msg.Ack()
		}
		if firstErr != nil {
			return firstErr
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("fetch garbage: %w", err)
		}
		if n < 100 {
			return nil
		}
	}
}

// Counts implements jobs.Store from the engine's own bookkeeping rather
// than by reading records: queued and running come from the queue stream
// (messages per pool subject) and the consumers (messages delivered and not
// acked count as running, which includes jobs waiting out a retry delay or
// a callback); final states come from the N_done stream. QueuedByPool
// leaves out deliveries this store holds, so it is exact with one gateway
// and counts other gateways' running jobs as queued with several.
func (s *Store) Counts(ctx context.Context) (jobs.Counts, error) {
	c := jobs.Counts{ByStatus: make(map[jobs.Status]int64), QueuedByPool: make(map[string]int64)}
	qi, err := s.queue.Info(ctx, jetstream.WithSubjectFilter(s.opt.Name+".q.>"))
	if err != nil {
		return c, fmt.Errorf("queue info: %w", err)
	}
	var total int64
	for subject, n := range qi.State.Subjects {
		pool := subject[strings.LastIndexByte(subject, '.')+1:]
		c.QueuedByPool[pool] += int64(n)
		total += int64(n)
	}
	var running int64
	for _, cons := range s.dispatch {
		ci, err := cons.Info(ctx)
		if err != nil {
			return c, fmt.Errorf("consumer info: %w", err)
		}
		running += int64(ci.NumAckPending)
	}
	c.ByStatus[jobs.StatusRunning] = running
	c.ByStatus[jobs.StatusQueued] = max(total-running, 0)
	s.mu.Lock()
	for pool, n := range s.leased {
		if c.QueuedByPool[pool] -= n; c.QueuedByPool[pool] <= 0 {
			delete(c.QueuedByPool, pool)
		}
	}
	s.mu.Unlock()
	di, err := s.done.Info(ctx, jetstream.WithSubjectFilter(s.opt.Name+".done.>"))
	if err != nil {
		return c, fmt.Errorf("finished jobs info: %w", err)
	}
	for subject, n := range di.State.Subjects {
		c.ByStatus[jobs.Status(subject[strings.LastIndexByte(subject, '.')+1:])] += int64(n)
	}
	return c, nil
}

// Publish implements jobs.Store with a core NATS message (at most once).
func (s *Store) Publish(_ context.Context, ev jobs.Event) error {
	b, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	if err := s.nc.Publish(s.opt.Name+".events", b); err != nil {
		return fmt.Errorf("publish event: %w", err)
	}
	return nil
}

// announce publishes ev best effort: the state change it follows is
// stored, and listeners also poll.
func (s *Store) announce(ev jobs.Event) {
	if err := s.Publish(context.Background(), ev); err != nil {
		s.log.Debug("announce job event", "event", ev.Kind, "job", ev.ID, "err", err)
	}
}

// Subscribe implements jobs.Store.
func (s *Store) Subscribe(ctx context.Context, fn func(jobs.Event)) error {
	ch := make(chan *nats.Msg, 4096)
	sub, err := s.nc.ChanSubscribe(s.opt.Name+".events", ch)
	if err != nil {
		return fmt.Errorf("subscribe to events: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	closed := sub.StatusChanged(nats.SubscriptionClosed)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-closed:
			return errors.New("event subscription closed")
		case m := <-ch:
			var ev jobs.Event
			if err := json.Unmarshal(m.Data, &ev); err != nil {
				s.log.Debug("drop malformed job event", "err", err)
				continue
			}
			fn(ev)
		}
	}
}
