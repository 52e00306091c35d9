package jobs

// starvationLimit is how many jobs of higher priorities a dispatcher takes
// while a lower priority waits before that priority gets the next turn.
const starvationLimit = 8

// picker decides which priority queue a dispatcher takes its next jobs
// from: strictly the highest non-empty one, except that a lower priority
// that has been passed over starvationLimit times is served first. Under
// sustained load of every priority, normal and low each get at least one
// job in every starvationLimit+1, and high the rest; without contention the
// order is strict. The picker only sees what the queues return, so a
// priority whose queue turns out empty is not starving and its count
// restarts.
//
// A picker belongs to the dispatcher goroutine; it is not safe for
// concurrent use.
type picker struct {
	passed [3]int // by rank: jobs of higher priorities taken since this one was served or found empty
}

// due returns the lower priorities owed a turn, most passed over first.
func (p *picker) due() []Priority {
	var out []Priority
	n, l := p.passed[PriorityNormal.rank()], p.passed[PriorityLow.rank()]
	switch {
	case n >= starvationLimit && l >= starvationLimit && l > n:
		out = append(out, PriorityLow, PriorityNormal)
	case n >= starvationLimit && l >= starvationLimit:
		out = append(out, PriorityNormal, PriorityLow)
	case n >= starvationLimit:
		out = append(out, PriorityNormal)
	case l >= starvationLimit:
		out = append(out, PriorityLow)
	}
	return out
}

// took records that a fetch from the queue of priority c returned got
// jobs. Whether it was served or found empty, c does not starve now.
func (p *picker) took(c Priority, got int) {
	r := c.rank()
	p.passed[r] = 0
	for lower := r + 1; lower < len(p.passed); lower++ {
		p.passed[lower] += got
	}
}
