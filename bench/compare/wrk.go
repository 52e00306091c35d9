package main

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-ai/sluice/bench/internal/procs"
)

// wrkResult is what the suite reads from wrk's report.
type wrkResult struct {
	Requests      int64   `json:"requests"`
	RequestsPerS  float64 `json:"requests_per_second"`
	Non2xx        int64   `json:"non_2xx"`
	SocketErrors  int64   `json:"socket_errors"`
	DurationS     float64 `json:"duration_s"`
	ErrorFraction float64 `json:"error_fraction"`
}

var (
	wrkRequestsRE = regexp.MustCompile(`(?m)^\s*(\d+) requests in ([0-9.]+)(us|ms|s|m|h)\b`)
	wrkRateRE     = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)`)
	wrkNon2xxRE   = regexp.MustCompile(`(?m)^\s*Non-2xx or 3xx responses:\s+(\d+)`)
	wrkSocketRE   = regexp.MustCompile(`(?m)^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// parseWrk reads the summary wrk prints at the end of a run.
func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	m := wrkRequestsRE.FindStringSubmatch(out)
	rate := wrkRateRE.FindStringSubmatch(out)
	if m == nil || rate == nil {
		return r, fmt.Errorf("wrk output has no summary: %q", tail(out, 5))
	}
	r.Requests, _ = strconv.ParseInt(m[1], 10, 64)
	d, _ := strconv.ParseFloat(m[2], 64)
	unit := map[string]float64{"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}[m[3]]
	r.DurationS = d * unit
	r.RequestsPerS, _ = strconv.ParseFloat(rate[1], 64)
	if n := wrkNon2xxRE.FindStringSubmatch(out); n != nil {
		r.Non2xx, _ = strconv.ParseInt(n[1], 10, 64)
	}
	if s := wrkSocketRE.FindStringSubmatch(out); s != nil {
		for _, v := range s[1:] {
			n, _ := strconv.ParseInt(v, 10, 64)
			r.SocketErrors += n
		}
	}
	if r.Requests > 0 {
		r.ErrorFraction = float64(r.Non2xx+r.SocketErrors) / float64(r.Requests)
	}
	// wrk counts a non-2xx response as a request; only good answers count
	// as throughput.
	if r.Requests > 0 && r.Non2xx > 0 {
		r.RequestsPerS *= float64(r.Requests-r.Non2xx) / float64(r.Requests)
	}
	return r, nil
}

// runWrk runs wrk against url with the chat script for d.
func (s *suite) runWrk(ctx context.Context, url string, d time.Duration) (wrkResult, error) {
	bin, err := lookTool("wrk")
	if err != nil {
		return wrkResult{}, err
	}
	o := s.opts
	secs := max(int(d.Round(time.Second)/time.Second), 1)
	out, err := procs.Run(ctx, "", bin,
		"-t", strconv.Itoa(o.wrkThreads), "-c", strconv.Itoa(o.wrkConns),
		"-d", strconv.Itoa(secs)+"s", "--timeout", "5s",
		"-s", s.configs+"/chat.lua", url+"/v1/chat/completions")
	if err != nil {
		if ctx.Err() != nil {
			return wrkResult{}, ctx.Err()
		}
		return wrkResult{}, fmt.Errorf("wrk: %w\n%s", err, tail(out, 5))
	}
	r, err := parseWrk(out)
	if err != nil {
		return r, err
	}
	if r.Requests == 0 {
		return r, errors.New("wrk: no request completed")
	}
	if strings.Contains(out, "Non-2xx") && r.Non2xx == r.Requests {
		return r, errors.New("wrk: every response was an error")
	}
	return r, nil
}
