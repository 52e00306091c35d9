// Package bench is sluice's load generator for OpenAI-style inference
// endpoints: the engine of `sluice bench`, usable from Go tests and
// comparison suites through Run.
//
// It runs either an open loop, which starts requests at a fixed rate on a
// precomputed schedule whether or not the server keeps up, or a closed loop
// of workers that each send their next request when the previous one
// finished. The open loop measures every latency from the request's intended
// send time, so a server that stalls shows the stall in the tail of the
// distribution instead of hiding it by slowing the load down (the error
// known as coordinated omission). Latencies, time to first token and
// inter-token latency are kept in HDR histograms.
//
// It also replays production traces (LoadTrace: Mooncake JSONL, Azure CSV)
// by their arrival times, scaled in time and in tokens; a Mooncake
// request's hash_ids expand to the same text wherever they occur, so shared
// prefixes reach the server as shared prefixes. Results add goodput at an
// SLO, the prompt tokens the server's prefix cache served (from usage), and
// the share of requests each replica answered.
package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Run sends load as cfg describes and returns what it measured. It returns
// once every request it started has finished; requests still running at the
// end of the Duration get up to Timeout.
//
// When progress is not nil, a progress bar is drawn on it while the run
// lasts (pass a terminal; the bar is redrawn in place).
//
// If ctx is canceled, Run stops sending, cuts off requests in flight (they
// are counted in Result.Canceled) and returns the partial result, with
// Interrupted set, together with ctx's error. Any other error is a bad
// Config, and the result is nil.
func Run(ctx context.Context, cfg Config, progress io.Writer) (*Result, error) {
	cfg, err := cfg.WithDefaults()
	if err != nil {
		return nil, fmt.Errorf("bench config: %w", err)
	}
	for cfg.Seed == 0 {
		// 53 bits, so the seed survives JSON readers that use doubles.
		cfg.Seed = rand.Uint64() >> 11
	}
	rt := cfg.Transport
	if rt == nil {
		conns := cfg.Concurrency
		if !cfg.closedLoop() {
			conns = cfg.MaxInFlight
		}
		t := newTransport(conns)
		defer t.CloseIdleConnections()
		rt = t
	}

	r := &runner{
		cfg:    cfg,
		client: newClient(&cfg, rt),
		rec:    newRecorder(runtime.GOMAXPROCS(0), cfg.Goodput),
	}
	r.start = time.Now()
	r.measureFrom = r.start.Add(cfg.Warmup)
	r.end = r.measureFrom.Add(cfg.Duration)

	var bar sync.WaitGroup
	stopBar := make(chan struct{})
	if progress != nil {
		p := newProgress(progress, r)
		bar.Go(func() { p.run(stopBar) })
	}
	if cfg.closedLoop() {
		r.closedLoop(ctx)
	} else {
		r.openLoop(ctx)
	}
	close(stopBar)
	bar.Wait()

	stoppedAt := r.end
	if now := time.Now(); ctx.Err() != nil && now.Before(stoppedAt) {
		stoppedAt = now
	}
	res := r.result(stoppedAt)
	if err := ctx.Err(); err != nil {
		res.Interrupted = true
		return res, err
	}
	return res, nil
}

// runner holds one run's state. Counters are atomic because the progress bar
// reads them while requests update them; they count measured requests only.
type runner struct {
	cfg    Config
	client *client
	rec    *recorder

	start, measureFrom, end time.Time

	sent, ok, failed, dropped, canceled atomic.Int64
	inFlight                            atomic.Int64
	// next is the closed loop's next request index.
	next atomic.Uint64
}

// openLoop starts requests on the arrival schedule from a single goroutine
// and waits for all of them.
func (r *runner) openLoop(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	arrivals := newSchedule(r.cfg.Arrivals, r.cfg.Rate, r.cfg.Seed)
	if r.cfg.Trace != nil {
		arrivals = newTraceSchedule(r.cfg.Trace, r.cfg.TimeScale)
	}
	total := r.end.Sub(r.start)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for i := uint64(0); ; i++ {
		at := arrivals.next()
		if at >= total {
			return
		}
		intended := r.start.Add(at)
		if wait := time.Until(intended); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
		} else if ctx.Err() != nil {
			return
		}
		measured := !intended.Before(r.measureFrom)
		if r.inFlight.Load() >= int64(r.cfg.MaxInFlight) {
			if measured {
				r.dropped.Add(1)
			}
			continue
		}
		r.inFlight.Add(1)
		wg.Go(func() {
			defer r.inFlight.Add(-1)
			r.send(ctx, i, intended, measured)
		})
	}
}

// closedLoop runs Concurrency workers until the end of the run and waits
// for them.
func (r *runner) closedLoop(ctx context.Context) {
	var wg sync.WaitGroup
	for range r.cfg.Concurrency {
		wg.Go(func() {
			for ctx.Err() == nil {
				now := time.Now()
				if !now.Before(r.end) {
					return
				}
				r.inFlight.Add(1)
				r.send(ctx, r.next.Add(1)-1, now, !now.Before(r.measureFrom))
				r.inFlight.Add(-1)
			}
		})
	}
	wg.Wait()
}

// send performs request index and records it when measured.
func (r *runner) send(ctx context.Context, index uint64, intended time.Time, measured bool) {
	if measured {
		r.sent.Add(1)
	}
	o := outcomePool.Get().(*outcome)
	o.reset()
	defer outcomePool.Put(o)
	r.client.do(ctx, index, intended, o)
	if !measured {
		return
	}
	switch {
	case o.canceled:
		r.canceled.Add(1)
		return
	case o.ok():
		r.ok.Add(1)
	default:
		r.failed.Add(1)
	}
	r.rec.record(index, o)
}

// result folds the run into a Result. The measured interval runs from the
// end of warmup to stoppedAt or the last measured request's end, whichever
// is later.
func (r *runner) result(stoppedAt time.Time) *Result {
	m := r.rec.merged()
	if m.lastDone.After(stoppedAt) {
		stoppedAt = m.lastDone
	}
	elapsed := max(stoppedAt.Sub(r.measureFrom), 0)

	cfg := r.cfg
	cfg.APIKey, cfg.Header, cfg.Transport, cfg.Trace = "", nil, nil, nil
	res := &Result{
		Config:           cfg,
		Start:            r.measureFrom,
		Elapsed:          elapsed,
		Sent:             r.sent.Load(),
		OK:               r.ok.Load(),
		Failed:           r.failed.Load(),
		Dropped:          r.dropped.Load(),
		Canceled:         r.canceled.Load(),
		FailedByStatus:   m.byStatus,
		FailedByKind:     m.byKind,
		OutputTokens:     m.outTokens,
		PromptTokens:     m.inTokens,
		Latency:          m.latency.summary(),
		TTFT:             m.ttft.summary(),
		ITL:              m.itl.summary(),
		TPOT:             m.tpot.summary(),
		LatencyHistogram: m.latency.hist,
		TTFTHistogram:    m.ttft.hist,
		ITLHistogram:     m.itl.hist,
		TPOTHistogram:    m.tpot.hist,
		CachedTokens:     m.cachedTokens,
		Replicas:         m.replicas,
	}
	if !cfg.Goodput.IsZero() {
		res.Good = m.good
	}
	if t := r.cfg.Trace; t != nil {
		res.Trace = &TraceInfo{
			Path:            t.Path,
			Format:          t.Format,
			Requests:        len(t.Requests),
			TokenScale:      t.TokenScale,
			BlockReuseBound: t.BlockReuseBound(),
			TokenReuseBound: t.TokenReuseBound(),
		}
	}
	res.derive()
	return res
}

// derive computes the rates and ratios of res from its counts.
func (res *Result) derive() {
	res.RequestsPerSecond = perSecond(res.OK, res.Elapsed)
	res.OutputTokensPerSecond = perSecond(res.OutputTokens, res.Elapsed)
	res.PromptTokensPerSecond = perSecond(res.PromptTokens, res.Elapsed)
	res.GoodPerSecond = perSecond(res.Good, res.Elapsed)
	res.GoodRatio = 0
	if n := res.OK + res.Failed; n > 0 {
		res.GoodRatio = float64(res.Good) / float64(n)
	}
	res.CachedTokenRatio = 0
	if res.PromptTokens > 0 {
		res.CachedTokenRatio = float64(res.CachedTokens) / float64(res.PromptTokens)
	}
}

// schedule yields the open loop's arrival times as offsets from its start.
type schedule struct {
	poisson bool
	rate    float64
	rng     *rand.Rand
	i       uint64
	at      float64 // seconds, for the Poisson process
	// trace, when set, gives the arrivals, divided by timeScale.
	trace     *Trace
	timeScale float64
}

func newTraceSchedule(t *Trace, timeScale float64) *schedule {
	return &schedule{trace: t, timeScale: timeScale}
}

func newSchedule(arrivals string, rate float64, seed uint64) *schedule {
	return &schedule{
		poisson: arrivals == ArrivalsPoisson,
		rate:    rate,
		rng:     rand.New(rand.NewPCG(seed, seed^0x5851f42d4c957f2d)),
	}
}

// next returns the next arrival's offset. Constant arrivals are computed
// from their index so that rounding never accumulates.
func (s *schedule) next() time.Duration {
	var sec float64
	if s.trace != nil {
		if s.i >= uint64(len(s.trace.Requests)) {
			return math.MaxInt64
		}
		sec = s.trace.Requests[s.i].At.Seconds() / s.timeScale
		s.i++
	} else if s.poisson {
		s.at += s.rng.ExpFloat64() / s.rate
		sec = s.at
	} else {
		sec = float64(s.i) / s.rate
		s.i++
	}
	if sec >= float64(math.MaxInt64)/float64(time.Second) {
		return math.MaxInt64
	}
	return time.Duration(sec * float64(time.Second))
}
