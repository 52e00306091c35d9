package sim

import (
	"sync"
	"sync/atomic"
)

// KVCache sizes an Engine's paged KV cache. See the package comment for
// the model it follows.
type KVCache struct {
	// BlockTokens is the number of tokens in one block. Below 1: 16.
	BlockTokens int
	// Blocks is the capacity in blocks. Below 1: 1.
	Blocks int
	// PrefixCaching keeps the full prompt blocks of finished requests for
	// later requests with the same prefix. When false, blocks still count
	// towards vllm:kv_cache_usage_perc but nothing is reused.
	PrefixCaching bool
}

// kvCache is the engine's block pool. Its capacity is split into blocks
// held by running requests, blocks kept for their prefix (held by no one,
// evictable, in LRU order) and empty blocks. A new block takes an empty
// block while there is one and otherwise evicts the least recently used
// cached block; when every block is held, the request oversubscribes the
// pool (the sim never stalls a request for KV space) and the block is
// counted in over until some request frees one.
type kvCache struct {
	blockTokens int
	capacity    int
	caching     bool

	// Counters of vllm:prefix_cache_queries and vllm:prefix_cache_hits, in
	// prompt tokens.
	queries, hits atomic.Int64

	mu     sync.Mutex
	blocks map[uint64]*kvBlock // cached blocks by chained hash, held or not
	lru    kvList              // cached blocks held by no request, oldest first
	empty  int                 // blocks holding nothing
	over   int                 // blocks held beyond capacity
}

// kvBlock is one cached block: a full prompt block and the number of
// running requests that hold it.
type kvBlock struct {
	hash       uint64
	ref        int
	prev, next *kvBlock
}

// kvLease is what one running request holds in the pool: the cached prompt
// blocks it pins and a count of its private blocks (a partial last prompt
// block, the blocks its output fills, duplicates and oversubscription),
// which are never cached.
type kvLease struct {
	held    []*kvBlock
	private int
}

func newKVCache(cfg KVCache) *kvCache {
	if cfg.BlockTokens < 1 {
		cfg.BlockTokens = 16
	}
	if cfg.Blocks < 1 {
		cfg.Blocks = 1
	}
	return &kvCache{
		blockTokens: cfg.BlockTokens,
		capacity:    cfg.Blocks,
		caching:     cfg.PrefixCaching,
		blocks:      make(map[uint64]*kvBlock),
		empty:       cfg.Blocks,
	}
}

// admit takes the blocks of a prompt of tokens tokens whose full blocks
// hash to blocks, and returns how many of its tokens were cached: the
// longest run of leading blocks found in the cache, at most tokens−1 tokens
// (like vLLM, the last prompt token is always computed, to get the logits
// of the first output token), counted in whole blocks.
func (c *kvCache) admit(l *kvLease, tokens int, blocks []uint64) (cached int) {
	l.held = l.held[:0]
	l.private = 0
	if !c.caching {
		blocks = nil
	}
	if cap(l.held) < len(blocks) {
		l.held = make([]*kvBlock, 0, len(blocks))
	}
	maxHit := 0
	if tokens > 0 {
		maxHit = min((tokens-1)/c.blockTokens, len(blocks))
	}
	c.mu.Lock()
	hit := 0
	for ; hit < maxHit; hit++ {
		b := c.blocks[blocks[hit]]
		if b == nil {
			break
		}
		c.pinLocked(b)
		l.held = append(l.held, b)
	}
	for _, h := range blocks[hit:] {
		if b := c.blocks[h]; b != nil {
			// Cached, but after a gap or as the last block: held again
			// and computed again.
			c.pinLocked(b)
			l.held = append(l.held, b)
			continue
		}
		if !c.takeLocked() {
			l.private++
			continue
		}
		b := &kvBlock{hash: h, ref: 1}
		c.blocks[h] = b
		l.held = append(l.held, b)
	}
	for range ceilDiv(tokens, c.blockTokens) - len(blocks) {
		c.takeLocked()
		l.private++
	}
	c.mu.Unlock()
	cached = hit * c.blockTokens
	if c.caching {
		c.queries.Add(int64(tokens))
		c.hits.Add(int64(cached))
	}
	return cached
}

// reserve takes private blocks for tokens tokens, as an input that is not
// looked up in the prefix cache (an embedding) does.
func (c *kvCache) reserve(l *kvLease, tokens int) {
	l.held = l.held[:0]
	l.private = 0
	c.mu.Lock()
	for range ceilDiv(tokens, c.blockTokens) {
		c.takeLocked()
		l.private++
	}
	c.mu.Unlock()
}

// grow takes one more private block for l, as a request whose output
// starts a new block does.
func (c *kvCache) grow(l *kvLease) {
	c.mu.Lock()
	c.takeLocked()
	c.mu.Unlock()
	l.private++
}

// release gives back what l holds. The pinned prompt blocks go to the LRU
// list last block first, so that a prompt's tail is evicted before its
// head, which more requests share.
func (c *kvCache) release(l *kvLease) {
	c.mu.Lock()
	for i := len(l.held) - 1; i >= 0; i-- {
		b := l.held[i]
		b.ref--
		if b.ref == 0 {
			c.lru.pushBack(b)
		}
	}
	for range l.private {
		c.freeLocked()
	}
	c.mu.Unlock()
	clear(l.held)
	l.held = l.held[:0]
	l.private = 0
}

// pinLocked marks b held by one more request.
func (c *kvCache) pinLocked(b *kvBlock) {
	if b.ref == 0 {
		c.lru.remove(b)
	}
	b.ref++
}

// takeLocked takes a block from the pool, evicting the least recently used
// cached block when none is empty, and reports whether the pool had one;
// when it had not, the block is counted as oversubscribed.
func (c *kvCache) takeLocked() bool {
	if c.empty > 0 {
		c.empty--
		return true
	}
	if b := c.lru.head; b != nil {
		c.lru.remove(b)
		delete(c.blocks, b.hash)
		return true
	}
	c.over++
	return false
}

// freeLocked returns a private block.
func (c *kvCache) freeLocked() {
	if c.over > 0 {
		c.over--
		return
	}
	c.empty++
}

// KVStats is a snapshot of the engine's KV cache.
type KVStats struct {
	// Capacity is the pool size in blocks.
	Capacity int
	// Used counts the blocks held by running requests, oversubscription
	// included, so it may exceed Capacity.
	Used int
	// Cached counts the cached blocks held by no running request, which a
	// new request may reuse or evict.
	Cached int
	// QueryTokens and HitTokens are the prompt tokens looked up in the
	// cache and the ones found there, since the engine started.
	QueryTokens, HitTokens int64
}

// Usage is the fraction of the pool held by running requests, at most 1:
// vLLM's vllm:kv_cache_usage_perc, in which cached blocks that no running
// request holds count as free.
func (s KVStats) Usage() float64 {
	return min(float64(s.Used)/float64(s.Capacity), 1)
}

func (c *kvCache) stats() KVStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return KVStats{
		Capacity:    c.capacity,
		Used:        c.capacity - c.empty - c.lru.n + c.over,
		Cached:      c.lru.n,
		QueryTokens: c.queries.Load(),
		HitTokens:   c.hits.Load(),
	}
}

// kvList is a doubly linked list of blocks, oldest at head.
type kvList struct {
	head, tail *kvBlock
	n          int
}

func (l *kvList) pushBack(b *kvBlock) {
	b.prev, b.next = l.tail, nil
	if l.tail != nil {
		l.tail.next = b
	} else {
		l.head = b
	}
	l.tail = b
	l.n++
}

func (l *kvList) remove(b *kvBlock) {
	if b.prev != nil {
		b.prev.next = b.next
	} else {
		l.head = b.next
	}
	if b.next != nil {
		b.next.prev = b.prev
	} else {
		l.tail = b.prev
	}
	b.prev, b.next = nil, nil
	l.n--
}

func ceilDiv(a, b int) int {
	if a <= 0 {
		return 0
	}
	return (a + b - 1) / b
}
