package ratelimit

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

type refusal uint8

const (
	refusedNone refusal = iota
	refusedRPM
	refusedTPM
	refusedConcurrency
	refusedTooLarge // tokens above the tpm limit itself
)

// Ticket is one admission decision. Its state is fixed when Admit returns,
// except for Done.
type Ticket struct {
	l      *Limiter
	tenant string
	q      quota

	refused    refusal
	retryAfter time.Duration
	viaRedis   bool   // admitted by Redis: settle there
	id         string // Redis concurrency slot; "" when none

	// For the response headers.
	reqLevel, tokLevel int64

	done atomic.Bool
}

// unlimited is the Ticket of a tenant without limits.
var unlimited = &Ticket{}

// Done settles the ticket: actualTokens (prompt plus completion, from the
// response's usage) replaces the reservation, refunding or charging the
// difference, and the concurrency slot is freed. Pass a negative value when
// the usage is unknown; the reservation then stands. Done never blocks: with
// Redis, the settlement is queued for the Limiter's background goroutine
// (dropped, and counted, if Redis is unreachable or the queue is full; the
// slot then frees when its lease ends). Only the first call counts; Done on a
// refused ticket does nothing.
func (t *Ticket) Done(actualTokens int64) {
	if t.l == nil || t.refused != refusedNone || !t.done.CompareAndSwap(false, true) {
		return
	}
	var delta int64
	if actualTokens >= 0 && t.q.tpm > 0 {
		delta = clampCost(actualTokens) - t.q.cost
	}
	if t.viaRedis {
		t.l.settleRedis(t, delta)
		return
	}
	t.l.settleLocal(t, delta)
}

// Header names, as OpenAI sends them (x-ratelimit-limit-requests, ...),
// in Go's canonical form so setting them skips canonicalization.
const (
	hLimitRequests     = "X-Ratelimit-Limit-Requests"
	hRemainingRequests = "X-Ratelimit-Remaining-Requests"
	hResetRequests     = "X-Ratelimit-Reset-Requests"
	hLimitTokens       = "X-Ratelimit-Limit-Tokens"
	hRemainingTokens   = "X-Ratelimit-Remaining-Tokens"
	hResetTokens       = "X-Ratelimit-Reset-Tokens"
)

// SetHeaders writes OpenAI's rate-limit headers for the tenant's request
// and token limits, as they stand after this decision:
// x-ratelimit-limit-requests, x-ratelimit-remaining-requests,
// x-ratelimit-reset-requests (time until the full allowance is back, as
// "1s" or "6m0s"), and the -tokens variants. A limit that is not set
// writes no headers. Call it for refused tickets too.
func (t *Ticket) SetHeaders(h http.Header) {
	if t.q.rpm > 0 {
		h[hLimitRequests] = []string{strconv.FormatInt(t.q.rpm, 10)}
		h[hRemainingRequests] = []string{strconv.FormatInt(remaining(t.reqLevel, t.q.rpm), 10)}
		h[hResetRequests] = []string{formatReset(resetUS(t.reqLevel, t.q.rpm))}
	}
	if t.q.tpm > 0 {
		h[hLimitTokens] = []string{strconv.FormatInt(t.q.tpm, 10)}
		h[hRemainingTokens] = []string{strconv.FormatInt(remaining(t.tokLevel, t.q.tpm), 10)}
		h[hResetTokens] = []string{formatReset(resetUS(t.tokLevel, t.q.tpm))}
	}
}

// formatReset formats µs as OpenAI does: a Go duration, to the millisecond
// ("1s", "6m0s", "17ms").
func formatReset(us int64) string {
	d := time.Duration(us) * time.Microsecond
	return d.Round(time.Millisecond).String()
}
