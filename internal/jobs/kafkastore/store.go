// Package kafkastore keeps the job queues in Kafka and the job records in
// Redis (package jobrecords): a Kafka topic is a durable, replicated log,
// but it has no compare-and-set or lookup by key, which records need.
//
// Layout, for prefix N (Options.Prefix):
//
//   - topics N.q.high, N.q.normal and N.q.low (Options.Partitions each):
//     one record per queued job, key and value its ID, the pool in a
//     header, produced with acks=all by an idempotent producer;
//   - consumer group N.dispatch: every gateway consumes the three topics
//     in the group (cooperative-sticky balancing);
//   - the records, idempotency keys, counts and events under the Redis
//     prefix N (jobrecords).
//
// Leases and offsets. Kafka acknowledges by committing an offset per
// partition, not per message, and the gateway that owns a partition in the
// group is the only one that reads it. The store therefore keeps, for each
// partition it owns, the state of every record past the committed offset:
// waiting, leased (with a deadline, renewed by Extend) or done. Fetch
// leases waiting records; a lease not renewed in Lease() makes the record
// waiting again on this gateway; Ack marks it done; and the store commits
// the contiguous prefix of done records about every 200 ms. Requeue with a
// delay produces a copy carrying a "not-before" header and marks the
// original done; a copy is not fetched before its time. When a gateway
// dies, the group gives its partitions to the others after the session
// timeout, and they resume from the committed offset: every record not
// done is delivered again (and records done after the first one that was
// not, which the job records turn into acks). When a partition is
// revoked from a live gateway (another joined), the store stops leasing
// from it, waits (up to the rebalance timeout) for the leases it holds
// there to finish, and commits before letting it go, so a rebalance
// does not run a job twice. A gateway that stops fetching and holds no
// lease (its dispatcher stopped) leaves the group after idleLeave, as a
// Kafka consumer that stops polling does, so that its partitions move
// to gateways that work; it joins again at its next Fetch.
package kafkastore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-ai/sluice/internal/jobs"
	"github.com/sluice-ai/sluice/internal/jobs/jobrecords"
)

// Options configure a Store.
type Options struct {
	// Prefix names the topics and the consumer group (and is the Redis key
	// prefix of the records); stores that share a prefix share jobs.
	// [a-zA-Z0-9._-]+. Default "sluice.jobs".
	Prefix string
	// Lease is how long a delivery stays with a dispatcher that stopped
	// renewing it. Default 30s.
	Lease time.Duration
	// Partitions of each topic the store creates; at least the number of
	// gateways that should dispatch at once. Default 6.
	Partitions int
	// ReplicationFactor of the topics the store creates; -1 (the default)
	// is the broker's default.replication.factor.
	ReplicationFactor int
	// SessionTimeout is how long the group waits for a silent gateway
	// before moving its partitions. Default 10s.
	SessionTimeout time.Duration
	// Logger receives the store's logs. Default slog.Default().
	Logger *slog.Logger
}

// Defaults of Options.
const (
	DefaultPrefix         = "sluice.jobs"
	DefaultLease          = 30 * time.Second
	DefaultPartitions     = 6
	DefaultSessionTimeout = 10 * time.Second
)

const (
	// notBeforeHeader holds a requeued record's due time, Unix ms.
	notBeforeHeader = "not-before"
	poolHeader      = "pool"
	// rebalanceTimeout bounds how long a revoked partition waits for its
	// leases to finish.
	rebalanceTimeout = 60 * time.Second
	// maxBuffered pauses reading while this many records wait.
	maxBuffered = 20000
	// commitEvery paces commits of done prefixes.
	commitEvery = 200 * time.Millisecond
	// idleLeave: a gateway that neither fetched nor held a lease this long
	// leaves the group.
	idleLeave = 5 * time.Second
	// unsentAge and unsentEvery pace the sweep that publishes jobs whose
	// queue record was never confirmed.
	unsentAge   = 10 * time.Second
	unsentEvery = 5 * time.Second
)

var validPrefix = regexp.MustCompile(`^[a-zA-Z0-9._-]+$`)

// Store is a jobs.Store on Kafka and Redis.
type Store struct {
	brokers []string
	rec     *jobrecords.Records
	opt     Options
	log     *slog.Logger
	prod    *kgo.Client
	topics  [3]string // by priority, as jobs.Priorities

	quit      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once

	mu        sync.Mutex
	cons      *consumer // nil when not in the group
	lastFetch time.Time
	produced  map[tp]int64 // offset after the last record this store produced, by partition
}

// consumer is one membership of the group.
type consumer struct {
	cl       *kgo.Client
	closing  chan struct{} // closed before cl.Close: unblocks revocations
	done     chan struct{} // closed when its poll loop ended
	parts    map[tp]*partition
	leased   int
	waiting  int
	assigned chan struct{} // closed at the first assignment
	// joinWaited is set once a fetch waited for the first assignment.
	joinWaited atomic.Bool
}

type tp struct {
	topic string
	part  int32
}

type state uint8

const (
	waiting state = iota
	leased
	done
)

// partition is the state of an owned partition past its committed offset.
type partition struct {
	prio      jobs.Priority
	entries   []*entry // by offset
	committed int64    // -1 until the first commit
	next      int64    // offset after the last record read; -1 before the first
	revoking  bool
}

type entry struct {
	offset    int64
	epoch     int32
	ts        time.Time
	id, pool  string
	notBefore time.Time
	state     state
	deadline  time.Time
	h         *handle // the lease, while leased
}

// handle is a Delivery's reference to its record.
type handle struct {
	c    *consumer
	e    *entry
	id   string
	pool string
}

var _ jobs.Store = (*Store)(nil)

// Open connects to the Kafka brokers, creates the topics if they are
// missing, and returns a store whose records go to rec (closed with the
// store). The first Fetch joins the consumer group.
func Open(ctx context.Context, brokers []string, rec *jobrecords.Records, opts Options) (*Store, error) {
	opts.Prefix = cmp.Or(opts.Prefix, DefaultPrefix)
	if !validPrefix.MatchString(opts.Prefix) {
		return nil, fmt.Errorf("kafka job store prefix %q: want [a-zA-Z0-9._-]+", opts.Prefix)
	}
	if opts.Lease <= 0 {
		opts.Lease = DefaultLease
	}
	if opts.Partitions <= 0 {
		opts.Partitions = DefaultPartitions
	}
	if opts.ReplicationFactor == 0 {
		opts.ReplicationFactor = -1
	}
	if opts.SessionTimeout <= 0 {
		opts.SessionTimeout = DefaultSessionTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Store{brokers: brokers, rec: rec, opt: opts, log: opts.Logger, quit: make(chan struct{}), produced: make(map[tp]int64)}
	for i, p := range jobs.Priorities {
		s.topics[i] = opts.Prefix + ".q." + string(p)
	}
	prod, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.ClientID("sluice-jobs"),
		kgo.RequiredAcks(kgo.AllISRAcks()), // with idempotence, the default
		kgo.ProducerLinger(0),
	)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	s.prod = prod
	if err := s.createTopics(ctx); err != nil {
		prod.Close()
		return nil, err
	}
	s.mu.Lock()
	s.lastFetch = time.Now()
	err = s.startConsumerLocked()
	s.mu.Unlock()
	if err != nil {
		prod.Close()
		return nil, err
	}
	s.wg.Add(1)
	go s.maintain()
	return s, nil
}

func (s *Store) createTopics(ctx context.Context) error {
	adm := kadm.NewClient(s.prod)
	for wait := 250 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		res, err := adm.CreateTopics(ctx, int32(s.opt.Partitions), int16(s.opt.ReplicationFactor), nil, s.topics[:]...)
		if err == nil {
			for _, r := range res {
				if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
					return fmt.Errorf("create topic %s: %w", r.Topic, r.Err)
				}
			}
			return nil
		}
		s.log.Warn("reach Kafka; retrying", "brokers", s.brokers, "in", wait, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafka job store: create topics on %v: %w (gave up: %w)", s.brokers, err, ctx.Err())
		case <-time.After(wait):
		}
	}
}

func (s *Store) topic(p jobs.Priority) string {
	return s.topics[max(slices.Index(jobs.Priorities, p), 0)]
}

// Close leaves the group (committing what is done) and closes the
// clients and the records. Idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.quit)
		s.wg.Wait()
		s.mu.Lock()
		c := s.cons
		s.cons = nil
		s.mu.Unlock()
		if c != nil {
			s.stopConsumer(c)
		}
		s.prod.Close()
		s.rec.Close()
	})
	return nil
}

// Lease implements jobs.Store.
func (s *Store) Lease() time.Duration { return s.opt.Lease }

// produce writes a queue record and waits for acks=all.
func (s *Store) produce(ctx context.Context, p jobs.Priority, id, pool string, notBefore time.Time) error {
	r := &kgo.Record{Topic: s.topic(p), Key: []byte(id), Value: []byte(id),
		Headers: []kgo.RecordHeader{{Key: poolHeader, Value: []byte(pool)}}}
	if !notBefore.IsZero() {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: notBeforeHeader, Value: []byte(strconv.FormatInt(notBefore.UnixMilli(), 10))})
	}
	if err := s.prod.ProduceSync(ctx, r).FirstErr(); err != nil {
		return fmt.Errorf("produce to %s: %w", r.Topic, err)
	}
	s.mu.Lock()
	k := tp{r.Topic, r.Partition}
	s.produced[k] = max(s.produced[k], r.Offset+1)
	s.mu.Unlock()
	return nil
}

// Create implements jobs.Store: the record first (with the idempotency
// check, atomically), then the queue record. If producing fails, the job
// record stays, marked unsent, and a sweep produces it later; Create still
// returns the error.
func (s *Store) Create(ctx context.Context, job *jobs.Job) (*jobs.Job, bool, error) {
	j, created, err := s.rec.Create(ctx, job)
	if err != nil || !created {
		return j, false, err
	}
	if err := s.produce(ctx, job.Priority, job.ID, job.Pool, time.Time{}); err != nil {
		return nil, false, fmt.Errorf("enqueue job %s: %w", job.ID, err)
	}
	if err := s.rec.Sent(ctx, job.ID); err != nil {
		s.log.Debug("mark job sent", "job", job.ID, "err", err)
	}
	s.rec.Announce(jobs.Event{Kind: jobs.EventEnqueued, ID: job.ID, Priority: job.Priority})
	return j, true, nil
}

// Get implements jobs.Store.
func (s *Store) Get(ctx context.Context, tenant, id string) (*jobs.Job, error) {
	return s.rec.Get(ctx, tenant, id)
}

// List implements jobs.Store.
func (s *Store) List(ctx context.Context, q jobs.ListQuery) ([]*jobs.Job, bool, error) {
	return s.rec.List(ctx, q)
}

// Update implements jobs.Store.
func (s *Store) Update(ctx context.Context, job *jobs.Job) error { return s.rec.Update(ctx, job) }

// Expire implements jobs.Store.
func (s *Store) Expire(ctx context.Context, before time.Time, max int) (int, error) {
	return s.rec.Expire(ctx, before, max)
}

// Counts implements jobs.Store; the counts come from the records and are
// exact.
func (s *Store) Counts(ctx context.Context) (jobs.Counts, error) { return s.rec.Counts(ctx) }

// Publish implements jobs.Store (Redis pub/sub).
func (s *Store) Publish(ctx context.Context, ev jobs.Event) error { return s.rec.Publish(ctx, ev) }

// Subscribe implements jobs.Store.
func (s *Store) Subscribe(ctx context.Context, fn func(jobs.Event)) error {
	return s.rec.Subscribe(ctx, fn)
}

// startConsumer joins the group. Called with s.mu held.
func (s *Store) startConsumerLocked() error {
	c := &consumer{closing: make(chan struct{}), done: make(chan struct{}), parts: make(map[tp]*partition), assigned: make(chan struct{})}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(s.brokers...),
		kgo.ClientID("sluice-jobs"),
		kgo.ConsumerGroup(s.opt.Prefix+".dispatch"),
		kgo.ConsumeTopics(s.topics[:]...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.SessionTimeout(s.opt.SessionTimeout),
		kgo.HeartbeatInterval(max(s.opt.SessionTimeout/5, 100*time.Millisecond)),
		kgo.RebalanceTimeout(rebalanceTimeout),
		kgo.FetchMaxWait(time.Second),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { s.assigned(c, m) }),
		kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, m map[string][]int32) { s.revoked(ctx, c, m) }),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { s.lost(c, m) }),
	)
	if err != nil {
		return fmt.Errorf("kafka consumer: %w", err)
	}
	c.cl = cl
	s.cons = c
	go s.poll(c)
	return nil
}

// stopConsumer leaves the group; the revocation commits what is done.
func (s *Store) stopConsumer(c *consumer) {
	close(c.closing)
	c.cl.Close()
	<-c.done
}

// poll reads records into the owned partitions until the consumer closes.
func (s *Store) poll(c *consumer) {
	defer close(c.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-c.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		s.mu.Lock()
		full := c.waiting >= maxBuffered
		s.mu.Unlock()
		if full {
			select {
			case <-c.closing:
				return
			case <-time.After(50 * time.Millisecond):
				continue
			}
		}
		fs := c.cl.PollRecords(ctx, 1000)
		if fs.IsClientClosed() || ctx.Err() != nil {
			return
		}
		fs.EachError(func(topic string, part int32, err error) {
			if !errors.Is(err, context.Canceled) {
				s.log.Warn("read job queue", "topic", topic, "partition", part, "err", err)
			}
		})
		s.mu.Lock()
		fs.EachRecord(func(r *kgo.Record) { s.addLocked(c, r) })
		s.mu.Unlock()
	}
}

func (s *Store) addLocked(c *consumer, r *kgo.Record) {
	p := c.parts[tp{r.Topic, r.Partition}]
	if p == nil || p.revoking {
		return
	}
	p.next = max(p.next, r.Offset+1)
	if n := len(p.entries); (n > 0 && r.Offset <= p.entries[n-1].offset) || r.Offset < p.committed {
		return
	}
	e := &entry{offset: r.Offset, epoch: r.LeaderEpoch, ts: r.Timestamp, id: string(r.Value)}
	for _, h := range r.Headers {
		switch h.Key {
		case poolHeader:
			e.pool = string(h.Value)
		case notBeforeHeader:
			if ms, err := strconv.ParseInt(string(h.Value), 10, 64); err == nil {
				e.notBefore = time.UnixMilli(ms)
			}
		}
	}
	p.entries = append(p.entries, e)
	c.waiting++
}

func (s *Store) prioOf(topic string) (jobs.Priority, bool) {
	for i, t := range s.topics {
		if t == topic {
			return jobs.Priorities[i], true
		}
	}
	return "", false
}

func (s *Store) assigned(c *consumer, m map[string][]int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for topic, parts := range m {
		prio, ok := s.prioOf(topic)
		if !ok {
			continue
		}
		for _, n := range parts {
			c.parts[tp{topic, n}] = &partition{prio: prio, committed: -1, next: -1}
		}
	}
	select {
	case <-c.assigned:
	default:
		close(c.assigned)
	}
}

// revoked lets partitions go once the leases held on them ended (or the
// rebalance timeout nears, or the consumer closes), committing first.
func (s *Store) revoked(ctx context.Context, c *consumer, m map[string][]int32) {
	var keys []tp
	s.mu.Lock()
	for topic, parts := range m {
		for _, n := range parts {
			if p := c.parts[tp{topic, n}]; p != nil {
				p.revoking = true
				keys = append(keys, tp{topic, n})
			}
		}
	}
	s.mu.Unlock()
	limit := time.After(rebalanceTimeout - 10*time.Second)
	for {
		s.mu.Lock()
		busy := false
		for _, k := range keys {
			for _, e := range c.parts[k].entries {
				busy = busy || e.state == leased
			}
		}
		s.mu.Unlock()
		if !busy {
			break
		}
		select {
		case <-c.closing:
		case <-limit:
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
			continue
		}
		break
	}
	s.commit(ctx, c, keys)
	s.lost(c, m)
}

// lost forgets partitions without committing.
func (s *Store) lost(c *consumer, m map[string][]int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for topic, parts := range m {
		for _, n := range parts {
			k := tp{topic, n}
			p := c.parts[k]
			if p == nil {
				continue
			}
			for _, e := range p.entries {
				switch e.state {
				case waiting:
					c.waiting--
				case leased:
					c.leased--
					e.h = nil
				}
				e.state = done
			}
			delete(c.parts, k)
		}
	}
}

// commit commits the done prefix of the given partitions (all owned ones
// if keys is nil) and drops it from memory.
func (s *Store) commit(ctx context.Context, c *consumer, keys []tp) {
	offsets := make(map[string]map[int32]kgo.EpochOffset)
	s.mu.Lock()
	if keys == nil {
		for k := range c.parts {
			keys = append(keys, k)
		}
	}
	for _, k := range keys {
		p := c.parts[k]
		if p == nil {
			continue
		}
		i := 0
		for i < len(p.entries) && p.entries[i].state == done {
			i++
		}
		if i == 0 {
			continue
		}
		last := p.entries[i-1]
		p.entries = slices.Delete(p.entries, 0, i)
		if last.offset+1 <= p.committed {
			continue
		}
		p.committed = last.offset + 1
		if offsets[k.topic] == nil {
			offsets[k.topic] = make(map[int32]kgo.EpochOffset)
		}
		offsets[k.topic][k.part] = kgo.EpochOffset{Epoch: last.epoch, Offset: last.offset + 1}
	}
	s.mu.Unlock()
	if len(offsets) == 0 {
		return
	}
	c.cl.CommitOffsetsSync(ctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err == nil {
			for _, t := range resp.Topics {
				for _, p := range t.Partitions {
					if e := kerr.ErrorForCode(p.ErrorCode); e != nil {
						err = e
					}
				}
			}
		}
		if err != nil {
			// The records are delivered again after a rebalance; the job
			// records make that an ack.
			s.log.Debug("commit job queue offsets", "err", err)
		}
	})
}

// maintain commits done prefixes, returns lapsed leases, leaves the group
// when idle and publishes unsent jobs, until the store closes.
func (s *Store) maintain() {
	defer s.wg.Done()
	tick := time.NewTicker(min(commitEvery, max(s.opt.Lease/8, 10*time.Millisecond)))
	defer tick.Stop()
	sweep := time.NewTicker(unsentEvery)
	defer sweep.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-sweep.C:
			s.sweepUnsent()
			continue
		case <-tick.C:
		}
		now := time.Now()
		s.mu.Lock()
		c := s.cons
		var idle bool
		if c != nil {
			for _, p := range c.parts {
				for _, e := range p.entries {
					if e.state == leased && now.After(e.deadline) {
						e.state, e.h = waiting, nil
						c.leased--
						c.waiting++
					}
				}
			}
			idle = c.leased == 0 && now.Sub(s.lastFetch) > idleLeave
			if idle {
				s.cons = nil
			}
		}
		s.mu.Unlock()
		if c == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s.commit(ctx, c, nil)
		cancel()
		if idle {
			s.stopConsumer(c)
		}
	}
}

func (s *Store) sweepUnsent() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	us, err := s.rec.Unsent(ctx, unsentAge, 100)
	if err != nil {
		s.log.Warn("find unsent jobs", "err", err)
		return
	}
	for _, u := range us {
		if err := s.produce(ctx, u.Priority, u.ID, u.Pool, time.Time{}); err != nil {
			s.log.Warn("publish unsent job", "job", u.ID, "err", err)
			return
		}
		if err := s.rec.Sent(ctx, u.ID); err != nil {
			s.log.Warn("mark job sent", "job", u.ID, "err", err)
		}
	}
}

// Fetch implements jobs.Store: it leases waiting records of the priority's
// partitions this gateway owns, oldest first, joining the group first if
// needed. When it has nothing to offer, it first waits (a moment at most)
// for the records this store produced to be read, so that a job created
// here can be fetched at once.
func (s *Store) Fetch(ctx context.Context, p jobs.Priority, n int) ([]*jobs.Delivery, error) {
	topic := s.topic(p)
	c, err := s.consumer()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	s.mu.Lock()
	cand := s.candidatesLocked(c, topic, now)
	if len(cand) == 0 {
		s.mu.Unlock()
		s.catchUp(ctx, c, topic)
		now = time.Now()
		s.mu.Lock()
		cand = s.candidatesLocked(c, topic, now)
	}
	slices.SortFunc(cand, func(a, b *entry) int { return cmp.Or(a.ts.Compare(b.ts), cmp.Compare(a.offset, b.offset)) })
	cand = cand[:min(n, len(cand))]
	hs := make([]*handle, len(cand))
	for i, e := range cand {
		e.state, e.deadline = leased, now.Add(s.opt.Lease)
		e.h = &handle{c: c, e: e, id: e.id, pool: e.pool}
		hs[i] = e.h
		c.waiting--
		c.leased++
	}
	s.mu.Unlock()
	out := make([]*jobs.Delivery, 0, len(hs))
	for i, h := range hs {
		job, err := s.rec.Lookup(ctx, h.id)
		if errors.Is(err, jobs.ErrNotFound) {
			job, err = nil, nil // a stale record: the Service acks it
		}
		if err != nil {
			for _, r := range hs[i:] {
				s.settle(r, waiting)
			}
			if len(out) > 0 {
				return out, nil
			}
			return nil, fmt.Errorf("fetch %s queue: %w", p, err)
		}
		out = append(out, &jobs.Delivery{Job: job, Priority: p, Handle: h})
	}
	return out, nil
}

// candidatesLocked lists the records of topic that may be leased now.
func (s *Store) candidatesLocked(c *consumer, topic string, now time.Time) []*entry {
	var cand []*entry
	for k, part := range c.parts {
		if k.topic != topic || part.revoking {
			continue
		}
		for _, e := range part.entries {
			if e.state == waiting && !now.Before(e.notBefore) {
				cand = append(cand, e)
			}
		}
	}
	return cand
}

// Bounds of the waits of Fetch.
const (
	joinWait   = 5 * time.Second
	catchUpFor = 200 * time.Millisecond
)

// consumer returns the group membership, joining if needed and waiting
// (up to joinWait) for its first assignment.
func (s *Store) consumer() (*consumer, error) {
	s.mu.Lock()
	s.lastFetch = time.Now()
	if s.cons == nil {
		select {
		case <-s.quit:
			s.mu.Unlock()
			return nil, errors.New("kafka job store closed")
		default:
		}
		if err := s.startConsumerLocked(); err != nil {
			s.mu.Unlock()
			return nil, err
		}
	}
	c := s.cons
	s.mu.Unlock()
	// Only the first fetch waits: a member may get no partition at all
	// (more gateways than partitions).
	if c.joinWaited.CompareAndSwap(false, true) {
		select {
		case <-c.assigned:
		case <-time.After(joinWait):
		}
	}
	return c, nil
}

// catchUp waits, up to catchUpFor, until the consumer has read the records
// this store produced to the owned partitions of topic.
func (s *Store) catchUp(ctx context.Context, c *consumer, topic string) {
	deadline := time.Now().Add(catchUpFor)
	for {
		behind := false
		s.mu.Lock()
		for k, p := range c.parts {
			if n := s.produced[k]; k.topic == topic && n > 0 && p.next < n {
				behind = true
			}
		}
		s.mu.Unlock()
		if !behind || time.Now().After(deadline) || ctx.Err() != nil {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// settle ends h's lease, leaving its record in state to, and reports
// whether h still held it.
func (s *Store) settle(h *handle, to state) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.settleLocked(h, to)
}

func (s *Store) settleLocked(h *handle, to state) bool {
	e := h.e
	if e.h != h || e.state != leased {
		return false
	}
	e.state, e.h = to, nil
	h.c.leased--
	if to == waiting {
		h.c.waiting++
	}
	return true
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
	deadline := time.Now().Add(s.opt.Lease)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range ds {
		h, err := handleOf(d)
		if err != nil {
			return err
		}
		if h.e.h == h {
			h.e.deadline = deadline
		}
	}
	return nil
}

// Ack implements jobs.Store; a delivery whose lease lapsed is left alone.
func (s *Store) Ack(_ context.Context, d *jobs.Delivery) error {
	h, err := handleOf(d)
	if err != nil {
		return err
	}
	s.settle(h, done)
	return nil
}

// Requeue implements jobs.Store: at once by making the record waiting
// again here, or after delay by producing a copy with a not-before header
// and marking the original done (a crash in between delivers the job
// twice, which the records make harmless).
func (s *Store) Requeue(ctx context.Context, d *jobs.Delivery, delay time.Duration) error {
	h, err := handleOf(d)
	if err != nil {
		return err
	}
	if delay <= 0 {
		s.settle(h, waiting)
		return nil
	}
	s.mu.Lock()
	held := h.e.h == h
	s.mu.Unlock()
	if !held {
		return nil
	}
	if err := s.produce(ctx, d.Priority, h.id, h.pool, time.Now().Add(delay)); err != nil {
		return fmt.Errorf("requeue job %s: %w", h.id, err)
	}
	s.settle(h, done)
	return nil
}
