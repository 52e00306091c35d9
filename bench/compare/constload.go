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
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// constLoad is a constant-rate load in the manner of wrk2: request i is due
// at start + i/Rate, and each of Conns keep-alive connections, when free,
// takes the next request not yet taken, waits until it is due, sends it and
// reads the answer. Its latency runs from the due time, not the send time,
// so a request that waited for a free connection because earlier answers
// were slow counts its wait: no coordinated omission.
//
// It costs less per request than sluice's load generator (internal/bench),
// which parses every answer as JSON: the frontier scenario runs it on the
// same cores as the proxy it measures, and what the client spends, the
// proxy cannot have.
type constLoad struct {
	// Addr is the target's host:port.
	Addr string
	// Request is the raw HTTP/1.1 request sent each time.
	Request []byte
	// Rate is requests per second.
	Rate float64
	// Conns is how many connections the requests share.
	Conns int
	// Warmup is sent but not counted; Duration is counted after it.
	Warmup, Duration time.Duration
	// Timeout bounds a request from its due time to its last byte.
	Timeout time.Duration
}

// constResult is what a constLoad run measured: requests due after the
// warmup, their latencies in microseconds.
type constResult struct {
	// Due is how many requests fell due in the measured interval, OK how
	// many of them were answered 200, Failed how many were not.
	Due, OK, Failed int64
	// FirstError is the first failure's error.
	FirstError error
	// Elapsed is from the end of the warmup to the end of the last measured
	// request, at least Duration.
	Elapsed time.Duration
	// Latency holds the OK requests' latencies in microseconds.
	Latency *hdrhistogram.Histogram
}

// Achieved is the OK requests per second of Elapsed.
func (r *constResult) Achieved() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.OK) / r.Elapsed.Seconds()
}

// Percentile returns the latency at percentile q (0–100) in ms.
func (r *constResult) Percentile(q float64) float64 {
	if r.Latency == nil || r.Latency.TotalCount() == 0 {
		return 0
	}
	return float64(r.Latency.ValueAtQuantile(q)) / 1000
}

// dueAt is when request i of a constant-rate run that starts at start is
// due.
func dueAt(start time.Time, rate float64, i int64) time.Time {
	return start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
}

// run sends the load and waits for every request it started.
func (c *constLoad) run(ctx context.Context) (*constResult, error) {
	if c.Rate <= 0 || c.Conns < 1 || c.Duration <= 0 {
		return nil, errors.New("constant load: need a rate, connections and a duration")
	}
	start := time.Now().Add(10 * time.Millisecond)
	measureFrom := start.Add(c.Warmup)
	end := measureFrom.Add(c.Duration)
	first := int64(c.Warmup.Seconds() * c.Rate)
	total := int64((c.Warmup + c.Duration).Seconds() * c.Rate)

	var (
		next    atomic.Int64
		mu      sync.Mutex // guards res and lastEnd
		res     = &constResult{Latency: hdrhistogram.New(1, int64(time.Hour/time.Microsecond), 3)}
		lastEnd = end
	)
	take := func() (int64, bool) {
		i := next.Add(1) - 1
		return i, i < total && ctx.Err() == nil
	}
	var wg sync.WaitGroup
	for range c.Conns {
		wg.Go(func() {
			w := &constConn{load: c}
			defer w.close()
			hist := hdrhistogram.New(1, int64(time.Hour/time.Microsecond), 3)
			var ok, failed int64
			var firstErr error
			var last time.Time
			for {
				i, more := take()
				if !more {
					break
				}
				due := dueAt(start, c.Rate, i)
				var err error
				if d := time.Until(due); d > 0 {
					if sleepCtx(ctx, d) != nil {
						break
					}
				} else if -d > c.Timeout {
					// So far behind that it would time out unsent: a
					// target that cannot keep up ends the run on time.
					err = errBehind
				}
				if err == nil {
					err = w.do(ctx, due.Add(c.Timeout))
				}
				done := time.Now()
				if i < first {
					continue
				}
				last = done
				if err != nil {
					failed++
					if firstErr == nil {
						firstErr = err
					}
					continue
				}
				ok++
				_ = hist.RecordValue(max(done.Sub(due).Microseconds(), 1))
			}
			mu.Lock()
			defer mu.Unlock()
			res.OK += ok
			res.Failed += failed
			if res.FirstError == nil {
				res.FirstError = firstErr
			}
			res.Latency.Merge(hist)
			if last.After(lastEnd) {
				lastEnd = last
			}
		})
	}
	wg.Wait()
	res.Due = total - first
	res.Elapsed = lastEnd.Sub(measureFrom)
	if err := ctx.Err(); err != nil {
		return res, err
	}
	return res, nil
}

// errBehind fails a request that fell due longer than the timeout ago.
var errBehind = errors.New("not sent: due longer than the timeout ago")

// constConn is one connection of a constant-rate load, redialed after an
// error.
type constConn struct {
	load *constLoad
	conn net.Conn
	br   *bufio.Reader
}

// do sends the request and reads the answer, which must be a 200, by the
// deadline.
func (w *constConn) do(ctx context.Context, deadline time.Time) error {
	if w.conn == nil {
		d := net.Dialer{Deadline: deadline}
		c, err := d.DialContext(ctx, "tcp", w.load.Addr)
		if err != nil {
			return fmt.Errorf("connect: %w", err)
		}
		w.conn = c
		if w.br == nil {
			w.br = bufio.NewReaderSize(c, 4096)
		} else {
			w.br.Reset(c)
		}
	}
	err := w.roundTrip(deadline)
	if err != nil {
		w.close()
	}
	return err
}

func (w *constConn) roundTrip(deadline time.Time) error {
	_ = w.conn.SetDeadline(deadline)
	if _, err := w.conn.Write(w.load.Request); err != nil {
		return err
	}
	resp, err := http.ReadResponse(w.br, nil)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
		return err
	case resp.StatusCode != http.StatusOK:
		return errors.New("status " + strconv.Itoa(resp.StatusCode))
	case resp.Close:
		// The server closes the connection after this answer.
		w.close()
	}
	return nil
}

func (w *constConn) close() {
	if w.conn != nil {
		_ = w.conn.Close()
		w.conn = nil
	}
}
