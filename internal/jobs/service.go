package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
)

// Options configure a Service. Store and Exec are required; every other
// field has the default its comment gives for the zero value.
type Options struct {
	// Store keeps jobs and queues. The Service does not close it.
	Store Store
	// Exec runs one attempt of a job: the gateway's inference handler. The
	// request's context carries the job (FromContext) and is cancelled when
	// the job is canceled or the Service shuts down.
	Exec http.Handler
	// Admit, when set, is asked before each attempt whether the job's
	// tenant has room for it now (its concurrency and rate limits). A job
	// refused waits: it is requeued after retryAfter without using an
	// attempt. release, called when the attempt ends, gives the room back
	// with the tokens the attempt used (-1: unknown). Nil admits every job.
	Admit func(ctx context.Context, job *Job) (release func(tokens int64), retryAfter time.Duration, ok bool)
	// Concurrency is the most attempts this Service runs at once. Default 64.
	Concurrency int
	// MaxAttempts is the most attempts per job. Default 3.
	MaxAttempts int
	// Retention is how long a finished job (and its idempotency key) is
	// kept. Default 24h.
	Retention time.Duration
	// WebhookSecret signs callbacks: "whsec_<base64>" or raw bytes. If
	// empty (the default), jobs with a callback_url are refused.
	WebhookSecret string
	// RetryBackoff is the delay before a job's first retry, doubled for each
	// further one (up to 1m), with jitter. Default 1s.
	RetryBackoff time.Duration
	// CallbackBackoff is the delay before a callback's first retry, doubled
	// for each further one (up to 10m), with jitter. Default 5s.
	CallbackBackoff time.Duration
	// CallbackAttempts is the most deliveries of one callback. Default 8.
	CallbackAttempts int
	// MaxResponseBody bounds a captured response; a larger one fails the
	// job. Default 32 MiB.
	MaxResponseBody int
	// MaxRequestBody bounds the body of a job (and of POST /v1/jobs, plus
	// 64 KiB for its envelope). Default 32 MiB.
	MaxRequestBody int
	// KeepHeaders adds request headers to those a job keeps (see
	// KeptHeaders). Default none.
	KeepHeaders []string
	// HTTPClient sends callbacks. Default: a client that enforces the
	// callback policy (CallbackAllow, OwnAddrs) on every address it
	// connects to, uses no proxy, follows no redirects, and gives each
	// attempt 30s. A client given here bypasses that policy at delivery.
	HTTPClient *http.Client
	// CallbackAllow lists the non-public destinations callbacks may reach,
	// as jobs.callback_allow (config.ParseAddrRule). Default none: only
	// public addresses.
	CallbackAllow []string
	// OwnAddrs are the gateway's listen addresses ("host:port"; ":port"
	// for every interface), which a callback never reaches, even when
	// CallbackAllow covers them. Default none.
	OwnAddrs []string
	// Logger receives the Service's logs. Default slog.Default().
	Logger *slog.Logger
	// Clock drives timestamps, retention, long-poll waits and the stats
	// refresh. Default the real clock. Leases and retry delays are kept by
	// the store, in real time.
	Clock clockwork.Clock
	// Registerer receives the job metrics; Close unregisters them. Nil (the
	// default) registers nothing.
	Registerer prometheus.Registerer
}

// Defaults of Options.
const (
	DefaultConcurrency      = 64
	DefaultMaxAttempts      = 3
	DefaultRetention        = 24 * time.Hour
	DefaultRetryBackoff     = time.Second
	DefaultCallbackBackoff  = 5 * time.Second
	DefaultCallbackAttempts = 8
	DefaultMaxBody          = 32 << 20
)

// Intervals of the Service's background work.
const (
	// pollInterval bounds how late a dispatcher notices jobs no event
	// announced: a lease that expired, a retry delay that passed on another
	// replica.
	pollInterval = time.Second
	// recheckDelay is how long after a wake that found too little the
	// dispatcher looks again.
	recheckDelay = 20 * time.Millisecond
	// requeueSlack is added to a requeue delay before this Service looks
	// at the queues for the requeued job.
	requeueSlack = 25 * time.Millisecond
	// countsInterval is how often gauges and PendingByPool are refreshed.
	countsInterval = 5 * time.Second
	// opTimeout bounds one store operation of the background work.
	opTimeout = 10 * time.Second
	// expireBatch is how many jobs one Store.Expire call deletes.
	expireBatch = 500
	// callbackWorkers send callbacks; callbackQueue more may wait.
	callbackWorkers = 8
	callbackQueue   = 256
)

// Service runs the job system of one gateway replica: submission, the HTTP
// API, the dispatcher, callbacks and retention. Create it with New and stop
// it with Close.
type Service struct {
	store      Store
	exec       http.Handler
	opt        Options
	log        *slog.Logger
	clock      clockwork.Clock
	metrics    *metrics
	webhookKey []byte
	keep       map[string]bool
	cbGuard    *callbackGuard

	wake      chan struct{} // cap 1: a queue may hold work
	maybeWork atomic.Uint32 // by priority rank: the queue may hold work
	slotFreed chan struct{} // cap 1: an attempt ended
	busy      atomic.Int64  // deliveries being handled (dispatch slots in use)
	callbacks chan *Delivery

	mu      sync.Mutex
	runs    map[string]*run        // running attempts by job ID
	held    map[*Delivery]struct{} // leases to keep alive
	waiters map[string]map[chan struct{}]struct{}
	counts  Counts

	queueWait window
	runTime   window

	// Shutdown, in the order Close uses them. Each goroutine receives its
	// context as an argument; only the cancel functions are kept.
	stopDispatch  context.CancelFunc
	dispatchDone  chan struct{}
	handlers      sync.WaitGroup
	stopRuns      context.CancelCauseFunc
	stopCallbacks context.CancelFunc
	callbackWG    sync.WaitGroup
	stopBG        context.CancelFunc
	bgWG          sync.WaitGroup
	closeOnce     sync.Once
	closeErr      error
}

// Causes of an attempt's cancellation.
var (
	errJobCanceled = errors.New("job canceled")
	errShutdown    = errors.New("gateway shutting down")
)

// New starts a Service: its dispatcher, lease keeper, event subscriber,
// janitor and callback senders. ctx bounds the setup only.
func New(ctx context.Context, opts Options) (*Service, error) {
	if opts.Store == nil {
		return nil, errors.New("jobs: Options.Store is nil")
	}
	if opts.Exec == nil {
		return nil, errors.New("jobs: Options.Exec is nil")
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = DefaultConcurrency
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = DefaultMaxAttempts
	}
	if opts.Retention <= 0 {
		opts.Retention = DefaultRetention
	}
	if opts.RetryBackoff <= 0 {
		opts.RetryBackoff = DefaultRetryBackoff
	}
	if opts.CallbackBackoff <= 0 {
		opts.CallbackBackoff = DefaultCallbackBackoff
	}
	if opts.CallbackAttempts <= 0 {
		opts.CallbackAttempts = DefaultCallbackAttempts
	}
	if opts.MaxResponseBody <= 0 {
		opts.MaxResponseBody = DefaultMaxBody
	}
	if opts.MaxRequestBody <= 0 {
		opts.MaxRequestBody = DefaultMaxBody
	}
	guard, err := newCallbackGuard(ctx, opts.CallbackAllow, opts.OwnAddrs)
	if err != nil {
		return nil, err
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = guard.client()
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	s := &Service{
		store:     opts.Store,
		exec:      opts.Exec,
		opt:       opts,
		log:       opts.Logger,
		clock:     opts.Clock,
		keep:      keptHeaderSet(opts.KeepHeaders),
		wake:      make(chan struct{}, 1),
		slotFreed: make(chan struct{}, 1),
		callbacks: make(chan *Delivery, callbackQueue),
		runs:      make(map[string]*run),
		held:      make(map[*Delivery]struct{}),
		waiters:   make(map[string]map[chan struct{}]struct{}),
		cbGuard:   guard,
	}
	if opts.WebhookSecret != "" {
		key, err := ParseWebhookSecret(opts.WebhookSecret)
		if err != nil {
			return nil, err
		}
		s.webhookKey = key
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	s.refreshCounts(ctx)

	bgCtx, stopBG := context.WithCancel(context.Background())
	s.stopBG = stopBG
	runCtx, stopRuns := context.WithCancelCause(context.Background())
	s.stopRuns = stopRuns
	cbCtx, stopCallbacks := context.WithCancel(context.Background())
	s.stopCallbacks = stopCallbacks
	dispatchCtx, stopDispatch := context.WithCancel(context.Background())
	s.stopDispatch = stopDispatch
	s.dispatchDone = make(chan struct{})

	s.goBG(func() { s.keepLeases(bgCtx) })
	s.goBG(func() { s.subscribe(bgCtx) })
	s.goBG(func() { s.janitor(bgCtx) })
	s.goBG(func() { s.refresher(bgCtx) })
	for range callbackWorkers {
		s.callbackWG.Add(1)
		go func() {
			defer s.callbackWG.Done()
			s.callbackWorker(cbCtx, bgCtx)
		}()
	}
	go func() {
		defer close(s.dispatchDone)
		s.dispatch(dispatchCtx, bgCtx, runCtx)
	}()
	return s, nil
}

func (s *Service) goBG(f func()) {
	s.bgWG.Add(1)
	go func() {
		defer s.bgWG.Done()
		f()
	}()
}

// Close stops the Service. It stops taking jobs, lets running attempts
// finish until ctx ends, then cancels the rest and hands them back to the
// queue (without counting the interrupted attempt), and stops every
// goroutine it started. It returns ctx's error if attempts had to be
// interrupted. Close is idempotent; it does not close the Store.
func (s *Service) Close(ctx context.Context) error {
	s.closeOnce.Do(func() { s.closeErr = s.close(ctx) })
	return s.closeErr
}

func (s *Service) close(ctx context.Context) error {
	s.stopDispatch()
	<-s.dispatchDone

	idle := make(chan struct{})
	go func() {
		s.handlers.Wait()
		close(idle)
	}()
	var err error
	select {
	case <-idle:
	case <-ctx.Done():
		s.stopRuns(errShutdown)
		<-idle
		err = fmt.Errorf("drain jobs: %w", ctx.Err())
	}
	s.stopRuns(errShutdown)

	s.stopCallbacks()
	s.callbackWG.Wait()
	// Callbacks still waiting go back to the queue for another replica.
	opsCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	for {
		select {
		case d := <-s.callbacks:
			s.requeue(opsCtx, d, 0)
			continue
		default:
		}
		break
	}

	s.stopBG()
	s.bgWG.Wait()
	s.metrics.unregister(s.opt.Registerer)
	return err
}

// SubmitRequest is a request to run asynchronously.
type SubmitRequest struct {
	// Tenant owns the job; "" on an open gateway.
	Tenant string
	// Pool is the pool the gateway resolved for the request.
	Pool string
	// Method is the HTTP method. Default POST.
	Method string
	// Path is the request path with its query, such as
	// "/v1/chat/completions". It must not be under /v1/jobs.
	Path string
	// Host is the original Host header, for host-based routes. Optional.
	Host string
	// Header holds the request's headers; only KeptHeaders (and
	// Options.KeepHeaders) are kept. Credentials never are.
	Header http.Header
	// Body is the request body.
	Body []byte
	// Priority orders the job in the queue. Default normal.
	Priority Priority
	// CallbackURL receives the finished job (http or https). Optional;
	// requires Options.WebhookSecret.
	CallbackURL string
	// IdempotencyKey returns the existing job of the same tenant and key
	// while it is retained. Optional; at most 255 bytes.
	IdempotencyKey string
	// TraceParent links the job's dispatch spans to the request that
	// submitted it (a W3C traceparent). Optional.
	TraceParent string
}

// Submit records req as a queued job and returns it. With an
// IdempotencyKey already used by the tenant it returns the existing job
// instead. An invalid request yields an *openai.Error (400 or 413).
func (s *Service) Submit(ctx context.Context, req SubmitRequest) (*Job, error) {
	job, _, err := s.submit(ctx, req)
	return job, err
}

func (s *Service) submit(ctx context.Context, req SubmitRequest) (*Job, bool, error) {
	job, oerr := s.newJob(req)
	if oerr != nil {
		return nil, false, oerr
	}
	stored, created, err := s.store.Create(ctx, job)
	if err != nil {
		return nil, false, fmt.Errorf("submit job: %w", err)
	}
	if created {
		// The store announced it to the other replicas (and to this one, a
		// little later).
		s.signalWake(stored.Priority)
	}
	return stored, created, nil
}

// Stats describe the job system for GET /api/jobs/stats.
type Stats struct {
	// Jobs counts retained jobs by state (from the store).
	Jobs map[Status]int64 `json:"jobs"`
	// PendingByPool counts jobs waiting to run, by pool (from the store).
	PendingByPool map[string]int64 `json:"pending_by_pool"`
	// InFlight is how many jobs this replica's dispatcher runs.
	InFlight int `json:"in_flight"`
	// Concurrency is this replica's dispatch limit.
	Concurrency int `json:"concurrency"`
	// QueueWait is the time from submission to first attempt of the
	// latest jobs this replica started.
	QueueWait Percentiles `json:"queue_wait_seconds"`
	// RunTime is the duration of the latest attempts this replica ran.
	RunTime Percentiles `json:"run_seconds"`
}

// Stats returns fresh counts from the store and this replica's figures.
func (s *Service) Stats(ctx context.Context) (Stats, error) {
	c, err := s.store.Counts(ctx)
	if err != nil {
		return Stats{}, fmt.Errorf("job counts: %w", err)
	}
	s.setCounts(c)
	st := Stats{
		Jobs:          c.ByStatus,
		PendingByPool: c.QueuedByPool,
		InFlight:      s.inFlight(),
		Concurrency:   s.opt.Concurrency,
		QueueWait:     s.queueWait.percentiles(),
		RunTime:       s.runTime.percentiles(),
	}
	if st.Jobs == nil {
		st.Jobs = map[Status]int64{}
	}
	if st.PendingByPool == nil {
		st.PendingByPool = map[string]int64{}
	}
	return st, nil
}

// StatsHandler serves Stats as JSON (GET /api/jobs/stats on admin).
func (s *Service) StatsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st, err := s.Stats(r.Context())
		if err != nil {
			s.log.Warn("job stats", "err", err)
			storeUnavailable().Write(w)
			return
		}
		writeJSON(w, http.StatusOK, st)
	})
}

// PendingByPool returns how many jobs wait to run per pool, as of the last
// refresh (every 5s of Options.Clock). It does not block; the autoscaler
// adds it to a pool's demand.
func (s *Service) PendingByPool() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.counts.QueuedByPool))
	for pool, n := range s.counts.QueuedByPool {
		out[pool] = int(n)
	}
	return out
}

func (s *Service) setCounts(c Counts) {
	s.mu.Lock()
	s.counts = Counts{ByStatus: maps.Clone(c.ByStatus), QueuedByPool: maps.Clone(c.QueuedByPool)}
	s.mu.Unlock()
	s.metrics.setCounts(c)
}

func (s *Service) refreshCounts(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	c, err := s.store.Counts(ctx)
	if err != nil {
		s.log.Warn("job counts", "err", err)
		return
	}
	s.setCounts(c)
}

func (s *Service) refresher(ctx context.Context) {
	t := s.clock.NewTicker(countsInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
			s.refreshCounts(ctx)
		}
	}
}

// janitor deletes jobs whose retention passed.
func (s *Service) janitor(ctx context.Context) {
	t := s.clock.NewTicker(janitorInterval(s.opt.Retention))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
			s.expire(ctx)
		}
	}
}

// janitorInterval lets a finished job outlive its retention by at most a
// tenth of it, checked at least every second and at most every minute.
func janitorInterval(retention time.Duration) time.Duration {
	return min(max(retention/10, time.Second), time.Minute)
}

func (s *Service) expire(ctx context.Context) {
	before := s.clock.Now().Add(-s.opt.Retention)
	for ctx.Err() == nil {
		opCtx, cancel := context.WithTimeout(ctx, opTimeout)
		n, err := s.store.Expire(opCtx, before, expireBatch)
		cancel()
		if err != nil {
			s.log.Warn("expire jobs", "err", err)
			return
		}
		if n < expireBatch {
			return
		}
	}
}

// subscribe follows the store's events until ctx ends, resubscribing after
// a broken subscription.
func (s *Service) subscribe(ctx context.Context) {
	for {
		err := s.store.Subscribe(ctx, s.onEvent)
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("job events subscription broke; resubscribing", "err", err)
		// Jobs finished meanwhile are still seen: long polls re-read the
		// job, and dispatchers poll the queues.
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

func (s *Service) onEvent(ev Event) {
	switch ev.Kind {
	case EventEnqueued:
		if p, err := ParsePriority(string(ev.Priority)); err == nil {
			s.signalWake(p)
		}
	case EventFinished:
		s.notify(ev.ID)
	case EventCancel:
		s.cancelRun(ev.ID)
	}
}

// signalWake tells the dispatcher that the queue of p may hold work.
func (s *Service) signalWake(p Priority) {
	s.maybeWork.Or(1 << p.rank())
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// waitFor returns a channel closed when job id is announced finished, and
// a function to call when no longer waiting.
func (s *Service) waitFor(id string) (<-chan struct{}, func()) {
	ch := make(chan struct{})
	s.mu.Lock()
	set := s.waiters[id]
	if set == nil {
		set = make(map[chan struct{}]struct{})
		s.waiters[id] = set
	}
	set[ch] = struct{}{}
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if set, ok := s.waiters[id]; ok {
			if _, ok := set[ch]; ok {
				delete(set, ch)
				if len(set) == 0 {
					delete(s.waiters, id)
				}
			}
		}
	}
}

func (s *Service) notify(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch := range s.waiters[id] {
		close(ch)
	}
	delete(s.waiters, id)
}

func (s *Service) cancelRun(id string) {
	s.mu.Lock()
	r := s.runs[id]
	s.mu.Unlock()
	if r != nil {
		r.cancel(errJobCanceled)
	}
}

func (s *Service) inFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.runs)
}
