package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/sluice-ai/sluice/internal/bench"
)

func newBenchCmd() *cobra.Command {
	var (
		cfg       bench.Config
		headers   []string
		jsonPath  string
		quiet     bool
		tracePath string
		traceOpts bench.TraceOptions
		goodput   string
	)
	cmd := &cobra.Command{
		Use:   "bench --url URL --model M [--rate R | --concurrency C] [flags]",
		Short: "Send load to an OpenAI-style endpoint and report latency and throughput",
		Long: `bench sends chat, completion or embedding requests to an OpenAI-compatible
server (a model server, or sluice's gateway in front of some) and reports what
came back: requests sent, succeeded and failed (by HTTP status and by error),
requests and output tokens per second, and the mean, p50, p90, p99, p99.9 and
max of end-to-end latency, and for streams of time to first token (TTFT) and
inter-token latency (ITL, every gap between content chunks is one sample).

Two ways to load a server:

  --rate R         open loop: R requests per second arrive on a schedule
                   (--arrivals poisson or constant), whatever the server does.
                   Each latency counts from the request's scheduled time, so
                   a server that stalls shows it in the tail instead of hiding
                   it by slowing the load down. When --max-in-flight requests
                   are outstanding, an arrival is dropped (counted), never
                   sent late.
  --concurrency C  closed loop: C workers each send their next request as
                   soon as the previous one is answered. The default, with
                   C=8, when neither flag is given.

--url is the server's base URL; requests go to it joined with --endpoint
(/v1/chat/completions, /v1/completions or /v1/embeddings). A --url that
already ends with one of these is used as it is.

Prompts are --prompt-tokens words from a fixed list of common English words
(a server counting whitespace-separated words, like sluice sim, sees exactly
that many prompt tokens). Each request gets a different prompt so caches do
not answer; --repeat-prompt sends one prompt throughout. Streams ask for
usage (stream_options.include_usage) and output tokens come from it, or else
from the number of content chunks. A stream must end with "data: [DONE]".

Or replay a production trace instead of --rate or --concurrency:

  --trace FILE     each request is sent at its
                   time in the trace divided by --time-scale, as an open loop,
                   with the trace's prompt and output lengths (times
                   --token-scale). Both formats of the public traces are read
                   (--trace-format, detected by default):
                     mooncake  JSONL {"timestamp" (ms), "input_length",
                               "output_length", "hash_ids"}: each hash_id is
                               512 tokens of prompt; the same id always
                               expands to the same words (512 × --token-scale
                               of them), so requests sharing leading hash_ids
                               share a real text prefix for the server's
                               prefix cache. Requests with the same second
                               hash_id are turns of one conversation: they
                               carry its id in the --session-header header
                               (X-Session-ID: mooncake-<id>).
                     azure     CSV TIMESTAMP,ContextTokens,GeneratedTokens:
                               a distinct random prompt per request (--seed).
                   --trace-start, --trace-window and --trace-limit select a
                   part of the trace; --duration, when given, stops the
                   replay early (default: the whole selection). For a
                   Mooncake trace against a server with 16-token KV blocks
                   (vLLM, sluice sim), pick --token-scale so 512 × it is a
                   multiple of 16 (1/8 = 0.125: 64 words a block).

Besides latency and throughput, bench reports the share of prompt tokens the
server had cached (usage.prompt_tokens_details.cached_tokens), for a Mooncake
trace next to the trace's own bound (the share of its blocks sent before);
the share of requests each replica answered (the X-Sim-Instance header);
and with --goodput ttft=MS,itl=MS,e2e=MS (any of them) the share of
requests that succeeded and met every given bound: time to first token, the
request's mean inter-token latency (vLLM's TPOT; streams only) and
end-to-end latency.

A progress bar is drawn on stderr when it is a terminal; the table goes to
stdout, and --json FILE writes the same result as JSON (schema
` + bench.SchemaVersion + `; durations in milliseconds), which also carries the
fields of vLLM's "vllm bench serve" result under its names (completed,
request_throughput, output_throughput, mean_ttft_ms, median_ttft_ms,
p99_ttft_ms, mean_itl_ms, ...). With --json - the JSON goes
to stdout and the table to stderr. Exits 1 when no request succeeded, 130
when interrupted (after printing what was measured).`,
		Example: `  # open loop: 50 streamed chat requests per second for 30s against a local sim
  sluice bench --url http://127.0.0.1:9001 --model sim-llm --rate 50 --duration 30s --stream

  # closed loop: 16 concurrent clients through the gateway, results also as JSON
  sluice bench --url http://127.0.0.1:8080 --model sim-llm --concurrency 16 \
      --duration 1m --warmup 5s --api-key "$SLUICE_KEY" --json result.json

  # embeddings at a constant 200 req/s, 512-word inputs
  sluice bench --url http://127.0.0.1:8080 --endpoint /v1/embeddings \
      --model embed --rate 200 --arrivals constant --prompt-tokens 512

  # the first 2 minutes of the Mooncake trace, tokens / 8, with an SLO
  sluice bench --url http://127.0.0.1:8080 --model sim-llm --stream \
      --trace mooncake-conversation.jsonl --token-scale 0.125 \
      --trace-window 2m --goodput ttft=500,itl=50 --json result.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			h, err := parseHeaders(headers)
			if err != nil {
				return err
			}
			cfg.Header = h
			if goodput != "" {
				if cfg.Goodput, err = bench.ParseSLO(goodput); err != nil {
					return err
				}
			}
			if tracePath != "" {
				if !(traceOpts.TokenScale > 0) {
					return fmt.Errorf("--token-scale %v: must be above 0", traceOpts.TokenScale)
				}
				if cfg.Trace, err = bench.LoadTrace(tracePath, traceOpts); err != nil {
					return err
				}
				if !cmd.Flags().Changed("duration") {
					cfg.Duration = 0 // the whole selection
				}
			}
			return runBench(cmd.Context(), cfg, jsonPath, quiet, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.URL, "url", "", "server base `URL`, e.g. http://127.0.0.1:8080 (required)")
	f.StringVar(&cfg.Endpoint, "endpoint", "", "`path` requested under --url: /v1/chat/completions (the default), /v1/completions or /v1/embeddings")
	f.StringVar(&cfg.Model, "model", "", "the request's `model` (required)")
	f.Float64Var(&cfg.Rate, "rate", 0, "open loop: requests started per second (`R`)")
	f.IntVar(&cfg.Concurrency, "concurrency", 0, fmt.Sprintf("closed loop: concurrent workers (%d when neither --rate nor --concurrency is set)", bench.DefaultConcurrency))
	f.StringVar(&cfg.Arrivals, "arrivals", bench.ArrivalsPoisson, "open loop arrival process: poisson or constant")
	f.IntVar(&cfg.MaxInFlight, "max-in-flight", bench.DefaultMaxInFlight, "open loop: outstanding requests at most; arrivals beyond are dropped")
	f.DurationVar(&cfg.Duration, "duration", bench.DefaultDuration, "how long to send load for (after --warmup)")
	f.DurationVar(&cfg.Warmup, "warmup", 0, "send load this long first without counting it")
	f.DurationVar(&cfg.Timeout, "timeout", bench.DefaultTimeout, "per-request timeout, from send to last byte")
	f.BoolVar(&cfg.Stream, "stream", false, "request streamed responses and measure TTFT and ITL")
	f.IntVar(&cfg.PromptTokens, "prompt-tokens", bench.DefaultPromptTokens, "prompt length in words")
	f.IntVar(&cfg.MaxTokens, "max-tokens", bench.DefaultMaxTokens, `the request's "max_tokens"`)
	f.BoolVar(&cfg.RepeatPrompt, "repeat-prompt", false, "send the same prompt in every request (default: a distinct prompt per request)")
	f.Uint64Var(&cfg.Seed, "seed", 0, "seed for arrivals and prompts; 0 picks one (the table and JSON show it)")
	f.StringVar(&cfg.APIKey, "api-key", "", "sent as Authorization: Bearer `KEY`")
	f.StringArrayVar(&headers, "header", nil, "extra request `header` \"Name: value\" (repeatable)")
	f.StringVar(&tracePath, "trace", "", "replay the trace in `FILE` (Mooncake JSONL or Azure CSV) instead of --rate or --concurrency")
	f.StringVar(&traceOpts.Format, "trace-format", "", "trace format: mooncake or azure (default: detected)")
	f.Float64Var(&cfg.TimeScale, "time-scale", 1, "replay speed `X`: a request the trace sends at time t is sent at t/X (2 = twice as fast, 0.5 = half speed)")
	f.Float64Var(&traceOpts.TokenScale, "token-scale", 1, "multiply every token count of the trace by `Y` (prompt and output lengths, and a Mooncake block's 512 tokens), rounded, at least 1: 0.125 = tokens / 8")
	f.DurationVar(&traceOpts.Start, "trace-start", 0, "skip the trace's requests before this time (from its first request)")
	f.DurationVar(&traceOpts.Window, "trace-window", 0, "replay only the trace's requests in this span after --trace-start (trace time; 0 = to the end)")
	f.IntVar(&traceOpts.Limit, "trace-limit", 0, "replay at most `N` requests of the trace (0 = all)")
	f.StringVar(&cfg.SessionHeader, "session-header", bench.DefaultSessionHeader, "request header carrying a trace request's conversation id")
	f.StringVar(&goodput, "goodput", "", "count requests meeting `ttft=MS,itl=MS,e2e=MS` (any subset; itl is the request's mean inter-token latency)")
	f.StringVar(&jsonPath, "json", "", "also write the result as JSON to `FILE` (- for stdout)")
	f.BoolVarP(&quiet, "quiet", "q", false, "no progress bar or status lines on stderr")
	return cmd
}

// runBench runs one load test and reports it: table on stdout (stderr when
// JSON goes to stdout), JSON where asked, progress on a terminal stderr.
func runBench(ctx context.Context, cfg bench.Config, jsonPath string, quiet bool, stdout, stderr io.Writer) error {
	cfg, err := cfg.WithDefaults()
	if err != nil {
		return err
	}
	// The JSON file is created first so that a bad path fails before the
	// load runs rather than after.
	var jsonFile *os.File
	if jsonPath != "" && jsonPath != "-" {
		if jsonFile, err = os.Create(jsonPath); err != nil {
			return fmt.Errorf("json output: %w", err)
		}
		defer jsonFile.Close()
	}
	var progress io.Writer
	if !quiet {
		if isTerminal(stderr) {
			progress = stderr
		}
		fmt.Fprintln(stderr, describeLoad(cfg))
	}
	res, runErr := bench.Run(ctx, cfg, progress)
	if res == nil {
		return runErr
	}

	tableOut := stdout
	if jsonPath == "-" {
		tableOut = stderr
	}
	if jsonPath != "-" || !quiet {
		if err := res.WriteTable(tableOut); err != nil {
			return fmt.Errorf("write table: %w", err)
		}
	}
	switch {
	case jsonPath == "-":
		if err := res.WriteJSON(stdout); err != nil {
			return fmt.Errorf("write json: %w", err)
		}
	case jsonFile != nil:
		if err := res.WriteJSON(jsonFile); err != nil {
			return fmt.Errorf("write json %s: %w", jsonPath, err)
		}
		if err := jsonFile.Close(); err != nil {
			return fmt.Errorf("write json %s: %w", jsonPath, err)
		}
	}
	switch {
	case errors.Is(runErr, context.Canceled):
		return &exitError{code: 130, err: errors.New("interrupted")}
	case runErr != nil:
		return runErr
	case res.Sent > 0 && res.OK == 0:
		return fmt.Errorf("no request succeeded (%d sent)", res.Sent)
	}
	return nil
}

// describeLoad is the line printed before a run starts, for a config with
// defaults applied.
func describeLoad(cfg bench.Config) string {
	load := fmt.Sprintf("closed loop, %d workers", cfg.Concurrency)
	switch {
	case cfg.Trace != nil:
		load = fmt.Sprintf("%s trace replay, %d requests at %g× speed, tokens × %g",
			cfg.Trace.Format, len(cfg.Trace.Requests), cfg.TimeScale, cfg.Trace.TokenScale)
	case cfg.Rate > 0:
		load = fmt.Sprintf("open loop, %g req/s (%s arrivals)", cfg.Rate, cfg.Arrivals)
	}
	if cfg.Warmup > 0 {
		load += fmt.Sprintf(", %v warmup", cfg.Warmup)
	}
	return fmt.Sprintf("bench: %s for %v against POST %s", load, cfg.Duration, cfg.URL)
}

// parseHeaders turns "Name: value" flags into a header.
func parseHeaders(flags []string) (http.Header, error) {
	h := http.Header{}
	for _, f := range flags {
		name, value, ok := strings.Cut(f, ":")
		name = strings.TrimSpace(name)
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return nil, fmt.Errorf("header %q: want \"Name: value\"", f)
		}
		h.Add(name, strings.TrimSpace(value))
	}
	return h, nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
