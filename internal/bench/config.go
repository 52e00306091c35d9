package bench

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// The endpoints bench knows how to drive. The request body and the way the
// response is read follow from the endpoint.
const (
	EndpointChat        = "/v1/chat/completions"
	EndpointCompletions = "/v1/completions"
	EndpointEmbeddings  = "/v1/embeddings"
)

// Arrival processes for the open loop.
const (
	// ArrivalsPoisson spaces requests by exponentially distributed gaps with
	// mean 1/Rate, as independent users would.
	ArrivalsPoisson = "poisson"
	// ArrivalsConstant spaces requests exactly 1/Rate apart.
	ArrivalsConstant = "constant"
)

// Defaults applied by Run to zero fields of Config.
const (
	DefaultConcurrency  = 8
	DefaultDuration     = 10 * time.Second
	DefaultPromptTokens = 64
	DefaultMaxTokens    = 16
	DefaultTimeout      = 60 * time.Second
	DefaultMaxInFlight  = 10000
)

// Config describes one load run. The zero value of every field but URL and
// Model is usable and means the documented default.
type Config struct {
	// URL is the server's base URL, such as "http://127.0.0.1:8080"; requests
	// go to URL joined with Endpoint (a base path such as
	// "http://host/prefix" is kept). A URL whose path already ends with one
	// of the known endpoints is taken as the full address, and that suffix
	// selects the endpoint. Required.
	URL string
	// Endpoint is EndpointChat, EndpointCompletions or EndpointEmbeddings.
	// Default EndpointChat (or the endpoint URL ends with).
	Endpoint string
	// Model is sent as the request's "model". Required.
	Model string

	// Rate, when > 0, runs an open loop: requests start at Rate per second
	// on the schedule Arrivals draws, whether or not earlier ones finished.
	// Rate and Concurrency are exclusive.
	Rate float64
	// Arrivals is ArrivalsPoisson or ArrivalsConstant. Default
	// ArrivalsPoisson. Used by the open loop only.
	Arrivals string
	// MaxInFlight caps the open loop's outstanding requests; an arrival
	// that finds the cap reached is counted in Result.Dropped and never
	// sent late. Default DefaultMaxInFlight.
	MaxInFlight int
	// Concurrency, when > 0, runs a closed loop: that many workers each send
	// their next request as soon as the previous one finished. When neither
	// Rate nor Concurrency is set, the run is a closed loop with
	// DefaultConcurrency workers.
	Concurrency int

	// Duration is how long requests are started for, after Warmup. Requests
	// still in flight at the end are waited for (up to Timeout). Default
	// DefaultDuration.
	Duration time.Duration
	// Warmup is a period before Duration whose requests are sent but not
	// counted. Default 0.
	Warmup time.Duration
	// Timeout bounds each request from its send to its last byte. Default
	// DefaultTimeout.
	Timeout time.Duration

	// Stream requests a streamed (SSE) response, which measures time to
	// first token and inter-token latency. Not allowed with
	// EndpointEmbeddings.
	Stream bool
	// PromptTokens is the prompt length in words (see Prompt). Default
	// DefaultPromptTokens.
	PromptTokens int
	// MaxTokens is sent as "max_tokens" (not for embeddings). Default
	// DefaultMaxTokens.
	MaxTokens int
	// RepeatPrompt sends the same prompt in every request instead of a
	// distinct one per request, to measure a server's caches.
	RepeatPrompt bool
	// Seed drives the arrival schedule and the prompts. Zero picks a random
	// seed; Result.Seed reports the one used so a run can be repeated.
	Seed uint64

	// APIKey, when set, is sent as "Authorization: Bearer APIKey".
	APIKey string
	// Header is added to every request (after APIKey, so it may override
	// Authorization). A "Host" entry sets the request's Host.
	Header http.Header
	// Transport sends the requests. Nil means a transport tuned for load
	// generation (keep-alive, no compression, enough idle connections for
	// the run), closed when Run returns.
	Transport http.RoundTripper

	// Trace, when set, replays a trace instead of Rate or Concurrency
	// (which must be zero): request i is sent at Trace.Requests[i].At /
	// TimeScale after the start, as an open loop, with the trace's prompt
	// (Trace.AppendPrompt) and max_tokens (Trace.OutputTokens), and its
	// session id (TraceRequest.Session), if any, in SessionHeader.
	// PromptTokens, MaxTokens and RepeatPrompt are not used. Duration, when
	// set, stops the replay early; zero replays the whole trace.
	Trace *Trace
	// TimeScale divides the trace's inter-arrival times: 10 replays ten
	// times faster, 0.5 at half speed. Default 1.
	TimeScale float64
	// SessionHeader names the request header that carries a trace
	// request's session id. Default DefaultSessionHeader.
	SessionHeader string

	// Goodput is the service-level objective that Result.Good counts
	// requests against. Its zero value checks nothing.
	Goodput SLO
}

// DefaultSessionHeader carries a trace request's session (conversation)
// id, for session-affine routing.
const DefaultSessionHeader = "X-Session-ID"

// closedLoop reports whether c (with defaults applied) runs workers rather
// than a schedule.
func (c *Config) closedLoop() bool { return c.Rate == 0 && c.Trace == nil }

// WithDefaults returns c with zero fields set to their defaults, URL
// resolved to the full request URL and Endpoint to the endpoint it
// addresses, or an error listing every problem found. Run calls it; callers
// use it to validate a Config early or to see what will run.
func (c Config) WithDefaults() (Config, error) {
	if c.Arrivals == "" {
		c.Arrivals = ArrivalsPoisson
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.Rate == 0 && c.Concurrency == 0 && c.Trace == nil {
		c.Concurrency = DefaultConcurrency
	}
	if c.TimeScale == 0 {
		c.TimeScale = 1
	}
	if c.SessionHeader == "" {
		c.SessionHeader = DefaultSessionHeader
	}
	if c.Duration == 0 {
		c.Duration = DefaultDuration
		if c.Trace != nil && c.TimeScale > 0 {
			// Just past the last arrival, so every request is sent.
			c.Duration = time.Duration(float64(c.Trace.Span())/c.TimeScale) + time.Millisecond
		}
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.PromptTokens == 0 {
		c.PromptTokens = DefaultPromptTokens
	}
	if c.MaxTokens == 0 {
		c.MaxTokens = DefaultMaxTokens
	}

	var errs []error
	target, endpoint, err := resolveTarget(c.URL, c.Endpoint)
	if err != nil {
		errs = append(errs, err)
	} else {
		c.URL, c.Endpoint = target, endpoint
	}
	if c.Model == "" {
		errs = append(errs, errors.New("model is required"))
	}
	switch {
	case c.Rate != 0 && c.Concurrency != 0:
		errs = append(errs, errors.New("rate and concurrency are exclusive: set one"))
	case c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0):
		errs = append(errs, fmt.Errorf("rate %v: must be a positive number", c.Rate))
	case c.Concurrency < 0:
		errs = append(errs, fmt.Errorf("concurrency %d: must be positive", c.Concurrency))
	}
	if c.Arrivals != ArrivalsPoisson && c.Arrivals != ArrivalsConstant {
		errs = append(errs, fmt.Errorf("arrivals %q: must be %s or %s", c.Arrivals, ArrivalsPoisson, ArrivalsConstant))
	}
	if c.MaxInFlight < 0 {
		errs = append(errs, fmt.Errorf("max in flight %d: must be positive", c.MaxInFlight))
	}
	if c.Duration < 0 {
		errs = append(errs, fmt.Errorf("duration %v: must be positive", c.Duration))
	}
	if c.Warmup < 0 {
		errs = append(errs, fmt.Errorf("warmup %v: must not be negative", c.Warmup))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout %v: must be positive", c.Timeout))
	}
	if c.PromptTokens < 0 {
		errs = append(errs, fmt.Errorf("prompt tokens %d: must be positive", c.PromptTokens))
	}
	if c.MaxTokens < 0 {
		errs = append(errs, fmt.Errorf("max tokens %d: must be positive", c.MaxTokens))
	}
	if c.Stream && c.Endpoint == EndpointEmbeddings {
		errs = append(errs, fmt.Errorf("stream: %s does not stream", EndpointEmbeddings))
	}
	if c.Trace != nil {
		switch {
		case c.Rate != 0 || c.Concurrency != 0:
			errs = append(errs, errors.New("trace replays the trace's arrivals: rate and concurrency must not be set"))
		case len(c.Trace.Requests) == 0:
			errs = append(errs, errors.New("trace: no requests selected"))
		case !(c.Trace.TokenScale > 0):
			errs = append(errs, fmt.Errorf("trace: token scale %v must be above 0", c.Trace.TokenScale))
		}
	}
	if !(c.TimeScale > 0 && c.TimeScale <= 1e6) {
		errs = append(errs, fmt.Errorf("time scale %v: must be above 0 and at most 1e6", c.TimeScale))
	}
	if c.Goodput.TTFT < 0 || c.Goodput.ITL < 0 || c.Goodput.E2E < 0 {
		errs = append(errs, errors.New("goodput: thresholds must not be negative"))
	}
	if (c.Goodput.TTFT > 0 || c.Goodput.ITL > 0) && !c.Stream {
		errs = append(errs, errors.New("goodput: ttft and itl are measured on streams only: add stream"))
	}
	return c, errors.Join(errs...)
}

// resolveTarget turns a base or full URL and an endpoint into the request
// URL and the endpoint it addresses.
func resolveTarget(raw, endpoint string) (target, resolved string, err error) {
	if raw == "" {
		return "", endpoint, errors.New("url is required")
	}
	if !strings.HasPrefix(raw, "http://") && !strings.HasPrefix(raw, "https://") {
		return "", endpoint, fmt.Errorf("url %q: scheme must be http:// or https://", raw)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", endpoint, fmt.Errorf("url: %w", err)
	}
	if u.Host == "" {
		return "", endpoint, fmt.Errorf("url %q: no host", raw)
	}
	if endpoint != "" && !knownEndpoint(endpoint) {
		return "", endpoint, fmt.Errorf("endpoint %q: must be %s, %s or %s", endpoint, EndpointChat, EndpointCompletions, EndpointEmbeddings)
	}
	path := strings.TrimSuffix(u.Path, "/")
	for _, e := range []string{EndpointChat, EndpointCompletions, EndpointEmbeddings} {
		if strings.HasSuffix(path, e) {
			if endpoint != "" && endpoint != e {
				return "", endpoint, fmt.Errorf("url %q addresses %s but endpoint is %s", raw, e, endpoint)
			}
			u.Path = path
			return u.String(), e, nil
		}
	}
	if endpoint == "" {
		endpoint = EndpointChat
	}
	u.Path = path + endpoint
	u.RawPath = ""
	return u.String(), endpoint, nil
}

func knownEndpoint(e string) bool {
	return e == EndpointChat || e == EndpointCompletions || e == EndpointEmbeddings
}

// SLO is a service-level objective per request: a request meets it when it
// succeeded and each set threshold holds. Zero fields are not checked.
type SLO struct {
	// TTFT bounds the time to first token (streams only).
	TTFT time.Duration
	// ITL bounds the request's mean inter-token latency, the mean gap
	// between its content chunks, which vLLM calls time per output token
	// (streams only; a request with one chunk has no gap and meets it).
	ITL time.Duration
	// E2E bounds the end-to-end latency.
	E2E time.Duration
}

// IsZero reports whether s checks nothing.
func (s SLO) IsZero() bool { return s == SLO{} }

// String formats s as ParseSLO reads it.
func (s SLO) String() string {
	var parts []string
	for _, p := range []struct {
		name string
		v    time.Duration
	}{{"ttft", s.TTFT}, {"itl", s.ITL}, {"e2e", s.E2E}} {
		if p.v > 0 {
			parts = append(parts, p.name+"="+strconv.FormatFloat(float64(p.v)/float64(time.Millisecond), 'f', -1, 64))
		}
	}
	return strings.Join(parts, ",")
}

// met reports whether a successful request with these timings meets s.
// ttft is negative when unknown; meanITL is zero without gaps.
func (s SLO) met(ttft, meanITL, e2e time.Duration) bool {
	return (s.TTFT == 0 || (ttft >= 0 && ttft <= s.TTFT)) &&
		(s.ITL == 0 || meanITL <= s.ITL) &&
		(s.E2E == 0 || e2e <= s.E2E)
}

// ParseSLO reads "ttft=MS,itl=MS,e2e=MS" (any subset, in any order;
// milliseconds, fractions allowed). vLLM's names tpot (for itl) and e2el
// (for e2e) are accepted too.
func ParseSLO(spec string) (SLO, error) {
	var s SLO
	if strings.TrimSpace(spec) == "" {
		return s, errors.New("goodput: empty; want ttft=MS,itl=MS,e2e=MS")
	}
	for part := range strings.SplitSeq(spec, ",") {
		key, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return SLO{}, fmt.Errorf("goodput %q: want key=milliseconds", part)
		}
		ms, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil || !(ms > 0 && ms <= float64(maxTraceAt/time.Millisecond)) {
			return SLO{}, fmt.Errorf("goodput %s=%s: want a positive number of milliseconds", key, val)
		}
		d := time.Duration(ms * float64(time.Millisecond))
		switch strings.ToLower(strings.TrimSpace(key)) {
		case "ttft":
			s.TTFT = d
		case "itl", "tpot":
			s.ITL = d
		case "e2e", "e2el":
			s.E2E = d
		default:
			return SLO{}, fmt.Errorf("goodput %q: unknown key %q (want ttft, itl or e2e)", part, key)
		}
	}
	return s, nil
}
