// Package ratelimit enforces per-tenant limits: requests per minute, tokens
// per minute and concurrent requests.
//
// Each request is admitted with a Ticket that reserves one request, the
// tokens the caller expects it to use and one concurrency slot; Done settles
// the tokens against what the response really used and frees the slot.
// Without Redis the limits hold per process. With Redis they hold across
// every gateway sharing it, exactly: one Lua script checks and reserves all
// three limits atomically in one round trip. When Redis cannot be reached,
// the Limiter keeps serving under the per-process limits (fail open, with
// that bound), says so in its log and metrics, and goes back to Redis as
// soon as it answers. docs/tenancy.md explains the algorithm.
package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/openai"
)

// Options configure a Limiter. The zero value is a per-process limiter on
// the real clock with no metrics.
type Options struct {
	// Redis, when set, holds the limits' state so they are global across
	// every gateway that shares it. Nil keeps them per process. The Limiter
	// does not close it.
	Redis redis.UniversalClient
	// KeyPrefix starts every Redis key. Default "sluice:rl:".
	KeyPrefix string
	// RedisTimeout bounds one Redis call on the request path; a call that
	// takes longer counts as Redis being unreachable. Default 500ms.
	RedisTimeout time.Duration
	// Logger receives degraded/recovered notices. Nil discards them.
	Logger *slog.Logger
	// Clock is the time source. Nil uses the real clock and, with Redis,
	// the Redis server's clock, so replicas need not agree on the time. A
	// non-nil Clock is also sent to Redis as the time (tests drive several
	// limiters sharing one Redis with one fake time this way).
	Clock clockwork.Clock
	// Registerer receives the limiter's metrics. Nil registers none.
	Registerer prometheus.Registerer
}

const (
	defaultKeyPrefix    = "sluice:rl:"
	defaultRedisTimeout = 500 * time.Millisecond

	// lease is how long a concurrency slot held in Redis lives without
	// renewal: a gateway that dies holding slots frees them within this.
	lease = time.Minute
	// renewEvery is how often the slots of running requests are renewed.
	renewEvery = lease / 3
	// probeEvery is how often a degraded limiter checks whether Redis is
	// back.
	probeEvery = time.Second
	// logEvery spaces the degraded/recovered log lines.
	logEvery = 30 * time.Second
	// sweepEvery is how often idle per-process tenant state is dropped.
	sweepEvery = time.Minute
	// settleQueue bounds settlements waiting for Redis.
	settleQueue = 4096
	// concurrencyRetry is the Retry-After of a concurrency refusal: a slot
	// frees when some request ends, which cannot be predicted.
	concurrencyRetry = time.Second
)

// Limiter admits requests under per-tenant limits. It is safe for
// concurrent use. Close it to stop its background work.
type Limiter struct {
	rdb     redis.UniversalClient
	prefix  string
	timeout time.Duration
	clock   clockwork.Clock
	// redisTime: send "" as the time and let Redis use its own clock.
	redisTime bool
	log       *slog.Logger
	m         *metrics

	local sync.Map // tenant name → *tenantState

	idPrefix string
	nextID   atomic.Uint64

	degraded atomic.Bool
	logMu    sync.Mutex
	lastLog  time.Time

	settle chan settlement
	active sync.Map // *Ticket → struct{}: Redis tickets holding a slot

	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
}

// New returns a Limiter and starts its background goroutine (renewing
// concurrency leases, settling with Redis, probing a lost Redis, dropping
// idle tenants).
func New(opts Options) (*Limiter, error) {
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("ratelimit: ticket id prefix: %w", err)
	}
	l := &Limiter{
		rdb:       opts.Redis,
		prefix:    opts.KeyPrefix,
		timeout:   opts.RedisTimeout,
		clock:     opts.Clock,
		redisTime: opts.Clock == nil,
		log:       opts.Logger,
		m:         m,
		idPrefix:  hex.EncodeToString(id[:]) + "-",
		settle:    make(chan settlement, settleQueue),
		done:      make(chan struct{}),
	}
	m.degraded.Set(0)
	if l.prefix == "" {
		l.prefix = defaultKeyPrefix
	}
	if l.timeout <= 0 {
		l.timeout = defaultRedisTimeout
	}
	if l.clock == nil {
		l.clock = clockwork.NewRealClock()
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	go l.run(ctx)
	return l, nil
}

// Close stops the background goroutine after it has sent the settlements
// still queued (for at most a few seconds) and waits for it. Tickets done
// after Close settle locally only. It is safe to call more than once.
func (l *Limiter) Close() {
	l.closeOnce.Do(func() {
		l.cancel()
		<-l.done
	})
}

// Degraded reports whether the Limiter has lost Redis and is enforcing
// per-process limits.
func (l *Limiter) Degraded() bool { return l.degraded.Load() }

// Limit names, as used in the sluice_ratelimited_total metric.
const (
	limitRPM         = "rpm"
	limitTPM         = "tpm"
	limitConcurrency = "concurrency"
)

// Admit reserves one request, reserveTokens tokens and one concurrency slot
// for tenant under lim. reserveTokens is what the caller expects the
// request to use (the request's max_tokens plus a prompt estimate); Done
// settles the difference.
//
// Admit always returns a Ticket, whose SetHeaders describes the tenant's
// limits. A non-nil error (a 429 with Retry-After) means the request was
// refused, nothing was reserved, and Done is a no-op. A request that asks for
// more tokens than the tpm limit itself is refused without Retry-After:
// waiting would not help.
//
// With Redis, Admit is one round trip bounded by Options.RedisTimeout; if
// Redis fails, this and following requests use per-process limits until a
// background probe finds Redis again.
func (l *Limiter) Admit(ctx context.Context, tenant string, lim config.TenantLimits, reserveTokens int64) (*Ticket, *openai.Error) {
	q := quota{
		rpm:  clampLimit(lim.RPM),
		tpm:  clampLimit(lim.TPM),
		conc: int64(max(lim.Concurrency, 0)),
		cost: clampCost(reserveTokens),
	}
	if q.rpm == 0 && q.tpm == 0 && q.conc == 0 {
		return unlimited, nil
	}
	t := &Ticket{l: l, tenant: tenant, q: q}
	if l.rdb != nil && !l.degraded.Load() {
		err := l.admitRedis(ctx, t)
		if err == nil {
			return t, l.refusalError(t)
		}
		if ctx.Err() == nil {
			l.lostRedis(err)
		}
	}
	l.admitLocal(t)
	return t, l.refusalError(t)
}

// quota is one request's limits and token reservation.
type quota struct {
	rpm, tpm, conc int64
	cost           int64
}

// refusalError turns a refused ticket into its 429, counting it.
func (l *Limiter) refusalError(t *Ticket) *openai.Error {
	var limit, msg string
	switch t.refused {
	case refusedNone:
		return nil
	case refusedRPM:
		limit, msg = limitRPM, fmt.Sprintf("rate limit reached: %d requests per minute", t.q.rpm)
	case refusedTPM:
		limit, msg = limitTPM, fmt.Sprintf("rate limit reached: %d tokens per minute; this request reserves %d", t.q.tpm, t.q.cost)
	case refusedConcurrency:
		limit, msg = limitConcurrency, fmt.Sprintf("rate limit reached: %d concurrent requests", t.q.conc)
	case refusedTooLarge:
		l.m.limited.WithLabelValues(t.tenant, limitTPM).Inc()
		return openai.RateLimited(fmt.Sprintf("request too large: it reserves %d tokens, more than the limit of %d tokens per minute; lower max_tokens or the prompt", t.q.cost, t.q.tpm), 0)
	}
	l.m.limited.WithLabelValues(t.tenant, limit).Inc()
	return openai.RateLimited(msg, t.retryAfter)
}

// micros is t in µs since the Unix epoch.
func micros(t time.Time) int64 { return t.UnixMicro() }

// lostRedis switches to per-process limits after a Redis failure.
func (l *Limiter) lostRedis(err error) {
	l.m.redisErrors.Inc()
	if l.degraded.CompareAndSwap(false, true) {
		l.m.degraded.Set(1)
		l.logState("redis unreachable: enforcing per-process rate limits until it answers", "err", err)
	}
}

// foundRedis switches back to Redis.
func (l *Limiter) foundRedis() {
	if l.degraded.CompareAndSwap(true, false) {
		l.m.degraded.Set(0)
		l.logState("redis reachable again: rate limits are global again")
	}
}

// logState logs a degraded/recovered transition, at most once per
// logEvery, so a flapping Redis does not flood the log.
func (l *Limiter) logState(msg string, args ...any) {
	l.logMu.Lock()
	now := l.clock.Now()
	if !l.lastLog.IsZero() && now.Sub(l.lastLog) < logEvery {
		l.logMu.Unlock()
		return
	}
	l.lastLog = now
	l.logMu.Unlock()
	l.log.Warn(msg, args...)
}

// run is the Limiter's one background goroutine.
func (l *Limiter) run(ctx context.Context) {
	defer close(l.done)
	renew := l.clock.NewTicker(renewEvery)
	defer renew.Stop()
	probe := l.clock.NewTicker(probeEvery)
	defer probe.Stop()
	sweep := l.clock.NewTicker(sweepEvery)
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			l.drainSettlements()
			return
		case s := <-l.settle:
			l.settleBatch(ctx, s)
		case <-renew.Chan():
			l.renewLeases(ctx)
		case <-probe.Chan():
			l.probe(ctx)
		case <-sweep.Chan():
			l.sweepLocal()
		}
	}
}

// probe checks a lost Redis.
func (l *Limiter) probe(ctx context.Context) {
	if l.rdb == nil || !l.degraded.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	if err := l.rdb.Ping(ctx).Err(); err != nil {
		l.m.redisErrors.Inc()
		return
	}
	l.foundRedis()
}

func (l *Limiter) newTicketID() string {
	return l.idPrefix + strconv.FormatUint(l.nextID.Add(1), 36)
}
