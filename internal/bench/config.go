package bench

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
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
}

// closedLoop reports whether c (with defaults applied) runs workers rather
// than a schedule.
func (c *Config) closedLoop() bool { return c.Rate == 0 }

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
	if c.Rate == 0 && c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.Duration == 0 {
		c.Duration = DefaultDuration
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
