package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
)

// respond copies resp to w. Streamed bodies (SSE, or no Content-Length) are
// flushed after every read so each event reaches the client as soon as the
// backend sends it; a stall longer than timeouts.stream_idle ends the
// response, with an error event for SSE so the client never mistakes a cut
// stream for a complete one.
//
// It returns when the first body byte arrived (zero for an empty body) and
// whether the upstream body broke. For SSE it sets res.InterToken and
// res.InterTokenGaps from the gaps between the reads that completed events.
func (p *Proxy) respond(w http.ResponseWriter, r *http.Request, pr *Request, resp *http.Response, res *Result) (first time.Time, broken bool) {
	defer resp.Body.Close()
	h := w.Header()
	copyHeader(h, resp.Header)
	if len(resp.Trailer) > 0 {
		keys := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		h["Trailer"] = []string{strings.Join(keys, ", ")}
	}
	sse := isEventStream(resp.Header.Get("Content-Type"))
	if sse {
		// A stream is sent chunked: a length would forbid the error event
		// that ends a failed stream.
		delete(h, "Content-Length")
	}
	flush := sse || resp.ContentLength == -1
	w.WriteHeader(resp.StatusCode)
	res.Status = resp.StatusCode

	var rc *http.ResponseController
	if flush {
		rc = http.NewResponseController(w)
		_ = rc.Flush() // headers go out now; the first event may take a while
	}
	// A stall closes the upstream body, which ends the pending Read.
	idle := pr.Pool.Config().Timeouts.StreamIdle.D()
	watch := p.watchIdle(idle, &resp.Body)
	defer p.unwatchIdle(watch)

	bufp := p.bufPool.Get().(*[]byte)
	defer p.bufPool.Put(bufp)
	buf := *bufp
	var lastEvent time.Time // when the latest read that completed an event ended
	var gaps time.Duration
	defer func() {
		if res.InterTokenGaps > 0 {
			res.InterToken = gaps / time.Duration(res.InterTokenGaps)
		}
	}()
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if first.IsZero() {
				first = p.clock.Now()
			}
			if sse && bytes.Contains(buf[:n], eventEnd) {
				// Events that arrive in one read were sent together:
				// the gap is between reads, not between the events.
				now := p.clock.Now()
				if !lastEvent.IsZero() {
					gaps += now.Sub(lastEvent)
					res.InterTokenGaps++
				}
				lastEvent = now
			}
			watch.timer.Reset(idle)
			if pr.Observer != nil {
				pr.Observer.Observe(resp.Header, buf[:n])
			}
			if _, werr := w.Write(buf[:n]); werr != nil {
				res.Status, res.Err = StatusClientClosed, werr
				return
			}
			res.Bytes += int64(n)
			if flush {
				if err := rc.Flush(); err != nil {
					res.Status, res.Err = StatusClientClosed, err
					return
				}
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			if watch.stalled.Load() {
				rerr = errStreamIdleTimeout
			}
			return first, p.streamFailed(w, r, pr, sse, rerr, res)
		}
	}
	for k, vv := range resp.Trailer {
		h[http.TrailerPrefix+k] = vv
	}
	return first, false
}

// streamFailed ends a response whose body broke after the status was sent.
// It reports whether the backend is to blame (not the client leaving).
func (p *Proxy) streamFailed(w http.ResponseWriter, r *http.Request, pr *Request, sse bool, err error, res *Result) (upstreamFault bool) {
	if r.Context().Err() != nil {
		res.Status, res.Err = StatusClientClosed, r.Context().Err()
		pr.Pool.Metrics.StreamErrors.WithLabelValues("client_gone").Inc()
		return false
	}
	res.Err = err
	reason := "upstream_error"
	code := "upstream_stream_error"
	if errors.Is(err, errStreamIdleTimeout) {
		reason, code = "idle_timeout", "stream_idle_timeout"
	}
	pr.Pool.Metrics.StreamErrors.WithLabelValues(reason).Inc()
	p.logger.Warn("upstream stream failed", "pool", pr.Pool.Name(), "backend", res.Backend, "request_id", pr.RequestID, "err", err)
	if !sse {
		// No way to signal an error inside an arbitrary body: the caller
		// aborts the connection (HTTP/1.1) or resets the stream (HTTP/2) so
		// the client sees a broken response instead of a short, "complete" one.
		res.Abort = true
		return true
	}
	msg, _ := json.Marshal(struct {
		Error struct {
			Message string `json:"message"`
			Type    string `json:"type"`
			Code    string `json:"code"`
		} `json:"error"`
	}{Error: struct {
		Message string `json:"message"`
		Type    string `json:"type"`
		Code    string `json:"code"`
	}{Message: "stream ended early: " + err.Error(), Type: "upstream_error", Code: code}})
	_, _ = io.WriteString(w, "\n\ndata: ")
	_, _ = w.Write(msg)
	_, _ = io.WriteString(w, "\n\n")
	_ = http.NewResponseController(w).Flush()
	return true
}

// eventEnd ends a server-sent event (the blank line after its fields).
var eventEnd = []byte("\n\n")

// refStreamEvents is the length of the nominal stream a streamed
// response's latency sample stands for: its time to first token plus
// refStreamEvents-1 of its mean gaps between events. A replica that is slow
// to decode (not only to prefill) then looks slow to p2c_ewma as it does
// when responses are not streamed, whatever length each stream has.
const refStreamEvents = 32

// decodeCost is the part of a streamed response's latency sample that its
// decoding speed adds (see refStreamEvents); 0 when it had no gaps.
func (res *Result) decodeCost() time.Duration {
	return time.Duration(refStreamEvents-1) * res.InterToken
}

// isEventStream reports whether the Content-Type ct is text/event-stream.
// A type without parameters (application/json, the common answer) is
// compared as it stands; only one with parameters is parsed.
func isEventStream(ct string) bool {
	if ct == "" {
		return false
	}
	if strings.HasPrefix(ct, "text/event-stream") {
		return true
	}
	if !strings.Contains(ct, ";") {
		return strings.EqualFold(strings.TrimSpace(ct), "text/event-stream")
	}
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == "text/event-stream"
}

// idleWatch ends a response whose upstream body stalls: when its timer
// fires it marks the stall and closes the body, which ends the pending
// Read. Watches and their timers are reused, so a response costs no timer
// allocation.
type idleWatch struct {
	timer   clockwork.Timer
	body    atomic.Pointer[io.ReadCloser]
	stalled atomic.Bool
}

func (iw *idleWatch) fire() {
	iw.stalled.Store(true)
	if b := iw.body.Load(); b != nil {
		(*b).Close()
	}
}

// watchIdle arms a watch that closes *body after idle without a Reset.
func (p *Proxy) watchIdle(idle time.Duration, body *io.ReadCloser) *idleWatch {
	iw, _ := p.watches.Get().(*idleWatch)
	if iw == nil {
		iw = &idleWatch{}
		iw.body.Store(body)
		iw.timer = p.clock.AfterFunc(idle, iw.fire)
		return iw
	}
	iw.body.Store(body)
	iw.timer.Reset(idle)
	return iw
}

// unwatchIdle disarms iw, and keeps it for reuse unless its timer fired (or
// is firing): then it is dropped, so no late fire reaches a later response.
func (p *Proxy) unwatchIdle(iw *idleWatch) {
	if !iw.timer.Stop() {
		return
	}
	iw.body.Store(nil)
	iw.stalled.Store(false)
	p.watches.Put(iw)
}
