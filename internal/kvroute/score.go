package kvroute

import (
	"math"
	"slices"
)

// Weights are the scorers' weights in a kv_aware pick: each candidate's
// score is the weighted sum of its scorers, each in [0, 1] with 1 best. A
// zero weight turns a scorer off.
type Weights struct {
	// Prefix weighs the share of the prompt's leading blocks the replica is
	// believed to hold. Default 2: a replica holding the whole prompt wins
	// over an equally loaded one by the full weight of every load scorer
	// together, and loses only when it is past the load bound (see
	// Config.LoadFactor) or much slower.
	Prefix float64 `json:"prefix"`
	// Queue weighs the requests waiting in the replica's engine (plus the
	// gateway's own in flight to it since the last scrape). Default 1.
	Queue float64 `json:"queue"`
	// KVCache weighs the free share of the replica's KV cache. Default 0.5:
	// a full cache means evictions and preemptions soon, but usage is
	// sampled once a scrape interval and moves slowly.
	KVCache float64 `json:"kv_cache"`
	// Latency weighs the first-token latency a new request can expect:
	// the replica's time-to-first-token estimate × (outstanding requests +
	// 1), as p2c_ewma weighs its latency. Default 1.
	Latency float64 `json:"latency"`
	// Session weighs keeping a session (the pool's hash_on key) on one
	// replica, chosen by rendezvous hashing so that every gateway agrees.
	// Default 0 (off).
	Session float64 `json:"session"`
}

// DefaultWeights are the weights of a kv_aware pool that sets none.
var DefaultWeights = Weights{Prefix: 2, Queue: 1, KVCache: 0.5, Latency: 1}

// DefaultLoadFactor is the bound on a replica's load, as a multiple of the
// pool's mean, above which its prefix affinity is ignored (as
// consistent_hash bounds a key's replica).
const DefaultLoadFactor = 1.25

// SlowFactor marks slow replicas: a candidate whose first-token latency
// estimate is more than SlowFactor times the median of the candidates'
// estimates is not picked at all, however much of the prompt it holds. The
// median, not the fastest: a replica whose recent requests hit its cache
// looks fast, and must not make every other replica look slow; and at most
// half of the candidates can be over a multiple of the median, so the
// rule never concentrates traffic on a few. A cached prefix saves prefill, a fraction of
// first-token time; it cannot make up for a replica several times slower
// (a degraded GPU, a noisy neighbour), and every request sent there lands
// in the tail of the latency distribution — scoring it down only reduces
// its share, which with batching engines still sets the p99. The estimate
// decays while the replica gets no traffic (balancer.PeakEWMA, τ = 10 s),
// so a replica that recovered is tried again within seconds, and its next
// response restores a true estimate.
const SlowFactor = 3

// inputs are what a pick knows of one candidate.
type inputs struct {
	inFlight int64 // the gateway's requests in flight to it now
	load     *loadSample
	ttft     float64 // first-token latency estimate, ns per unit of prompt; 0 = unknown
	matched  int     // leading prompt blocks it is believed to hold
	session  bool    // the session key's rendezvous winner
}

// Explain is why a candidate scored what it did in a pick: the scorers'
// inputs and outputs.
type Explain struct {
	// Blocks is the prompt's block count and Matched how many of its
	// leading blocks the replica was believed to hold.
	Blocks  int `json:"blocks"`
	Matched int `json:"matched"`
	// Capped is set when the replica was over its load bound, so its
	// prefix affinity counted for nothing. Slow is set when its first-token
	// latency estimate was over SlowFactor times the candidates' median: it
	// was not picked.
	Capped bool `json:"capped"`
	Slow   bool `json:"slow"`
	// Outstanding is the load the bound and the latency scorer use: the
	// engine's running + waiting requests as last scraped, corrected by
	// the gateway's in-flight change since, or the gateway's in-flight
	// count when the scrape is missing or stale on any candidate.
	Outstanding float64 `json:"outstanding"`
	// Queue is the queue scorer's input: the engine's waiting requests plus
	// the gateway's in-flight growth since the scrape; 0 (every candidate
	// scores 1) when any candidate lacks a fresh scrape.
	Queue float64 `json:"queue"`
	// TTFTSeconds is the first-token latency estimate, for a prompt of
	// TTFTUnitBlocks blocks or less (0: none).
	TTFTSeconds float64 `json:"ttft_seconds"`
	// Scores are the scorers' values in [0, 1] and Total their weighted sum.
	Prefix  float64 `json:"prefix"`
	QueueS  float64 `json:"queue_score"`
	KVCache float64 `json:"kv_cache"`
	Latency float64 `json:"latency"`
	Session float64 `json:"session"`
	Total   float64 `json:"total"`
}

// score fills out[j] for each candidate in in. blocks is the prompt's
// block count and c the load factor.
//
// Inputs one candidate lacks are given the others' mean, so a missing
// signal neither helps nor hurts it. Loads are compared like with like:
// the scraped engine view only when every candidate has a fresh scrape,
// the gateway's own in-flight counts otherwise.
// tmp is scratch space of len(in).
func score(w Weights, c float64, blocks int, in []inputs, out []Explain, tmp []float64) {
	n := len(in)
	scraped := true
	for j := range in {
		scraped = scraped && in[j].load != nil
	}
	var sumE, maxQ float64
	var kvSum, kvN, tSum, tN float64
	for j := range in {
		// Without the engines' view the queue scorer is neutral: the
		// gateway's in-flight counts are already in the latency scorer's
		// expected wait, and counting them twice would favour an idle slow
		// replica over a busy fast one.
		e, q := float64(in[j].inFlight), 0.0
		if scraped {
			l := in[j].load
			delta := float64(in[j].inFlight - l.inFlight)
			e = max(e, l.Waiting+l.Running+delta)
			q = max(0, l.Waiting+max(0, delta))
		}
		out[j] = Explain{Blocks: blocks, Matched: in[j].matched, Outstanding: e, Queue: q, TTFTSeconds: in[j].ttft / 1e9}
		sumE += e
		maxQ = max(maxQ, q)
		if l := in[j].load; l != nil && l.HasKV {
			kvSum += l.KVUsage
			kvN++
		}
		if in[j].ttft > 0 {
			tSum += in[j].ttft
			tN++
		}
	}
	kvMean, tMean := 0.0, 1.0
	if kvN > 0 {
		kvMean = kvSum / kvN
	}
	if tN > 0 {
		tMean = tSum / tN
	}
	// The bound of consistent hashing with bounded loads, counting the
	// request being placed.
	bound := math.Ceil(c * (sumE + 1) / float64(n))
	sampled := tmp[:0]
	minX := math.Inf(1)
	for j := range in {
		if in[j].ttft > 0 {
			sampled = append(sampled, in[j].ttft)
		}
		t := in[j].ttft
		if t <= 0 {
			t = tMean
		}
		x := t * (out[j].Outstanding + 1)
		out[j].Latency = x // the expected wait, normalised below
		minX = min(minX, x)
	}
	medianT := math.Inf(1)
	if len(sampled) > 0 {
		slices.Sort(sampled)
		medianT = sampled[len(sampled)/2]
		if len(sampled)%2 == 0 {
			medianT = (medianT + sampled[len(sampled)/2-1]) / 2
		}
	}
	for j := range in {
		e := &out[j]
		e.Slow = in[j].ttft > SlowFactor*medianT
		if blocks > 0 && in[j].matched > 0 && !e.Slow {
			if n > 1 && e.Outstanding+1 > bound {
				e.Capped = true
			} else {
				e.Prefix = float64(in[j].matched) / float64(blocks)
			}
		}
		e.QueueS = 1 - e.Queue/(maxQ+1)
		u := kvMean
		if l := in[j].load; l != nil && l.HasKV {
			u = l.KVUsage
		}
		e.KVCache = 1 - u
		e.Latency = minX / e.Latency
		if in[j].session {
			e.Session = 1
		}
		e.Total = w.Prefix*e.Prefix + w.Queue*e.QueueS + w.KVCache*e.KVCache + w.Latency*e.Latency + w.Session*e.Session
	}
}
