package ratelimit

import "time"

// The limits are per minute. Each is a GCRA (a token bucket kept as one
// number) whose burst is the whole minute's allowance: a tenant with rpm 100
// may send 100 requests at once, and then one every 600ms.
//
// The state is kept as a level in units of µs·limit: admitting cost c adds
// c·window (window = 60e6 µs), every µs that passes drains limit, and a
// request fits while the level stays at or below limit·window. Written this
// way every quantity is an integer (no emission interval of 60s/limit to
// round), so "exactly limit requests in a burst" holds for every limit, and
// the same arithmetic runs unchanged in Go (int64) and in Redis's Lua
// (doubles, exact below 2^53: limit·window stays below that for limits up to
// 150 million per minute).
const (
	window   = time.Minute
	windowUS = int64(window / time.Microsecond)

	// maxLimit bounds a per-minute limit so that limit·windowUS stays exact
	// in Lua's doubles.
	maxLimit = (1 << 53) / windowUS
	// maxCost bounds one reservation for the same reason.
	maxCost = maxLimit
)

// bucket is the local form of one limit's state.
type bucket struct {
	level int64 // µs·limit units; see above
	last  int64 // µs since the Unix epoch of the last update
}

// advance drains the bucket up to now at limit per µs.
func (b *bucket) advance(now, limit int64) {
	if now <= b.last {
		return
	}
	if elapsed := now - b.last; elapsed >= (b.level+limit-1)/limit {
		b.level = 0
	} else {
		b.level -= elapsed * limit
	}
	b.last = now
}

// wait returns how many µs must pass before cost fits under limit, 0 if it
// fits now. The bucket must have been advanced to now.
func (b *bucket) wait(cost, limit int64) int64 {
	over := b.level + cost*windowUS - limit*windowUS
	if over <= 0 {
		return 0
	}
	return (over + limit - 1) / limit
}

// remaining is how many units of cost fit now.
func remaining(level, limit int64) int64 {
	return max(0, (limit*windowUS-level)/windowUS)
}

// resetUS is how long until the bucket is empty again (the full allowance
// available).
func resetUS(level, limit int64) int64 {
	if level <= 0 {
		return 0
	}
	return (level + limit - 1) / limit
}

func clampCost(c int64) int64 {
	return min(max(c, 0), maxCost)
}

func clampLimit(l int) int64 {
	return min(max(int64(l), 0), maxLimit)
}
