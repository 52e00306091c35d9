package cache

import (
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// entry is one stored response. It is immutable once stored and shared by
// every request that replays it.
type entry struct {
	status int
	header http.Header // what the upstream handler set; every slice has cap == len
	body   []byte
	// events are the end offsets in body of the server-sent events of a
	// streamed response; nil for any other response.
	events []int32
	// expires is when the entry stops being fresh (Unix ns); ttl is the
	// lifetime it was stored with, for the in-memory cache's expiry.
	expires int64
	ttl     time.Duration
	size    int64 // approximate memory held, for the byte bound
}

func (e *entry) computeSize() {
	n := int64(entryOverheadBytes + len(e.body) + 4*len(e.events))
	for k, vs := range e.header {
		n += int64(len(k) + headerOverheadBytes)
		for _, v := range vs {
			n += int64(len(v) + headerOverheadBytes)
		}
	}
	e.size = n
}

// replay writes e to w, with X-Sluice-Cache set to result. A stream is
// written one event at a time, each flushed.
func (e *entry) replay(w http.ResponseWriter, result []string) {
	h := w.Header()
	for k, v := range e.header {
		h[k] = v
	}
	h[headerXSluiceCache] = result
	w.WriteHeader(e.status)
	if e.events == nil {
		_, _ = w.Write(e.body)
		return
	}
	rc := http.NewResponseController(w)
	start := int32(0)
	for _, end := range e.events {
		if _, err := w.Write(e.body[start:end]); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		start = end
	}
}

// notRecorded are the response headers never stored: hop-by-hop headers
// (RFC 9110 section 7.6.1), which belong to one connection, and headers
// that belong to one response.
var notRecorded = map[string]bool{
	"Connection":          true,
	"Keep-Alive":          true,
	"Proxy-Authenticate":  true,
	"Proxy-Authorization": true,
	"Proxy-Connection":    true,
	"Te":                  true,
	"Trailer":             true,
	"Transfer-Encoding":   true,
	"Upgrade":             true,
	"Date":                true,
	"Age":                 true,
	"X-Request-Id":        true,
	headerXSluiceCache:    true,
}

// recorder is the ResponseWriter given to the upstream handler on a miss:
// it writes everything through to the client at once and keeps a copy.
type recorder struct {
	w     http.ResponseWriter
	base  http.Header // the headers set before the upstream handler ran
	limit int64

	status int
	header http.Header
	body   []byte
	sse    bool
	events []int32
	split  eventSplitter

	keep   bool // still recording: nothing has made the response unstorable
	failed bool // a write to the client failed
}

func newRecorder(w http.ResponseWriter, limit int64) *recorder {
	return &recorder{w: w, base: w.Header().Clone(), limit: limit, keep: true}
}

func (rec *recorder) Header() http.Header { return rec.w.Header() }

func (rec *recorder) WriteHeader(code int) {
	if code >= 100 && code < 200 {
		rec.w.WriteHeader(code) // informational: not the response
		return
	}
	if rec.status != 0 {
		return
	}
	rec.status = code
	rec.header = rec.changedHeaders()
	ct := rec.header.Get("Content-Type")
	mt, _, _ := mime.ParseMediaType(ct)
	rec.sse = mt == "text/event-stream"
	if code != http.StatusOK || !storable(rec.header) {
		rec.stop()
	}
	rec.w.WriteHeader(code)
}

// changedHeaders returns the headers the upstream handler set or changed,
// less those never recorded.
func (rec *recorder) changedHeaders() http.Header {
	out := make(http.Header)
	for k, vs := range rec.w.Header() {
		if notRecorded[k] || slices.Equal(vs, rec.base[k]) {
			continue
		}
		out[k] = slices.Clip(slices.Clone(vs))
	}
	return out
}

// storable reports whether response headers allow a shared cache to keep
// the response.
func storable(h http.Header) bool {
	for _, v := range h.Values("Cache-Control") {
		for d := range strings.SplitSeq(v, ",") {
			d = strings.ToLower(strings.TrimSpace(d))
			if d == "no-store" || d == "private" || strings.HasPrefix(d, "private=") {
				return false
			}
		}
	}
	if len(h.Values("Set-Cookie")) > 0 || len(h.Values("Vary")) > 0 {
		return false
	}
	if ce := h.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		// A client that did not ask for this encoding could be served it.
		return false
	}
	return true
}

func (rec *recorder) Write(p []byte) (int, error) {
	if rec.status == 0 {
		rec.WriteHeader(http.StatusOK)
	}
	n, err := rec.w.Write(p)
	if err != nil {
		rec.failed = true
		rec.stop()
	}
	if rec.keep {
		if int64(len(rec.body)+n) > rec.limit {
			rec.stop()
		} else {
			start := len(rec.body)
			rec.body = append(rec.body, p[:n]...)
			if rec.sse {
				rec.events = rec.split.feed(rec.body, start, rec.events)
			}
		}
	}
	return n, err
}

// stop gives up recording.
func (rec *recorder) stop() {
	rec.keep = false
	rec.body, rec.events = nil, nil
}

// FlushError flushes the client connection, so streams pass through event
// by event.
func (rec *recorder) FlushError() error {
	if rec.status == 0 {
		rec.WriteHeader(http.StatusOK)
	}
	return http.NewResponseController(rec.w).Flush()
}

// Flush is FlushError for handlers that look for http.Flusher.
func (rec *recorder) Flush() { _ = rec.FlushError() }

// Unwrap lets http.ResponseController reach the client's writer for what
// the recorder does not implement (deadlines, for one).
func (rec *recorder) Unwrap() http.ResponseWriter { return rec.w }

// entry returns what was recorded as an entry, or nil when the response may
// not be stored.
func (rec *recorder) entry(ttl time.Duration, now time.Time) *entry {
	if !rec.keep || rec.failed || rec.status != http.StatusOK {
		return nil
	}
	if cl := rec.header.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err != nil || n != int64(len(rec.body)) {
			return nil // the body is not the one announced
		}
	}
	e := &entry{
		status:  rec.status,
		header:  rec.header,
		body:    slices.Clip(rec.body),
		expires: now.Add(ttl).UnixNano(),
		ttl:     ttl,
	}
	if rec.sse {
		e.events = rec.split.finish(len(rec.body), rec.events)
	}
	e.computeSize()
	return e
}

// eventSplitter finds the ends of server-sent events (a blank line: two
// line ends in a row, each CR, LF or CRLF) in a growing body.
type eventSplitter struct {
	atLineStart bool // the previous byte ended a line
	afterCR     bool // the previous byte was a CR
	pendingCR   bool // an event ended with a CR that an LF may still follow
	started     bool
}

// feed scans body[from:], appending event end offsets to events.
func (s *eventSplitter) feed(body []byte, from int, events []int32) []int32 {
	if !s.started {
		s.started = true
		s.atLineStart = true
	}
	for i := from; i < len(body); i++ {
		b := body[i]
		if s.pendingCR {
			s.pendingCR = false
			if b == '\n' {
				// The LF of the CRLF that ended the event belongs to it.
				events[len(events)-1] = int32(i + 1)
				s.afterCR = false
				continue
			}
		}
		if b == '\n' && s.afterCR {
			s.afterCR = false
			continue // the LF of a CRLF: the line already ended
		}
		s.afterCR = b == '\r'
		if b != '\n' && b != '\r' {
			s.atLineStart = false
			continue
		}
		if s.atLineStart {
			events = append(events, int32(i+1))
			s.pendingCR = b == '\r'
			continue
		}
		s.atLineStart = true
	}
	return events
}

// finish returns the event ends, counting trailing bytes that no blank line
// ended as a last event.
func (s *eventSplitter) finish(n int, events []int32) []int32 {
	if len(events) == 0 || int(events[len(events)-1]) < n {
		events = append(events, int32(n))
	}
	return slices.Clip(events)
}
