package config

import (
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Balancers are the values of a pool's balancer.
var balancers = []string{"round_robin", "weighted_round_robin", "random", "least_request", "p2c", "p2c_ewma", "consistent_hash", "kv_aware"}

var (
	logLevels  = []string{"debug", "info", "warn", "error"}
	logFormats = []string{"text", "json"}
	scaleKinds = []string{"Deployment", "StatefulSet"}

	poolNameRE = regexp.MustCompile(`^[a-z0-9_-]+$`)
	// Kubernetes object names: a DNS label (RFC 1123) for namespaces, one
	// that starts with a letter (RFC 1035) for Services, a DNS subdomain for
	// workloads; a port is a number or an IANA service name.
	dnsLabelRE     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	dns1035LabelRE = regexp.MustCompile(`^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$`)
	dnsSubdomainRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	portNameRE     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?$`)
)

// Validate checks everything a user can get wrong in c and returns an
// Errors with every problem, in file order, or nil. For a Config from Load
// or Parse each problem has its place in the file; for one built in code
// it has only its key path.
func (c *Config) Validate() error {
	if errs := sortErrors(c.check(nil)); len(errs) > 0 {
		return errs
	}
	return nil
}

// PoolByName returns the pool called name, or nil.
func (c *Config) PoolByName(name string) *Pool {
	for i := range c.Pools {
		if c.Pools[i].Name == name {
			return &c.Pools[i]
		}
	}
	return nil
}

// check returns Validate's problems, leaving out those that only follow
// from a key path in failed (the paths that did not decode).
func (c *Config) check(failed []string) Errors {
	v := &validator{c: c}
	v.run()
	var errs Errors
	for _, p := range v.problems {
		if p.follows(failed) {
			continue
		}
		at := c.pos.lookup(p.path)
		msg := p.msg
		if p.path != "" {
			msg = p.path + ": " + msg
		}
		errs = append(errs, Error{File: c.Path, Line: at.line, Col: at.col, Msg: msg})
	}
	return errs
}

type problem struct {
	path, msg string
	// deps are other key paths the problem rests on: a problem is not
	// reported when one of them, or a path under one, did not decode.
	deps []string
}

// follows reports whether p only follows from a value that did not decode.
func (p problem) follows(failed []string) bool {
	for _, f := range failed {
		if within(p.path, f) {
			return true
		}
		for _, d := range p.deps {
			if within(f, d) || within(d, f) {
				return true
			}
		}
	}
	return false
}

// validator collects the problems of one Config.
type validator struct {
	c        *Config
	problems []problem
}

func (v *validator) addf(path, format string, args ...any) {
	v.problems = append(v.problems, problem{path: path, msg: fmt.Sprintf(format, args...)})
}

// addDepf adds a problem that rests on the values at deps too.
func (v *validator) addDepf(deps []string, path, format string, args ...any) {
	v.problems = append(v.problems, problem{path: path, msg: fmt.Sprintf(format, args...), deps: deps})
}

// poolNamePaths are the paths of every pool's name, on which a reference to
// a pool rests.
func (v *validator) poolNamePaths() []string {
	paths := make([]string, len(v.c.Pools))
	for i := range paths {
		paths[i] = fmt.Sprintf("pools[%d].name", i)
	}
	return paths
}

func (v *validator) run() {
	c := v.c
	if msg := checkListen(c.Listen); msg != "" {
		v.addf("listen", "%s", msg)
	}
	if c.Admin.Listen != "" {
		if msg := checkListen(c.Admin.Listen); msg != "" {
			v.addf("admin.listen", "%s", msg)
		} else if c.Admin.Listen == c.Listen && !strings.HasSuffix(c.Listen, ":0") { // port 0: each listener gets its own port
			v.addDepf([]string{"listen"}, "admin.listen", `same address as listen; give the admin server its own, or "" to turn it off`)
		}
	}
	if t := c.TLS; t != nil {
		if t.CertFile == "" {
			v.addf("tls.cert_file", "missing; TLS needs both cert_file and key_file (PEM files)")
		}
		if t.KeyFile == "" {
			v.addf("tls.key_file", "missing; TLS needs both cert_file and key_file (PEM files)")
		}
	}
	if c.DataDir == "" && c.Jobs.Store == "embedded" {
		v.addDepf([]string{"jobs.store"}, "data_dir", "missing; the embedded job store keeps its files there")
	}
	v.oneOf("log.level", "log level", c.Log.Level, logLevels)
	v.oneOf("log.format", "log format", c.Log.Format, logFormats)
	if c.Limits.MaxRequestBody <= 0 {
		v.addf("limits.max_request_body", "must be more than 0, e.g. 32MiB")
	}
	v.positive("limits.read_header_timeout", c.Limits.ReadHeaderTimeout)
	v.positive("limits.body_read_timeout", c.Limits.BodyReadTimeout)
	if c.Limits.MaxBufferedBody < c.Limits.MaxRequestBody {
		v.addDepf([]string{"limits.max_request_body"}, "limits.max_buffered_body", "must be at least limits.max_request_body (%d bytes), or no request could be buffered", int64(c.Limits.MaxRequestBody))
	}
	if c.Limits.MaxHeaderBytes < 4<<10 {
		v.addf("limits.max_header_bytes", "must be at least 4KiB")
	}
	v.atLeast("limits.max_headers", c.Limits.MaxHeaders, 10)
	v.atLeast("limits.http2_max_streams", c.Limits.HTTP2MaxStreams, 1)
	v.nonNegative("limits.drain_timeout", c.Limits.DrainTimeout)
	if c.Redis.URL != "" {
		if msg := checkRedisURL(c.Redis.URL); msg != "" {
			v.addf("redis.url", "%s", msg)
		}
	}
	v.pools()
	v.routes()
	v.auth()
	v.cache()
	v.jobs()
	if l := c.KEDA.Listen; l != "" {
		if msg := checkListen(l); msg != "" {
			v.addf("keda.listen", "%s", msg)
		}
	}
	v.tracing()
}

func (v *validator) tracing() {
	t := v.c.Tracing
	want := "OTLP/HTTP endpoint, e.g. http://127.0.0.1:4318"
	switch t.Protocol {
	case "http":
	case "grpc":
		want = "OTLP/gRPC endpoint, e.g. http://127.0.0.1:4317"
	default:
		v.addf("tracing.protocol", "unknown protocol %q; want http or grpc", t.Protocol)
	}
	if e := t.OTLPEndpoint; e != "" {
		if msg := checkHTTPURL(e); msg != "" {
			v.addf("tracing.otlp_endpoint", "%s; want the %s", msg, want)
		}
	}
	if r := t.SampleRatio; !(r >= 0 && r <= 1) {
		v.addf("tracing.sample_ratio", "%v is out of range; want a share from 0 to 1", r)
	}
	for k := range t.Headers {
		if k == "" || strings.ContainsAny(k, " :\r\n") {
			v.addf("tracing.headers", "%q is not a valid header name", k)
		}
	}
}

func (v *validator) pools() {
	c := v.c
	if len(c.Pools) == 0 {
		v.addf("pools", `at least one pool is required, e.g. pools: [{name: chat, models: [my-model], backends: [{url: "http://127.0.0.1:9001"}]}]`)
		return
	}
	// A pool that serves no model is fine when a route or another pool's
	// fallback leads to it.
	reached := make(map[string]bool)
	for _, r := range c.Routes {
		reached[r.Pool] = true
	}
	firstByName := make(map[string]int)
	type owner struct{ pool, model int }
	modelOwner := make(map[string]owner)
	for i := range c.Pools {
		p := &c.Pools[i]
		for _, f := range p.Fallback {
			reached[f] = true
		}
		at := fmt.Sprintf("pools[%d]", i)
		switch first, dup := firstByName[p.Name]; {
		case p.Name == "":
			v.addf(at+".name", "missing; name the pool with a-z, 0-9, _ and -")
		case !poolNameRE.MatchString(p.Name):
			v.addf(at+".name", "invalid pool name %q; use only a-z, 0-9, _ and -", p.Name)
		case dup:
			v.addf(at+".name", "duplicate pool name %q; pools[%d] has it too", p.Name, first)
		default:
			firstByName[p.Name] = i
		}
		for j, m := range p.Models {
			mp := fmt.Sprintf("%s.models[%d]", at, j)
			if m == "" {
				v.addf(mp, "empty model name")
				continue
			}
			if err := checkGlob(m); err != nil {
				v.addf(mp, "invalid model glob %q: %v", m, err)
				continue
			}
			switch o, dup := modelOwner[m]; {
			case dup && o.pool == i:
				v.addf(mp, "model %q is listed twice (models[%d])", m, o.model)
			case dup:
				v.addf(mp, "model %q is already served by pool %q (pools[%d]); a model must lead to one pool (use fallback to spill over)", m, c.Pools[o.pool].Name, o.pool)
			default:
				modelOwner[m] = owner{i, j}
			}
		}
	}
	for i := range c.Pools {
		p := &c.Pools[i]
		at := fmt.Sprintf("pools[%d]", i)
		if len(p.Models) == 0 && !reached[p.Name] {
			v.addf(at+".models", `the pool serves no model and no route or fallback leads to it; list the models it serves, e.g. models: ["llama-3-8b"]`)
		}
		v.pool(at, p)
	}
	v.fallbackCycles()
}

func (v *validator) pool(at string, p *Pool) {
	v.oneOf(at+".balancer", "balancer", p.Balancer, balancers)
	if _, err := ParseHashOn(p.HashOn); err != nil {
		v.addf(at+".hash_on", "%v", err)
	}
	v.kvAware(at, p)

	var sources []string
	if len(p.Backends) > 0 {
		sources = append(sources, "backends")
	}
	if p.Process != nil {
		sources = append(sources, "process")
	}
	if p.Kubernetes != nil {
		sources = append(sources, "kubernetes")
	}
	switch len(sources) {
	case 0:
		v.addDepf([]string{at + ".process", at + ".kubernetes"}, at+".backends", "the pool has no replicas; set one of backends, process or kubernetes")
	case 1:
	default:
		v.addf(at+"."+sources[1], "set only one of backends, process and kubernetes; this pool has %s", andList(sources))
	}
	firstURL := make(map[string]int)
	for j, b := range p.Backends {
		bp := fmt.Sprintf("%s.backends[%d]", at, j)
		if msg := checkBackendURL(b.URL); msg != "" {
			v.addf(bp+".url", "%s", msg)
		} else if first, dup := firstURL[b.URL]; dup {
			v.addf(bp+".url", "duplicate backend; backends[%d] has the same URL", first)
		} else {
			firstURL[b.URL] = j
		}
		if b.Weight < 1 {
			v.addf(bp+".weight", "weight %d must be at least 1", b.Weight)
		}
		v.headers(bp+".headers", b.Headers)
	}
	v.headers(at+".upstream_headers", p.UpstreamHeaders)
	if p.Cache.Shared && p.Cache.PerTenant {
		v.addf(at+".cache.shared", "set shared or per_tenant, not both: shared entries are not per tenant")
	}
	if p.Process != nil {
		v.process(at+".process", p.Process, p.Autoscale != nil)
	}
	if p.Kubernetes != nil {
		v.kubernetes(at+".kubernetes", p.Kubernetes, p.Autoscale != nil)
	}
	if p.Autoscale != nil {
		switch {
		case p.Process == nil && p.Kubernetes == nil && p.Autoscale.Actuator == nil:
			v.addf(at+".autoscale", "autoscale needs process or kubernetes replicas, or an actuator; sluice cannot start or stop static backends")
		case p.Process != nil && p.Autoscale.Actuator != nil:
			v.addf(at+".autoscale.actuator", "is for replicas sluice does not run; process replicas are started by sluice")
		}
		v.autoscale(at+".autoscale", p.Autoscale)
	}
	if p.Bridge != nil {
		v.bridge(at+".bridge", p.Bridge)
	}

	if p.MaxConcurrency < 0 {
		v.addf(at+".max_concurrency", "must not be negative; 0 means no cap")
	}
	if p.Queue.Size < 0 {
		v.addf(at+".queue.size", "must not be negative; 0 turns the queue off")
	} else if p.Queue.Size > 0 {
		v.positive(at+".queue.timeout", p.Queue.Timeout)
	}
	if r := p.Queue.Reserve; !(r >= 0 && r < 1) {
		v.addf(at+".queue.reserve", "%v: want a share from 0 up to but not including 1, e.g. 0.25", r)
	} else if r > 0 && p.MaxConcurrency == 0 {
		v.addf(at+".queue.reserve", "a reserve is a share of max_concurrency: set max_concurrency")
	}

	if hc := p.HealthCheck; hc.Path != "" {
		hp := at + ".health_check"
		if !strings.HasPrefix(hc.Path, "/") {
			v.addf(hp+".path", `%q must start with "/" (or be "" to turn active checks off)`, hc.Path)
		}
		v.positive(hp+".interval", hc.Interval)
		v.positive(hp+".timeout", hc.Timeout)
		if hc.Timeout > hc.Interval && hc.Interval > 0 {
			v.addf(hp+".timeout", "timeout %s is longer than interval %s; a probe must end before the next one", hc.Timeout.D(), hc.Interval.D())
		}
		v.atLeast(hp+".healthy_threshold", hc.HealthyThreshold, 1)
		v.atLeast(hp+".unhealthy_threshold", hc.UnhealthyThreshold, 1)
	}

	od, op := p.OutlierDetection, at+".outlier_detection"
	if od.ConsecutiveFailures < 0 {
		v.addf(op+".consecutive_failures", "must not be negative; 0 turns it off")
	}
	if !(od.ErrorRate >= 0 && od.ErrorRate <= 1) {
		v.addf(op+".error_rate", "%g must be from 0 to 1 (a share of requests); 0 turns it off", od.ErrorRate)
	}
	if od.ErrorRate > 0 {
		v.positive(op+".window", od.Window)
		v.atLeast(op+".min_requests", od.MinRequests, 1)
	}
	if od.ConsecutiveFailures > 0 || od.ErrorRate > 0 {
		v.positive(op+".ejection_time", od.EjectionTime)
	}
	if od.MaxEjectedPercent < 0 || od.MaxEjectedPercent > 100 {
		v.addf(op+".max_ejected_percent", "%d must be from 0 to 100", od.MaxEjectedPercent)
	}

	r, rp := p.Retry, at+".retry"
	if r.Attempts < 0 {
		v.addf(rp+".attempts", "must not be negative; 0 turns retries off")
	}
	if !(r.Budget >= 0 && r.Budget <= 1) {
		v.addf(rp+".budget", "%g must be from 0 to 1 (the share of requests that may be retries)", r.Budget)
	}
	v.nonNegative(rp+".backoff", r.Backoff)
	seenOn := make(map[string]int)
	for j, on := range r.On {
		onp := fmt.Sprintf("%s.on[%d]", rp, j)
		if !validRetryOn(on) {
			v.addf(onp, "unknown retry condition %q; want connect_failure, timeout, or an HTTP status from 400 to 599", on)
		} else if first, dup := seenOn[on]; dup {
			v.addf(onp, "%q is listed twice (on[%d])", on, first)
		} else {
			seenOn[on] = j
		}
	}

	v.positive(at+".timeouts.connect", p.Timeouts.Connect)
	v.positive(at+".timeouts.first_byte", p.Timeouts.FirstByte)
	v.positive(at+".timeouts.stream_idle", p.Timeouts.StreamIdle)
	v.nonNegative(at+".cache.ttl", p.Cache.TTL)

	seenFallback := make(map[string]int)
	for j, f := range p.Fallback {
		fp := fmt.Sprintf("%s.fallback[%d]", at, j)
		switch first, dup := seenFallback[f]; {
		case f == p.Name:
			v.addf(fp, "pool %q falls back to itself", f)
		case v.c.PoolByName(f) == nil:
			v.addDepf(v.poolNamePaths(), fp, "unknown pool %q; %s", f, v.poolNames())
		case dup:
			v.addf(fp, "pool %q is listed twice (fallback[%d])", f, first)
		default:
			seenFallback[f] = j
		}
	}
}

func (v *validator) process(at string, p *Process, autoscaled bool) {
	if len(p.Command) == 0 {
		v.addf(at+".command", `missing; the argv that starts one replica, e.g. ["sluice", "sim", "--addr", "127.0.0.1:{port}"]`)
	} else {
		if p.Command[0] == "" {
			v.addf(at+".command[0]", "empty program name")
		}
		hasPort := slices.ContainsFunc(p.Command, func(s string) bool { return strings.Contains(s, "{port}") })
		for _, val := range p.Env {
			hasPort = hasPort || strings.Contains(val, "{port}")
		}
		if !hasPort {
			v.addf(at+".command", `no argument or env value holds {port}; sluice gives each replica a free port through it, e.g. "--port", "{port}"`)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(p.Env)) {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			v.addf(at+".env."+k, "invalid environment variable name %q", k)
		}
	}
	if !strings.HasPrefix(p.ReadyPath, "/") {
		v.addf(at+".ready_path", `%q must be a path starting with "/", e.g. /health`, p.ReadyPath)
	}
	v.positive(at+".start_timeout", p.StartTimeout)
	v.nonNegative(at+".stop_timeout", p.StopTimeout)
	v.nonNegative(at+".unhealthy_timeout", p.UnhealthyTimeout)
	switch {
	case p.Replicas < 0:
		v.addf(at+".replicas", "must not be negative")
	case p.Replicas == 0 && !autoscaled:
		v.addf(at+".replicas", "the pool would have no replicas; set replicas to 1 or more, or add autoscale")
	}
}

func (v *validator) kubernetes(at string, k *Kubernetes, autoscaled bool) {
	switch {
	case k.Service == "":
		v.addf(at+".service", "missing; the Service whose EndpointSlices list the replicas")
	case !dns1035LabelRE.MatchString(k.Service):
		v.addf(at+".service", "invalid Service name %q; want a-z, 0-9 and -, starting with a letter, at most 63 characters", k.Service)
	}
	if !dnsLabelRE.MatchString(k.Namespace) {
		v.addf(at+".namespace", "invalid namespace %q; want a-z, 0-9 and -, at most 63 characters", k.Namespace)
	}
	if k.Port != "" {
		if n, err := strconv.Atoi(k.Port); err == nil {
			if n < 1 || n > 65535 {
				v.addf(at+".port", "port %d must be from 1 to 65535", n)
			}
		} else if !portNameRE.MatchString(k.Port) || !strings.ContainsAny(k.Port, "abcdefghijklmnopqrstuvwxyz") {
			v.addf(at+".port", "invalid port %q; want the Service port's name (e.g. http) or number", k.Port)
		}
	}
	st := at + ".scale_target"
	v.oneOf(st+".kind", "scale target kind", k.ScaleTarget.Kind, scaleKinds)
	switch {
	case k.ScaleTarget.Name == "" && autoscaled:
		v.addf(st+".name", "missing; the autoscaler needs the Deployment or StatefulSet to scale")
	case k.ScaleTarget.Name != "" && (len(k.ScaleTarget.Name) > 253 || !dnsSubdomainRE.MatchString(k.ScaleTarget.Name)):
		v.addf(st+".name", "invalid workload name %q; want a-z, 0-9, - and .", k.ScaleTarget.Name)
	}
}

func (v *validator) autoscale(at string, a *Autoscale) {
	if a.Min < 0 {
		v.addf(at+".min", "must not be negative; 0 allows scaling to zero")
	}
	if a.Max < 1 {
		v.addf(at+".max", "max %d must be at least 1", a.Max)
	} else if a.Min > a.Max {
		v.addf(at+".min", "min %d is above max %d", a.Min, a.Max)
	}
	if !(a.TargetConcurrency > 0) {
		v.addf(at+".target_concurrency", "must be more than 0 (the demand one replica should carry), e.g. 4")
	}
	v.positive(at+".stable_window", a.StableWindow)
	v.positive(at+".panic_window", a.PanicWindow)
	if a.PanicWindow > a.StableWindow && a.StableWindow > 0 {
		v.addf(at+".panic_window", "panic_window %s is longer than stable_window %s; it must be the shorter one", a.PanicWindow.D(), a.StableWindow.D())
	}
	if !(a.PanicThreshold >= 1) {
		v.addf(at+".panic_threshold", "%g must be at least 1 (a multiple of the ready replicas), e.g. 2.0", a.PanicThreshold)
	}
	v.nonNegative(at+".scale_down_delay", a.ScaleDownDelay)
	v.nonNegative(at+".scale_to_zero_after", a.ScaleToZeroAfter)
	if a.ScaleToZeroAfter > 0 && a.Min > 0 {
		v.addf(at+".scale_to_zero_after", "only applies with min: 0, and min is %d", a.Min)
	}
	if a.Predictive.Enabled {
		v.positive(at+".predictive.season", a.Predictive.Season)
	}
	if a.Predictive.History != "" && !a.Predictive.Enabled {
		v.addf(at+".predictive.history", "only applies with predictive.enabled: true")
	}
	sig := a.Signals
	if sig.ReplicaQueue < 0 {
		v.addf(at+".signals.replica_queue", "must not be negative; 0 turns it off")
	}
	if sig.KVCache < 0 || sig.KVCache > 1 {
		v.addf(at+".signals.kv_cache", "%g must be a usage between 0 and 1, e.g. 0.8; 0 turns it off", sig.KVCache)
	}
	if sig.Tokens < 0 {
		v.addf(at+".signals.tokens", "must not be negative; 0 turns it off")
	}
	if sig.ReplicaQueue > 0 || sig.KVCache > 0 {
		v.positive(at+".signals.scrape_interval", sig.ScrapeInterval)
	}
	v.nonNegative(at+".slo.ttft", a.SLO.TTFT)
	if a.SLO.TTFT > 0 {
		if !(a.SLO.Percentile > 0 && a.SLO.Percentile < 1) {
			v.addf(at+".slo.percentile", "%g must be between 0 and 1, e.g. 0.9", a.SLO.Percentile)
		}
		if !(a.SLO.MaxBoost >= 1) {
			v.addf(at+".slo.max_boost", "%g must be at least 1, e.g. 4", a.SLO.MaxBoost)
		}
	}
	if act := a.Actuator; act != nil {
		switch {
		case len(act.Command) == 0 && act.Webhook == "":
			v.addf(at+".actuator", "needs command or webhook")
		case len(act.Command) > 0 && act.Webhook != "":
			v.addf(at+".actuator", "has both command and webhook; choose one")
		case len(act.Command) > 0 && !slices.ContainsFunc(act.Command, func(s string) bool { return strings.Contains(s, "{replicas}") }):
			v.addf(at+".actuator.command", "no argument has {replicas}; the command would not learn the count")
		case act.Webhook != "":
			if u, err := url.Parse(act.Webhook); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				v.addf(at+".actuator.webhook", "%q is not an http or https URL", act.Webhook)
			}
		}
		v.positive(at+".actuator.timeout", act.Timeout)
	}
}

// fallbackCycles reports each fallback chain that leads back to where it
// started, once, at the entry that closes it.
func (v *validator) fallbackCycles() {
	pools := v.c.Pools
	index := make(map[string]int, len(pools))
	for i := len(pools) - 1; i >= 0; i-- {
		index[pools[i].Name] = i
	}
	const (
		unvisited = iota
		onPath
		done
	)
	state := make([]int, len(pools))
	var path []int
	var visit func(i int)
	visit = func(i int) {
		state[i] = onPath
		path = append(path, i)
		for j, f := range pools[i].Fallback {
			k, ok := index[f]
			if !ok || k == i {
				continue
			}
			switch state[k] {
			case unvisited:
				visit(k)
			case onPath:
				start := slices.Index(path, k)
				var names []string
				for _, p := range path[start:] {
					names = append(names, pools[p].Name)
				}
				names = append(names, pools[k].Name)
				v.addf(fmt.Sprintf("pools[%d].fallback[%d]", i, j), "fallback cycle %s; fallback must not lead back to a pool already tried", strings.Join(names, " -> "))
			}
		}
		path = path[:len(path)-1]
		state[i] = done
	}
	for i := range pools {
		if state[i] == unvisited {
			visit(i)
		}
	}
}

func (v *validator) routes() {
	type key struct{ host, prefix string }
	first := make(map[key]int)
	for i, r := range v.c.Routes {
		at := fmt.Sprintf("routes[%d]", i)
		switch {
		case r.Pool == "":
			v.addf(at+".pool", "missing; name the pool this route sends to")
		case v.c.PoolByName(r.Pool) == nil:
			v.addDepf(v.poolNamePaths(), at+".pool", "unknown pool %q; %s", r.Pool, v.poolNames())
		}
		if !strings.HasPrefix(r.PathPrefix, "/") {
			v.addf(at+".path_prefix", `%q must start with "/"`, r.PathPrefix)
		}
		if msg := checkRouteHost(r.Host); msg != "" {
			v.addf(at+".host", "%s", msg)
		}
		prefix := r.PathPrefix
		if prefix != "/" {
			prefix = strings.TrimSuffix(prefix, "/")
		}
		k := key{strings.ToLower(r.Host), prefix}
		if j, dup := first[k]; dup {
			v.addf(at, "same host and path_prefix as routes[%d], so it never matches", j)
		} else {
			first[k] = i
		}
	}
}

func (v *validator) auth() {
	a := v.c.Auth
	if a == nil {
		return
	}
	if len(a.Keys) == 0 && a.JWT == nil {
		v.addf("auth", "no keys and no jwt, so every request would be refused; add keys or jwt, or remove auth for an open gateway")
	}
	firstName := make(map[string]int)
	firstHash := make(map[string]int)
	for i := range a.Keys {
		k := &a.Keys[i]
		at := fmt.Sprintf("auth.keys[%d]", i)
		switch first, dup := firstName[k.Name]; {
		case k.Name == "":
			v.addf(at+".name", "missing; the name is the tenant, which labels metrics and logs and owns jobs")
		case strings.ContainsFunc(k.Name, func(r rune) bool { return r <= ' ' || r == 0x7f }):
			v.addf(at+".name", "invalid tenant name %q; no spaces or control characters", k.Name)
		case strings.HasPrefix(k.Name, ReservedTenantPrefix):
			v.addf(at+".name", "tenant names starting with %q are reserved for JWT tenants (a token with tenant claim X is tenant %sX); rename this key", ReservedTenantPrefix, ReservedTenantPrefix)
		case dup:
			v.addf(at+".name", "duplicate tenant name %q; auth.keys[%d] has it too", k.Name, first)
		default:
			firstName[k.Name] = i
		}
		switch {
		case k.Key == "" && k.KeySHA256 == "":
			v.addf(at+".key", `missing; set key (e.g. key: "${TEAM_KEY}") or key_sha256 (the hex SHA-256 of the key)`)
		case k.Key != "" && k.KeySHA256 != "":
			v.addf(at+".key", "set only one of key and key_sha256")
		case k.KeySHA256 != "" && !isSHA256Hex(k.KeySHA256):
			v.addf(at+".key_sha256", "want 64 hexadecimal digits (e.g. the output of: printf %%s \"$KEY\" | sha256sum), got %d characters", len(k.KeySHA256))
		default:
			h := k.Hash()
			if first, dup := firstHash[h]; dup {
				v.addf(at, "same key as auth.keys[%d]; give each tenant its own key", first)
			} else {
				firstHash[h] = i
			}
		}
		v.tenant(at, k.Models, k.Limits)
	}
	if j := a.JWT; j != nil {
		at := "auth.jwt"
		switch {
		case j.JWKSURL == "" && j.JWKSFile == "":
			v.addf(at+".jwks_url", "missing; set jwks_url or jwks_file, the keys that verify tokens")
		case j.JWKSURL != "" && j.JWKSFile != "":
			v.addf(at+".jwks_file", "set only one of jwks_url and jwks_file")
		case j.JWKSURL != "":
			if msg := checkHTTPURL(j.JWKSURL); msg != "" {
				v.addf(at+".jwks_url", "%s", msg)
			}
		}
		if j.TenantClaim == "" {
			v.addf(at+".tenant_claim", "missing; the claim that names the tenant, e.g. sub")
		}
		v.tenant(at, j.Models, j.Limits)
	}
}

// tenant checks the models and limits of a key or of JWT tenants.
func (v *validator) tenant(at string, models []string, l TenantLimits) {
	if len(models) == 0 {
		v.addf(at+".models", `empty, so no model could be used; remove models to allow every model ("*")`)
	}
	for j, m := range models {
		if m == "" {
			v.addf(fmt.Sprintf("%s.models[%d]", at, j), "empty model name")
		} else if err := checkGlob(m); err != nil {
			v.addf(fmt.Sprintf("%s.models[%d]", at, j), "invalid model glob %q: %v", m, err)
		}
	}
	for _, f := range []struct {
		key string
		n   int
	}{{"rpm", l.RPM}, {"tpm", l.TPM}, {"concurrency", l.Concurrency}} {
		if f.n < 0 {
			v.addf(at+".limits."+f.key, "must not be negative; 0 means no limit")
		}
	}
}

func (v *validator) cache() {
	c := v.c
	if c.Cache.Memory < 0 {
		v.addf("cache.memory", "must not be negative")
	}
	if c.Cache.Redis && c.Redis.URL == "" {
		v.addDepf([]string{"redis.url"}, "cache.redis", "needs redis.url, where the shared cache lives")
	}
	if c.Cache.Memcached != "" {
		if c.Cache.Redis {
			v.addf("cache.memcached", "set memcached or redis, not both: the cache has one shared level")
		}
		for s := range strings.SplitSeq(c.Cache.Memcached, ",") {
			if _, _, err := net.SplitHostPort(strings.TrimSpace(s)); err != nil {
				v.addf("cache.memcached", "%q: want host:port, e.g. 127.0.0.1:11211", strings.TrimSpace(s))
			}
		}
	}
	if c.Cache.MemcachedItemLimit < 0 {
		v.addf("cache.memcached_item_limit", "must not be negative; memcached's default is 1MiB")
	}
	if c.Cache.Memory == 0 && !c.Cache.Redis && c.Cache.Memcached == "" {
		for i, p := range c.Pools {
			if p.Cache.TTL > 0 {
				v.addDepf([]string{"cache"}, fmt.Sprintf("pools[%d].cache.ttl", i), "the pool caches responses but cache.memory is 0 and cache.redis is false; give the cache a size, e.g. cache: {memory: 256MiB}")
			}
		}
	}
}

func (v *validator) jobs() {
	j := v.c.Jobs
	switch {
	case j.Store == "embedded":
	case j.Store == "redis":
		if v.c.Redis.URL == "" {
			v.addDepf([]string{"redis.url"}, "jobs.store", "store redis needs redis.url")
		}
	case strings.HasPrefix(j.Store, "nats://"):
		for s := range strings.SplitSeq(j.Store, ",") {
			if msg := checkNATSURL(strings.TrimSpace(s)); msg != "" {
				v.addf("jobs.store", "%s", msg)
			}
		}
	case strings.HasPrefix(j.Store, "amqp://"), strings.HasPrefix(j.Store, "amqps://"), strings.HasPrefix(j.Store, "kafka://"):
		if v.c.Redis.URL == "" {
			v.addDepf([]string{"redis.url"}, "jobs.store", "a RabbitMQ or Kafka job store keeps its job records in Redis: set redis.url")
		}
	default:
		v.addf("jobs.store", "unknown store %q; want embedded, redis, a NATS URL such as nats://127.0.0.1:4222, amqp://user:password@host:5672/vhost or kafka://host:9092", j.Store)
	}
	v.atLeast("jobs.concurrency", j.Concurrency, 1)
	v.atLeast("jobs.max_attempts", j.MaxAttempts, 1)
	v.positive("jobs.retention", j.Retention)
	v.positive("jobs.file_retention", j.FileRetention)
	if j.MaxFileSize <= 0 {
		v.addf("jobs.max_file_size", "must be positive, e.g. 200MiB")
	}
	for i, e := range j.CallbackAllow {
		if _, err := ParseAddrRule(e); err != nil {
			v.addf(fmt.Sprintf("jobs.callback_allow[%d]", i), "%v", err)
		}
	}
}

// kvAware checks the kv_aware balancer's scorers and tuning.
func (v *validator) kvAware(at string, p *Pool) {
	if len(p.Scorers) > 0 && p.Balancer != "kv_aware" {
		v.addf(at+".scorers", "scorers weigh the kv_aware balancer; this pool's balancer is %s", p.Balancer)
	}
	names := slices.Sorted(maps.Keys(DefaultScorers()))
	for _, name := range slices.Sorted(maps.Keys(p.Scorers)) {
		w := p.Scorers[name]
		switch {
		case !slices.Contains(names, name):
			v.addf(at+".scorers."+name, "unknown scorer %q; want one of: %s", name, strings.Join(names, ", "))
		case math.IsNaN(w) || math.IsInf(w, 0) || w < 0:
			v.addf(at+".scorers."+name, "weight %v must be a number >= 0 (0 turns the scorer off)", w)
		}
	}
	if p.Balancer == "kv_aware" {
		total := 0.0
		for _, w := range p.ScorerWeights() {
			if w > 0 && !math.IsInf(w, 0) {
				total += w
			}
		}
		if total == 0 {
			v.addf(at+".scorers", "every scorer weighs 0; kv_aware needs at least one")
		}
	}
	k, kp := p.KVAware, at+".kv_aware"
	v.atLeast(kp+".max_blocks", k.MaxBlocks, 1)
	v.atLeast(kp+".index_entries", k.IndexEntries, 1024)
	v.positive(kp+".index_ttl", k.IndexTTL)
	if math.IsNaN(k.LoadFactor) || k.LoadFactor < 1 {
		v.addf(kp+".load_factor", "%v must be at least 1 (1.25 lets a replica take a quarter more than the mean before its affinity is ignored)", k.LoadFactor)
	}
	if !strings.HasPrefix(k.MetricsPath, "/") {
		v.addf(kp+".metrics_path", "%q must start with \"/\"", k.MetricsPath)
	}
	v.nonNegative(kp+".scrape_interval", k.ScrapeInterval)
	if k.ScrapeInterval > 0 {
		v.positive(kp+".scrape_timeout", k.ScrapeTimeout)
		if k.ScrapeTimeout > k.ScrapeInterval {
			v.addf(kp+".scrape_timeout", "%s must not exceed scrape_interval (%s)", time.Duration(k.ScrapeTimeout), time.Duration(k.ScrapeInterval))
		}
	}
	if k.MaxMetricsSize < 1<<10 {
		v.addf(kp+".max_metrics_size", "must be at least 1KiB")
	}
	v.atLeast(kp+".stale_after", k.StaleAfter, 1)
}

func (v *validator) oneOf(path, what, value string, valid []string) {
	if !slices.Contains(valid, value) {
		v.addf(path, "unknown %s %q; want one of: %s", what, value, strings.Join(valid, ", "))
	}
}

// headers checks headers sent upstream. A value may be a secret, so no
// message quotes one.
func (v *validator) headers(path string, h map[string]string) {
	for _, name := range slices.Sorted(maps.Keys(h)) { // problems in a stable order
		value := h[name]
		if !validHeaderName(name) {
			v.addf(path, "%q is not a valid header name", name)
			continue
		}
		if strings.ContainsAny(value, "\r\n\x00") {
			v.addf(path+"."+name, "the value contains a line break or NUL; it cannot be sent as a header")
		}
		switch http.CanonicalHeaderKey(name) {
		case "Host", "Content-Length", "Transfer-Encoding", "Connection", "Te", "Upgrade", "Trailer", "Keep-Alive", "Proxy-Connection":
			v.addf(path, "%s is set by the gateway for each request and cannot be configured", name)
		}
	}
}

// validHeaderName reports whether s is an RFC 9110 field name (a token).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}

func (v *validator) positive(path string, d Duration) {
	if d <= 0 {
		v.addf(path, "must be more than 0s")
	}
}

func (v *validator) nonNegative(path string, d Duration) {
	if d < 0 {
		v.addf(path, "%s must not be negative", time.Duration(d))
	}
}

func (v *validator) atLeast(path string, n, least int) {
	if n < least {
		v.addf(path, "%d must be at least %d", n, least)
	}
}

// poolNames lists the configured pools for a message.
func (v *validator) poolNames() string {
	var names []string
	for _, p := range v.c.Pools {
		if poolNameRE.MatchString(p.Name) {
			names = append(names, p.Name)
		}
	}
	if len(names) == 0 {
		return "no pool has a valid name"
	}
	return "pools are: " + strings.Join(names, ", ")
}

// checkListen returns what is wrong with a listen address, or "".
func checkListen(addr string) string {
	const want = `want host:port such as ":8080" or "127.0.0.1:8080"`
	if addr == "" {
		return "missing; " + want
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Sprintf("invalid address %q; %s", addr, want)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Sprintf("invalid port %q in %q; want a number from 0 to 65535", port, addr)
	}
	if strings.ContainsAny(host, " /") {
		return fmt.Sprintf("invalid host %q in %q; %s", host, addr, want)
	}
	return ""
}

// checkBackendURL returns what is wrong with a backend URL, or "".
func checkBackendURL(s string) string {
	const want = "want http://host:port, https://host:port or h2c://host:port"
	if s == "" {
		return "missing; " + want
	}
	if !strings.Contains(s, "://") {
		return "no scheme; " + want
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Sprintf("invalid URL: %v; %s", urlErr(err), want)
	}
	switch u.Scheme {
	case "http", "https", "h2c":
	default:
		return fmt.Sprintf("unsupported scheme %q; %s (h2c is HTTP/2 without TLS, for gRPC)", u.Scheme, want)
	}
	switch {
	case u.User != nil:
		return "credentials in a backend URL are not supported; remove the user:password@"
	case u.Hostname() == "":
		return fmt.Sprintf("URL %q has no host; %s", s, want)
	case u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "":
		return fmt.Sprintf("URL %q has a path, query or fragment; a backend is scheme://host:port only", s)
	case u.Port() == "" && u.Scheme == "h2c":
		return fmt.Sprintf("h2c URL %q needs a port, e.g. h2c://%s:9000", s, u.Hostname())
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Sprintf("invalid port %q; want a number from 1 to 65535", p)
		}
	}
	return ""
}

// checkHTTPURL returns what is wrong with an http(s) URL, or "".
func checkHTTPURL(s string) string {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Sprintf("invalid URL: %v", urlErr(err))
	case u.Scheme != "http" && u.Scheme != "https" || !strings.Contains(s, "://"):
		return fmt.Sprintf("URL %q must start with http:// or https://", redacted(u, s))
	case u.Host == "":
		return fmt.Sprintf("URL %q has no host", redacted(u, s))
	}
	return ""
}

// checkRedisURL returns what is wrong with a Redis URL, or "".
func checkRedisURL(s string) string {
	const want = "want redis://host:6379/0, rediss://host:6380/0 or unix:///path/to/redis.sock"
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Sprintf("invalid URL: %v; %s", urlErr(err), want)
	case !strings.Contains(s, ":/"):
		return "not a URL; " + want
	case u.Scheme == "unix":
		if u.Path == "" {
			return "unix URL has no socket path; " + want
		}
	case u.Scheme != "redis" && u.Scheme != "rediss":
		return fmt.Sprintf("unsupported scheme %q; %s", u.Scheme, want)
	case u.Host == "":
		return fmt.Sprintf("URL %q has no host; %s", redacted(u, s), want)
	}
	return ""
}

// checkNATSURL returns what is wrong with one NATS server URL, or "".
func checkNATSURL(s string) string {
	const want = "want nats://host:4222 (several joined with commas)"
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Sprintf("invalid NATS URL: %v; %s", urlErr(err), want)
	case u.Scheme != "nats":
		return fmt.Sprintf("unsupported scheme %q; %s", u.Scheme, want)
	case u.Hostname() == "":
		return fmt.Sprintf("NATS URL %q has no host; %s", redacted(u, s), want)
	}
	return ""
}

// checkRouteHost returns what is wrong with a route's host, or "".
func checkRouteHost(h string) string {
	if h == "" {
		return ""
	}
	if strings.ContainsAny(h, "/ \t") {
		return fmt.Sprintf("invalid host %q; want a host name such as img.example.com, with no scheme or path", h)
	}
	if _, _, err := net.SplitHostPort(h); err == nil {
		return fmt.Sprintf("host %q has a port; routes match the host without its port", h)
	}
	return ""
}

// redacted is s, with any password replaced by "xxxxx".
func redacted(u *url.URL, s string) string {
	if _, hasPassword := u.User.Password(); hasPassword {
		return u.Redacted()
	}
	return s
}

// andList joins words as "a, b and c".
func andList(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " and " + words[len(words)-1]
}

// urlErr drops the URL from a url.Parse error: it may hold a password.
func urlErr(err error) error {
	if ue, ok := errors.AsType[*url.Error](err); ok {
		return ue.Err
	}
	return err
}

func isSHA256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// validRetryOn reports whether s is a retry.on condition.
func validRetryOn(s string) bool {
	if s == "connect_failure" || s == "timeout" {
		return true
	}
	n, err := strconv.Atoi(s)
	return err == nil && n >= 400 && n <= 599 && strconv.Itoa(n) == s
}
