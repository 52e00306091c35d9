package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/sluice-ai/sluice/internal/bench"
)

// The open-loop driver. internal/bench runs one fixed rate and reports the
// latency of successful requests only; the scenarios also need rates that
// change over time and, per request, how it failed, how fast a refusal came
// and which replica answered. So they send load with this driver and use
// internal/bench for their closed-loop baselines.

// Failure kinds of a record; "" is a success.
const (
	failStatus    = "status"      // a non-2xx answer; see Status and Code
	failConnect   = "connect"     // no connection
	failTimeout   = "timeout"     // no complete answer within the plan's Timeout
	failReset     = "reset"       // the connection failed after the request was sent
	failStreamErr = "error_event" // a 200 stream that ended with an error event
	failTruncated = "truncated"   // a 200 body cut short without an error event
	failBadBody   = "bad_body"    // a 200 body that is not a completion
	failCanceled  = "canceled"    // cut off because the run was interrupted
)

// shape is what kind of request one arrival sends.
type shape struct {
	Stream   bool
	Priority string // X-Sluice-Priority; "" sends none
}

// plan describes one open-loop run.
type plan struct {
	// URL is the gateway's base URL.
	URL string
	// Phases is the rate schedule, run back to back.
	Phases []phase
	// Seed drives arrivals and prompts.
	Seed uint64
	// PromptTokens and MaxTokens size each request. Default 64 and 16.
	PromptTokens, MaxTokens int
	// Timeout bounds each request from its intended send time. Default 30s.
	Timeout time.Duration
	// Shape picks request i's kind; nil sends non-streamed requests without
	// a priority.
	Shape func(i int) shape
	// Arrivals, when set, are the send times (offsets from the start) in
	// place of Phases' Poisson arrivals: a recorded trace.
	Arrivals []time.Duration
	// Tokens, when set, sizes request i in place of PromptTokens and
	// MaxTokens.
	Tokens func(i int) (prompt, output int)
}

// record is what one request did. Times are offsets from the run's start.
type record struct {
	// At is the intended send time: every latency counts from here, so a
	// late send counts against the server.
	At time.Duration
	// Latency runs from At to the last byte, or to the failure.
	Latency time.Duration
	// TTFT runs from At to a stream's first data event (0 when none came,
	// and for requests that are not streamed).
	TTFT time.Duration
	// Output is the output tokens asked for (max_tokens).
	Output int
	// Status is the HTTP status, 0 when none arrived.
	Status int
	// Code is the "code" of an OpenAI-style error body.
	Code string
	// RetryAfter is set when a non-2xx answer carried Retry-After.
	RetryAfter bool
	// Fail is "" for a success, else one of the fail constants.
	Fail string
	// GotBytes is set when part of a 200 body had arrived when the request
	// failed: for a stream, at least one event.
	GotBytes bool
	// Instance is the answering sim's X-Sim-Instance.
	Instance string
	shape
}

func (r *record) ok() bool { return r.Fail == "" }

// end is when the request finished, as an offset from the run's start.
func (r *record) end() time.Duration { return r.At + r.Latency }

// drive runs p: it sends each arrival at its time whether or not earlier
// requests finished, waits for every request, and returns one record per
// arrival in arrival order. t0 is the run's start, for callers that sample
// the gateway on the same time axis. When ctx ends, unsent arrivals are
// dropped and requests in flight are canceled; the records then cover what
// was sent, and the error is ctx's.
func drive(ctx context.Context, p plan) (recs []record, t0 time.Time, err error) {
	if p.PromptTokens == 0 {
		p.PromptTokens = 64
	}
	if p.MaxTokens == 0 {
		p.MaxTokens = 16
	}
	if p.Timeout == 0 {
		p.Timeout = 30 * time.Second
	}
	at := p.Arrivals
	if at == nil {
		at = arrivals(p.Phases, p.Seed)
	}
	recs = make([]record, len(at))
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 4096,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	c := &loadClient{http: &http.Client{Transport: tr}, url: p.URL + bench.EndpointChat, p: &p}

	var wg sync.WaitGroup
	t0 = time.Now()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	sent := len(at)
	for i, off := range at {
		if d := time.Until(t0.Add(off)); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
			case <-timer.C:
			}
		}
		if ctx.Err() != nil {
			sent = i
			break
		}
		recs[i].At = off
		if p.Shape != nil {
			recs[i].shape = p.Shape(i)
		}
		recs[i].Output = p.MaxTokens
		if p.Tokens != nil {
			_, recs[i].Output = p.Tokens(i)
		}
		wg.Go(func() { c.do(ctx, uint64(i), t0, &recs[i]) })
	}
	wg.Wait()
	return recs[:sent], t0, ctx.Err()
}

// loadClient sends one run's requests.
type loadClient struct {
	http *http.Client
	url  string
	p    *plan
}

// do sends request i and fills r.
func (c *loadClient) do(ctx context.Context, i uint64, t0 time.Time, r *record) {
	intended := t0.Add(r.At)
	reqCtx, cancel := context.WithDeadline(ctx, intended.Add(c.p.Timeout))
	defer cancel()
	finish := func(fail string) {
		r.Latency = time.Since(intended)
		if fail != "" && ctx.Err() != nil {
			fail = failCanceled
		} else if fail != "" && fail != failStatus && reqCtx.Err() != nil {
			fail = failTimeout
		}
		r.Fail = fail
	}
	req, err := http.NewRequestWithContext(reqCtx, http.MethodPost, c.url, bytes.NewReader(c.body(i, r.Stream, r.Output)))
	if err != nil {
		finish(failBadBody)
		return
	}
	req.Header.Set("Content-Type", "application/json")
	if r.Stream {
		req.Header.Set("Accept", "text/event-stream")
	}
	if r.Priority != "" {
		req.Header.Set("X-Sluice-Priority", r.Priority)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var oe *net.OpError
		if errors.As(err, &oe) && oe.Op == "dial" {
			finish(failConnect)
		} else {
			finish(failReset)
		}
		return
	}
	defer resp.Body.Close()
	r.Status = resp.StatusCode
	r.Instance = resp.Header.Get("X-Sim-Instance")
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		r.RetryAfter = resp.Header.Get("Retry-After") != ""
		var e struct {
			Error struct {
				Code string `json:"code"`
			} `json:"error"`
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &e) == nil {
			r.Code = e.Error.Code
		}
		finish(failStatus)
		return
	}
	if r.Stream {
		finish(readStream(resp.Body, r, intended))
		return
	}
	b, err := io.ReadAll(resp.Body)
	r.GotBytes = len(b) > 0
	switch {
	case err != nil:
		finish(failTruncated)
	case !bytes.Contains(b, []byte(`"choices"`)):
		finish(failBadBody)
	default:
		finish("")
	}
}

// readStream reads an SSE body to "data: [DONE]" and returns the failure
// kind, "" for a complete stream. The first data event sets r.TTFT, counted
// from intended.
func readStream(body io.Reader, r *record, intended time.Time) string {
	br := bufio.NewReader(body)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			r.GotBytes = true
		}
		if data, ok := bytes.CutPrefix(bytes.TrimRight(line, "\r\n"), []byte("data: ")); ok {
			if r.TTFT == 0 {
				r.TTFT = time.Since(intended)
			}
			if bytes.Equal(data, []byte("[DONE]")) {
				_, _ = io.Copy(io.Discard, br)
				return ""
			}
			var ev struct {
				Error json.RawMessage `json:"error"`
			}
			if json.Unmarshal(data, &ev) == nil && len(ev.Error) > 0 && string(ev.Error) != "null" {
				return failStreamErr
			}
		} else if bytes.HasPrefix(line, []byte("event: error")) {
			return failStreamErr
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			return failTruncated
		}
	}
}

// body is request i's JSON body: a chat completion with a distinct prompt
// asking for output tokens.
func (c *loadClient) body(i uint64, stream bool, output int) []byte {
	prompt := c.p.PromptTokens
	if c.p.Tokens != nil {
		prompt, _ = c.p.Tokens(int(i))
	}
	b := make([]byte, 0, 128+prompt*8)
	b = append(b, `{"model":"`+simModel+`","messages":[{"role":"user","content":"`...)
	b = bench.Prompt(b, c.p.Seed, i, prompt)
	b = append(b, `"}],"max_tokens":`...)
	b = strconv.AppendInt(b, int64(output), 10)
	if stream {
		b = append(b, `,"stream":true`...)
	}
	return append(b, '}')
}

// closedLoop runs bench's closed loop of conc workers against url for d
// (after a warmup) and returns its result: the scenarios' capacity and
// unloaded-latency baselines.
func closedLoop(ctx context.Context, url string, conc int, warmup, d time.Duration, seed uint64) (*bench.Result, error) {
	res, err := bench.Run(ctx, bench.Config{
		URL:         url,
		Model:       simModel,
		Concurrency: conc,
		Warmup:      warmup,
		Duration:    d,
		Timeout:     30 * time.Second,
		Seed:        seed,
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("closed loop of %d against %s: %w", conc, url, err)
	}
	if res.Failed > 0 {
		return nil, fmt.Errorf("closed loop of %d against %s: %d of %d requests failed (%v %v)", conc, url, res.Failed, res.Sent, res.FailedByStatus, res.FailedByKind)
	}
	return res, nil
}
