package batch

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/sluice-ai/sluice/internal/jobs"
)

// Options configure a Service. Jobs and Store are required; every other
// field has the default its comment gives for the zero value.
type Options struct {
	// Jobs runs the batches' lines. The Service does not close it.
	Jobs *jobs.Service
	// Store is the job store Jobs uses. Files and batches are kept in its
	// engine: JetStream for the embedded and nats:// stores
	// (natsstore.Store), Redis for the redis store (redisstore.Store). The
	// Service reads job results from it and follows its events.
	Store jobs.Store
	// Redis keeps files and batches when Store has no storage of its own
	// (the amqp:// and kafka:// stores, whose job records live in
	// redis.url), under the hash tag {sluice:jobs:batch}. Ignored when
	// Store has storage. The Service does not close it.
	Redis redis.UniversalClient
	// MaxFileSize bounds an uploaded file (jobs.max_file_size). Default
	// 200 MiB, OpenAI's limit for batch input files.
	MaxFileSize int64
	// MaxRequestBody bounds one line's body, as limits.max_request_body
	// bounds a request. Default 32 MiB.
	MaxRequestBody int
	// Window is how many lines of one batch are submitted as jobs and not
	// yet finished at a time. Default 256. Lines wait in the batch, not in
	// the job queue, so live jobs and other batches are not stuck behind a
	// large one.
	Window int
	// Lease is how long a batch stays with a Service that stopped renewing
	// its claim (a gateway that died); another Service then resumes it.
	// Default 30s.
	Lease time.Duration
	// FileRetention is how long a file is kept when its upload sets no
	// expires_after, and how long a batch's output and error files are kept
	// when the batch sets no output_expires_after (jobs.file_retention).
	// Expired files are deleted by every Service's sweeper. Default
	// DefaultFileRetention (30 days).
	FileRetention time.Duration
	// Logger receives the Service's logs. Default slog.Default().
	Logger *slog.Logger
	// Clock drives timestamps, expiry, leases and polling. Default the
	// real clock.
	Clock clockwork.Clock
}

// Defaults of Options.
const (
	DefaultMaxFileSize = 200 << 20
	DefaultWindow      = 256
	DefaultLease       = 30 * time.Second
	// CompletionWindow is the only completion_window accepted, as at
	// OpenAI.
	CompletionWindow = "24h"
	completionWindow = 24 * time.Hour
)

// Intervals of the background work.
const (
	// tick is how often a runner commits results, renews its claim and
	// rereads its batch (a cancel from another gateway).
	tick = time.Second
	// pollEvery: every this many ticks a runner checks all its unfinished
	// jobs, in case a finish event was missed.
	pollEvery = 5
	// flushLines commits results before the tick when this many wait.
	flushLines = 256
	// maxSegments: a batch with more committed segments has them merged.
	maxSegments = 64
	// opTimeout bounds one storage operation of the background work.
	opTimeout = 30 * time.Second
)

// Service serves the Files and Batch APIs and runs batches. Create it with
// New and stop it with Close.
type Service struct {
	st      storage
	jobs    *jobs.Service
	store   jobs.Store
	jobsAPI http.Handler
	opt     Options
	log     *slog.Logger
	clock   clockwork.Clock
	id      string // this Service's name in batch claims

	mu      sync.Mutex
	runners map[string]*runner // batch ID → its runner here
	byJob   map[string]*runner // job ID → the runner waiting for it

	wake      chan struct{} // cap 1: look for batches to run
	stop      context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// jetStreamStore is what a job store offers when it keeps its data in
// JetStream (natsstore.Store).
type jetStreamStore interface {
	JetStream() jetstream.JetStream
	Name() string
	Replicas() int
}

// defaultRedisPrefix names the keys of Options.Redis: the redis job
// store's default prefix.
const defaultRedisPrefix = "sluice:jobs"

// redisStore is what a job store offers when it keeps its data in Redis
// (redisstore.Store).
type redisStore interface {
	Client() redis.UniversalClient
	Prefix() string
}

// New opens the Service's storage in the job store's engine and starts
// its scheduler, which resumes the batches that were running. ctx bounds
// the setup only.
func New(ctx context.Context, opts Options) (*Service, error) {
	if opts.Jobs == nil || opts.Store == nil {
		return nil, errors.New("batch: Options.Jobs and Options.Store are required")
	}
	switch store := opts.Store.(type) {
	case jetStreamStore:
		st, err := openJetStream(ctx, store.JetStream(), store.Name(), store.Replicas())
		if err != nil {
			return nil, fmt.Errorf("batch: %w", err)
		}
		return newService(opts, st), nil
	case redisStore:
		return newService(opts, newRedisStorage(store.Client(), store.Prefix())), nil
	}
	if opts.Redis != nil {
		return newService(opts, newRedisStorage(opts.Redis, defaultRedisPrefix)), nil
	}
	return nil, fmt.Errorf("batch: the job store %T keeps no files and Options.Redis is nil; the Batch API needs the embedded, a nats:// or the redis job store, or redis.url", opts.Store)
}

func newService(opts Options, st storage) *Service {
	if opts.MaxFileSize <= 0 {
		opts.MaxFileSize = DefaultMaxFileSize
	}
	if opts.MaxRequestBody <= 0 {
		opts.MaxRequestBody = jobs.DefaultMaxBody
	}
	if opts.Window <= 0 {
		opts.Window = DefaultWindow
	}
	if opts.Lease <= 0 {
		opts.Lease = DefaultLease
	}
	if opts.FileRetention <= 0 {
		opts.FileRetention = DefaultFileRetention
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	s := &Service{
		st:      st,
		jobs:    opts.Jobs,
		store:   opts.Store,
		opt:     opts,
		log:     opts.Logger,
		clock:   opts.Clock,
		id:      rand.Text(),
		runners: make(map[string]*runner),
		byJob:   make(map[string]*runner),
		wake:    make(chan struct{}, 1),
	}
	s.jobsAPI = opts.Jobs.Handler(tenantFromContext, nil)
	ctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	s.wg.Add(3)
	go func() {
		defer s.wg.Done()
		s.schedule(ctx)
	}()
	go func() {
		defer s.wg.Done()
		s.sweep(ctx)
	}()
	go func() {
		defer s.wg.Done()
		s.follow(ctx)
	}()
	s.kick()
	return s
}

// Close stops the scheduler and every runner and waits for them. Batches
// keep their state: the next Service on the store resumes them. Close is
// idempotent.
func (s *Service) Close() {
	s.closeOnce.Do(func() {
		s.stop()
		s.wg.Wait()
	})
}

func (s *Service) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// schedule claims and runs batches that no live Service runs, when kicked
// and every third of a lease, until ctx ends.
func (s *Service) schedule(ctx context.Context) {
	t := s.clock.NewTicker(max(s.opt.Lease/3, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-t.Chan():
		}
		s.claimAll(ctx)
	}
}

func (s *Service) claimAll(ctx context.Context) {
	opCtx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	refs, err := s.st.active(opCtx)
	if err != nil {
		s.log.Warn("list active batches", "err", err)
		return
	}
	for _, ref := range refs {
		s.mu.Lock()
		_, running := s.runners[ref.id]
		s.mu.Unlock()
		if running {
			continue
		}
		rec, err := s.claim(opCtx, ref)
		if err != nil {
			s.log.Warn("claim batch", "batch", ref.id, "err", err)
			continue
		}
		if rec != nil {
			s.startRunner(ctx, rec)
		}
	}
}

// claim takes batch ref for this Service if no one holds it, or its holder
// stopped renewing the claim. It returns nil if the batch is someone
// else's or needs no runner.
func (s *Service) claim(ctx context.Context, ref ref) (*record, error) {
	for {
		rec, err := s.st.batch(ctx, ref.tenant, ref.id)
		if errors.Is(err, errNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		now := s.clock.Now()
		if rec.Status.Final() {
			// Its runner stopped between recording the end and unlisting
			// the batch: unlist it now.
			return nil, s.st.updateBatch(ctx, rec)
		}
		if rec.Owner != "" && rec.Owner != s.id && now.Sub(rec.Heartbeat) < s.opt.Lease {
			return nil, nil
		}
		rec.Owner, rec.Heartbeat = s.id, now
		err = s.st.updateBatch(ctx, rec)
		if errors.Is(err, errConflict) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return rec, nil
	}
}

func (s *Service) startRunner(ctx context.Context, rec *record) {
	r := newRunner(s, rec)
	s.mu.Lock()
	s.runners[rec.ID] = r
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.dropRunner(r)
		// A runner that stopped on an error leaves the batch claimed by
		// this Service: the scheduler's next round (a third of a lease
		// later) takes it up again, without a hot loop on a failing store.
		if err := r.run(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("batch runner stopped", "batch", rec.ID, "err", err)
		}
	}()
}

func (s *Service) dropRunner(r *runner) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.runners[r.id] == r {
		delete(s.runners, r.id)
	}
	for id, x := range s.byJob {
		if x == r {
			delete(s.byJob, id)
		}
	}
}

// watch routes the finish of job id to r.
func (s *Service) watch(id string, r *runner) {
	s.mu.Lock()
	s.byJob[id] = r
	s.mu.Unlock()
}

func (s *Service) unwatch(id string) {
	s.mu.Lock()
	delete(s.byJob, id)
	s.mu.Unlock()
}

// follow passes job finish events to the runners waiting for those jobs,
// until ctx ends; runners also poll, so a broken subscription only slows
// them down.
func (s *Service) follow(ctx context.Context) {
	for {
		err := s.store.Subscribe(ctx, func(ev jobs.Event) {
			if ev.Kind != jobs.EventFinished {
				return
			}
			s.mu.Lock()
			r := s.byJob[ev.ID]
			s.mu.Unlock()
			if r != nil {
				r.finished(ev.ID)
			}
		})
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("batch: job events subscription broke; resubscribing", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-s.clock.After(time.Second):
		}
	}
}

// changed tells the local runner of batch id, if any, that its record
// changed (a cancel).
func (s *Service) changed(id string) {
	s.mu.Lock()
	r := s.runners[id]
	s.mu.Unlock()
	if r != nil {
		r.changed()
	}
}

type tenantKeyT struct{}

// tenantFromContext names the tenant of the Service's own calls to the
// jobs API.
func tenantFromContext(r *http.Request) string {
	t, _ := r.Context().Value(tenantKeyT{}).(string)
	return t
}
