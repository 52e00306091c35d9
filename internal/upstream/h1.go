package upstream

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// h1Transport is the connection pool for plain http:// backends: an
// HTTP/1.1 client that sends a request and reads its response on the
// caller's goroutine. net/http's Transport hands every request to a
// connection's write goroutine and its response back from a read goroutine,
// with the channels, contexts and timers that takes; a proxy that waits for
// each answer anyway pays for those hand-offs on every request
// (docs/benchmarks.md measures what this saves).
//
// It takes the requests a proxy sends most: a body that is absent or
// buffered (an io.Seeker, so a request on a connection that turned out
// dead can be sent again), no protocol upgrade. Anything else goes to
// fallback, net/http's Transport, with the same settings.
//
// Responses are read with net/http's own parser (http.ReadResponse), so
// framing (Content-Length, chunked, trailers, HEAD, 204/304) is net/http's.
type h1Transport struct {
	fallback  http.RoundTripper
	dialer    *net.Dialer
	firstByte time.Duration // the wait for response headers; 0 is none
	idleFor   time.Duration // an idle connection older than this is closed
	maxIdle   int           // idle connections kept per backend

	mu    sync.Mutex
	idle  map[string][]*h1Conn // per host:port, oldest first
	sweep *time.Timer          // closes connections idle too long; nil when none is idle
}

// Read and write buffer sizes of a connection: responses are read in up to
// 32 KiB, requests are mostly small and larger bodies bypass the buffer.
const (
	h1ReadBuffer  = 32 << 10
	h1WriteBuffer = 8 << 10
)

// aLongTimeAgo is a deadline in the past: setting it fails pending and
// future reads and writes at once.
var aLongTimeAgo = time.Unix(1, 0)

func newH1Transport(fallback http.RoundTripper, dialer *net.Dialer, firstByte, idleFor time.Duration, maxIdle int) *h1Transport {
	return &h1Transport{fallback: fallback, dialer: dialer, firstByte: firstByte, idleFor: idleFor, maxIdle: maxIdle, idle: make(map[string][]*h1Conn)}
}

// h1Conn is one connection to a backend. It serves one request at a time.
type h1Conn struct {
	t    *h1Transport
	host string
	nc   net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer

	since time.Time // when it became idle
	abort func()    // fails the connection's I/O: a canceled request's end
	probe *probe    // tells whether an idle connection is still open
}

// RoundTrip implements http.RoundTripper.
func (t *h1Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "http" || !rewindable(req.Body) || req.Header["Upgrade"] != nil {
		return t.fallback.RoundTrip(req)
	}
	ctx := req.Context()
	for {
		c, reused, err := t.conn(ctx, req.URL.Host)
		if err != nil {
			return nil, err
		}
		resp, sent, err := c.roundTrip(ctx, req)
		if err == nil {
			return resp, nil
		}
		c.close()
		// A reused connection that the backend closed just as the request
		// went out fails before any answer; net/http sends such a request
		// again when resending is safe, and so does this. A connection
		// found closed before the request went out was already skipped.
		if !reused || sent && !idempotent(req) || ctx.Err() != nil || !rewind(req.Body) {
			return nil, err
		}
	}
}

// rewindable reports whether a request body can be sent again.
func rewindable(body io.ReadCloser) bool {
	if body == nil || body == http.NoBody {
		return true
	}
	_, ok := body.(io.Seeker)
	return ok
}

func rewind(body io.ReadCloser) bool {
	s, ok := body.(io.Seeker)
	if !ok {
		return body == nil || body == http.NoBody
	}
	_, err := s.Seek(0, io.SeekStart)
	return err == nil
}

// idempotent reports whether a request may be sent twice, by net/http's
// rule: its method says so, or it carries an idempotency key.
func idempotent(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return req.Header["Idempotency-Key"] != nil || req.Header["X-Idempotency-Key"] != nil
}

// conn returns an idle connection to host that is still open, or a new one.
func (t *h1Transport) conn(ctx context.Context, host string) (*h1Conn, bool, error) {
	for {
		t.mu.Lock()
		idle := t.idle[host]
		if len(idle) == 0 {
			t.mu.Unlock()
			break
		}
		c := idle[len(idle)-1]
		idle[len(idle)-1] = nil
		t.idle[host] = idle[:len(idle)-1]
		t.mu.Unlock()
		if time.Since(c.since) < t.idleFor && c.probe.open() {
			return c, true, nil
		}
		c.close()
	}
	nc, err := t.dialer.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, false, err
	}
	c := &h1Conn{t: t, host: host, nc: nc, br: bufio.NewReaderSize(nc, h1ReadBuffer), bw: bufio.NewWriterSize(nc, h1WriteBuffer)}
	c.abort = func() { _ = c.nc.SetDeadline(aLongTimeAgo) }
	c.probe = newProbe(nc)
	return c, false, nil
}

// put keeps c for the next request to its host, or closes it when the pool
// holds enough. Connections idle past idleFor are closed on the way.
func (t *h1Transport) put(c *h1Conn) {
	now := time.Now()
	c.since = now
	t.mu.Lock()
	idle, stale := t.dropStale(t.idle[c.host], now, nil)
	keep := len(idle) < t.maxIdle
	if keep {
		idle = append(idle, c)
		if t.sweep == nil {
			t.sweep = time.AfterFunc(t.idleFor, t.sweepIdle)
		}
	}
	t.idle[c.host] = idle
	t.mu.Unlock()
	if !keep {
		c.close()
	}
	for _, s := range stale {
		s.close()
	}
}

// dropStale takes the connections idle past idleFor off the front of idle
// (oldest first) and appends them to stale, for the caller to close once
// it lets go of t.mu.
func (t *h1Transport) dropStale(idle []*h1Conn, now time.Time, stale []*h1Conn) ([]*h1Conn, []*h1Conn) {
	for len(idle) > 0 && now.Sub(idle[0].since) >= t.idleFor {
		stale = append(stale, idle[0])
		idle[0] = nil
		idle = idle[1:]
	}
	return idle, stale
}

// sweepIdle closes the connections idle past idleFor, for every backend:
// those of a backend that no longer gets requests (a replica scaled away)
// would otherwise stay open.
func (t *h1Transport) sweepIdle() {
	now := time.Now()
	var stale []*h1Conn
	t.mu.Lock()
	for host, idle := range t.idle {
		idle, stale = t.dropStale(idle, now, stale)
		if len(idle) == 0 {
			delete(t.idle, host)
		} else {
			t.idle[host] = idle
		}
	}
	t.sweep = nil
	if len(t.idle) > 0 {
		t.sweep = time.AfterFunc(t.idleFor/2, t.sweepIdle)
	}
	t.mu.Unlock()
	for _, c := range stale {
		c.close()
	}
}

// CloseIdleConnections closes the idle connections of both transports.
// Connections in use are closed when their response ends.
func (t *h1Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = make(map[string][]*h1Conn)
	if t.sweep != nil {
		t.sweep.Stop()
		t.sweep = nil
	}
	t.mu.Unlock()
	for _, cs := range idle {
		for _, c := range cs {
			c.close()
		}
	}
	if f, ok := t.fallback.(interface{ CloseIdleConnections() }); ok {
		f.CloseIdleConnections()
	}
}

func (c *h1Conn) close() { _ = c.nc.Close() }

// roundTrip sends req on c and reads the response's headers. sent reports
// whether any of the request may have reached the backend.
func (c *h1Conn) roundTrip(ctx context.Context, req *http.Request) (resp *http.Response, sent bool, err error) {
	stop := context.AfterFunc(ctx, c.abort)
	if err := c.writeRequest(req); err != nil {
		stop()
		return nil, true, err
	}
	if c.t.firstByte > 0 {
		_ = c.nc.SetReadDeadline(time.Now().Add(c.t.firstByte))
	}
	for {
		resp, err = http.ReadResponse(c.br, req)
		if err != nil {
			stop()
			return nil, true, err
		}
		// 1xx answers come before the real one (101 ends HTTP/1.1 on the
		// connection, and upgrades never come here).
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
	}
	if c.t.firstByte > 0 {
		_ = c.nc.SetReadDeadline(time.Time{})
		if ctx.Err() != nil {
			c.abort() // canceled while the deadline was cleared
		}
	}
	b := &h1Body{c: c, body: resp.Body, stop: stop, reuse: !resp.Close && resp.StatusCode != http.StatusSwitchingProtocols}
	resp.Body = b
	return resp, true, nil
}

// writeRequest writes req's request line, headers and body and flushes
// them. Header values were checked where they were made (a client's by
// net/http's server, a pool's by config); a line break in one is still
// never sent.
func (c *h1Conn) writeRequest(req *http.Request) error {
	w := c.bw
	w.WriteString(req.Method)
	w.WriteByte(' ')
	uri := req.URL.EscapedPath()
	if uri == "" {
		uri = "/"
	}
	w.WriteString(uri)
	if req.URL.RawQuery != "" {
		w.WriteByte('?')
		w.WriteString(req.URL.RawQuery)
	}
	w.WriteString(" HTTP/1.1\r\nHost: ")
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	writeHeaderValue(w, host)
	w.WriteString("\r\n")
	for k, vv := range req.Header {
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding", "Connection":
			continue // the transport's own
		}
		for _, v := range vv {
			if k == "User-Agent" && v == "" {
				continue // an empty agent means none
			}
			w.WriteString(k)
			w.WriteString(": ")
			writeHeaderValue(w, v)
			w.WriteString("\r\n")
		}
	}
	var body io.Reader
	switch {
	case req.Body != nil && req.Body != http.NoBody && req.ContentLength != 0:
		body = req.Body
		w.WriteString("Content-Length: ")
		w.Write(strconv.AppendInt(w.AvailableBuffer(), req.ContentLength, 10))
		w.WriteString("\r\n")
	case req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch:
		w.WriteString("Content-Length: 0\r\n")
	}
	w.WriteString("\r\n")
	if body != nil {
		n, err := io.Copy(w, body)
		if err != nil {
			return err
		}
		if n != req.ContentLength {
			return errors.New("request body is " + strconv.FormatInt(n, 10) + " bytes, not its Content-Length " + strconv.FormatInt(req.ContentLength, 10))
		}
	}
	return w.Flush()
}

// writeHeaderValue writes v with any line break as a space, as net/http
// does.
func writeHeaderValue(w *bufio.Writer, v string) {
	if !strings.ContainsAny(v, "\r\n") {
		w.WriteString(v)
		return
	}
	w.WriteString(strings.NewReplacer("\r", " ", "\n", " ").Replace(v))
}

// h1Body is a response body on an h1Conn. Read to its end, it gives the
// connection back to the pool; closed before, it closes the connection.
// Close may come from another goroutine while a Read waits (a stalled
// stream's watchdog closes it), and ends that Read.
type h1Body struct {
	c     *h1Conn
	body  io.ReadCloser
	stop  func() bool // ends the request's cancellation watch
	reuse bool
	state atomic.Int32 // h1Open, h1Done or h1Closed
}

const (
	h1Open int32 = iota
	h1Done
	h1Closed
)

func (b *h1Body) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if err == io.EOF {
		b.done()
	}
	return n, err
}

// done ends a body read to its end.
func (b *h1Body) done() {
	if !b.state.CompareAndSwap(h1Open, h1Done) {
		return
	}
	// The cancellation watch must be off before the connection serves
	// another request; if it already fired, the connection is spent.
	if b.stop() && b.reuse {
		b.c.t.put(b.c)
	} else {
		b.c.close()
	}
}

func (b *h1Body) Close() error {
	if b.body == http.NoBody {
		b.done() // nothing to read: the connection is free
		return nil
	}
	if b.state.CompareAndSwap(h1Open, h1Closed) {
		b.stop()
		b.c.close()
	}
	return nil
}
