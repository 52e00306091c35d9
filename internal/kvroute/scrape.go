package kvroute

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
)

// scrapeParallel bounds concurrent scrapes of one pool.
const scrapeParallel = 16

// Reasons a scrape fails, as the error counter labels them.
const (
	reasonConnect   = "connect"
	reasonTimeout   = "timeout"
	reasonStatus    = "status"
	reasonTooLarge  = "too_large"
	reasonMalformed = "malformed"
	reasonNoMetrics = "no_metrics"
)

func (r *Router) scrapeLoop(ctx context.Context) {
	t := r.clk.NewTicker(r.cfg.Scrape.Interval)
	defer t.Stop()
	for {
		r.ScrapeOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
	}
}

// ScrapeOnce scrapes every replica that has been a candidate of this
// router once, concurrently, and returns when all are done (each within
// the scrape timeout). Run calls it every interval.
func (r *Router) ScrapeOnce(ctx context.Context) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, scrapeParallel)
	for _, rep := range *r.reps.Load() {
		if !rep.local.Load() {
			continue
		}
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			r.scrape(ctx, rep)
		})
	}
	wg.Wait()
	r.m.entries.Set(float64(r.index.Len()))
}

// scrape reads one replica's load. A failure leaves its previous sample to
// go stale: a replica whose /metrics is missing, slow, huge or garbage is
// scored without it.
func (r *Router) scrape(ctx context.Context, rep *replica) {
	if rep.metricsURL == "" {
		return
	}
	inFlight := rep.inFlight.Load()
	at := r.clk.Now()
	sctx, cancel := context.WithTimeout(ctx, r.cfg.Scrape.Timeout)
	defer cancel()
	l, reason, err := r.fetch(sctx, rep.metricsURL)
	if err != nil {
		if ctx.Err() != nil {
			return // shutting down: not the replica's fault
		}
		if sctx.Err() != nil && reason == reasonConnect {
			reason = reasonTimeout
		}
		r.scrapeFailed(rep, reason, err)
		return
	}
	rep.load.Store(&loadSample{Load: l, at: at, inFlight: inFlight})
	if prev := rep.scrapeErr.Swap(nil); prev != nil {
		r.log.Info("kv_aware: replica metrics readable again", "replica", rep.key, "engine", l.Engine)
	}
}

func (r *Router) fetch(ctx context.Context, u string) (Load, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return Load{}, reasonConnect, err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := r.hc.Do(req)
	if err != nil {
		return Load{}, reasonConnect, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return Load{}, reasonStatus, fmt.Errorf("GET %s: status %d", u, resp.StatusCode)
	}
	limit := r.cfg.Scrape.MaxBytes
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return Load{}, reasonConnect, fmt.Errorf("GET %s: %w", u, err)
	}
	if int64(len(body)) > limit {
		return Load{}, reasonTooLarge, fmt.Errorf("GET %s: exposition larger than %d bytes", u, limit)
	}
	l, err := ParseLoad(body)
	switch {
	case errors.Is(err, ErrNoLoadMetrics):
		return Load{}, reasonNoMetrics, fmt.Errorf("GET %s: %w", u, err)
	case err != nil:
		return Load{}, reasonMalformed, fmt.Errorf("GET %s: %w", u, err)
	}
	return l, "", nil
}

// scrapeFailed counts a failure and logs it when its reason differs from
// the replica's previous scrape's, so a replica that never serves metrics
// is logged once, not every interval.
func (r *Router) scrapeFailed(rep *replica, reason string, err error) {
	r.m.scrapeErrors.WithLabelValues(reason).Inc()
	reasonCopy := reason
	if prev := rep.scrapeErr.Swap(&reasonCopy); prev == nil || *prev != reason {
		r.log.Warn("kv_aware: replica load unreadable; scoring it without", "replica", rep.key, "reason", reason, "err", err)
	}
}
