package sim

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// words returns n distinct words starting at word number from, so that
// prompts built from overlapping ranges share exactly their overlap.
func words(from, n int) string {
	w := make([]string, n)
	for i := range w {
		w[i] = fmt.Sprintf("w%d", from+i)
	}
	return strings.Join(w, " ")
}

// tokenize returns the token count and block hashes of text for blocks of
// size tokens.
func tokenize(size int, text string) (int, []uint64) {
	tk := newTokenizer(size, nil)
	tk.text(text)
	return tk.tokens, tk.blocks
}

func TestTokenizerChainsBlocks(t *testing.T) {
	n, a := tokenize(4, "a b c d e f g h i j")
	if n != 10 || len(a) != 2 {
		t.Fatalf("10 words in blocks of 4: %d tokens, %d blocks; want 10 and 2 (a partial block is not hashed)", n, len(a))
	}
	// Whitespace does not matter, words do.
	if _, b := tokenize(4, "  a\tb c\nd  e f g h"); b[0] != a[0] || b[1] != a[1] {
		t.Error("the same words with other spacing gave other blocks")
	}
	// A different first block changes every later block: hashes chain.
	_, c := tokenize(4, "x b c d e f g h")
	if c[0] == a[0] || c[1] == a[1] {
		t.Error("a different first block left a later block's hash unchanged")
	}
	// Equal second blocks after different first blocks differ.
	_, d := tokenize(4, "a b c d e f g X")
	if d[0] != a[0] || d[1] == a[1] {
		t.Error("a change in block 2 must keep block 1 and change block 2")
	}
	// Token ids chain the same way, and parts of one prompt concatenate.
	tk := newTokenizer(4, nil)
	tk.text("a b")
	tk.text("c d e f g h")
	if tk.blocks[0] != a[0] || tk.blocks[1] != a[1] {
		t.Error("a prompt split over parts gave other blocks than the whole")
	}
	// A role marker changes the block it falls in.
	tk = newTokenizer(4, nil)
	tk.mark("system")
	tk.text("a b c d")
	if tk.blocks[0] == a[0] {
		t.Error("a message role did not change its block")
	}
	// Size 0 counts words and hashes nothing.
	if n, b := tokenize(0, "a b c d e"); n != 5 || len(b) != 0 {
		t.Errorf("size 0: %d tokens, %d blocks", n, len(b))
	}
}

func FuzzTokenizerCountsLikeCountWords(f *testing.F) {
	for _, s := range []string{"", "a", " a  b ", "\u00a0x\u2003y", "\xff \xfe"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, b := tokenize(3, s)
		if n != countWords(s) {
			t.Fatalf("%q: %d tokens, countWords %d", s, n, countWords(s))
		}
		if len(b) != n/3 {
			t.Fatalf("%q: %d blocks of 3 for %d tokens", s, len(b), n)
		}
	})
}

// lease admits a prompt of tokens tokens with the given blocks and returns
// the lease and the cached tokens.
func lease(c *kvCache, tokens int, blocks []uint64) (*kvLease, int) {
	l := new(kvLease)
	return l, c.admit(l, tokens, blocks)
}

func TestKVCacheHitMiss(t *testing.T) {
	c := newKVCache(KVCache{BlockTokens: 4, Blocks: 100, PrefixCaching: true})
	n, blocks := tokenize(4, words(0, 10)) // 2 full blocks and 2 tokens
	l, cached := lease(c, n, blocks)
	if cached != 0 {
		t.Fatalf("cold cache: %d cached tokens", cached)
	}
	if s := c.stats(); s.Used != 3 || s.Cached != 0 {
		t.Errorf("running 10 tokens in blocks of 4: %+v, want 3 used", s)
	}
	c.release(l)
	if s := c.stats(); s.Used != 0 || s.Cached != 2 {
		t.Errorf("after release: %+v, want the 2 full blocks cached", s)
	}

	tests := []struct {
		name   string
		text   string
		cached int
	}{
		{"same prompt", words(0, 10), 8},
		{"longer prompt", words(0, 20), 8},
		{"first block only", words(0, 4) + " " + words(100, 8), 4},
		{"different start", words(1, 10), 0},
		// vLLM computes at least the last prompt token: a prompt of exactly
		// the cached 8 tokens reuses one block, not two.
		{"exactly the cached blocks", words(0, 8), 4},
	}
	for _, tc := range tests {
		n, b := tokenize(4, tc.text)
		l, cached := lease(c, n, b)
		c.release(l)
		if cached != tc.cached {
			t.Errorf("%s: %d cached tokens, want %d", tc.name, cached, tc.cached)
		}
	}
	s := c.stats()
	if s.HitTokens != 8+8+4+0+4 || s.QueryTokens != 10+10+20+12+10+8 {
		t.Errorf("counters: %d hits of %d queries", s.HitTokens, s.QueryTokens)
	}
}

func TestKVCacheGapIsAMiss(t *testing.T) {
	c := newKVCache(KVCache{BlockTokens: 4, Blocks: 100, PrefixCaching: true})
	n, b := tokenize(4, words(0, 13)) // 3 full blocks
	l, _ := lease(c, n, b)
	c.release(l)
	// Evict the first block by hand: the later ones stay cached but
	// unreachable, since a hit must start at the prompt's start.
	c.mu.Lock()
	first := c.blocks[b[0]]
	c.lru.remove(first)
	delete(c.blocks, first.hash)
	c.empty++
	c.mu.Unlock()
	l, cached := lease(c, n, b)
	if cached != 0 {
		t.Errorf("%d cached tokens after the first block was evicted, want 0", cached)
	}
	c.release(l)
	if s := c.stats(); s.Cached != 3 || s.Used != 0 {
		t.Errorf("%+v: the recomputed block must be cached again and the others kept", s)
	}
}

func TestKVCacheLRUEviction(t *testing.T) {
	// Room for 6 blocks; a prompt of 9 tokens takes 2 full blocks and a
	// partial one, which goes back empty when it finishes.
	c := newKVCache(KVCache{BlockTokens: 4, Blocks: 6, PrefixCaching: true})
	run := func(from, n int) int {
		tokens, b := tokenize(4, words(from, n))
		l, cached := lease(c, tokens, b)
		c.release(l)
		return cached
	}
	run(0, 9)   // A
	run(100, 9) // B: fits beside A
	if s := c.stats(); s.Cached != 4 || s.Used != 0 {
		t.Fatalf("%+v, want A and B cached", s)
	}
	if got := run(0, 9); got != 8 { // A again: now more recent than B
		t.Fatalf("A: %d cached tokens, want 8", got)
	}
	run(200, 13) // C takes 4 blocks: the 2 empty ones, then B's, the oldest
	if got := run(0, 9); got != 8 {
		t.Errorf("A after C: %d cached tokens, want 8 (B was older)", got)
	}
	if got := run(100, 9); got != 0 {
		t.Errorf("B after C: %d cached tokens, want 0 (evicted)", got)
	}
}

func TestKVCacheEvictsPromptTailFirst(t *testing.T) {
	c := newKVCache(KVCache{BlockTokens: 4, Blocks: 3, PrefixCaching: true})
	n, b := tokenize(4, words(0, 13)) // 3 full blocks, 1 partial
	l, _ := lease(c, n, b)
	c.release(l)
	// One new block evicts one cached block: the prompt's last.
	l, _ = lease(c, 1, nil)
	c.release(l)
	n, b = tokenize(4, words(0, 13))
	if l, cached := lease(c, n, b); cached != 8 {
		t.Errorf("%d cached tokens, want 8: the eviction must take the prompt's tail block", cached)
	} else {
		c.release(l)
	}
}

func TestKVCachePinning(t *testing.T) {
	c := newKVCache(KVCache{BlockTokens: 4, Blocks: 4, PrefixCaching: true})
	n, b := tokenize(4, words(0, 8)) // 2 full blocks
	running, _ := lease(c, n, b)
	// While it runs, others may share its blocks...
	n2, b2 := tokenize(4, words(0, 12))
	l2, cached := lease(c, n2, b2)
	if cached != 8 {
		t.Errorf("a prefix held by a running request: %d cached tokens, want 8", cached)
	}
	c.release(l2)
	// ...and no amount of pressure evicts them.
	for i := range 5 {
		n, b := tokenize(4, words(1000*(i+1), 8))
		l, _ := lease(c, n, b)
		c.release(l)
	}
	c.mu.Lock()
	for _, h := range b {
		if blk := c.blocks[h]; blk == nil || blk.ref != 1 {
			t.Errorf("block of a running request evicted or unpinned: %+v", blk)
		}
	}
	c.mu.Unlock()
	c.release(running)
	if s := c.stats(); s.Used != 0 {
		t.Errorf("%+v after every release", s)
	}
}

func TestKVCacheCapacity(t *testing.T) {
	c := newKVCache(KVCache{BlockTokens: 4, Blocks: 4, PrefixCaching: true})
	n, b := tokenize(4, words(0, 16)) // 4 full blocks: the whole pool
	l1, _ := lease(c, n, b)
	if s := c.stats(); s.Used != 4 || s.Usage() != 1 {
		t.Errorf("full pool: %+v usage %v", s, s.Usage())
	}
	// A second request oversubscribes: usage stays at 1, nothing it
	// holds is cached, and the first prompt's blocks survive.
	n2, b2 := tokenize(4, words(50, 8))
	l2, _ := lease(c, n2, b2)
	if s := c.stats(); s.Used != 6 || s.Usage() != 1 {
		t.Errorf("oversubscribed: %+v usage %v", s, s.Usage())
	}
	c.grow(l2)
	c.release(l2)
	c.release(l1)
	s := c.stats()
	if s.Used != 0 || s.Cached != 4 {
		t.Errorf("after release: %+v, want the first prompt's 4 blocks cached", s)
	}
	if l, cached := lease(c, n2, b2); cached != 0 {
		t.Errorf("an oversubscribed prompt was cached: %d tokens", cached)
	} else {
		c.release(l)
	}
}

func TestKVCacheDisabled(t *testing.T) {
	c := newKVCache(KVCache{BlockTokens: 4, Blocks: 100})
	n, b := tokenize(4, words(0, 12))
	for range 2 {
		l, cached := lease(c, n, b)
		if cached != 0 {
			t.Errorf("prefix caching off: %d cached tokens", cached)
		}
		if s := c.stats(); s.Used != 3 {
			t.Errorf("prefix caching off: %+v, want 3 blocks used while running", s)
		}
		c.release(l)
	}
	if s := c.stats(); s.Cached != 0 || s.QueryTokens != 0 {
		t.Errorf("prefix caching off: %+v", s)
	}
}

// TestEnginePrefixCacheSkipsPrefill runs the same prompt twice on the fake
// clock: the second run's prefill costs only its uncached tokens.
func TestEnginePrefixCacheSkipsPrefill(t *testing.T) {
	h := newHarness(t, msLatency) // 20ms + 1ms per uncached token
	n, blocks := tokenize(16, words(0, 40))
	p := Prompt{Tokens: n, Blocks: blocks}
	first := h.startPrompt(t.Context(), 0, p, 2)
	h.drive(first)
	second := h.startPrompt(t.Context(), 1, p, 2)
	h.drive(second)
	if first.timing.CachedTokens != 0 || first.timing.FirstToken != 60*time.Millisecond {
		t.Errorf("cold: %d cached, first token at %v; want 0 and 60ms", first.timing.CachedTokens, first.timing.FirstToken)
	}
	if second.timing.CachedTokens != 32 || second.timing.FirstToken != 28*time.Millisecond {
		t.Errorf("warm: %d cached, first token at %v; want 32 and 28ms (20ms + 8 uncached tokens)",
			second.timing.CachedTokens, second.timing.FirstToken)
	}
	if s := h.e.KVStats(); s.Used != 0 || s.Cached != 2 || s.HitTokens != 32 || s.QueryTokens != 80 {
		t.Errorf("stats %+v", s)
	}
}

// TestRepeatedPromptIsCachedOverHTTP sends one prompt three times, plain
// and streamed: the repeats report cached tokens in usage and reach their
// first token sooner on the sim's own clock.
func TestRepeatedPromptIsCachedOverHTTP(t *testing.T) {
	cfg, fc := fakeClockConfig()
	cfg.PrefillPerToken = time.Millisecond
	s, ts := startServer(t, cfg)
	done := make(chan struct{})
	defer close(done)
	go advanceWhileRunning(fc, s.Engine(), done)

	label := `{model_name="sim-llm"}`
	prompt := words(0, 40) // 2 full blocks of 16 and 8 tokens more
	ttftSum := 0.0
	for i, tc := range []struct {
		stream bool
		cached int
		ttft   time.Duration
	}{
		{false, 0, 50 * time.Millisecond}, // 10ms + 40 × 1ms
		{false, 32, 18 * time.Millisecond},
		{true, 32, 18 * time.Millisecond},
	} {
		extra := `,"max_tokens":3`
		if tc.stream {
			extra += `,"stream":true,"stream_options":{"include_usage":true}`
		}
		resp, body := post(t, ts.URL+"/v1/chat/completions", chatBody("sim-llm", prompt, extra))
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %s %s", i, resp.Status, body)
		}
		var u *usage
		var details map[string]int
		if tc.stream {
			chunks, err := parseSSE(body)
			if err != nil {
				t.Fatal(err)
			}
			last := chunks[len(chunks)-1]
			u = last.Usage
			details = usageDetails(t, body, true)
		} else {
			var c completion
			if err := json.Unmarshal(body, &c); err != nil {
				t.Fatal(err)
			}
			u = c.Usage
			details = usageDetails(t, body, false)
		}
		if u == nil || u.PromptTokens != 40 {
			t.Fatalf("request %d: usage %+v, want 40 prompt tokens", i, u)
		}
		if details["cached_tokens"] != tc.cached {
			t.Errorf("request %d: prompt_tokens_details %v, want cached_tokens %d", i, details, tc.cached)
		}
		m := scrape(t, ts.URL)
		got := m[MetricTTFT+"_sum"+label] - ttftSum
		ttftSum = m[MetricTTFT+"_sum"+label]
		if fmt.Sprintf("%.4f", got) != fmt.Sprintf("%.4f", tc.ttft.Seconds()) {
			t.Errorf("request %d: time to first token %vs, want %v", i, got, tc.ttft)
		}
	}
	m := scrape(t, ts.URL)
	if m[MetricPrefixCacheQueries+label] != 120 || m[MetricPrefixCacheHits+label] != 64 {
		t.Errorf("prefix cache counters: %v queries, %v hits; want 120 and 64",
			m[MetricPrefixCacheQueries+label], m[MetricPrefixCacheHits+label])
	}
}

// usageDetails returns usage.prompt_tokens_details of a response body, or
// of the last chunk that carries usage in a stream.
func usageDetails(t *testing.T, body []byte, stream bool) map[string]int {
	t.Helper()
	type withDetails struct {
		Usage *struct {
			Details map[string]int `json:"prompt_tokens_details"`
		} `json:"usage"`
	}
	if !stream {
		var v withDetails
		if err := json.Unmarshal(body, &v); err != nil {
			t.Fatal(err)
		}
		if v.Usage == nil {
			t.Fatal("no usage")
		}
		return v.Usage.Details
	}
	var out map[string]int
	for _, line := range strings.Split(string(body), "\n") {
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok || data == "[DONE]" {
			continue
		}
		var v withDetails
		if err := json.Unmarshal([]byte(data), &v); err != nil {
			t.Fatal(err)
		}
		if v.Usage != nil {
			out = v.Usage.Details
		}
	}
	return out
}
