// Package amqpstore keeps the job queues in RabbitMQ (AMQP 0-9-1) and the
// job records in Redis (package jobrecords): RabbitMQ has durable queues,
// publisher confirms and manual acks, but no compare-and-set or lookup by
// key, which records need.
//
// Layout, for prefix N (Options.Prefix):
//
//   - quorum queues N.q.high, N.q.normal and N.q.low: one persistent
//     message per queued job (its ID, with the pool in a header), published
//     with a publisher confirm, taken with basic.get and manual acks. One
//     queue per priority because
//     Store.Fetch takes from one priority at a time, and quorum queues
//     (before RabbitMQ 4.0) have no message priorities;
//   - quorum queues N.delay.<priority>.<ms>, declared when first used:
//     delayed retries. Each has one message TTL (x-message-ttl = ms) and
//     dead-letters, at least once, to its priority queue; a delay is
//     rounded up to the next bucket (a factor of √2 apart), so no message
//     waits behind a longer one;
//   - the records, idempotency keys, counts and events under the Redis
//     prefix N (jobrecords).
//
// Leases. RabbitMQ has no per-message lease: a delivery stays with its
// channel until it is acked or rejected, or the channel closes (a gateway
// that dies or loses the network closes it; the heartbeat notices a
// silent peer), and then returns to its queue. The store adds the lease on
// top: a delivery not extended for Lease() is rejected with requeue by the
// store's reaper, so a dispatcher that stopped renewing loses it as with
// the other stores. Ack, Requeue and Extend of a delivery whose lease
// lapsed, or whose channel closed, do nothing (its message is back on the
// queue). RabbitMQ's own consumer_timeout (30 minutes by default) must be
// longer than an attempt plus its callback deliveries, or the broker
// closes the channel and requeues every delivery on it.
package amqpstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"regexp"

	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sluice-ai/sluice/internal/jobs"
	"github.com/sluice-ai/sluice/internal/jobs/jobrecords"
)

// Options configure a Store.
type Options struct {
	// Prefix names the queues (and is the Redis key prefix of the
	// records); stores that share a prefix share jobs. [a-zA-Z0-9._-]+.
	// Default "sluice.jobs".
	Prefix string
	// Lease is how long a delivery stays with a dispatcher that stopped
	// renewing it. Default 30s.
	Lease time.Duration
	// Logger receives the store's logs. Default slog.Default().
	Logger *slog.Logger
}

// Defaults of Options.
const (
	DefaultPrefix = "sluice.jobs"
	DefaultLease  = 30 * time.Second
)

const (
	// unsentAge is how long a recorded job may wait for its queue message
	// before another sweep publishes it again; unsentEvery paces sweeps.
	unsentAge   = 10 * time.Second
	unsentEvery = 5 * time.Second
	// heartbeat detects a dead connection in both directions.
	heartbeat = 10 * time.Second
	// maxReconnectWait caps the backoff between reconnection attempts.
	maxReconnectWait = 5 * time.Second
	// getChannels bounds the basic.get calls of one Fetch in flight: each
	// is a round trip (and a log entry of a quorum queue), so a fetch of
	// many runs several at once.
	getChannels = 8
)

var validPrefix = regexp.MustCompile(`^[a-zA-Z0-9._-]+$`)

// Store is a jobs.Store on RabbitMQ and Redis.
type Store struct {
	url string
	rec *jobrecords.Records
	opt Options
	log *slog.Logger

	quit      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once

	mu       sync.Mutex
	sess     *session             // nil while reconnecting
	held     map[*handle]struct{} // fetched and not settled
	declared map[string]bool      // delay queues declared on the current connection
}

// session is one connection with its channels.
type session struct {
	conn *amqp.Connection
	pub  *amqp.Channel   // confirm mode
	sub  *amqp.Channel   // declarations
	get  []*amqp.Channel // basic.get, several at once
	dead chan struct{}   // closed when the connection closed
}

// handle is a Delivery's reference to its message.
type handle struct {
	sess     *session
	ch       *amqp.Channel // the channel it was delivered on
	tag      uint64
	id       string
	pool     string
	prio     jobs.Priority
	deadline time.Time
	settled  bool // acked, rejected, or lost with its channel
}

var _ jobs.Store = (*Store)(nil)

// Open connects to RabbitMQ at url (amqp:// or amqps://), declares the
// queues and starts consuming; records go to rec, which the store closes
// with itself. While RabbitMQ is unreachable Open retries with backoff
// until ctx ends.
func Open(ctx context.Context, rawURL string, rec *jobrecords.Records, opts Options) (*Store, error) {
	opts.Prefix = cmp.Or(opts.Prefix, DefaultPrefix)
	if !validPrefix.MatchString(opts.Prefix) {
		return nil, fmt.Errorf("amqp job store prefix %q: want [a-zA-Z0-9._-]+", opts.Prefix)
	}
	if opts.Lease <= 0 {
		opts.Lease = DefaultLease
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Store{
		url:      rawURL,
		rec:      rec,
		opt:      opts,
		log:      opts.Logger,
		quit:     make(chan struct{}),
		held:     make(map[*handle]struct{}),
		declared: make(map[string]bool),
	}
	var sess *session
	for wait := 250 * time.Millisecond; ; wait = min(2*wait, maxReconnectWait) {
		var err error
		if sess, err = s.connect(); err == nil {
			break
		}
		s.log.Warn("connect to RabbitMQ; retrying", "url", Redact(rawURL), "in", wait, "err", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("amqp job store: %w (gave up: %w)", err, ctx.Err())
		case <-time.After(wait):
		}
	}
	s.sess = sess
	s.wg.Add(2)
	go s.supervise(sess)
	go s.maintain()
	return s, nil
}

// Redact drops credentials from a broker URL for messages.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "the broker"
	}
	u.User = nil
	return u.String()
}

func (s *Store) queueName(p jobs.Priority) string { return s.opt.Prefix + ".q." + string(p) }

func quorumArgs() amqp.Table { return amqp.Table{"x-queue-type": "quorum"} }

// connect opens a connection and its channels, declares the priority
// queues and starts their consumers.
func (s *Store) connect() (*session, error) {
	conn, err := amqp.DialConfig(s.url, amqp.Config{
		Heartbeat:  heartbeat,
		Locale:     "en_US",
		Properties: amqp.Table{"connection_name": "sluice-jobs"},
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", Redact(s.url), err)
	}
	sess := &session{conn: conn, dead: make(chan struct{})}
	fail := func(err error) (*session, error) {
		conn.Close()
		return nil, err
	}
	if sess.pub, err = conn.Channel(); err != nil {
		return fail(fmt.Errorf("open channel: %w", err))
	}
	if err := sess.pub.Confirm(false); err != nil {
		return fail(fmt.Errorf("confirm mode: %w", err))
	}
	if sess.sub, err = conn.Channel(); err != nil {
		return fail(fmt.Errorf("open channel: %w", err))
	}
	for range getChannels {
		ch, err := conn.Channel()
		if err != nil {
			return fail(fmt.Errorf("open channel: %w", err))
		}
		sess.get = append(sess.get, ch)
	}
	for _, p := range jobs.Priorities {
		if _, err := sess.sub.QueueDeclare(s.queueName(p), true, false, false, false, quorumArgs()); err != nil {
			return fail(fmt.Errorf("declare queue %s: %w", s.queueName(p), err))
		}
	}
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	go func() {
		<-closed
		close(sess.dead)
	}()
	return sess, nil
}

// supervise reconnects after the connection closes, with backoff, until
// the store closes.
func (s *Store) supervise(sess *session) {
	defer s.wg.Done()
	for {
		select {
		case <-s.quit:
			return
		case <-sess.dead:
		}
		s.mu.Lock()
		s.dropSessionLocked(sess)
		s.mu.Unlock()
		s.log.Warn("RabbitMQ connection closed; reconnecting", "url", Redact(s.url))
		for wait := 250 * time.Millisecond; ; wait = min(2*wait, maxReconnectWait) {
			select {
			case <-s.quit:
				return
			case <-time.After(wait):
			}
			next, err := s.connect()
			if err == nil {
				s.mu.Lock()
				select {
				case <-s.quit:
					s.mu.Unlock()
					next.conn.Close()
					return
				default:
				}
				s.sess = next
				s.mu.Unlock()
				sess = next
				break
			}
			s.log.Warn("reconnect to RabbitMQ", "url", Redact(s.url), "err", err)
		}
	}
}

// dropSessionLocked forgets what a closed connection held: the broker
// requeued its unacked messages.
func (s *Store) dropSessionLocked(sess *session) {
	if s.sess == sess {
		s.sess = nil
	}
	for h := range s.held {
		if h.sess == sess {
			h.settled = true
			delete(s.held, h)
		}
	}
	clear(s.declared)
}

// maintain rejects deliveries whose lease lapsed and publishes jobs whose
// queue message was never confirmed, until the store closes.
func (s *Store) maintain() {
	defer s.wg.Done()
	reap := time.NewTicker(min(max(s.opt.Lease/8, 10*time.Millisecond), time.Second))
	defer reap.Stop()
	sweep := time.NewTicker(unsentEvery)
	defer sweep.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-reap.C:
			s.reap()
		case <-sweep.C:
			s.sweepUnsent()
		}
	}
}

func (s *Store) reap() {
	now := time.Now()
	var lapsed []*handle
	s.mu.Lock()
	for h := range s.held {
		if now.After(h.deadline) {
			h.settled = true
			delete(s.held, h)
			lapsed = append(lapsed, h)
		}
	}
	s.mu.Unlock()
	for _, h := range lapsed {
		if err := h.ch.Nack(h.tag, false, true); err != nil {
			s.log.Debug("return lapsed delivery", "job", h.id, "err", err)
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
		if err := s.publish(ctx, s.queueName(u.Priority), u.ID, u.Pool); err != nil {
			s.log.Warn("publish unsent job", "job", u.ID, "err", err)
			return
		}
		if err := s.rec.Sent(ctx, u.ID); err != nil {
			s.log.Warn("mark job sent", "job", u.ID, "err", err)
		}
	}
}

// Close stops consuming and closes the connection: the broker returns
// every delivery this store held. It closes the records too. Idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.quit)
		s.mu.Lock()
		sess := s.sess
		if sess != nil {
			s.dropSessionLocked(sess)
		}
		s.mu.Unlock()
		if sess != nil {
			sess.conn.Close()
		}
		s.wg.Wait()
		s.rec.Close()
	})
	return nil
}

// Lease implements jobs.Store.
func (s *Store) Lease() time.Duration { return s.opt.Lease }

func (s *Store) current() (*session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sess == nil {
		return nil, fmt.Errorf("RabbitMQ at %s is unreachable", Redact(s.url))
	}
	return s.sess, nil
}

// publish sends a persistent message to queue and waits for its confirm.
func (s *Store) publish(ctx context.Context, queue, id, pool string) error {
	sess, err := s.current()
	if err != nil {
		return err
	}
	dc, err := sess.pub.PublishWithDeferredConfirm("", queue, true, false, amqp.Publishing{
		DeliveryMode: amqp.Persistent,
		ContentType:  "text/plain",
		MessageId:    id,
		Timestamp:    time.Now(),
		Headers:      amqp.Table{"pool": pool},
		Body:         []byte(id),
	})
	if err != nil {
		return fmt.Errorf("publish to %s: %w", queue, err)
	}
	ok, err := dc.WaitContext(ctx)
	if err != nil {
		return fmt.Errorf("publish to %s: %w", queue, err)
	}
	if !ok {
		return fmt.Errorf("publish to %s: RabbitMQ refused the message", queue)
	}
	return nil
}

// Create implements jobs.Store: the record first (with the idempotency
// check, atomically), then the queue message, confirmed. If the publish
// fails the record stays, marked unsent, and a sweep publishes it later;
// Create still returns the error.
func (s *Store) Create(ctx context.Context, job *jobs.Job) (*jobs.Job, bool, error) {
	j, created, err := s.rec.Create(ctx, job)
	if err != nil || !created {
		return j, false, err
	}
	if err := s.publish(ctx, s.queueName(job.Priority), job.ID, job.Pool); err != nil {
		return nil, false, fmt.Errorf("enqueue job %s: %w", job.ID, err)
	}
	if err := s.rec.Sent(ctx, job.ID); err != nil {
		// The sweep publishes it once more: a duplicate delivery.
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

// Fetch implements jobs.Store with basic.get: a pull, like the other
// stores' fetches, so that no gateway holds messages it is not working on
// (a consumer's prefetch would keep them from idle gateways). Up to
// getChannels gets run at once; with one, the deliveries keep the queue's
// order.
func (s *Store) Fetch(ctx context.Context, p jobs.Priority, n int) ([]*jobs.Delivery, error) {
	sess, err := s.current()
	if err != nil {
		return nil, err
	}
	var (
		mu       sync.Mutex
		out      []*jobs.Delivery
		firstErr error
		left     atomic.Int64
		wg       sync.WaitGroup
	)
	left.Store(int64(n))
	for _, ch := range sess.get[:min(n, len(sess.get))] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for left.Add(-1) >= 0 && ctx.Err() == nil {
				d, err := s.getOne(ctx, sess, ch, p)
				mu.Lock()
				if err != nil {
					firstErr = cmp.Or(firstErr, err)
				} else if d != nil {
					out = append(out, d)
				}
				mu.Unlock()
				if err != nil || d == nil {
					left.Store(0) // empty, or broken: the others stop too
					return
				}
			}
		}()
	}
	wg.Wait()
	if len(out) == 0 && firstErr != nil {
		return nil, fmt.Errorf("fetch %s queue: %w", p, firstErr)
	}
	return out, nil
}

// getOne takes one message and reads its job; nil when the queue is empty.
func (s *Store) getOne(ctx context.Context, sess *session, ch *amqp.Channel, p jobs.Priority) (*jobs.Delivery, error) {
	m, ok, err := ch.Get(s.queueName(p), false)
	if err != nil || !ok {
		return nil, err
	}
	pool, _ := m.Headers["pool"].(string)
	h := &handle{sess: sess, ch: ch, tag: m.DeliveryTag, id: string(m.Body), pool: pool, prio: p,
		deadline: time.Now().Add(s.opt.Lease)}
	s.mu.Lock()
	s.held[h] = struct{}{}
	s.mu.Unlock()
	job, err := s.rec.Lookup(ctx, h.id)
	if errors.Is(err, jobs.ErrNotFound) {
		job, err = nil, nil // a stale entry: the Service acks it
	}
	if err != nil {
		s.release(h, true)
		return nil, err
	}
	return &jobs.Delivery{Job: job, Priority: p, Handle: h}, nil
}

// settle marks h settled and reports whether it still held its message.
func (s *Store) settle(h *handle) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h.settled {
		return false
	}
	h.settled = true
	delete(s.held, h)
	return true
}

// release rejects h's message back to its queue (or, without requeue,
// drops it).
func (s *Store) release(h *handle, requeue bool) {
	if s.settle(h) {
		if err := h.ch.Nack(h.tag, false, requeue); err != nil {
			s.log.Debug("return delivery", "job", h.id, "err", err)
		}
	}
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
		if !h.settled {
			h.deadline = deadline
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
	if !s.settle(h) {
		return nil
	}
	if err := h.ch.Ack(h.tag, false); err != nil {
		return fmt.Errorf("ack job %s: %w", h.id, err)
	}
	return nil
}

// Requeue implements jobs.Store: at once by rejecting the delivery with
// requeue, or after delay through a delay queue (published with a
// confirm, then the delivery acked; a crash in between delivers the job
// twice, which the records make harmless).
func (s *Store) Requeue(ctx context.Context, d *jobs.Delivery, delay time.Duration) error {
	h, err := handleOf(d)
	if err != nil {
		return err
	}
	if delay <= 0 {
		s.release(h, true)
		return nil
	}
	s.mu.Lock()
	settled := h.settled
	s.mu.Unlock()
	if settled {
		return nil
	}
	q, err := s.delayQueue(h.sess, d.Priority, delay)
	if err == nil {
		err = s.publish(ctx, q, h.id, h.pool)
	}
	if err != nil {
		// The lease lapses and the job comes back without its delay.
		return fmt.Errorf("requeue job %s: %w", h.id, err)
	}
	if !s.settle(h) {
		return nil
	}
	if err := h.ch.Ack(h.tag, false); err != nil {
		return fmt.Errorf("requeue job %s: %w", h.id, err)
	}
	return nil
}

// delayBucket rounds delay up to the next of a series of durations a
// factor of √2 apart (1ms, 2ms, 3ms, 4ms, 6ms, 8ms, 11ms, …).
func delayBucket(delay time.Duration) time.Duration {
	ms := max(float64(delay)/float64(time.Millisecond), 1)
	k := math.Ceil(2 * math.Log2(ms))
	return time.Duration(math.Ceil(math.Pow(2, k/2))) * time.Millisecond
}

// delayQueue declares (once per connection) the delay queue of priority p
// for delay and returns its name.
func (s *Store) delayQueue(sess *session, p jobs.Priority, delay time.Duration) (string, error) {
	ms := delayBucket(delay).Milliseconds()
	name := s.opt.Prefix + ".delay." + string(p) + "." + strconv.FormatInt(ms, 10)
	s.mu.Lock()
	done := s.declared[name]
	s.mu.Unlock()
	if done {
		return name, nil
	}
	// Its own channel: a failed declaration closes the channel it ran on.
	ch, err := sess.conn.Channel()
	if err != nil {
		return "", fmt.Errorf("open channel: %w", err)
	}
	defer ch.Close()
	args := quorumArgs()
	args["x-message-ttl"] = ms
	args["x-dead-letter-exchange"] = ""
	args["x-dead-letter-routing-key"] = s.queueName(p)
	args["x-dead-letter-strategy"] = "at-least-once"
	args["x-overflow"] = "reject-publish"
	if _, err := ch.QueueDeclare(name, true, false, false, false, args); err != nil {
		return "", fmt.Errorf("declare delay queue %s: %w", name, err)
	}
	s.mu.Lock()
	s.declared[name] = true
	s.mu.Unlock()
	return name, nil
}
