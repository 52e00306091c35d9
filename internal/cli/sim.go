package cli

import (
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/sim"
)

func newSimCmd() *cobra.Command {
	cfg := sim.DefaultConfig()
	maxBody := "8MiB"
	prefixCache := true
	cmd := &cobra.Command{
		Use:   "sim [flags]",
		Short: "Run a simulated inference server (OpenAI API, Open Inference Protocol v2, vLLM metrics)",
		Long: `sim runs a simulated model server for demos, tests and benchmarks. It answers
the OpenAI API (/v1/chat/completions, /v1/completions, /v1/responses,
/v1/embeddings, /v1/models), the Open Inference Protocol v2 (/v2/models/NAME/infer,
/v2/health/ready) and /health, and exports vLLM's metrics on /metrics. Every
response carries X-Sim-Instance: <id>.

Answers are deterministic: the same request gets the same text. A completion
has exactly max_tokens tokens (default --default-max-tokens), one word each;
prompt tokens are the whitespace-separated words of the prompt.

Latencies behave like a GPU engine with continuous batching:
  - at most --max-running requests run at once; the rest wait in FIFO order
    (vllm:num_requests_waiting);
  - the first token comes after the prefill:
      --ttft + --prefill-per-token × uncached prompt tokens   (plus any queueing),
    where uncached means not found in the prefix cache (all of them the
    first time a prompt is seen);
  - each further token after
      --itl × (1 + --batch-penalty × (running−1) / --max-running),
    so a full batch decodes slower;
  - embeddings and v2 inference cost one prefill over all their input tokens;
  - --slowdown multiplies everything.
A 100-word prompt asking for 16 tokens alone on the defaults takes
20ms + 100×50µs = 25ms to its first token, and 25ms + 15×5ms = 100ms in all.
Sent again, 96 of its tokens are cached: 20ms + 4×50µs = 20.2ms to the first.

Prefix cache, like vLLM's: the KV cache is --kv-blocks blocks of
--block-tokens tokens. A prompt's full blocks are hashed in a chain from its
start (a word's token id is a hash of the word), so equal prefixes give equal
blocks. The longest run of leading blocks already cached (at most the prompt
minus its last token) skips the prefill, and usage reports it as
prompt_tokens_details.cached_tokens. Blocks of running requests are pinned;
when a request ends its full prompt blocks stay cached and are evicted least
recently used first when a new block needs room. Output tokens and a partial
last block are not cached. Metrics: vllm:kv_cache_usage_perc (blocks held by
running requests / --kv-blocks, as vLLM counts it), and
vllm:prefix_cache_queries_total / vllm:prefix_cache_hits_total (prompt
tokens looked up / found).`,
		Example: `  # two replicas of a slow model, for a gateway to balance
  sluice sim --addr 127.0.0.1:9001 --model llama-3-8b --slowdown 2 &
  sluice sim --addr 127.0.0.1:9002 --model llama-3-8b --slowdown 2 &

  curl -N localhost:9001/v1/chat/completions -d '{"model":"llama-3-8b",
    "messages":[{"role":"user","content":"hello there"}],"max_tokens":8,"stream":true}'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			size, err := config.ParseSize(maxBody)
			if err != nil {
				return fmt.Errorf("--max-body: %w", err)
			}
			cfg.MaxBodyBytes = int64(size)
			cfg.DisablePrefixCache = !prefixCache
			cfg.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			srv, err := sim.New(cfg)
			if err != nil {
				return err
			}
			return srv.ListenAndServe(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.SortFlags = false
	f.StringVar(&cfg.Addr, "addr", cfg.Addr, "address to listen on (port 0 picks a free port, logged at start)")
	f.StringArrayVar(&cfg.Models, "model", cfg.Models, "model name to serve; repeat for several names of one engine")
	f.StringVar(&cfg.ID, "id", "", "instance id sent as X-Sim-Instance (default the listening address)")
	f.DurationVar(&cfg.TTFT, "ttft", cfg.TTFT, "fixed prefill time before the first token")
	f.DurationVar(&cfg.PrefillPerToken, "prefill-per-token", cfg.PrefillPerToken, "added prefill time per prompt token")
	f.DurationVar(&cfg.ITL, "itl", cfg.ITL, "time per output token with a batch of one")
	f.Float64Var(&cfg.BatchPenalty, "batch-penalty", cfg.BatchPenalty, "how much a full batch stretches --itl (0 = none)")
	f.IntVar(&cfg.MaxRunning, "max-running", cfg.MaxRunning, "batch size: requests beyond it wait inside the sim")
	f.Float64Var(&cfg.Slowdown, "slowdown", cfg.Slowdown, "multiplies every latency")
	f.Float64Var(&cfg.ErrorRate, "error-rate", cfg.ErrorRate, "fraction of inference requests answered 500, drawn at random from --seed")
	f.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "seed of the --error-rate draws")
	f.DurationVar(&cfg.StartupDelay, "startup-delay", cfg.StartupDelay, "health and inference answer 503 for this long after start, like a replica loading weights")
	f.IntVar(&cfg.Dim, "dim", cfg.Dim, "embedding dimension")
	f.IntVar(&cfg.DefaultMaxTokens, "default-max-tokens", cfg.DefaultMaxTokens, "output tokens of a request without max_tokens")
	f.IntVar(&cfg.BlockTokens, "block-tokens", sim.DefaultBlockTokens, "tokens per KV block, the prefix cache's unit")
	f.IntVar(&cfg.KVBlocks, "kv-blocks", 0, "KV-cache capacity in blocks, shared by running requests and cached prefixes (0 = --kv-cache-tokens / --block-tokens: 1024 on the defaults)")
	f.IntVar(&cfg.KVCacheTokens, "kv-cache-tokens", cfg.KVCacheTokens, "KV-cache capacity in tokens when --kv-blocks is 0 (0 = 2048 × --max-running)")
	f.BoolVar(&prefixCache, "prefix-cache", true, "reuse cached prompt prefixes (--prefix-cache=false prefills every token)")
	f.StringVar(&maxBody, "max-body", maxBody, "largest request body; larger ones get 413")
	f.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "on SIGTERM/SIGINT, how long in-flight requests may finish before they are cut")
	return cmd
}
