// Package sim is a simulated inference server: it speaks the OpenAI API
// (chat completions, completions, responses, embeddings, rerank, models), the Open Inference
// Protocol v2 and vLLM's Prometheus metrics, and answers with deterministic
// content after latencies that behave like a GPU engine with continuous
// batching. The gateway's tests, benchmarks, demos and the quickstart run
// their replicas on it; `sluice sim` is its command line.
//
// # Latency model
//
// One [Engine] stands for one accelerator shared by every model name the
// server serves (like vLLM's --served-model-name aliases).
//
//   - At most MaxRunning requests run at once (the batch). Others wait in a
//     FIFO queue inside the sim and start when a slot frees; they are counted
//     by vllm:num_requests_waiting.
//   - The first output token is ready after the prefill:
//     TTFT + PrefillPerToken × uncached prompt tokens, where the uncached
//     tokens are those not found in the prefix cache (all of them on a
//     miss, so TTFT keeps its meaning for a prompt never seen before). Time
//     to first token as a client sees it is queueing time plus prefill.
//   - Each further token takes ITL × (1 + BatchPenalty × (running−1)/MaxRunning),
//     re-evaluated before every token, so a fuller batch decodes slower.
//   - Embeddings, rerank and v2 inference cost one prefill over all their input
//     tokens and occupy a batch slot meanwhile.
//   - Every duration is multiplied by Slowdown.
//
// # Prefix cache
//
// The engine's KV cache is paged like vLLM's: Config.KVBlocks blocks of
// Config.BlockTokens tokens. When a request is admitted to the batch, its
// prompt's full blocks are looked up by their hashes, which are chained
// from the prompt's start (block i hashes block i−1's hash and its own
// tokens), so equal prefixes give equal blocks and a block is found only
// behind all the blocks before it. The longest run of leading blocks found
// is the request's cached prefix, at most the prompt's length minus one
// token (the last token is always computed, as in vLLM); the rest are
// stored as the request computes them. A running request pins every block
// it holds; when it finishes, its full prompt blocks stay cached, held by
// no one, in least-recently-used order (a prompt's tail ahead of its head),
// and a new block takes an empty block or else evicts the least recently
// used cached block. A partial last prompt block and the blocks output
// tokens fill are private to the request and never cached. The sim never
// stalls a request for KV space: when every block is held, it
// oversubscribes the pool.
//
// vllm:kv_cache_usage_perc is, as in vLLM, the share of blocks held by
// running requests (cached blocks nobody holds count as free);
// vllm:prefix_cache_queries_total and vllm:prefix_cache_hits_total count
// prompt tokens looked up and found, as vLLM v1 does; and usage reports
// prompt_tokens_details.cached_tokens, in streams too.
//
// A stream's response headers are sent as soon as the request is accepted,
// before it queues, as vLLM does; its first event carries the first token.
//
// Deadlines are kept on an absolute schedule, so a late wake-up does not delay
// the tokens that follow it, and a request's own goroutine does all its
// waiting on one reusable timer.
//
// # Determinism
//
// Prompt tokens are the whitespace-separated words of the prompt text (every
// text part of every chat message, or the completion prompt), or the number
// of token ids when the prompt is given as ids; never less than one. For the
// prefix cache, a word's token id is the FNV-1a hash of its bytes, and a
// chat message's role is mixed into the block it starts in, so the same
// text gives the same blocks in any request. Output
// tokens are exactly max_completion_tokens, else max_tokens, else
// Config.DefaultMaxTokens. Each output token is one word picked from a fixed
// vocabulary by a hash of the endpoint, the model, the prompt, the token
// budget, the request's seed and the token's position, so the same request
// always gets the same text and streaming yields exactly the non-streaming
// text. Embedding vectors are unit vectors drawn from a hash of the model and
// the input.
//
// # Responses
//
// finish_reason is "length" when the request set a token limit and "stop"
// when it ran to the default length. Streams use OpenAI's chunk format: a
// chat stream opens with an assistant-role chunk, each token is one chunk, a
// final chunk carries finish_reason, a usage chunk with empty choices follows
// when stream_options.include_usage is set, and "data: [DONE]" ends it.
// Sampling parameters (temperature, top_p, ...) are accepted and ignored; n
// must be 1 and a completion takes one prompt. Errors use the OpenAI shape on
// /v1 and {"error": "..."} on /v2.
package sim
