package ratelimit

import (
	"sync"
	"time"
)

// tenantState is one tenant's per-process limit state. Each tenant has its
// own mutex, so tenants never contend with each other.
type tenantState struct {
	mu       sync.Mutex
	req, tok bucket
	inflight int64
	// rpm and tpm are the limits last used, for the sweep to tell when the
	// buckets have drained.
	rpm, tpm int64
	// dead marks a state the sweep removed from the map; a request that
	// finds it looks the tenant up again.
	dead bool
}

// state returns tenant's state, locked.
func (l *Limiter) state(tenant string) *tenantState {
	for {
		v, ok := l.local.Load(tenant)
		if !ok {
			v, _ = l.local.LoadOrStore(tenant, &tenantState{})
		}
		st := v.(*tenantState)
		st.mu.Lock()
		if !st.dead {
			return st
		}
		st.mu.Unlock()
	}
}

// admitLocal decides t against the per-process state.
func (l *Limiter) admitLocal(t *Ticket) {
	now := micros(l.clock.Now())
	st := l.state(t.tenant)
	defer st.mu.Unlock()
	st.rpm, st.tpm = t.q.rpm, t.q.tpm
	// A limit that was lifted (by a reload) leaves nothing to drain.
	if t.q.rpm == 0 {
		st.req = bucket{}
	}
	if t.q.tpm == 0 {
		st.tok = bucket{}
	}

	var wait int64
	if t.q.rpm > 0 {
		st.req.advance(now, t.q.rpm)
		if w := st.req.wait(1, t.q.rpm); w > 0 {
			t.refused, wait = refusedRPM, w
		}
	}
	if t.q.tpm > 0 {
		st.tok.advance(now, t.q.tpm)
		if t.q.cost > t.q.tpm {
			t.refused, wait = refusedTooLarge, 0
			t.reqLevel, t.tokLevel = st.req.level, st.tok.level
			return
		}
		if w := st.tok.wait(t.q.cost, t.q.tpm); w > 0 {
			if t.refused == refusedNone {
				t.refused = refusedTPM
			}
			wait = max(wait, w)
		}
	}
	if t.q.conc > 0 && st.inflight >= t.q.conc {
		if t.refused == refusedNone {
			t.refused = refusedConcurrency
		}
		wait = max(wait, int64(concurrencyRetry/time.Microsecond))
	}
	if t.refused == refusedNone {
		if t.q.rpm > 0 {
			st.req.level += windowUS
		}
		if t.q.tpm > 0 {
			st.tok.level += t.q.cost * windowUS
		}
		if t.q.conc > 0 {
			st.inflight++
		}
	}
	t.retryAfter = time.Duration(wait) * time.Microsecond
	t.reqLevel, t.tokLevel = st.req.level, st.tok.level
}

// settleLocal applies a ticket's token delta and frees its slot.
func (l *Limiter) settleLocal(t *Ticket, delta int64) {
	now := micros(l.clock.Now())
	st := l.state(t.tenant)
	defer st.mu.Unlock()
	if t.q.tpm > 0 && delta != 0 {
		st.tok.advance(now, t.q.tpm)
		st.tok.level = max(0, st.tok.level+delta*windowUS)
	}
	if t.q.conc > 0 {
		st.inflight = max(0, st.inflight-1)
	}
}

// sweepLocal drops the state of tenants that have nothing in flight and
// whose buckets have drained: such a state is the same as none.
func (l *Limiter) sweepLocal() {
	now := micros(l.clock.Now())
	l.local.Range(func(k, v any) bool {
		st := v.(*tenantState)
		st.mu.Lock()
		if st.rpm > 0 {
			st.req.advance(now, st.rpm)
		}
		if st.tpm > 0 {
			st.tok.advance(now, st.tpm)
		}
		if st.inflight == 0 && st.req.level == 0 && st.tok.level == 0 {
			st.dead = true
			l.local.Delete(k)
		}
		st.mu.Unlock()
		return true
	})
}
