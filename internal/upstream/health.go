package upstream

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// checker runs a pool's active health checks: every interval it probes each
// backend's health path; healthy_threshold consecutive successes make a
// backend healthy, unhealthy_threshold consecutive failures take it out of
// rotation.
type checker struct {
	pool   *Pool
	client *http.Client
	cancel context.CancelFunc
	done   chan struct{}
}

func startChecker(ctx context.Context, p *Pool) *checker {
	ctx, cancel := context.WithCancel(ctx)
	c := &checker{pool: p, cancel: cancel, done: make(chan struct{}), client: p.opts.HealthClient}
	if c.client == nil {
		c.client = &http.Client{Transport: healthTransport{p}, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	go c.loop(ctx)
	return c
}

func (c *checker) stop() {
	c.cancel()
	<-c.done
}

func (c *checker) loop(ctx context.Context) {
	defer close(c.done)
	clk := c.pool.opts.Clock
	for {
		hc := c.pool.Config().HealthCheck
		interval := hc.Interval.D()
		if hc.Path != "" && interval > 0 {
			c.round(ctx)
		} else {
			interval = time.Second // re-read the config until checks are enabled
		}
		t := clk.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.Chan():
		}
	}
}

// round probes every backend at once and waits for all probes.
func (c *checker) round(ctx context.Context) {
	var wg sync.WaitGroup
	for _, b := range c.pool.Backends() {
		switch b.State() {
		case StateHealthy, StateUnhealthy:
		default:
			continue // starting/draining replicas are owned by their supervisor; ejection by outlier detection
		}
		wg.Go(func() { c.observe(b, c.probe(ctx, b)) })
	}
	wg.Wait()
}

// Probe checks one backend once and returns nil when it is healthy.
func (c *checker) probe(ctx context.Context, b *Backend) error {
	hc := c.pool.Config().HealthCheck
	ctx, cancel := context.WithTimeout(ctx, hc.Timeout.D())
	defer cancel()
	u := *b.target
	u.Path += hc.Path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "sluice-health-check")
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("health check %s: status %d", hc.Path, resp.StatusCode)
	}
	return nil
}

func (c *checker) observe(b *Backend, err error) {
	hc := c.pool.Config().HealthCheck
	p := c.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil {
		b.okStreak++
		b.failStreak = 0
		b.lastCheckErr.Store(nil)
		if b.State() == StateUnhealthy && b.okStreak >= hc.HealthyThreshold {
			b.SetState(StateHealthy)
			p.storeLocked(p.snap.Load().all)
			p.opts.Logger.Info("backend healthy", "pool", p.name, "backend", b.key)
		}
		return
	}
	b.failStreak++
	b.okStreak = 0
	msg := err.Error()
	b.lastCheckErr.Store(&msg)
	if b.State() == StateHealthy && b.failStreak >= hc.UnhealthyThreshold {
		b.SetState(StateUnhealthy)
		p.storeLocked(p.snap.Load().all)
		p.opts.Logger.Warn("backend unhealthy", "pool", p.name, "backend", b.key, "err", msg)
	}
}

// healthTransport sends probes over the transport that fits each backend.
type healthTransport struct{ p *Pool }

func (t healthTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	tr := t.p.tr.Load()
	for _, b := range t.p.Backends() {
		if b.target.Host == r.URL.Host && b.h2c {
			return tr.h2c.RoundTrip(r)
		}
	}
	return tr.h1.RoundTrip(r)
}
