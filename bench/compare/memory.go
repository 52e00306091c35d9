package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sluice-ai/sluice/bench/internal/procs"
)

// memoryResult is the memory scenario: what each proxy's processes hold per
// idle keep-alive connection and per open SSE stream.
type memoryResult struct {
	Conns       int    `json:"idle_connections"`
	Streams     int    `json:"streams"`
	StreamEvery string `json:"stream_event_interval"`
	Settle      string `json:"settle"`
	// FileLimit is the suite's RLIMIT_NOFILE during the scenario, which the
	// proxies inherit.
	FileLimit uint64       `json:"file_limit"`
	Rows      []*memoryRow `json:"rows"`
	Error     string       `json:"error,omitempty"`
}

// memoryRow is one proxy, measured twice, each time in a fresh instance.
type memoryRow struct {
	Target  string        `json:"target"`
	Idle    *memorySample `json:"idle"`
	Streams *memorySample `json:"streams"`
}

// memorySample is one measurement: the proxy's memory before and after its
// clients opened Open connections or streams.
type memorySample struct {
	Error string `json:"error,omitempty"`
	// Wanted is how many were to be opened; Open how many were open, and
	// still open, when After was read; Failed how many could not be
	// opened.
	Wanted int `json:"wanted"`
	Open   int `json:"open"`
	Failed int `json:"failed"`

	Before procs.Memory `json:"before"`
	After  procs.Memory `json:"after"`
	// PssPer and RssPer are After − Before over Open, in KiB.
	PssPer float64 `json:"pss_kib_per"`
	RssPer float64 `json:"rss_kib_per"`
}

// measured reports whether the sample has a per-connection figure.
func (m *memorySample) measured() bool { return m != nil && m.Error == "" && m.Open > 0 }

// perOpen fills the per-connection figures from Before, After and Open.
func (m *memorySample) perOpen() {
	if m.Open <= 0 {
		return
	}
	m.PssPer = float64(m.After.Pss-m.Before.Pss) / float64(m.Open)
	m.RssPer = float64(m.After.Rss-m.Before.Rss) / float64(m.Open)
}

// The requests the suite's own clients send: the small chat completion of
// the overhead scenario (the body of bench/configs/chat.lua), answered at
// once, and a shorter one asking for a stream, which the backend answers
// with an event a second.
var (
	smallChat     = chatRequest(`{"model":"sim-llm","messages":[{"role":"user","content":"the quick brown fox jumps over the lazy dog and then runs far away"}],"max_tokens":16}`)
	idleRequest   = smallChat
	streamRequest = chatRequest(`{"model":"sim-llm","messages":[{"role":"user","content":"hello"}],"max_tokens":8,"stream":true}`)
)

// chatRequest is a raw HTTP/1.1 chat completion request with body.
func chatRequest(body string) []byte {
	return []byte("POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
}

// memoryOpeners is how many connections the clients open at once: enough to
// open 10,000 in seconds, few enough that a proxy needs only that many
// upstream connections for the idle connections' requests.
const memoryOpeners = 32

// memoryWarm is how many connections or streams each instance serves, and
// closes, before its memory is first read, so that the baseline holds what
// a proxy allocates once (upstream connections, lazily built tables)
// rather than per connection.
const memoryWarm = 64

// memory measures each proxy's memory with memoryResult.Conns idle
// keep-alive connections open and, in a fresh instance, with
// memoryResult.Streams SSE streams open.
func (s *suite) memory(ctx context.Context) *memoryResult {
	o := s.opts
	res := &memoryResult{Conns: o.memConns, Streams: o.memStreams, StreamEvery: o.memStreamEvery.String(), Settle: o.memSettle.String()}
	res.FileLimit = s.fileLimit
	backend, err := s.startBackend(ctx, "-stream-every", o.memStreamEvery.String())
	if err != nil {
		res.Error = s.scenarioFailed(ctx, "memory", err)
		return res
	}
	defer backend.stop(s)
	for _, p := range s.enabledProxies() {
		if ctx.Err() != nil {
			break
		}
		row := &memoryRow{Target: p.Name}
		res.Rows = append(res.Rows, row)
		s.logf("memory: %s with %d idle keep-alive connections", p.Name, o.memConns)
		row.Idle = s.memorySample(ctx, p, backend, o.memConns, openIdle)
		if ctx.Err() != nil {
			break
		}
		s.logf("memory: %s with %d open streams", p.Name, o.memStreams)
		row.Streams = s.memorySample(ctx, p, backend, o.memStreams, openStreams)
	}
	if ctx.Err() != nil {
		res.Error = ctx.Err().Error()
	}
	return res
}

// opener opens n connections (or streams) to addr and returns them.
type opener func(ctx context.Context, addr string, n int) *held

// memorySample starts a fresh instance of p, warms it, reads its memory,
// has open hold n connections or streams through it, waits for the
// instance to settle and reads its memory again.
func (s *suite) memorySample(ctx context.Context, p proxy, backend *instance, n int, open opener) *memorySample {
	m := &memorySample{Wanted: n}
	fail := func(err error) *memorySample {
		m.Error = s.scenarioFailed(ctx, "memory "+p.Name, err)
		return m
	}
	in, err := s.startProxy(ctx, p, p.Default, []string{backend.host()}, "warn")
	if err != nil {
		return fail(err)
	}
	defer in.stop(s)
	addr := in.host()

	warm := open(ctx, addr, memoryWarm)
	warm.close()
	if err := sleepCtx(ctx, time.Second); err != nil {
		return fail(err)
	}
	if m.Before, err = in.proc.Memory(); err != nil {
		return fail(err)
	}
	h := open(ctx, addr, n)
	defer h.close()
	m.Failed = h.failed
	if h.failed > 0 {
		s.problem("memory %s: %d of %d could not be opened (first error: %v)", p.Name, h.failed, n, h.firstErr)
	}
	if err := sleepCtx(ctx, s.opts.memSettle); err != nil {
		return fail(err)
	}
	if m.After, err = in.proc.Memory(); err != nil {
		return fail(err)
	}
	m.Open = h.alive()
	if m.Open < len(h.conns) {
		s.problem("memory %s: %d of %d connections were closed before they were counted (first end: %v)", p.Name, len(h.conns)-m.Open, len(h.conns), h.firstEnd())
	}
	if m.Open == 0 {
		return fail(fmt.Errorf("no connection stayed open (first error: %v)", h.firstErr))
	}
	m.perOpen()
	return m
}

// held are the connections one opener holds open.
type held struct {
	conns    []net.Conn
	failed   int
	firstErr error
	// streams, for streams, counts those whose reader has not ended.
	streams *atomic.Int64
	readers sync.WaitGroup

	// closing is set once close begins: streams that end after it were
	// ended by the client.
	closing atomic.Bool
	mu      sync.Mutex
	// ended is why the first stream that ended before it was closed
	// ended.
	ended error
}

// streamEnded notes why a stream's reader returned.
func (h *held) streamEnded(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ended == nil {
		h.ended = err
	}
}

func (h *held) firstEnd() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ended
}

// alive counts the held connections still open: for streams, those still
// being read; for idle connections, those on which a read waits rather
// than finds the proxy's end closed.
func (h *held) alive() int {
	if h.streams != nil {
		return int(h.streams.Load())
	}
	var n atomic.Int64
	var wg sync.WaitGroup
	work := make(chan net.Conn)
	for range memoryOpeners {
		wg.Go(func() {
			var b [1]byte
			for c := range work {
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
				if _, err := c.Read(b[:]); isTimeout(err) {
					n.Add(1)
				}
			}
		})
	}
	for _, c := range h.conns {
		work <- c
	}
	close(work)
	wg.Wait()
	return int(n.Load())
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// close resets every held connection (no TIME_WAIT left behind: the runs
// open tens of thousands of them) and waits for the stream readers.
func (h *held) close() {
	h.closing.Store(true)
	for _, c := range h.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = c.Close()
	}
	h.readers.Wait()
}

// openAll runs one n times, memoryOpeners at a time, and collects the
// connections it returns in h.
func openAll(ctx context.Context, h *held, n int, one func(ctx context.Context) (net.Conn, error)) *held {
	var mu sync.Mutex
	var wg sync.WaitGroup
	next := make(chan struct{})
	for range memoryOpeners {
		wg.Go(func() {
			for range next {
				c, err := one(ctx)
				mu.Lock()
				if err != nil {
					h.failed++
					if h.firstErr == nil {
						h.firstErr = err
					}
				} else {
					h.conns = append(h.conns, c)
				}
				mu.Unlock()
			}
		})
	}
	for range n {
		if ctx.Err() != nil {
			break
		}
		next <- struct{}{}
	}
	close(next)
	wg.Wait()
	return h
}

// dialRequest connects to addr, sends req and reads the response's header.
func dialRequest(ctx context.Context, addr string, req []byte) (net.Conn, *http.Response, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	br := bufio.NewReaderSize(c, 1024)
	var resp *http.Response
	if _, err = c.Write(req); err == nil {
		resp, err = http.ReadResponse(br, nil)
	}
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	return c, resp, nil
}

// openIdle opens n keep-alive connections, sends one small request on each
// and reads its answer, and leaves them open and idle.
func openIdle(ctx context.Context, addr string, n int) *held {
	return openAll(ctx, &held{}, n, func(ctx context.Context) (net.Conn, error) {
		c, resp, err := dialRequest(ctx, addr, idleRequest)
		if err != nil {
			return nil, err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && resp.Close {
			err = errors.New("the proxy closes the connection after a request")
		}
		if err != nil {
			c.Close()
			return nil, err
		}
		_ = c.SetDeadline(time.Time{})
		return c, nil
	})
}

// openStreams opens n streams, each on a connection of its own, waits for
// each one's first event and keeps reading them in the background until the
// connection is closed.
func openStreams(ctx context.Context, addr string, n int) *held {
	h := &held{streams: new(atomic.Int64)}
	return openAll(ctx, h, n, func(ctx context.Context) (net.Conn, error) {
		c, resp, err := dialRequest(ctx, addr, streamRequest)
		if err != nil {
			return nil, err
		}
		br := bufio.NewReaderSize(resp.Body, 512)
		for err == nil {
			var line string
			line, err = br.ReadString('\n')
			if strings.HasPrefix(line, "data:") {
				break
			}
		}
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("first event: %w", err)
		}
		_ = c.SetDeadline(time.Time{})
		h.streams.Add(1)
		h.readers.Go(func() {
			n, err := io.Copy(io.Discard, br)
			h.streams.Add(-1)
			if !h.closing.Load() {
				h.streamEnded(fmt.Errorf("after %d more bytes: %w", n, errOrEOF(err)))
			}
		})
		return c, nil
	})
}

// errOrEOF is err, or io.EOF for a read that ended without one.
func errOrEOF(err error) error {
	if err == nil {
		return io.EOF
	}
	return err
}

// raiseFileLimit raises RLIMIT_NOFILE to at least want (the hard limit too
// when running as root), so that the suite and the proxies it starts, which
// inherit the limit, can hold the scenario's connections. It returns the
// limit in force.
func raiseFileLimit(want uint64) (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, fmt.Errorf("RLIMIT_NOFILE: %w", err)
	}
	if l.Cur >= want {
		return l.Cur, nil
	}
	n := l
	n.Cur = want
	if n.Max < want {
		n.Max = want
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &n); err != nil {
		// Not root: as far as the hard limit goes.
		n = syscall.Rlimit{Cur: l.Max, Max: l.Max}
		if err2 := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &n); err2 != nil {
			return l.Cur, fmt.Errorf("RLIMIT_NOFILE %d: %w", want, err)
		}
		return n.Cur, fmt.Errorf("RLIMIT_NOFILE: %d of the %d wanted (%v)", n.Cur, want, err)
	}
	return n.Cur, nil
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
