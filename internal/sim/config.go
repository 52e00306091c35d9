package sim

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/jonboulle/clockwork"
)

// Limits that keep one request from making the sim allocate without bound.
const (
	// MaxOutputTokens is the largest max_tokens a request may ask for.
	MaxOutputTokens = 1 << 16
	// MaxEmbeddingInputs is the most inputs one embeddings request may carry
	// (OpenAI's own limit).
	MaxEmbeddingInputs = 2048
	// MaxDim is the largest embedding dimension (--dim or "dimensions").
	MaxDim = 8192
	// DefaultBlockTokens is the KV block size when Config.BlockTokens is
	// zero.
	DefaultBlockTokens = 16
	// MaxBlockTokens is the largest KV block size.
	MaxBlockTokens = 1 << 16
	// MaxKVBlocks is the largest KV-cache capacity in blocks; a cached
	// block costs the sim about 80 bytes.
	MaxKVBlocks = 1 << 26
	// maxOutputFloats bounds the numbers in one embeddings or v2 infer
	// response (about 40 MB of JSON).
	maxOutputFloats = 1 << 22
)

// Config is what one simulated server serves and how fast. Start from
// DefaultConfig: New takes durations as given (zero means no delay), and
// fills only the fields whose zero value is documented as a default.
type Config struct {
	// Addr is where ListenAndServe listens. Empty: "127.0.0.1:9001".
	Addr string
	// Models are the model names served, all by one engine. Empty: ["sim-llm"].
	Models []string
	// ID is sent in the X-Sim-Instance header of every response. Empty: the
	// address being served (the listener's real address when Addr has port 0).
	ID string

	// TTFT is the fixed part of the prefill. Default 20ms.
	TTFT time.Duration
	// PrefillPerToken is the prefill cost of each prompt token. Default 50µs
	// (20k prompt tokens/s, a mid-size model on one datacenter GPU).
	PrefillPerToken time.Duration
	// ITL is the time per output token with a batch of one. Default 5ms.
	ITL time.Duration
	// BatchPenalty is how much a full batch stretches ITL:
	// ITL × (1 + BatchPenalty × (running−1)/MaxRunning). Default 0.5; zero
	// disables the effect.
	BatchPenalty float64
	// MaxRunning is the batch size: requests beyond it wait. Zero: 8.
	MaxRunning int
	// Slowdown multiplies every latency. Zero: 1.
	Slowdown float64

	// ErrorRate is the fraction of valid inference requests answered with a
	// simulated 500 before they reach the engine, drawn from a random source
	// seeded with Seed. Zero: none.
	ErrorRate float64
	// Seed seeds the error-rate draws: the same seed and the same request
	// order fail the same requests. Default 0.
	Seed uint64
	// StartupDelay is how long after New the server answers 503 on every
	// endpoint but /metrics and /v2/health/live, like a replica loading its
	// weights. Zero: ready at once.
	StartupDelay time.Duration

	// Dim is the embedding dimension. Zero: 64.
	Dim int
	// DefaultMaxTokens is the output length of a request without max_tokens.
	// Zero: 16.
	DefaultMaxTokens int
	// KVCacheTokens is the KV-cache capacity in tokens, used when KVBlocks
	// is zero. Zero: MaxRunning × 2048.
	KVCacheTokens int
	// BlockTokens is the number of tokens in one KV block, the unit of the
	// prefix cache. Zero: 16, vLLM's default.
	BlockTokens int
	// KVBlocks is the KV-cache capacity in blocks: the blocks of running
	// requests and the cached prefixes share it. Zero: KVCacheTokens /
	// BlockTokens rounded up (1024 blocks with the other defaults).
	KVBlocks int
	// DisablePrefixCache turns the prefix cache off: every prompt token is
	// prefilled and usage reports no cached tokens. Default false (on, as
	// in vLLM).
	DisablePrefixCache bool
	// MaxBodyBytes bounds request bodies; larger ones get 413. Zero: 8 MiB.
	MaxBodyBytes int64
	// ShutdownTimeout is how long Serve lets in-flight requests finish after
	// its context ends before it cuts them. Default 5s; zero cuts at once.
	ShutdownTimeout time.Duration

	// Clock drives every latency and the startup delay. Nil: the real clock.
	Clock clockwork.Clock
	// Logger receives the start line and serving errors. Nil: discarded.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults of `sluice sim`.
func DefaultConfig() Config {
	return Config{
		Addr:             "127.0.0.1:9001",
		Models:           []string{"sim-llm"},
		TTFT:             20 * time.Millisecond,
		PrefillPerToken:  50 * time.Microsecond,
		ITL:              5 * time.Millisecond,
		BatchPenalty:     0.5,
		MaxRunning:       8,
		Slowdown:         1,
		Dim:              64,
		DefaultMaxTokens: 16,
		MaxBodyBytes:     8 << 20,
		ShutdownTimeout:  5 * time.Second,
	}
}

// withDefaults fills the fields whose zero value stands for a default.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Addr == "" {
		c.Addr = d.Addr
	}
	if len(c.Models) == 0 {
		c.Models = d.Models
	}
	if c.MaxRunning == 0 {
		c.MaxRunning = d.MaxRunning
	}
	if c.Slowdown == 0 {
		c.Slowdown = d.Slowdown
	}
	if c.Dim == 0 {
		c.Dim = d.Dim
	}
	if c.DefaultMaxTokens == 0 {
		c.DefaultMaxTokens = d.DefaultMaxTokens
	}
	if c.KVCacheTokens == 0 {
		c.KVCacheTokens = c.MaxRunning * 2048
	}
	if c.BlockTokens == 0 {
		c.BlockTokens = DefaultBlockTokens
	}
	if c.KVBlocks == 0 && c.BlockTokens > 0 {
		c.KVBlocks = ceilDiv(c.KVCacheTokens, c.BlockTokens)
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = d.MaxBodyBytes
	}
	if c.Clock == nil {
		c.Clock = clockwork.NewRealClock()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// validate reports every problem in c, which has its defaults filled.
func (c Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	seen := make(map[string]bool, len(c.Models))
	for _, m := range c.Models {
		switch {
		case m == "":
			bad("model: empty name")
		case seen[m]:
			bad("model: %q given twice", m)
		}
		seen[m] = true
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"ttft", c.TTFT}, {"prefill-per-token", c.PrefillPerToken}, {"itl", c.ITL},
		{"startup-delay", c.StartupDelay}, {"shutdown-timeout", c.ShutdownTimeout},
	} {
		if d.v < 0 {
			bad("%s: %v must not be negative", d.name, d.v)
		}
	}
	if !(c.BatchPenalty >= 0 && c.BatchPenalty <= 100) {
		bad("batch-penalty: %v must be between 0 and 100", c.BatchPenalty)
	}
	if c.MaxRunning < 1 {
		bad("max-running: %d must be at least 1", c.MaxRunning)
	}
	if !(c.Slowdown > 0 && c.Slowdown <= 1e6) {
		bad("slowdown: %v must be above 0 and at most 1e6", c.Slowdown)
	}
	if !(c.ErrorRate >= 0 && c.ErrorRate <= 1) {
		bad("error-rate: %v must be between 0 and 1", c.ErrorRate)
	}
	if c.Dim < 1 || c.Dim > MaxDim {
		bad("dim: %d must be between 1 and %d", c.Dim, MaxDim)
	}
	if c.DefaultMaxTokens < 1 || c.DefaultMaxTokens > MaxOutputTokens {
		bad("default-max-tokens: %d must be between 1 and %d", c.DefaultMaxTokens, MaxOutputTokens)
	}
	if c.KVCacheTokens < 1 {
		bad("kv-cache-tokens: %d must be at least 1", c.KVCacheTokens)
	}
	if c.BlockTokens < 1 || c.BlockTokens > MaxBlockTokens {
		bad("block-tokens: %d must be between 1 and %d", c.BlockTokens, MaxBlockTokens)
	}
	if c.KVBlocks < 1 || c.KVBlocks > MaxKVBlocks {
		bad("kv-blocks: %d must be between 1 and %d", c.KVBlocks, MaxKVBlocks)
	}
	if c.MaxBodyBytes < 1 || c.MaxBodyBytes > math.MaxInt32 {
		bad("max-body: %d must be between 1 byte and 2 GiB", c.MaxBodyBytes)
	}
	return errors.Join(errs...)
}
