package bench

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestResolveTarget(t *testing.T) {
	tests := []struct {
		url, endpoint         string
		wantURL, wantEndpoint string
		wantErr               string
	}{
		{"http://127.0.0.1:8080", "", "http://127.0.0.1:8080/v1/chat/completions", EndpointChat, ""},
		{"http://127.0.0.1:8080/", "", "http://127.0.0.1:8080/v1/chat/completions", EndpointChat, ""},
		{"http://h", EndpointEmbeddings, "http://h/v1/embeddings", EndpointEmbeddings, ""},
		{"https://h/proxy/", EndpointCompletions, "https://h/proxy/v1/completions", EndpointCompletions, ""},
		{"http://h/v1/completions", "", "http://h/v1/completions", EndpointCompletions, ""},
		{"http://h/v1/chat/completions/", EndpointChat, "http://h/v1/chat/completions", EndpointChat, ""},
		{"http://h/x/v1/embeddings?api-version=1", "", "http://h/x/v1/embeddings?api-version=1", EndpointEmbeddings, ""},
		{"http://h/v1/completions", EndpointChat, "", "", "addresses /v1/completions"},
		{"http://h", "/v1/images", "", "", "endpoint"},
		{"", "", "", "", "url is required"},
		{"127.0.0.1:8080", "", "", "", "scheme"},
		{"ftp://h", "", "", "", "scheme"},
		{"http://", "", "", "", "no host"},
	}
	for _, tt := range tests {
		gotURL, gotEndpoint, err := resolveTarget(tt.url, tt.endpoint)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("resolveTarget(%q, %q) error %v, want one containing %q", tt.url, tt.endpoint, err, tt.wantErr)
			}
			continue
		}
		if err != nil || gotURL != tt.wantURL || gotEndpoint != tt.wantEndpoint {
			t.Errorf("resolveTarget(%q, %q) = %q, %q, %v; want %q, %q", tt.url, tt.endpoint, gotURL, gotEndpoint, err, tt.wantURL, tt.wantEndpoint)
		}
	}
}

func TestWithDefaults(t *testing.T) {
	got, err := Config{URL: "http://h", Model: "m"}.WithDefaults()
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		URL: "http://h/v1/chat/completions", Endpoint: EndpointChat, Model: "m",
		Arrivals: ArrivalsPoisson, MaxInFlight: DefaultMaxInFlight, Concurrency: DefaultConcurrency,
		Duration: DefaultDuration, Timeout: DefaultTimeout,
		PromptTokens: DefaultPromptTokens, MaxTokens: DefaultMaxTokens,
	}
	if got.URL != want.URL || got.Endpoint != want.Endpoint || got.Arrivals != want.Arrivals ||
		got.MaxInFlight != want.MaxInFlight || got.Concurrency != want.Concurrency ||
		got.Duration != want.Duration || got.Timeout != want.Timeout ||
		got.PromptTokens != want.PromptTokens || got.MaxTokens != want.MaxTokens || got.Rate != 0 {
		t.Errorf("defaults:\n got %+v\nwant %+v", got, want)
	}

	open, err := Config{URL: "http://h", Model: "m", Rate: 5}.WithDefaults()
	if err != nil || open.Concurrency != 0 || open.closedLoop() {
		t.Errorf("rate only: %+v, %v; want an open loop without workers", open, err)
	}
}

func TestWithDefaultsErrors(t *testing.T) {
	base := Config{URL: "http://h", Model: "m"}
	tests := []struct {
		name   string
		modify func(*Config)
		want   string
	}{
		{"no model", func(c *Config) { c.Model = "" }, "model is required"},
		{"rate and concurrency", func(c *Config) { c.Rate, c.Concurrency = 1, 1 }, "exclusive"},
		{"negative rate", func(c *Config) { c.Rate = -1 }, "rate"},
		{"NaN rate", func(c *Config) { c.Rate = math.NaN() }, "rate"},
		{"negative concurrency", func(c *Config) { c.Concurrency = -2 }, "concurrency"},
		{"arrivals", func(c *Config) { c.Arrivals = "bursty" }, "arrivals"},
		{"duration", func(c *Config) { c.Duration = -time.Second }, "duration"},
		{"warmup", func(c *Config) { c.Warmup = -time.Second }, "warmup"},
		{"timeout", func(c *Config) { c.Timeout = -time.Second }, "timeout"},
		{"prompt tokens", func(c *Config) { c.PromptTokens = -1 }, "prompt tokens"},
		{"max tokens", func(c *Config) { c.MaxTokens = -1 }, "max tokens"},
		{"max in flight", func(c *Config) { c.MaxInFlight = -1 }, "max in flight"},
		{"streamed embeddings", func(c *Config) { c.Endpoint, c.Stream = EndpointEmbeddings, true }, "does not stream"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			tt.modify(&c)
			_, err := c.WithDefaults()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}

	// Every problem is reported, not just the first.
	_, err := Config{Rate: -1, PromptTokens: -1}.WithDefaults()
	for _, want := range []string{"url", "model", "rate", "prompt tokens"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %q", err, want)
		}
	}
}

func TestSchedule(t *testing.T) {
	s := newSchedule(ArrivalsConstant, 4, 1)
	for i, want := range []time.Duration{0, 250 * time.Millisecond, 500 * time.Millisecond, 750 * time.Millisecond, time.Second} {
		if got := s.next(); got != want {
			t.Errorf("constant arrival %d at %v, want %v", i, got, want)
		}
	}

	// Poisson: gaps average 1/rate, and a run of them is far from constant.
	const rate, n = 100.0, 20000
	p := newSchedule(ArrivalsPoisson, rate, 7)
	var last time.Duration
	var short int
	for range n {
		at := p.next()
		if at < last {
			t.Fatalf("arrival at %v before the previous one at %v", at, last)
		}
		if at-last < 5*time.Millisecond {
			short++ // P(gap < mean/2) = 1 - e^-0.5 ≈ 39%
		}
		last = at
	}
	mean := last.Seconds() / n
	if math.Abs(mean-1/rate)/(1/rate) > 0.05 {
		t.Errorf("mean gap %.5fs, want about %.5fs", mean, 1/rate)
	}
	if frac := float64(short) / n; frac < 0.35 || frac > 0.43 {
		t.Errorf("%.2f of gaps under half the mean, want about 0.39 for exponential gaps", frac)
	}
}

func TestParseSLO(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want SLO
		err  bool
	}{
		{"ttft=500", SLO{TTFT: 500 * time.Millisecond}, false},
		{"ttft=200, itl=12.5,e2e=3000", SLO{TTFT: 200 * time.Millisecond, ITL: 12500 * time.Microsecond, E2E: 3 * time.Second}, false},
		{"tpot=50,e2el=100", SLO{ITL: 50 * time.Millisecond, E2E: 100 * time.Millisecond}, false},
		{"", SLO{}, true},
		{"ttft", SLO{}, true},
		{"ttft=0", SLO{}, true},
		{"ttft=-5", SLO{}, true},
		{"ttft=abc", SLO{}, true},
		{"latency=5", SLO{}, true},
		{"ttft=NaN", SLO{}, true},
	} {
		got, err := ParseSLO(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseSLO(%q) = %+v, %v", tc.in, got, err)
		}
		if err == nil {
			if back, _ := ParseSLO(got.String()); back != got {
				t.Errorf("%q: String %q does not parse back", tc.in, got.String())
			}
		}
	}
}

func TestWithDefaultsTrace(t *testing.T) {
	tr := &Trace{Format: TraceAzure, TokenScale: 1, Requests: []TraceRequest{{At: 0}, {At: 10 * time.Second}}}
	c, err := Config{URL: "http://h", Model: "m", Trace: tr, TimeScale: 4}.WithDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.Concurrency != 0 || c.Duration != 2500*time.Millisecond+time.Millisecond || c.SessionHeader != DefaultSessionHeader || c.closedLoop() {
		t.Errorf("trace defaults: %+v", c)
	}
	if c, _ := (Config{URL: "http://h", Model: "m", Trace: tr}).WithDefaults(); c.TimeScale != 1 {
		t.Errorf("default time scale %v", c.TimeScale)
	}
	for _, bad := range []Config{
		{URL: "http://h", Model: "m", Trace: tr, Rate: 5},
		{URL: "http://h", Model: "m", Trace: tr, Concurrency: 5},
		{URL: "http://h", Model: "m", Trace: &Trace{TokenScale: 1}},
		{URL: "http://h", Model: "m", Trace: tr, TimeScale: -1},
		{URL: "http://h", Model: "m", Goodput: SLO{TTFT: time.Second}},
		{URL: "http://h", Model: "m", Goodput: SLO{E2E: -time.Second}},
	} {
		if _, err := bad.WithDefaults(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}
