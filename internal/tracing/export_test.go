package tracing

// metricsForTest exposes the counters to this package's tests.
func (p *Provider) metricsForTest() *metrics { return p.m }
