package upstream

import (
	"sync"
	"time"
)

// Passive health (outlier detection) and the per-backend circuit breaker.
//
// Every finished attempt is reported to Observe. A backend that fails
// consecutive_failures times in a row, or whose error share over the last
// window exceeds error_rate (with at least min_requests), is ejected: its
// breaker opens and it gets no traffic for ejection_time × the number of
// times it has been ejected (capped at 10×), so a replica that keeps failing
// stays out longer each time. When that time has passed the breaker is
// half-open: the backend rejoins with room for one request at a time; the
// first success closes the breaker, a failure ejects it again. At most
// max_ejected_percent of a pool's backends are ejected at once, so a
// pool-wide problem (the model server's dependency is down) does not empty
// the pool.

// maxEjectionMultiple caps how far repeated ejections stretch ejection_time.
const maxEjectionMultiple = 10

// windowBuckets is the resolution of the error-rate window.
const windowBuckets = 10

// outlierState is one backend's passive-health counters.
type outlierState struct {
	mu          sync.Mutex
	consecutive int
	ejections   int
	buckets     [windowBuckets]struct{ ok, fail int }
	bucketStart [windowBuckets]time.Time
}

// BreakerState is a backend's circuit-breaker state for /api/pools.
func (b *Backend) BreakerState() string {
	switch {
	case b.State() == StateEjected:
		return "open"
	case b.halfOpen.Load():
		return "half_open"
	}
	return "closed"
}

// Ejections is how many times the backend has been ejected.
func (b *Backend) Ejections() int {
	b.out.mu.Lock()
	defer b.out.mu.Unlock()
	return b.out.ejections
}

// Observe records the outcome of an attempt on b: failed is a connect error,
// a timeout, a broken response or a 5xx.
func (p *Pool) Observe(b *Backend, failed bool) {
	od := p.Config().OutlierDetection
	if b.halfOpen.Load() {
		if failed {
			p.eject(b)
		} else if b.halfOpen.CompareAndSwap(true, false) {
			p.mu.Lock()
			p.storeLocked(p.snap.Load().all)
			p.mu.Unlock()
			p.opts.Logger.Info("backend breaker closed", "pool", p.name, "backend", b.key)
		}
		return
	}
	now := p.opts.Clock.Now()
	o := &b.out
	o.mu.Lock()
	if failed {
		o.consecutive++
	} else {
		o.consecutive = 0
	}
	trip := od.ConsecutiveFailures > 0 && o.consecutive >= od.ConsecutiveFailures
	if od.ErrorRate > 0 && od.Window > 0 {
		width := od.Window.D() / windowBuckets
		i := int(now.UnixNano()/int64(width)) % windowBuckets
		if start := now.Truncate(width); !o.bucketStart[i].Equal(start) {
			o.bucketStart[i], o.buckets[i].ok, o.buckets[i].fail = start, 0, 0
		}
		if failed {
			o.buckets[i].fail++
		} else {
			o.buckets[i].ok++
		}
		var ok, fail int
		for j := range o.buckets {
			if now.Sub(o.bucketStart[j]) < od.Window.D() {
				ok += o.buckets[j].ok
				fail += o.buckets[j].fail
			}
		}
		if total := ok + fail; total >= max(od.MinRequests, 1) && float64(fail)/float64(total) >= od.ErrorRate {
			trip = true
		}
	}
	o.mu.Unlock()
	if trip && failed {
		p.eject(b)
	}
}

// eject opens b's breaker unless that would eject more than
// max_ejected_percent of the pool.
func (p *Pool) eject(b *Backend) {
	od := p.Config().OutlierDetection
	p.mu.Lock()
	defer p.mu.Unlock()
	if b.State() == StateEjected {
		return
	}
	all := p.snap.Load().all
	ejected := 0
	for _, x := range all {
		if x.State() == StateEjected {
			ejected++
		}
	}
	if (ejected+1)*100 > od.MaxEjectedPercent*len(all) {
		p.opts.Logger.Warn("backend failing but not ejected: max_ejected_percent reached", "pool", p.name, "backend", b.key, "ejected", ejected)
		return
	}
	o := &b.out
	o.mu.Lock()
	o.ejections++
	o.consecutive = 0
	o.buckets = [windowBuckets]struct{ ok, fail int }{}
	d := od.EjectionTime.D() * time.Duration(min(o.ejections, maxEjectionMultiple))
	n := o.ejections
	o.mu.Unlock()

	b.halfOpen.Store(false)
	b.SetState(StateEjected)
	p.storeLocked(all)
	p.Metrics.Ejections.Inc()
	p.opts.Logger.Warn("backend ejected; breaker open", "pool", p.name, "backend", b.key, "for", d, "ejections", n)
	p.afterFuncLocked(d, func() { p.unEject(b) })
}

// unEject moves an ejected backend to half-open.
func (p *Pool) unEject(b *Backend) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if b.State() != StateEjected {
		return
	}
	b.halfOpen.Store(true)
	b.SetState(StateHealthy)
	p.storeLocked(p.snap.Load().all)
	p.opts.Logger.Info("backend breaker half-open: probing", "pool", p.name, "backend", b.key)
}
